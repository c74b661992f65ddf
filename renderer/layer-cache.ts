/**
 * Rasterised layers of recent renders, kept by content (per thread: each render worker has its
 * own). A layer's raster — decoded, cropped, resampled and placed, or drawn by librsvg/Pango, then
 * filtered and cut to the content box — is a pure function of the layer's type, data and filters,
 * its matrix in the output frame, the box it is cut to and, for an image layer, the original's
 * bytes. The key is the sha-256 of exactly those (the bytes by their own sha-256), so a hit is the
 * same pixels a fresh rasterisation would give, and an image whose bytes the caller's ImageSource
 * does not return this time (access withdrawn, image missing) is never looked up.
 *
 * What it pays for: successive renders of one canvas at one size — the thumbnails of a session's
 * versions, the live canvas re-rendered after each edit, the bench — re-rasterise only the layers
 * that changed. Renders at a new size miss (another matrix). Bounded in bytes (LRU); values are
 * never written to once stored (the compositor reads them, opacity is applied while blending).
 */
import { createHash } from 'node:crypto';
import { ByteLru } from '../media/lru.ts';
import type { Raster } from './raster.ts';

/** Default bound per thread: a 1080p frame-sized raster is 8.3 MB. */
export const DEFAULT_LAYER_CACHE_BYTES = 64 * 1024 * 1024;

interface Entry {
  readonly raster: Raster | undefined;
  readonly byteLength: number;
}

let cache = new ByteLru<Entry>(DEFAULT_LAYER_CACHE_BYTES, DEFAULT_LAYER_CACHE_BYTES / 4);

/** Sets this thread's bound (0 turns the cache off); drops what was kept. */
export function setLayerCacheBytes(maxBytes: number): void {
  cache = new ByteLru<Entry>(maxBytes, maxBytes / 4);
}

export function layerCacheStats(): { entries: number; bytes: number } {
  return { entries: cache.size, bytes: cache.bytes };
}

/** The key of a layer's raster: a hash of everything the raster depends on. */
export function layerKey(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('base64url');
}

export function bytesHash(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('base64url');
}

/** A kept raster; `undefined` inside a hit means "nothing of the layer is visible". */
export function cachedLayer(key: string): { raster: Raster | undefined } | undefined {
  return cache.get(key);
}

export function keepLayer(key: string, raster: Raster | undefined): void {
  // An empty result is kept too (64 bytes of bookkeeping): it skipped a decode.
  cache.set(key, { raster, byteLength: (raster?.data.byteLength ?? 0) + 64 });
}
