/**
 * Image routes: ingest (`POST /api/images` with the bytes as the body; the direct path
 * `POST /api/uploads` → PUT → `POST /api/uploads/:id/complete`), the image row
 * (`GET /api/images/:id`) and the file resized by URL parameters (`GET /api/images/:id/file`).
 * Access to an image follows images_view_policy (persistence/repositories/images.ts); an image
 * you may not see is 404 `image_not_found`, so existence does not leak.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as NodeWebStream } from 'node:stream/web';
import type { Context, Hono } from 'hono';
import type { Logger } from 'pino';
import { z } from 'zod';
import { AppError } from '../../shared/errors.ts';
import { isId, newId } from '../../shared/ids.ts';
import { getVisibleImage, type ImageRecord } from '../../persistence/repositories/images.ts';
import type { AccessSource, ImageSource, VisibleImage } from '../auth/access-cache.ts';
import {
  claimUpload,
  expiredUploadsOf,
  failUpload,
  getUpload,
  insertUpload,
  markUploadCompleted,
  releaseUpload,
  removeUpload,
  type UploadRow,
} from '../../persistence/repositories/uploads.ts';
import { BlobNotFound, blobKey, isBlobKey } from '../../storage/blob-store.ts';
import { byteLimit, ingestFile, spool, type IngestDeps, type IngestRequest } from '../../media/ingest.ts';
import { isAcceptedMime } from '../../media/sharp.ts';
import { ByteLru } from '../../media/lru.ts';
import {
  FORMAT_MIME,
  STANDARD_VARIANTS,
  parseVariant,
  renderVariant,
  standardSpec,
  variantEtag,
  variantKey,
  type StandardVariant,
} from '../../media/variants.ts';
import type { Metrics } from '../metrics.ts';
import type { RenderCache } from '../render-cache.ts';
import type { UrlSigner } from '../signed-urls.ts';
import { readJson, type Env } from './json.ts';

export interface ImageRouteDeps extends IngestDeps {
  signer: UrlSigner;
  metrics: Metrics;
  logger: Logger;
  maxBodyBytes: number;
  maxUploadBytes: number;
  uploadTtlSeconds: number;
  cacheVariants: boolean;
  /** Small variants kept in memory too (0: none). */
  memoryCacheBytes: number;
  /** The bound on cached variants (server/render-cache.ts); absent: kept forever, untracked. */
  cache?: RenderCache;
  /** Who may see an image, and a session's access for `?session=`: the access cache's (server/auth/access-cache.ts). */
  imageAccess: ImageSource;
  sessionAccess: Pick<AccessSource, 'sessionAccess'>;
}

/** Paths whose bodies are images (their own limits), exempt from the JSON body limit. */
export const IMAGE_BODY_PATHS = [/^\/api\/images\/?$/, /^\/api\/uploads\/[^/]+\/data$/];

const privacy = z.enum(['public', 'followers', 'private']);
const flag = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

const uploadQuery = z.strictObject({
  title: z.string().min(1).max(255).optional(),
  filename: z.string().min(1).max(255).optional(),
  privacyLevel: privacy.optional(),
  shareLocation: flag.optional(),
});

const createUploadBody = z.strictObject({
  filename: z.string().min(1).max(255),
  mimeType: z.string().min(1).max(50),
  fileSize: z.number().int().positive(),
  privacyLevel: privacy.optional(),
});

const completeBody = z.strictObject({
  title: z.string().min(1).max(255).optional(),
  privacyLevel: privacy.optional(),
  shareLocation: z.boolean().optional(),
});

const titleFrom = (filename: string) => filename.replace(/\.[A-Za-z0-9]{1,5}$/, '').slice(0, 255) || 'Untitled';

/** The row in camelCase, with signed URLs for this viewer; GPS only for the owner unless shared. */
export function imageJson(row: ImageRecord, viewerId: string, signer: UrlSigner) {
  const path = `/api/images/${row.image_id}/file`;
  const meta = row.metadata ?? {};
  const original = { mime: row.mime_type, hasAlpha: meta.hasAlpha === true, keepExif: meta.shareLocation === true };
  const { gps, ...rest } = meta as { gps?: unknown };
  const showGps = gps !== undefined && (viewerId === row.user_id || meta.shareLocation === true);
  const thumbnailUrls: Record<string, string> = {};
  for (const name of Object.keys(STANDARD_VARIANTS) as StandardVariant[]) {
    const spec = standardSpec(name, original);
    thumbnailUrls[name] = signer.sign('GET', path, viewerId, { width: spec.width, height: spec.height, fit: spec.fit, format: spec.format });
  }
  return {
    imageId: row.image_id,
    userId: row.user_id,
    title: row.title,
    description: row.description,
    filename: row.filename,
    mimeType: row.mime_type,
    fileSize: row.file_size,
    width: row.width,
    height: row.height,
    storagePath: row.storage_path,
    thumbnailPaths: row.thumbnail_paths,
    privacyLevel: row.privacy_level,
    uploadedAt: row.uploaded_at.toISOString(),
    lastEditedAt: row.last_edited_at?.toISOString() ?? null,
    metadata: showGps ? { ...rest, gps } : rest,
    colorPalette: row.color_palette,
    viewCount: row.view_count,
    fileUrl: signer.sign('GET', path, viewerId),
    thumbnailUrls,
  };
}

function queryOf(c: Context<Env>): Record<string, string> {
  return Object.fromEntries(new URL(c.req.url).searchParams);
}

function bodyStream(c: Context<Env>): Readable {
  const body = c.req.raw.body;
  if (!body) throw new AppError('bad_request', 'Send the image bytes as the request body.');
  return Readable.fromWeb(body as unknown as NodeWebStream<Uint8Array>);
}

/** Refuses at once when Content-Length already says too much (the stream is still counted). */
function checkLength(c: Context<Env>, max: number, code: 'image_too_large' | 'upload_size_mismatch' = 'image_too_large'): void {
  const length = Number(c.req.header('content-length') ?? Number.NaN);
  if (Number.isFinite(length) && length > max) {
    throw new AppError(code, code === 'image_too_large' ? `The image is larger than ${max} bytes.` : undefined);
  }
}

/** Runs an ingest with its metrics (outcome label = ok or the refusal's code). */
async function measured<T>(deps: ImageRouteDeps, work: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    const value = await work();
    deps.metrics.imagesIngested.inc({ result: 'ok' });
    return value;
  } catch (error) {
    deps.metrics.imagesIngested.inc({ result: error instanceof AppError ? error.code : 'internal' });
    throw error;
  } finally {
    deps.metrics.ingestSeconds.observe((performance.now() - started) / 1000);
  }
}

async function ownUpload(deps: ImageRouteDeps, uploadId: string, userId: string): Promise<UploadRow> {
  const upload = isId(uploadId) ? await getUpload(deps.db, uploadId) : undefined;
  if (!upload || upload.user_id !== userId) throw new AppError('upload_not_found');
  return upload;
}

/**
 * Abandoned direct uploads (announced, never completed, expired) of one user are removed — bytes
 * and row — when that user announces the next one: garbage stays bounded per user without a timer.
 */
async function sweepExpiredUploads(deps: ImageRouteDeps, userId: string): Promise<void> {
  for (const upload of await expiredUploadsOf(deps.db, userId, 20)) {
    try {
      if (isBlobKey(upload.storage_key)) await deps.blobs.delete(upload.storage_key);
      await removeUpload(deps.db, upload.upload_id);
    } catch (error) {
      deps.logger.warn({ err: error, uploadId: upload.upload_id }, 'could not sweep an expired upload');
    }
  }
}

/** Variants being made right now, so identical concurrent misses resize once. */
const inFlight = new Map<string, Promise<Buffer>>();

export function registerImageRoutes(app: Hono<Env>, deps: ImageRouteDeps): void {
  const memory = new ByteLru(deps.memoryCacheBytes);
  app.post('/api/images', async (c) => {
    const parsed = uploadQuery.safeParse(queryOf(c));
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new AppError('bad_request', `${issue.path.join('.') || 'query'}: ${issue.message}`);
    }
    const q = parsed.data;
    checkLength(c, deps.maxBodyBytes);
    const userId = c.get('claims').sub;
    const image = await measured(deps, async () => {
      const file = await spool(bodyStream(c), deps.spoolDir, deps.maxBodyBytes);
      try {
        const filename = q.filename ?? 'upload';
        const request: IngestRequest = {
          userId,
          title: q.title ?? titleFrom(filename),
          filename,
          privacyLevel: q.privacyLevel ?? 'private',
          shareLocation: q.shareLocation ?? false,
        };
        return await ingestFile(deps, file, request);
      } finally {
        await file.dispose();
      }
    });
    return c.json({ image: imageJson(image, userId, deps.signer) }, 201);
  });

  app.post('/api/uploads', async (c) => {
    const body = await readJson(c, createUploadBody);
    if (body.fileSize > deps.maxUploadBytes) throw new AppError('image_too_large', `The image is larger than ${deps.maxUploadBytes} bytes.`);
    if (!isAcceptedMime(body.mimeType)) {
      throw new AppError('image_type_not_accepted', `${body.mimeType} is not accepted: JPEG, PNG, WebP, AVIF, HEIC, GIF (first frame) and TIFF are.`);
    }
    const userId = c.get('claims').sub;
    await sweepExpiredUploads(deps, userId);
    const uploadId = newId('upload');
    const storageKey = blobKey(`uploads/${randomBytes(16).toString('hex')}`);
    await insertUpload(deps.db, {
      uploadId,
      userId,
      filename: body.filename,
      mimeType: body.mimeType,
      fileSize: body.fileSize,
      storageKey,
      ttlSeconds: deps.uploadTtlSeconds,
    });
    if (deps.blobs.presignPut) {
      const put = await deps.blobs.presignPut(storageKey, { contentType: body.mimeType, contentLength: body.fileSize, expiresInSeconds: deps.uploadTtlSeconds });
      return c.json({ uploadId, uploadUrl: put.url, method: put.method, headers: put.headers }, 201);
    }
    // The local store: this server's own upload route, authenticated by a signed URL.
    const origin = new URL(c.req.url).origin;
    const url = deps.signer.sign('PUT', `/api/uploads/${uploadId}/data`, userId, {}, { expires: Math.floor(Date.now() / 1000) + deps.uploadTtlSeconds });
    return c.json({ uploadId, uploadUrl: `${origin}${url}`, method: 'PUT', headers: { 'content-type': body.mimeType } }, 201);
  });

  app.put('/api/uploads/:id/data', async (c) => {
    const upload = await ownUpload(deps, c.req.param('id'), c.get('claims').sub);
    if (upload.status !== 'pending') throw new AppError('upload_not_found', 'That upload is not waiting for bytes.');
    if (upload.expires_at.getTime() < Date.now()) throw new AppError('upload_expired');
    checkLength(c, upload.file_size, 'upload_size_mismatch');
    const key = blobKey(upload.storage_key);
    const limited = bodyStream(c).pipe(byteLimit(upload.file_size));
    let info;
    try {
      info = await deps.blobs.put(key, limited, upload.mime_type);
    } catch (error) {
      if (error instanceof AppError && error.code === 'image_too_large') throw new AppError('upload_size_mismatch');
      throw error;
    }
    if (info.size !== upload.file_size) {
      await deps.blobs.delete(key);
      throw new AppError('upload_size_mismatch', `Received ${info.size} bytes; ${upload.file_size} were announced.`);
    }
    return c.json({ uploadId: upload.upload_id, size: info.size });
  });

  app.post('/api/uploads/:id/complete', async (c) => {
    const body = await readJson(c, completeBody);
    const userId = c.get('claims').sub;
    const upload = await ownUpload(deps, c.req.param('id'), userId);
    if (upload.status === 'completed' && upload.image_id) {
      const image = await getVisibleImage(deps.db, upload.image_id, userId);
      if (image) return c.json({ image: imageJson(image, userId, deps.signer) }, 200);
    }
    if (upload.status !== 'pending') throw new AppError('upload_not_found', `That upload is ${upload.status}.`);
    if (upload.expires_at.getTime() < Date.now()) throw new AppError('upload_expired');
    const key = blobKey(upload.storage_key);
    const stored = await deps.blobs.head(key);
    if (!stored) throw new AppError('upload_incomplete');
    if (stored.size !== upload.file_size) {
      await deps.blobs.delete(key);
      await failUpload(deps.db, upload.upload_id);
      throw new AppError('upload_size_mismatch', `The store holds ${stored.size} bytes; ${upload.file_size} were announced.`);
    }
    if (!(await claimUpload(deps.db, upload.upload_id))) throw new AppError('upload_not_found', 'That upload is being completed already.');
    let image: ImageRecord;
    try {
      image = await measured(deps, async () => {
        const file = await spool(await deps.blobs.get(key), deps.spoolDir, upload.file_size);
        try {
          return await ingestFile(deps, file, {
            userId,
            title: body.title ?? titleFrom(upload.filename),
            filename: upload.filename,
            privacyLevel: body.privacyLevel ?? 'private',
            shareLocation: body.shareLocation ?? false,
          });
        } finally {
          await file.dispose();
        }
      });
    } catch (error) {
      // Refused bytes are gone for good; anything else (busy, timeout, a store failure) may be retried.
      const retryable = !(error instanceof AppError) || ['image_busy', 'image_timeout', 'internal'].includes(error.code);
      if (retryable) await releaseUpload(deps.db, upload.upload_id);
      else {
        await failUpload(deps.db, upload.upload_id);
        await deps.blobs.delete(key).catch(() => {});
      }
      throw error;
    }
    await markUploadCompleted(deps.db, upload.upload_id, image.image_id);
    await deps.blobs.delete(key).catch((error: unknown) => deps.logger.warn({ err: error, key }, 'could not delete a completed upload'));
    return c.json({ image: imageJson(image, userId, deps.signer) }, 201);
  });

  app.get('/api/images/:id', async (c) => {
    const imageId = c.req.param('id');
    const userId = c.get('claims').sub;
    const image = isId(imageId) ? await getVisibleImage(deps.db, imageId, userId) : undefined;
    if (!image) throw new AppError('image_not_found');
    return c.json({ image: imageJson(image, userId, deps.signer) });
  });

  app.get('/api/images/:id/file', async (c) => {
    const imageId = c.req.param('id');
    const userId = c.get('claims').sub;
    const image = isId(imageId) ? await readableImage(deps, imageId, userId, c.req.query('session')) : undefined;
    if (!image) throw new AppError('image_not_found');
    const meta = image.metadata ?? {};
    const sha = typeof meta.sha256 === 'string' ? meta.sha256 : image.storage_path;
    const query = queryOf(c);
    const spec = parseVariant(query, { mime: image.mime_type, hasAlpha: meta.hasAlpha === true, keepExif: meta.shareLocation === true }, c.req.header('accept'));
    const etag = variantEtag(sha, spec);
    // A signed URL is for one user; a shared cache may keep only what everyone may see.
    const headers: Record<string, string> = {
      etag,
      'cache-control': image.privacy_level === 'public' ? 'public, max-age=3600' : 'private, max-age=3600',
      'x-content-type-options': 'nosniff',
      // format=auto answers by the Accept header.
      vary: query.format === 'auto' ? 'Authorization, Accept' : 'Authorization',
    };
    const inm = c.req.header('if-none-match');
    if (inm && inm.split(',').some((t) => t.trim() === etag || t.trim() === '*')) {
      deps.metrics.imageFiles.inc({ outcome: 'not_modified' });
      return c.body(null, 304, headers);
    }
    const key = variantKey(sha, spec);
    // The standard thumbnails ingest stored are the image's own, not cache: never tracked or evicted.
    const tracked = deps.cache && !Object.values(image.thumbnail_paths ?? {}).includes(key) ? deps.cache : undefined;
    const type = FORMAT_MIME[spec.format];
    const respond = (bytes: Uint8Array, outcome: 'cached' | 'resized') => {
      deps.metrics.imageFiles.inc({ outcome });
      return c.body(bytes as Uint8Array<ArrayBuffer>, 200, { ...headers, 'content-type': type, 'content-length': String(bytes.byteLength) });
    };
    if (deps.cacheVariants) {
      const remembered = memory.get(key);
      if (remembered) {
        // Served from memory, but in use: keep the stored copy from eviction for the other nodes.
        tracked?.hit(key, remembered.byteLength);
        return respond(remembered, 'cached');
      }
      const cached = await deps.blobs.head(key);
      if (cached) {
        try {
          const stream = await deps.blobs.get(key);
          tracked?.hit(key, cached.size);
          if (memory.fits(cached.size)) {
            const bytes = new Uint8Array(await readAll(stream, cached.size));
            memory.set(key, bytes);
            return respond(bytes, 'cached');
          }
          deps.metrics.imageFiles.inc({ outcome: 'cached' });
          return c.body(Readable.toWeb(stream) as ReadableStream, 200, { ...headers, 'content-type': type, 'content-length': String(cached.size) });
        } catch (error) {
          if (!(error instanceof BlobNotFound)) throw error; // evicted or deleted meanwhile: make it again
        }
      }
    }
    let making = inFlight.get(key);
    if (!making) {
      making = (async () => {
        const outcome = await deps.queue.run(async () => {
          const started = performance.now();
          const original = await originalInput(deps, image);
          const bytes = await renderVariant(original, spec, deps.limits).catch((error: unknown) => {
            throw new AppError('image_corrupt', `The stored image could not be resized (${(error as Error).message.slice(0, 120)}).`);
          });
          deps.metrics.resizeSeconds.observe((performance.now() - started) / 1000);
          return bytes;
        });
        if (!outcome) throw new AppError('image_busy');
        if (deps.cacheVariants) {
          // Stored after answering; a failure only costs a resize next time.
          memory.set(key, new Uint8Array(outcome.value));
          void deps.blobs.put(key, outcome.value, type).then(
            (info) => tracked?.stored(key, info.size),
            (error: unknown) => deps.logger.warn({ err: error, key }, 'could not cache a variant'),
          );
        }
        return outcome.value;
      })().finally(() => inFlight.delete(key));
      inFlight.set(key, making);
    }
    return respond(new Uint8Array(await making), 'resized');
  });
}

/**
 * The stored original as sharp's input: the file itself on the local store (libvips reads it:
 * streaming 0.7 MB into a Buffer per request measured ≈ 2× the CPU of the resize on this loaded
 * machine, mostly garbage collection of the big heap it triggered), else the bytes.
 */
async function originalInput(deps: ImageRouteDeps, image: Pick<ImageRecord, 'storage_path'>): Promise<Buffer | string> {
  if (deps.blobs.filePath && isBlobKey(image.storage_path)) {
    try {
      return await deps.blobs.filePath(image.storage_path);
    } catch (error) {
      if (error instanceof BlobNotFound) throw new AppError('image_file_missing');
      throw error;
    }
  }
  return readAll(await originalOf(deps, image), deps.maxUploadBytes);
}

/** The stored original; rows made without ingest (fixtures, the demo image) have none. */
async function originalOf(deps: ImageRouteDeps, image: Pick<ImageRecord, 'storage_path'>): Promise<Readable> {
  if (!isBlobKey(image.storage_path)) throw new AppError('image_file_missing');
  try {
    return await deps.blobs.get(image.storage_path);
  } catch (error) {
    if (error instanceof BlobNotFound) throw new AppError('image_file_missing');
    throw error;
  }
}

/**
 * The image as `userId` may read it: images they may see (images_view_policy), or — with
 * `?session=<id>` — an image the session's owner may see, for a member (owner or participant) of
 * that session. A canvas may only name images its session's owner may see (server/image-access.ts),
 * and its members are shown them in every render of it, so the page drawing the same canvas may
 * fetch them too; the ids come from the canvas (unguessable otherwise).
 *
 * Both reads go through the access cache: a cached variant is otherwise served without touching
 * the database, and the query per request was most of its cost (bench, section images: 2.0–2.3
 * thousand requests a second with it, 5.8–6.5 without, 16 in flight). Every change that could hide
 * an image is announced to every node (migration 010) and drops what it names.
 */
async function readableImage(deps: ImageRouteDeps, imageId: string, userId: string, sessionId: string | undefined): Promise<VisibleImage | undefined> {
  const own = await deps.imageAccess.visibleImage(imageId, userId);
  if (own || sessionId === undefined || !isId(sessionId)) return own;
  const access = await deps.sessionAccess.sessionAccess(sessionId, userId);
  if (!access || (access.owner_id !== userId && !access.is_participant)) return undefined;
  return deps.imageAccess.visibleImage(imageId, access.owner_id);
}

async function readAll(stream: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      stream.destroy();
      throw new AppError('image_too_large');
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
