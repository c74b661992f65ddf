/**
 * Blob storage: where image bytes, thumbnails and cached renders live (never PostgreSQL; seed
 * 001). One small interface with two implementations: local files under DATA_DIR (the embedded
 * default, storage/local.ts) and S3-compatible object storage (storage/s3.ts). Keys are
 * content-addressed (sha-256 of the bytes) and validated (no path escapes); bodies are streamed,
 * never held whole in memory.
 *
 * The contract every implementation passes: test/blob-store.test.ts (one suite, both stores).
 */
import { createHash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';

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

export interface PresignedPut {
  readonly url: string;
  readonly method: 'PUT';
  /** Headers the client must send with the PUT (they are part of the signature). */
  readonly headers: Record<string, string>;
}

export interface BlobStore {
  readonly kind: 'local' | 's3';
  /**
   * Streams `body` in; the key is `<prefix><sha256>` (prefix e.g. `originals/`, ending in `/`).
   * The same bytes twice give the same key and one stored object. If `body` errors, nothing is
   * stored and the error is rethrown.
   */
  putStream(prefix: string, body: Readable, contentType: string): Promise<BlobInfo>;
  /** Stores under an exact key (derived by the caller from a content hash, e.g. a render cache key). */
  put(key: BlobKey, body: Uint8Array | Readable, contentType: string): Promise<BlobInfo>;
  /** A stream of the bytes (or of a range of them); throws `BlobNotFound` when absent, `BlobRangeInvalid` for a range outside the object. */
  get(key: BlobKey, range?: ByteRange): Promise<Readable>;
  /** Size and type, or undefined when absent. */
  head(key: BlobKey): Promise<{ size: number; contentType: string } | undefined>;
  /** Removes the object; absent is not an error. */
  delete(key: BlobKey): Promise<void>;
  /**
   * Only object stores: a URL the client PUTs `contentLength` bytes to directly, valid for
   * `expiresInSeconds` (the direct upload path of seed 001). Undefined for the local store (the
   * server's own upload route stands in).
   */
  presignPut?(key: BlobKey, options: { contentType: string; contentLength: number; expiresInSeconds: number }): Promise<PresignedPut>;
  /**
   * Only stores on this machine's disk: the file holding the object, for a reader that opens it
   * itself (libvips decoding an original reads the file directly, instead of the bytes being
   * streamed into a Buffer first). Throws `BlobNotFound` when absent.
   */
  filePath?(key: BlobKey): Promise<string>;
  close(): Promise<void>;
}

export class BlobNotFound extends Error {
  override name = 'BlobNotFound';
}

export class BlobRangeInvalid extends Error {
  override name = 'BlobRangeInvalid';
}

export class BlobKeyInvalid extends Error {
  override name = 'BlobKeyInvalid';
}

const KEY_PATTERN = /^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*)*$/;

/** Validates a key: lowercase `[a-z0-9._-]` segments joined by `/`, no empty, `.` or `..` segment, at most 512 characters. */
export function blobKey(value: string): BlobKey {
  if (value.length > 512 || !KEY_PATTERN.test(value) || value.split('/').some((s) => s === '.' || s === '..' || s.includes('..'))) {
    throw new BlobKeyInvalid(`invalid blob key: ${JSON.stringify(value.slice(0, 80))}`);
  }
  return value as BlobKey;
}

export function isBlobKey(value: string): value is BlobKey {
  try {
    blobKey(value);
    return true;
  } catch {
    return false;
  }
}

/** Checks a key prefix for putStream: empty, or key segments ending in `/`. */
export function checkPrefix(prefix: string): string {
  if (prefix !== '' && (!prefix.endsWith('/') || !isBlobKey(prefix.slice(0, -1)))) {
    throw new BlobKeyInvalid(`invalid blob key prefix: ${JSON.stringify(prefix.slice(0, 80))}`);
  }
  return prefix;
}

/** A pass-through stream that hashes and counts what flows through it. */
export class Hashing extends Transform {
  readonly #hash = createHash('sha256');
  // Not `size`: lib-storage reads `Body.size` as the body's total length.
  byteCount = 0;
  #digest: string | undefined;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash.update(chunk);
    this.byteCount += chunk.length;
    callback(null, chunk);
  }

  /** The hex sha-256; only after the stream ended. */
  get sha256(): string {
    return (this.#digest ??= this.#hash.digest('hex'));
  }
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
