/**
 * Rendering a canvas for a reader, cached in blob storage. Used by the render worker (thumbnails
 * of every new version) and by the on-demand routes (server/http/renders.ts).
 *
 * Rules:
 * - **Which images a render shows.** An image layer shows its original only when the canvas's
 *   owner (the session's owner; for a version without a session, the image's owner) may see that
 *   image (images_view_policy). The ImageSource handed to the renderer answers only for those: a
 *   canvas naming another user's private image renders without it, and its bytes are never read.
 * - **The cache key** is the sha-256 of (the canvas JSON, the render parameters, and for each image
 *   the render may show its id and blob key), so the same canvas at the same size is rendered once
 *   and served from the blob store after; an image becoming invisible changes the key. The key is
 *   also the strong ETag.
 * - **The cache is bounded** (server/render-cache.ts, RENDER_CACHE_MAX_BYTES): a store is recorded,
 *   a hit bumps its last use, and the least recently used are evicted, possibly by another node at
 *   any moment. So the blob store, never the row, says what is cached: a render found by `head` and
 *   gone at `get` is rendered again under the same key and ETag (`body`), not an error.
 * - Renders run in the renderer's worker-thread pool (renderer/pool.ts), never on the event loop
 *   that serves WebSockets: bounded in threads, in renders waiting (`render_busy`, 503) and in time
 *   (`RENDER_TIMEOUT_MS`; the thread is stopped, `render_timeout`, 503).
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { AppError } from '../shared/errors.ts';
import { parseCanvas, type Canvas } from '../shared/canvas.ts';
import type { Queryable } from '../persistence/db.ts';
import { visibleImages } from '../persistence/repositories/renders.ts';
import { BlobNotFound, isBlobKey, blobKey, type BlobKey, type BlobStore } from '../storage/blob-store.ts';
import type { ImageSource, OutputFormat, RenderCanvas, RenderOptions } from '../renderer/types.ts';
import type { RenderCache } from './render-cache.ts';

export const outputFormats = ['png', 'webp', 'jpeg', 'avif'] as const satisfies readonly OutputFormat[];

const dimension = z.coerce.number().int().min(1).max(8192);

/** The query parameters of the render routes (strings in a URL, hence coerced). */
export const renderParamsSchema = z.strictObject({
  width: dimension.optional(),
  height: dimension.optional(),
  fit: z.enum(['contain', 'cover', 'fill', 'inside', 'outside']).optional(),
  dpr: z.coerce.number().min(1).max(4).optional(),
  // AVIF encodes at ~2 per second here (docs/STACK-NOTES.md): too slow to serve live; thumbnails only.
  format: z.enum(['png', 'webp', 'jpeg']).default('webp'),
  quality: z.coerce.number().int().min(1).max(100).optional(),
});
export type RenderParams = z.infer<typeof renderParamsSchema>;

/**
 * A thumbnail of `size` px is the render of the box it fits in, as WebP: the same parameters the
 * render route takes, so a thumbnail URL is a render URL served from the cache the worker filled.
 */
export const thumbnailParams = (size: number): RenderParams => ({ width: size, height: size, fit: 'inside', format: 'webp' });

/** Parses route query parameters (signature parameters excluded); throws 400 `invalid_render_options`. */
export function parseRenderParams(query: Record<string, string>): RenderParams {
  const parsed = renderParamsSchema.safeParse(query);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new AppError('invalid_render_options', `${issue.path.join('.') || 'query'}: ${issue.message}`);
  }
  return parsed.data;
}

/** Parameters in a fixed key order with absent ones dropped: one spelling per render. */
export function canonicalParams(params: RenderParams): RenderParams {
  const out: Record<string, unknown> = {};
  for (const key of ['width', 'height', 'fit', 'dpr', 'format', 'quality'] as const) {
    if (params[key] !== undefined) out[key] = params[key];
  }
  return out as RenderParams;
}

/** JSON with object keys sorted at every depth, so equal canvases hash equally whatever their key order. */
export function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The ids of the images a canvas's image layers show. */
export function imageIdsOf(canvas: Canvas): string[] {
  const ids = new Set<string>();
  for (const layer of Object.values(canvas.layers)) if (layer.type === 'image') ids.add(layer.data.imageId);
  return [...ids].sort();
}

/** The render cache key: `renders/<sha-256 of canvas, parameters, visible images>.<format>`. */
export function renderKey(canvas: Canvas, params: RenderParams, images: ReadonlyMap<string, string>): BlobKey {
  const hash = createHash('sha256')
    .update(stableJson({ v: 1, canvas, params: canonicalParams(params), images: [...images].sort(([a], [b]) => (a < b ? -1 : 1)) }))
    .digest('hex');
  return blobKey(`renders/${hash}.${params.format}`);
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export interface RenderedBlob {
  key: BlobKey;
  /** Strong ETag (quoted): the content hash of what was rendered. */
  etag: string;
  contentType: string;
  size: number;
  /** False when this call rendered it, true when it came from the blob store. */
  cached: boolean;
  /** The bytes, when this call rendered them (served as they are, not read back from the store). */
  data?: Buffer;
}

export interface RenderServiceOptions {
  db: Queryable;
  blobs: BlobStore;
  /** The renderer's pool (renderer/pool.ts): off the main thread, bounded in time and concurrency. */
  render: RenderCanvas;
  onRender?: (outcome: 'rendered' | 'cached' | 'failed' | 'timeout', seconds: number) => void;
  /** The cache's accounting and bound (server/render-cache.ts); absent: cached forever, untracked. */
  cache?: RenderCache;
}

export class RenderService {
  readonly #o: RenderServiceOptions;

  constructor(options: RenderServiceOptions) {
    this.#o = options;
  }

  /** The images of `canvas` that `viewerId` may see: id → blob key of the original. */
  async allowedImages(canvas: Canvas, viewerId: string): Promise<Map<string, string>> {
    const rows = await visibleImages(this.#o.db, imageIdsOf(canvas), viewerId);
    return new Map(rows.map((r) => [r.image_id, r.storage_path]));
  }

  /** An ImageSource that answers only for `allowed` images (see the rules above). */
  imageSource(allowed: ReadonlyMap<string, string>): ImageSource {
    return async (imageId) => {
      const path = allowed.get(imageId);
      if (path === undefined || !isBlobKey(path)) return undefined;
      try {
        // A local store's file is read by the renderer in its own thread (renderer/types.ts
        // ImageFile): the original's bytes never pass through this event loop's heap.
        const blobs = this.#o.blobs;
        if (blobs.filePath) return { file: await blobs.filePath(path) };
        return await readAll(await blobs.get(path));
      } catch (error) {
        if (error instanceof BlobNotFound) return undefined;
        throw error;
      }
    };
  }

  /**
   * The bytes of `rendered` (from `renderCached` with the same arguments): those it rendered, else
   * the stored blob, else — the blob vanished since it was found (evicted by another node, deleted
   * by hand) — rendered again, with the same key and ETag.
   */
  async body(rendered: RenderedBlob, canvasValue: unknown, viewerId: string, params: RenderParams): Promise<Readable | Buffer> {
    if (rendered.data) return rendered.data;
    try {
      return await this.#o.blobs.get(rendered.key);
    } catch (error) {
      if (!(error instanceof BlobNotFound)) throw error;
    }
    return (await this.renderCached(canvasValue, viewerId, params, { refresh: true })).data!;
  }

  /**
   * Renders `canvas` for its owner `viewerId` with `params`, or finds the render in the blob store.
   * `refresh`: render without looking (the caller found the blob missing).
   */
  async renderCached(canvasValue: unknown, viewerId: string, params: RenderParams, options: { refresh?: boolean } = {}): Promise<RenderedBlob> {
    const parsed = parseCanvas(canvasValue);
    if (!parsed.ok) throw new AppError('invalid_canvas', 'The canvas to render does not match the schema.');
    const canvas = parsed.canvas;
    const allowed = await this.allowedImages(canvas, viewerId);
    const key = renderKey(canvas, params, allowed);
    const etag = `"${key.slice('renders/'.length, key.lastIndexOf('.'))}"`;
    const started = performance.now();
    const existing = options.refresh ? undefined : await this.#o.blobs.head(key);
    if (existing) {
      this.#o.cache?.hit(key, existing.size);
      this.#o.onRender?.('cached', (performance.now() - started) / 1000);
      return { key, etag, contentType: existing.contentType, size: existing.size, cached: true };
    }
    let result;
    try {
      result = await this.#o.render(canvas, this.imageSource(allowed), toOptions(params));
    } catch (error) {
      const timeout = error instanceof AppError && error.code === 'render_timeout';
      this.#o.onRender?.(timeout ? 'timeout' : 'failed', (performance.now() - started) / 1000);
      throw error;
    }
    this.#o.onRender?.('rendered', (performance.now() - started) / 1000);
    await this.#o.blobs.put(key, result.data, result.contentType);
    this.#o.cache?.stored(key, result.data.length);
    return { key, etag, contentType: result.contentType, size: result.data.length, cached: false, data: result.data };
  }
}

export function toOptions(params: RenderParams): RenderOptions {
  return {
    ...(params.width !== undefined ? { width: params.width } : {}),
    ...(params.height !== undefined ? { height: params.height } : {}),
    ...(params.fit !== undefined ? { fit: params.fit } : {}),
    ...(params.dpr !== undefined ? { dpr: params.dpr } : {}),
    format: params.format,
    ...(params.quality !== undefined ? { quality: params.quality } : {}),
  };
}
