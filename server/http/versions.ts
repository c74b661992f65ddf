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
import type { Database } from '../../persistence/db.ts';
import { getSessionAccess } from '../../persistence/repositories/sessions.ts';
import { decideRole } from '../auth/access.ts';
import type { VersionService } from '../extensions/snapshots.ts';
import { RateLimitedError } from '../save-limit.ts';
import { imageVersionTree, versionDetail, versionDiff, versionJson } from '../versions.ts';
import { readJson, type Env } from './json.ts';

const saveBody = z.strictObject({ description: storableString().max(2000).optional() });
const restoreBody = z.strictObject({
  versionId: z.string().refine(isId, 'must be an id'),
  description: storableString().max(2000).optional(),
});

export interface VersionRouteDeps {
  db: Database;
  versions: VersionService;
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
  app.post('/api/sessions/:id/versions', async (c) => {
    const sessionId = c.req.param('id');
    const userId = c.get('claims').sub;
    const body = await readJson(c, saveBody);
    await requireEditor(deps.db, sessionId, userId);
    await limitSave(c, deps.versions, userId, sessionId);
    const version = await deps.versions.saveVersion({ sessionId, userId, description: body.description ?? null });
    return c.json({ version: versionJson(version) }, 201);
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
    return c.json({ version: versionJson(version) }, 201);
  });

  app.get('/api/images/:id/versions', async (c) => {
    const imageId = c.req.param('id');
    if (!isId(imageId)) throw new AppError('image_not_found');
    return c.json(await imageVersionTree(deps.db, c.get('claims').sub, imageId));
  });

  app.get('/api/versions/:id', async (c) => {
    return c.json(await versionDetail(deps.db, c.get('claims').sub, versionIdParam(c.req.param('id'))));
  });

  app.get('/api/versions/:a/diff/:b', async (c) => {
    const from = versionIdParam(c.req.param('a'));
    const to = versionIdParam(c.req.param('b'));
    return c.json(await versionDiff(deps.db, c.get('claims').sub, from, to));
  });
}
