/**
 * The BlobStore contract, one suite run against both implementations: the local store (files
 * under a temporary DATA_DIR) and the S3 store against a real S3-compatible server (s3rver,
 * started here on a free port). Streamed writes, content addressing, ranges, absence, key
 * validation, failed streams leaving nothing behind, and (S3) presigned direct uploads.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobKeyInvalid, BlobNotFound, BlobRangeInvalid, blobKey, type BlobStore } from '../storage/blob-store.ts';
import { LocalBlobStore } from '../storage/local.ts';
import { S3BlobStore } from '../storage/s3.ts';
import { startS3 } from './support/s3.ts';
import { tempDir } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A stream of `bytes` in uneven chunks, produced on demand (never one buffer). */
function chunked(bytes: Buffer, chunk = 65_537): Readable {
  let offset = 0;
  return new Readable({
    read() {
      if (offset >= bytes.length) return void this.push(null);
      this.push(bytes.subarray(offset, offset + chunk));
      offset += chunk;
    },
  });
}

/** A stream that yields some bytes, then fails. */
function failing(after: number): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= after) return void this.destroy(new Error('client went away'));
      this.push(randomBytes(16_384));
      sent += 16_384;
    },
  });
}

interface Harness {
  store: BlobStore;
  /** Every key stored (for S3 a listing; locally the data tree), and leftover temporary files. */
  keys(): Promise<string[]>;
  temporaries(): Promise<string[]>;
}

function walk(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`],
  );
}

const harnesses: Record<'local' | 's3', () => Promise<Harness>> = {
  local: async () => {
    const root = join(tempDir(register, 'blobs-'), 'blobs');
    const store = new LocalBlobStore(root);
    register(() => store.close());
    return { store, keys: async () => walk(join(root, 'data')), temporaries: async () => walk(join(root, 'tmp')) };
  },
  s3: async () => {
    const s3 = await startS3(register);
    // 5 MiB parts (S3's minimum), so the large object below goes up in several parts.
    const store = new S3BlobStore({ ...s3, forcePathStyle: true, partSize: 5 * 1024 * 1024 });
    register(() => store.close());
    const keys = async () => {
      const out = await store.client.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
      return (out.Contents ?? []).map((o) => o.Key!);
    };
    return { store, keys: async () => (await keys()).filter((k) => !k.startsWith('tmp/')), temporaries: async () => (await keys()).filter((k) => k.startsWith('tmp/')) };
  },
};

describe.each(['local', 's3'] as const)('BlobStore contract: %s', (kind) => {
  let h: Harness;
  beforeAll(async () => {
    h = await harnesses[kind]();
  });

  it('streams bytes in under their sha-256 and gives back exactly them (300,000 bytes: the aws-chunked corruption case)', async () => {
    const bytes = randomBytes(300_000);
    const info = await h.store.putStream('originals/', chunked(bytes), 'image/jpeg');
    expect(info).toEqual({ key: `originals/${sha(bytes)}`, size: 300_000, sha256: sha(bytes), contentType: 'image/jpeg' });
    const back = await buffer(await h.store.get(info.key));
    expect(back.length).toBe(300_000);
    expect(sha(back)).toBe(sha(bytes));
    expect(await h.store.head(info.key)).toEqual({ size: 300_000, contentType: 'image/jpeg' });
  });

  it('streams a large object (11 MiB: several multipart parts on S3) unchanged', async () => {
    const bytes = randomBytes(11 * 1024 * 1024 + 17);
    const info = await h.store.putStream('big/', chunked(bytes, 256 * 1024), 'application/octet-stream');
    expect(info.size).toBe(bytes.length);
    expect(sha(await buffer(await h.store.get(info.key)))).toBe(sha(bytes));
  });

  it('stores the same bytes twice under one key, also when both writes run at once', async () => {
    const bytes = randomBytes(50_000);
    const [a, b] = await Promise.all([
      h.store.putStream('dup/', chunked(bytes), 'image/png'),
      h.store.putStream('dup/', chunked(bytes), 'image/png'),
    ]);
    expect(a.key).toBe(b.key);
    const c = await h.store.putStream('dup/', chunked(bytes), 'image/png');
    expect(c.key).toBe(a.key);
    expect((await h.keys()).filter((k) => k.startsWith('dup/'))).toHaveLength(1);
    expect(await h.temporaries()).toEqual([]);
  });

  it('puts under an exact key from bytes or a stream, and overwrites', async () => {
    const key = blobKey('renders/ab/cache-key-1.png');
    const first = randomBytes(1_000);
    expect(await h.store.put(key, first, 'image/png')).toMatchObject({ key, size: 1_000, sha256: sha(first) });
    expect(sha(await buffer(await h.store.get(key)))).toBe(sha(first));
    const second = randomBytes(70_000);
    expect(await h.store.put(key, chunked(second), 'image/webp')).toMatchObject({ size: 70_000, sha256: sha(second), contentType: 'image/webp' });
    expect(sha(await buffer(await h.store.get(key)))).toBe(sha(second));
    expect(await h.store.head(key)).toEqual({ size: 70_000, contentType: 'image/webp' });
  });

  it('reads ranges: closed, open-ended, clamped past the end; refuses a start past the end', async () => {
    const bytes = randomBytes(10_000);
    const { key } = await h.store.putStream('ranges/', chunked(bytes), 'image/jpeg');
    expect(await buffer(await h.store.get(key, { start: 100, end: 199 }))).toEqual(bytes.subarray(100, 200));
    expect(await buffer(await h.store.get(key, { start: 9_990 }))).toEqual(bytes.subarray(9_990));
    expect(await buffer(await h.store.get(key, { start: 0, end: 0 }))).toEqual(bytes.subarray(0, 1));
    expect(await buffer(await h.store.get(key, { start: 9_000, end: 20_000 }))).toEqual(bytes.subarray(9_000));
    await expect(h.store.get(key, { start: 10_000 })).rejects.toBeInstanceOf(BlobRangeInvalid);
    await expect(h.store.get(key, { start: 50, end: 10 })).rejects.toBeInstanceOf(BlobRangeInvalid);
  });

  it('reports absence: get throws BlobNotFound, head is undefined, delete is idempotent', async () => {
    const key = blobKey('originals/0000000000000000000000000000000000000000000000000000000000000000');
    await expect(h.store.get(key)).rejects.toBeInstanceOf(BlobNotFound);
    await expect(h.store.get(key, { start: 0, end: 9 })).rejects.toBeInstanceOf(BlobNotFound);
    expect(await h.store.head(key)).toBeUndefined();
    await h.store.delete(key);
    const { key: stored } = await h.store.putStream('gone/', chunked(randomBytes(100)), 'image/png');
    await h.store.delete(stored);
    expect(await h.store.head(stored)).toBeUndefined();
    await expect(h.store.get(stored)).rejects.toBeInstanceOf(BlobNotFound);
  });

  it('refuses keys that could escape or are not canonical', async () => {
    for (const bad of ['../etc/passwd', '/abs', 'a//b', 'a/../b', 'a/./b', 'A/b', 'a/b/', '', 'a\\b', 'a/b\0', '..', 'a/..b', `${'a'.repeat(513)}`]) {
      expect(() => blobKey(bad), bad).toThrow(BlobKeyInvalid);
      await expect(h.store.put(bad as never, new Uint8Array(1), 'x/y'), bad).rejects.toBeInstanceOf(BlobKeyInvalid);
      await expect(h.store.get(bad as never), bad).rejects.toBeInstanceOf(BlobKeyInvalid);
    }
    await expect(h.store.putStream('../', chunked(randomBytes(10)), 'x/y')).rejects.toBeInstanceOf(BlobKeyInvalid);
    await expect(h.store.putStream('nope', chunked(randomBytes(10)), 'x/y')).rejects.toBeInstanceOf(BlobKeyInvalid);
  });

  it('stores nothing when the source stream fails midway (small and multipart)', async () => {
    const before = await h.keys();
    await expect(h.store.putStream('failed/', failing(100_000), 'image/jpeg')).rejects.toThrow('client went away');
    await expect(h.store.putStream('failed/', failing(12 * 1024 * 1024), 'image/jpeg')).rejects.toThrow('client went away');
    await expect(h.store.put(blobKey('failed/exact'), failing(50_000), 'image/jpeg')).rejects.toThrow('client went away');
    expect(await h.keys()).toEqual(before);
    expect(await h.temporaries()).toEqual([]);
  });

  it('names the file of an object only where it is on this disk (local: its bytes; S3: no such method)', async () => {
    if (kind === 's3') {
      expect(h.store.filePath).toBeUndefined();
      return;
    }
    const bytes = randomBytes(70_000);
    const { key } = await h.store.putStream('originals/', chunked(bytes), 'image/jpeg');
    const path = await h.store.filePath!(key);
    expect(sha(readFileSync(path))).toBe(sha(bytes));
    await expect(h.store.filePath!(blobKey('originals/absent'))).rejects.toBeInstanceOf(BlobNotFound);
    await expect(h.store.filePath!('../etc/passwd' as never)).rejects.toBeInstanceOf(BlobKeyInvalid);
  });

  it.runIf(kind === 'local')('writes into a directory removed behind its back (it remembers the directories it made)', async () => {
    const root = join(tempDir(register, 'blobs-'), 'blobs');
    const store = new LocalBlobStore(root);
    const first = await store.put(blobKey('renders/ab/one.webp'), randomBytes(1_000), 'image/webp');
    rmSync(join(root, 'data', 'renders'), { recursive: true, force: true });
    rmSync(join(root, 'meta', 'renders'), { recursive: true, force: true });
    rmSync(join(root, 'tmp'), { recursive: true, force: true });
    const bytes = randomBytes(2_000);
    await store.put(blobKey('renders/ab/two.webp'), bytes, 'image/webp'); // tmp/, data/renders/ab and meta/renders/ab made again
    await store.putStream('renders/', chunked(bytes), 'image/webp');
    expect(sha(await buffer(await store.get(blobKey('renders/ab/two.webp'))))).toBe(sha(bytes));
    expect(await store.head(blobKey('renders/ab/two.webp'))).toEqual({ size: 2_000, contentType: 'image/webp' });
    await expect(store.get(first.key)).rejects.toBeInstanceOf(BlobNotFound);
  });

  // (Whether the store refuses a body longer than the signed content-length, or a URL whose path was
  // changed, is the store's business: S3 does, s3rver does not check presigned signatures that
  // closely; ingest compares the stored size with the announced one.)
  it.runIf(kind === 's3')('presigns a direct PUT that stores exactly the bytes sent', async () => {
    const store = h.store as S3BlobStore;
    const key = blobKey('uploads/direct-1');
    const bytes = randomBytes(40_000);
    const put = await store.presignPut(key, { contentType: 'image/png', contentLength: bytes.length, expiresInSeconds: 60 });
    const ok = await fetch(put.url, { method: put.method, headers: put.headers, body: bytes });
    expect(ok.status).toBe(200);
    expect(sha(await buffer(await store.get(key)))).toBe(sha(bytes));
    expect(await store.head(key)).toEqual({ size: 40_000, contentType: 'image/png' });
  });
});
