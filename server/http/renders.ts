/**
 * On-demand renders (README "Renders"):
 * - `GET /api/versions/:id/render?width&height&fit&dpr&format&quality` — a saved version, for
 *   anyone who may read the version (else 404 `version_not_found`, as `GET /api/versions/:id`).
 * - `GET /api/sessions/:id/render?…` — the live canvas, for the session's owner and participants
 *   (the session's access rule: 403/404/410 as for connecting).
 * Both take the Bearer token or a signed URL (server/signed-urls.ts, for `<img>` tags). Results are
 * cached in blob storage under the content hash of (canvas, parameters, visible images); that hash
 * is the strong ETag, and `If-None-Match` with it answers 304 without rendering or reading a blob.
 * Cache-Control: a version never changes, so its render is cacheable for an hour — `public` only
 * for a public image, else `private` (a shared cache must not hand one user's render to another);
 * the live canvas changes with every edit: `private, no-cache` (revalidate each time; a 304 is
 * cheap). The cache is bounded (server/render-cache.ts): a render evicted between its lookup and
 * its read is rendered again (same ETag), never a 500.
 */
import { Readable } from 'node:stream';
import type { Context, Hono } from 'hono';
import { AppError } from '../../shared/errors.ts';
import { isId } from '../../shared/ids.ts';
import type { Database } from '../../persistence/db.ts';
import { getImage } from '../../persistence/repositories/images.ts';
import { getRenderableVersion } from '../../persistence/repositories/renders.ts';
import { getSessionAccess } from '../../persistence/repositories/sessions.ts';
import { decideRole } from '../auth/access.ts';
import type { VersionService } from '../extensions/snapshots.ts';
import { parseRenderParams, type RenderedBlob, type RenderService } from '../renders.ts';
import { EXPIRES_PARAM, SIGNATURE_PARAM, USER_PARAM } from '../signed-urls.ts';
import { canReadImage } from '../versions.ts';
import type { Env } from './json.ts';

export interface RenderRouteDeps {
  db: Database;
  renders: RenderService;
  versions: VersionService;
}

const SIGNATURE_PARAMS = new Set([SIGNATURE_PARAM, EXPIRES_PARAM, USER_PARAM]);

/** The route's own query parameters (a signed URL's `sig`, `expires`, `uid` are not render parameters). */
function renderQuery(c: Context<Env>): Record<string, string> {
  const url = new URL(c.req.url);
  const out: Record<string, string> = {};
  for (const [name, value] of url.searchParams) {
    if (SIGNATURE_PARAMS.has(name)) continue;
    if (name in out) throw new AppError('invalid_render_options', `${name}: given more than once`);
    out[name] = value;
  }
  return out;
}

/** Whether `If-None-Match` names this strong ETag (a list, `*`, or weak forms of it). */
export function matchesEtag(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag);
}

/** Answers with `rendered`; `read` gives its bytes (RenderService.body: rendered again if the blob vanished meanwhile). */
async function answer(c: Context<Env>, rendered: RenderedBlob, read: () => Promise<Readable | Buffer>, cacheControl: string): Promise<Response> {
  const headers: Record<string, string> = {
    etag: rendered.etag,
    'cache-control': cacheControl,
    // Answers differ by who asks (the Bearer token), whatever the URL.
    vary: 'Authorization',
    'x-content-type-options': 'nosniff',
  };
  if (matchesEtag(c.req.header('if-none-match'), rendered.etag)) return new Response(null, { status: 304, headers });
  headers['content-type'] = rendered.contentType;
  headers['content-length'] = String(rendered.size);
  if (c.req.method === 'HEAD') return new Response(null, { status: 200, headers });
  const body = await read();
  if (Buffer.isBuffer(body)) {
    headers['content-length'] = String(body.byteLength);
    return new Response(body as Uint8Array<ArrayBuffer>, { status: 200, headers });
  }
  return new Response(Readable.toWeb(body) as ReadableStream<Uint8Array>, { status: 200, headers });
}

export function registerRenderRoutes(app: Hono<Env>, deps: RenderRouteDeps): void {
  app.get('/api/versions/:id/render', async (c) => {
    const versionId = c.req.param('id');
    const userId = c.get('claims').sub;
    if (!isId(versionId)) throw new AppError('version_not_found');
    const params = parseRenderParams(renderQuery(c));
    const version = await getRenderableVersion(deps.db, versionId);
    if (!version || !(await canReadImage(deps.db, version.image_id, userId))) throw new AppError('version_not_found');
    const image = await getImage(deps.db, version.image_id);
    const rendered = await deps.renders.renderCached(version.canvas_state, version.viewer_id, params);
    const scope = image?.privacy_level === 'public' ? 'public' : 'private';
    const read = () => deps.renders.body(rendered, version.canvas_state, version.viewer_id, params);
    return answer(c, rendered, read, `${scope}, max-age=3600`);
  });

  app.get('/api/sessions/:id/render', async (c) => {
    const sessionId = c.req.param('id');
    const userId = c.get('claims').sub;
    if (!isId(sessionId)) throw new AppError('session_not_found');
    const params = parseRenderParams(renderQuery(c));
    const access = await getSessionAccess(deps.db, sessionId, userId);
    decideRole(access, userId); // any role may look: owner, editor, viewer
    const canvas = await deps.versions.liveCanvas(sessionId);
    // The canvas belongs to the session's owner: it shows the images they may see.
    const rendered = await deps.renders.renderCached(canvas, access!.owner_id, params);
    return answer(c, rendered, () => deps.renders.body(rendered, canvas, access!.owner_id, params), 'private, no-cache');
  });
}
