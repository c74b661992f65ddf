/**
 * The local blob store: files under `<DATA_DIR>/blobs`. Bytes go to `data/<key>`, the content
 * type to `meta/<key>`; a write streams into `tmp/` while hashing and is renamed into place, so a
 * reader never sees half an object and a failed write leaves nothing behind. Keys are validated
 * (storage/blob-store.ts) and the resolved path is checked to stay under the root as well.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  BlobKeyInvalid,
  BlobNotFound,
  BlobRangeInvalid,
  Hashing,
  blobKey,
  sha256Hex,
  checkPrefix,
  type BlobInfo,
  type BlobKey,
  type BlobStore,
  type ByteRange,
} from './blob-store.ts';

const isMissing = (error: unknown) => {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
};

export class LocalBlobStore implements BlobStore {
  readonly kind = 'local' as const;
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  #path(tree: 'data' | 'meta', key: BlobKey): string {
    const base = join(this.root, tree);
    const path = resolve(base, blobKey(key));
    if (!path.startsWith(base + sep)) throw new BlobKeyInvalid(`blob key escapes the store: ${key}`);
    return path;
  }

  /**
   * Directories this store made or found (`mkdir -p` once each, not on every write: it was a
   * third of a small write's cost). A directory removed behind the store's back is made again when
   * a write or rename into it fails (`#inDir`).
   */
  readonly #dirs = new Set<string>();

  async #dir(path: string): Promise<void> {
    if (this.#dirs.has(path)) return;
    await mkdir(path, { recursive: true });
    if (this.#dirs.size >= 10_000) this.#dirs.clear();
    this.#dirs.add(path);
  }

  /**
   * Into a temporary file, hashing; returns its path, size and digest. Bytes already in memory
   * (variants, renders) are hashed and written in one call each; a stream is piped.
   */
  async #spool(body: Uint8Array | Readable): Promise<{ tmp: string; size: number; sha256: string }> {
    const dir = join(this.root, 'tmp');
    const tmp = join(dir, randomBytes(12).toString('hex'));
    try {
      if (body instanceof Uint8Array) {
        await this.#inDir(dir, () => writeFile(tmp, body, { flag: 'wx' }));
        return { tmp, size: body.byteLength, sha256: sha256Hex(body) };
      }
      // A stream cannot be written twice: its directory is made every time (uploads are few).
      await mkdir(dir, { recursive: true });
      const hashing = new Hashing();
      await pipeline(body, hashing, createWriteStream(tmp, { flags: 'wx' }));
      return { tmp, size: hashing.byteCount, sha256: hashing.sha256 };
    } catch (error) {
      await rm(tmp, { force: true });
      throw error;
    }
  }

  async #commit(tmp: string, key: BlobKey, contentType: string): Promise<void> {
    const metaTmp = `${tmp}.meta`;
    try {
      const data = this.#path('data', key);
      const meta = this.#path('meta', key);
      await writeFile(metaTmp, contentType);
      await this.#inDir(dirname(meta), () => rename(metaTmp, meta));
      await this.#inDir(dirname(data), () => rename(tmp, data));
    } catch (error) {
      await rm(tmp, { force: true });
      await rm(metaTmp, { force: true });
      throw error;
    }
  }

  /**
   * `write` into `dir`, which is made first unless known; if it vanished behind the store's back
   * (the write fails with ENOENT), it is made again and the write retried once.
   */
  async #inDir(dir: string, write: () => Promise<void>): Promise<void> {
    await this.#dir(dir);
    try {
      await write();
    } catch (error) {
      if (!isMissing(error)) throw error;
      this.#dirs.delete(dir);
      await this.#dir(dir);
      await write();
    }
  }


  async putStream(prefix: string, body: Readable, contentType: string): Promise<BlobInfo> {
    checkPrefix(prefix);
    const { tmp, size, sha256 } = await this.#spool(body);
    const key = blobKey(`${prefix}${sha256}`);
    await this.#commit(tmp, key, contentType);
    return { key, size, sha256, contentType };
  }

  async put(key: BlobKey, body: Uint8Array | Readable, contentType: string): Promise<BlobInfo> {
    blobKey(key);
    const { tmp, size, sha256 } = await this.#spool(body);
    await this.#commit(tmp, key, contentType);
    return { key, size, sha256, contentType };
  }

  async get(key: BlobKey, range?: ByteRange): Promise<Readable> {
    let handle;
    try {
      handle = await open(this.#path('data', key), 'r');
    } catch (error) {
      if (isMissing(error)) throw new BlobNotFound(`no blob ${key}`);
      throw error;
    }
    try {
      if (!range) return handle.createReadStream();
      const { size } = await handle.stat();
      const { start, end } = clampRange(range, size);
      return handle.createReadStream({ start, end });
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  async filePath(key: BlobKey): Promise<string> {
    const path = this.#path('data', key);
    try {
      await stat(path);
    } catch (error) {
      if (isMissing(error)) throw new BlobNotFound(`no blob ${key}`);
      throw error;
    }
    return path;
  }

  async head(key: BlobKey): Promise<{ size: number; contentType: string } | undefined> {
    try {
      const { size } = await stat(this.#path('data', key));
      const contentType = await readFile(this.#path('meta', key), 'utf8').catch(() => 'application/octet-stream');
      return { size, contentType };
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  async delete(key: BlobKey): Promise<void> {
    await rm(this.#path('data', key), { force: true });
    await rm(this.#path('meta', key), { force: true });
  }

  async close(): Promise<void> {}
}

/** HTTP semantics: `end` past the object is clamped; a start past it (or after `end`) is invalid. */
export function clampRange(range: ByteRange, size: number): { start: number; end: number } {
  const { start } = range;
  const end = Math.min(range.end ?? size - 1, size - 1);
  if (!Number.isSafeInteger(start) || start < 0 || start >= size || (range.end !== undefined && range.end < start)) {
    throw new BlobRangeInvalid(`range ${start}-${range.end ?? ''} is outside an object of ${size} bytes`);
  }
  return { start, end };
}
