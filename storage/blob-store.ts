/**
 * Blob storage: where image bytes, thumbnails and cached renders live (never PostgreSQL; seed
 * 001). One small interface with two implementations: local files under DATA_DIR (the embedded
 * default) and S3-compatible object storage. Keys are content-addressed (sha-256 of the bytes)
 * and validated (no path escapes); bodies are streamed, never held whole in memory.
 *
 * The contract every implementation passes: test/blob-store.test.ts (one suite, both stores).
 */
import type { Readable } from 'node:stream';

/** A validated object key: `[a-z0-9/._-]`, no `..`, no leading `/`. */
export type BlobKey = string & { readonly __brand: 'BlobKey' };

export interface BlobInfo {
  readonly key: BlobKey;
  readonly size: number;
  readonly contentType: string;
  /** sha-256 of the bytes, hex. */
  readonly sha256: string;
}

export interface ByteRange {
  /** First byte, inclusive. */
  readonly start: number;
  /** Last byte, inclusive; absent = to the end. */
  readonly end?: number;
}

export interface BlobStore {
  readonly kind: 'local' | 's3';
  /** Streams `body` in; the key is derived from the bytes' sha-256 under `prefix` (e.g. `originals/`). */
  putStream(prefix: string, body: Readable, contentType: string): Promise<BlobInfo>;
  /** Stores under an exact key (derived by the caller from a content hash, e.g. a render cache key). */
  put(key: BlobKey, body: Uint8Array | Readable, contentType: string): Promise<BlobInfo>;
  /** A stream of the bytes (or of a range of them); throws `BlobNotFound` when absent. */
  get(key: BlobKey, range?: ByteRange): Promise<Readable>;
  /** Size and type, or undefined when absent. */
  head(key: BlobKey): Promise<{ size: number; contentType: string } | undefined>;
  delete(key: BlobKey): Promise<void>;
  close(): Promise<void>;
}

export class BlobNotFound extends Error {
  override name = 'BlobNotFound';
}
