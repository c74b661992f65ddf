/**
 * Version routes: snapshot and restore a session (read-write access: the owner, or a participant
 * with `permissions.canEdit`; a viewer gets 403 `forbidden`), and read an image's version tree,
 * one version, and the diff of two (anyone the image is visible to, or a member of one of its
 * sessions; otherwise 404, so existence does not leak).
 */
import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { storableString } from '../../shared/canvas.ts';
import { AppError } from '../../shared/errors.ts';
import { isId } from '../../shared/ids.ts';
import type { VersionJson } from '../../shared/versions.ts';
import type { Database } from '../../persistence/db.ts';
import { getSessionAccess } from '../../persistence/repositories/sessions.ts';
import { decideRole } from '../auth/access.ts';
import type { VersionService } from '../extensions/snapshots.ts';
import { RateLimitedError } from '../save-limit.ts';
import { imageVersionTree, versionDetail, versionDiff, versionJson } from '../versions.ts';
import { readJson, type Env } from './json.ts';
import { withUrls } from '../render-urls.ts';
import type { UrlSigner } from '../signed-urls.ts';

const saveBody = z.strictObject({ description: storableString().max(2000).optional() });
const restoreBody = z.strictObject({
  versionId: z.string().refine(isId, 'must be an id'),
  description: storableString().max(2000).optional(),
});

export interface VersionRouteDeps {
  db: Database;
  versions: VersionService;
  /** Signs each version's `thumbnailUrl` and `renderUrl` for the asking user. */
  signer: UrlSigner;
  thumbnailSize: number;
}

/** Throws unless `userId` may change the session (owner or editor of an active, unexpired session). */
async function requireEditor(db: Database, sessionId: string, userId: string): Promise<void> {
  if (!isId(sessionId)) throw new AppError('session_not_found');
  const role = decideRole(await getSessionAccess(db, sessionId, userId), userId);
  if (role === 'viewer') throw new AppError('forbidden', 'Only the owner and participants who may edit can do this.');
}

/** The save limit (per user and session); past it 429 `rate_limited` with `Retry-After`. */
async function limitSave(c: Context<Env>, versions: VersionService, userId: string, sessionId: string): Promise<void> {
  try {
    await versions.limitSave(userId, sessionId);
  } catch (error) {
    if (error instanceof RateLimitedError) c.header('Retry-After', String(error.retryAfterSeconds));
    throw error;
  }
}

const versionIdParam = (value: string) => {
  if (!isId(value)) throw new AppError('version_not_found');
  return value;
};

export function registerVersionRoutes(app: Hono<Env>, deps: VersionRouteDeps): void {
  const urls = <T extends VersionJson>(json: T, userId: string) => withUrls(json, deps.signer, userId, deps.thumbnailSize);
  app.post('/api/sessions/:id/versions', async (c) => {
    const sessionId = c.req.param('id');
    const userId = c.get('claims').sub;
    const body = await readJson(c, saveBody);
    await requireEditor(deps.db, sessionId, userId);
    await limitSave(c, deps.versions, userId, sessionId);
    const version = await deps.versions.saveVersion({ sessionId, userId, description: body.description ?? null });
    return c.json({ version: urls(versionJson(version), userId) }, 201);
  });

  app.post('/api/sessions/:id/restore', async (c) => {
    const sessionId = c.req.param('id');
    const userId = c.get('claims').sub;
    const body = await readJson(c, restoreBody);
    await requireEditor(deps.db, sessionId, userId);
    await limitSave(c, deps.versions, userId, sessionId);
    const version = await deps.versions.restoreVersion({
      sessionId,
      userId,
      versionId: body.versionId,
      description: body.description ?? null,
    });
    return c.json({ version: urls(versionJson(version), userId) }, 201);
  });

  app.get('/api/images/:id/versions', async (c) => {
    const imageId = c.req.param('id');
    if (!isId(imageId)) throw new AppError('image_not_found');
    const userId = c.get('claims').sub;
    const tree = await imageVersionTree(deps.db, userId, imageId);
    return c.json({ ...tree, versions: tree.versions.map((v) => urls(v, userId)) });
  });

  app.get('/api/versions/:id', async (c) => {
    const userId = c.get('claims').sub;
    const detail = await versionDetail(deps.db, userId, versionIdParam(c.req.param('id')));
    return c.json({ ...detail, version: urls(detail.version, userId) });
  });

  app.get('/api/versions/:a/diff/:b', async (c) => {
    const from = versionIdParam(c.req.param('a'));
    const to = versionIdParam(c.req.param('b'));
    return c.json(await versionDiff(deps.db, c.get('claims').sub, from, to));
  });
}
