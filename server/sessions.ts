/**
 * Creating and ending edit sessions: the rules behind `POST /api/sessions` and
 * `POST /api/sessions/:id/end`, kept apart from HTTP so tests and the demo seeding call them too.
 */
import type { Hocuspocus } from '@hocuspocus/server';
import { canvasSchema, canvasToUpdate, initialCanvas, type Canvas } from '../shared/canvas.ts';
import { AppError } from '../shared/errors.ts';
import { newLayerId, newSessionId } from '../shared/ids.ts';
import { CloseCode } from '../shared/protocol.ts';
import type { Database } from '../persistence/db.ts';
import type { UpdateLog } from '../persistence/update-log.ts';
import type { AccessChange } from '../persistence/repositories/access-changes.ts';
import { appendSnapshot } from '../persistence/repositories/documents.ts';
import { isBranchOfOthers } from '../persistence/repositories/versions.ts';
import { assertCanvasImagesVisible } from './image-access.ts';
import { getCurrentVersion, getImage, getVersion, isImageVisibleTo } from '../persistence/repositories/images.ts';
import {
  endSession as endSessionRow,
  getSession,
  insertSession,
  type SessionRow,
} from '../persistence/repositories/sessions.ts';

export const DEFAULT_SESSION_SECONDS = 24 * 3600;
export const DEFAULT_BRANCH = 'main';

export interface CreateSessionInput {
  imageId: string;
  sessionType?: 'solo' | 'collaborative' | undefined;
  expiresInSeconds?: number | undefined;
  fromVersionId?: string | undefined;
  branchName?: string | undefined;
}

/**
 * Creates a session seeded from a version (by default the image's current version; with none,
 * the original image as one layer). The session row and the first row of its update log are
 * written in one transaction, so a session never exists without its document.
 *
 * Branches: a session of the image's owner continues the branch of the version it starts from;
 * one started `fromVersionId` without a `branchName` gets a branch of its own named after the
 * session.
 *
 * Forks: anyone else the image is visible to gets a fork, a session on a branch of its own
 * (`fork-<sessionId>` unless `branchName` names one) whose saves never move the image's current
 * version (server/versions.ts `movesCurrentVersion`). A fork may not take `main` or a branch
 * holding versions of another user's sessions (409 `branch_taken`).
 */
export async function createSession(db: Database, userId: string, input: CreateSessionInput): Promise<SessionRow> {
  const image = await getImage(db, input.imageId);
  if (!image || !(await isImageVisibleTo(db, input.imageId, userId))) throw new AppError('image_not_found');

  const version = input.fromVersionId ? await getVersion(db, input.fromVersionId) : await getCurrentVersion(db, image.image_id);
  if (input.fromVersionId && (!version || version.image_id !== image.image_id)) throw new AppError('version_not_found');

  const sessionId = newSessionId();
  let canvas: Canvas;
  if (version) {
    const parsed = canvasSchema.safeParse(version.canvas_state);
    if (!parsed.success) {
      throw new AppError('internal', `Version ${version.version_id} holds a canvas that does not match the schema.`);
    }
    canvas = { ...parsed.data, meta: { ...parsed.data.meta, baseVersionId: version.version_id } };
    // The new session's owner must be able to see every image the version names.
    await assertCanvasImagesVisible(db, canvas, userId, `No session was created from version ${version.version_id}`);
  } else {
    canvas = initialCanvas({ imageId: image.image_id, width: image.width, height: image.height }, newLayerId());
  }
  const fork = image.user_id !== userId;
  let branchName: string;
  if (fork) {
    branchName = input.branchName ?? `fork-${sessionId}`;
    if (branchName === DEFAULT_BRANCH || (await isBranchOfOthers(db, image.image_id, branchName, userId))) {
      throw new AppError('branch_taken', `Branch “${branchName}” of this image is not yours; a session on someone else's image works on a branch of its own.`);
    }
  } else {
    branchName = input.branchName ?? (input.fromVersionId ? `branch-${sessionId}` : (version?.branch_name ?? DEFAULT_BRANCH));
  }

  return db.transaction(async (tx) => {
    const session = await insertSession(tx, {
      sessionId,
      imageId: image.image_id,
      ownerId: userId,
      expiresInSeconds: input.expiresInSeconds ?? DEFAULT_SESSION_SECONDS,
      sessionType: input.sessionType ?? 'collaborative',
      baseVersionId: version?.version_id ?? null,
      branchName,
    });
    await appendSnapshot(tx, sessionId, canvasToUpdate(canvas), 'api');
    return session;
  });
}

/**
 * Ends a session: marks it inactive first (so reconnects are refused), then closes every open
 * connection to it and waits until everything they sent is stored.
 */
export async function endSession(
  deps: { db: Database; hocuspocus: Hocuspocus; log: UpdateLog; access?: { invalidate(change: AccessChange): void } },
  sessionId: string,
  userId: string,
): Promise<SessionRow> {
  const session = await getSession(deps.db, sessionId);
  if (!session) throw new AppError('session_not_found');
  if (session.owner_id !== userId) throw new AppError('not_session_owner');
  const ended = (await endSessionRow(deps.db, sessionId))!;
  // A reconnect to this node is refused at once, not only once the notification is back.
  deps.access?.invalidate({ kind: 'session', sessionId });
  closeDocumentConnections(deps.hocuspocus, sessionId, { code: CloseCode.SessionGone, reason: 'session_ended' });
  await deps.log.flushed();
  return ended;
}

export function closeDocumentConnections(hocuspocus: Hocuspocus, sessionId: string, event: { code: number; reason: string }): void {
  const document = hocuspocus.documents.get(sessionId);
  if (!document) return;
  for (const connection of [...document.getConnections()]) connection.close(event);
}
