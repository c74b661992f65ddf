/**
 * The HTTP API as a Hono app of web-standard handlers, served unchanged by both transports.
 * Every error leaves as `{ error: { code, message } }` from the one registry in shared/errors.ts.
 */
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Hocuspocus } from '@hocuspocus/server';
import type { Logger } from 'pino';
import { z } from 'zod';
import { storableString } from '../../shared/canvas.ts';
import { AppError } from '../../shared/errors.ts';
import { isId } from '../../shared/ids.ts';
import type { Database } from '../../persistence/db.ts';
import type { UpdateLog } from '../../persistence/update-log.ts';
import type { SessionRow } from '../../persistence/repositories/sessions.ts';
import { authenticate } from '../auth/access.ts';
import type { AccessSources } from '../auth/access-cache.ts';
import type { Claims, TokenService } from '../auth/tokens.ts';
import { UrlSigner } from '../signed-urls.ts';
import type { Metrics } from '../metrics.ts';
import { createSession, endSession } from '../sessions.ts';
import { registerParticipantRoutes } from './participants.ts';
import { registerVersionRoutes } from './versions.ts';
import { registerWebRoutes } from './web.ts';
import { IMAGE_BODY_PATHS, registerImageRoutes, type ImageRouteDeps } from './images.ts';
import { registerLookupRoutes } from './lookup.ts';
import { registerRenderRoutes } from './renders.ts';
import type { RenderService } from '../renders.ts';
import type { VersionService } from '../extensions/snapshots.ts';
import { readJson, type Env } from './json.ts';

export { readJson, type Env };

export interface HttpDeps {
  db: Database;
  /**
   * The token's user and login session, cached (server/auth/access-cache.ts); this node's own
   * access changes drop what they name through `invalidate` before they answer.
   */
  access: AccessSources;
  tokens: TokenService;
  /** Signed URLs (server/signed-urls.ts): accepted instead of the Bearer token where a URL carries `sig`. */
  signer: UrlSigner;
  /** Renders for the render routes (server/renders.ts). */
  renders: RenderService;
  /** The first of THUMBNAIL_SIZES: the size a version's `thumbnailUrl` names. */
  thumbnailSize: number;
  log: UpdateLog;
  hocuspocus: Hocuspocus;
  logger: Logger;
  maxBodyBytes: number;
  nodeId: string;
  metrics: Metrics;
  /** Saving and restoring versions of live documents (server/extensions/snapshots.ts). */
  versions: VersionService;
  /** Image ingest and files (server/http/images.ts); absent in apps built without a blob store. */
  images?: ImageRouteDeps;
  /** Set while the node drains (server/drain.ts): `/readyz` then answers 503 `draining`. */
  drain?: { readonly draining: boolean };
  /** Cross-node fan-out (only with REDIS_URL): its reachability is part of `/readyz`. */
  redis?: { healthy(): boolean };
}


export function sessionJson(s: SessionRow) {
  return {
    sessionId: s.session_id,
    imageId: s.image_id,
    ownerId: s.owner_id,
    createdAt: s.created_at.toISOString(),
    expiresAt: s.expires_at.toISOString(),
    isActive: s.is_active,
    sessionType: s.session_type,
    baseVersionId: s.base_version_id,
    headVersionId: s.head_version_id,
    branchName: s.branch_name,
    endedAt: s.ended_at?.toISOString() ?? null,
  };
}

const createSessionBody = z.strictObject({
  imageId: z.string().refine(isId, 'must be an id'),
  sessionType: z.enum(['solo', 'collaborative']).optional(),
  expiresInSeconds: z.number().int().min(60).max(30 * 24 * 3600).optional(),
  fromVersionId: z.string().refine(isId, 'must be an id').optional(),
  branchName: storableString().min(1).max(100).optional(),
});

/** The methods routes of `app` answer at `path` (middleware, registered for every method, excluded). */
function allowedMethods(app: Hono<Env>, path: string): string[] {
  const methods = new Set<string>();
  for (const route of app.routes) {
    if (route.method === 'ALL') continue;
    const pattern = route.path
      .split('/')
      .map((part) => (part.startsWith(':') ? '[^/]+' : part === '*' ? '.*' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('/');
    if (new RegExp(`^${pattern}/?$`).test(path)) methods.add(route.method);
  }
  if (methods.has('GET')) methods.add('HEAD');
  return [...methods].sort();
}

export function createHttpApp(deps: HttpDeps): Hono<Env> {
  const app = new Hono<Env>();

  app.onError((error, c) => {
    if (error instanceof AppError) return c.json(error.toJSON(), error.status as 400);
    deps.logger.error({ err: error, path: c.req.path }, 'unhandled error in HTTP handler');
    return c.json(new AppError('internal').toJSON(), 500);
  });
  // A path some route serves under another method is 405 with `Allow`, not 404 (routes are read
  // at request time, so the ones registered below count too).
  app.notFound((c) => {
    const allowed = allowedMethods(app, c.req.path);
    if (allowed.length === 0) return c.json(new AppError('not_found').toJSON(), 404);
    return c.json(new AppError('method_not_allowed').toJSON(), 405, { allow: allowed.join(', ') });
  });

  const jsonBodyLimit = bodyLimit({
    maxSize: deps.maxBodyBytes,
    onError: () => {
      throw new AppError('payload_too_large');
    },
  });
  // Image bodies have their own limits (IMAGE_MAX_BODY_BYTES, the announced upload size), counted
  // while they stream to disk or the blob store.
  app.use('/api/*', (c, next) => (IMAGE_BODY_PATHS.some((p) => p.test(c.req.path)) ? next() : jsonBodyLimit(c, next)));

  registerWebRoutes(app);

  app.get('/healthz', (c) => c.json({ status: 'ok', nodeId: deps.nodeId }));

  app.get('/metrics', async (c) =>
    c.body(await deps.metrics.registry.metrics(), 200, { 'content-type': deps.metrics.registry.contentType }),
  );

  app.get('/readyz', async (c) => {
    // Draining first: a load balancer polling this stops routing here before the listener closes.
    if (deps.drain?.draining) return c.json({ status: 'draining', checks: { draining: true } }, 503);
    const database = await deps.db.ping(2_000);
    const updateLog = deps.log.healthy;
    const ready = database && updateLog;
    // Redis down is `degraded`, still 200: this node keeps serving its own clients (and stores
    // everything); only fan-out to other nodes waits, and anti-entropy catches up once it is back.
    const redis = deps.redis?.healthy();
    const status = !ready ? 'not_ready' : redis === false ? 'degraded' : 'ready';
    return c.json(
      { status, checks: { database, updateLog, backlog: deps.log.backlog, ...(redis === undefined ? {} : { redis }) } },
      ready ? 200 : 503,
    );
  });

  // Every /api route needs a valid token of an existing, active user — or a signed URL (for
  // `<img>` tags, which cannot send a header): its signature binds method, path, parameters and
  // expiry, and names the user, who is then checked exactly like a token's.
  app.use('/api/*', async (c, next) => {
    const url = new URL(c.req.url);
    let claims: Claims;
    if (UrlSigner.isSigned(url)) {
      const signed = deps.signer.verify(c.req.method, url);
      claims = { sub: signed.userId, exp: signed.expires };
    } else {
      const header = c.req.header('authorization') ?? '';
      const match = /^Bearer\s+(\S+)$/i.exec(header);
      claims = await deps.tokens.verify(match?.[1]);
    }
    await authenticate(deps.access.cached, claims);
    c.set('claims', claims);
    await next();
  });

  app.post('/api/sessions', async (c) => {
    const body = await readJson(c, createSessionBody);
    const session = await createSession(deps.db, c.get('claims').sub, body);
    return c.json({ session: sessionJson(session) }, 201);
  });

  app.post('/api/sessions/:id/end', async (c) => {
    const session = await endSession(deps, c.req.param('id'), c.get('claims').sub);
    return c.json({ session: sessionJson(session) });
  });

  registerParticipantRoutes(app, deps);
  registerVersionRoutes(app, deps);
  if (deps.images) registerImageRoutes(app, deps.images);
  registerLookupRoutes(app, deps);
  registerRenderRoutes(app, deps);

  return app;
}
