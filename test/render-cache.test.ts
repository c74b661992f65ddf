/**
 * The render cache's bound (server/render-cache.ts, migration 009) on a real PostgreSQL, with real
 * renders (the renderer's worker-thread pool) into the local blob store, in process:
 * - past RENDER_CACHE_MAX_BYTES the least recently used renders are evicted (blob and row), a render
 *   hit all along survives, the total ends under the bound, and an evicted render asked again is
 *   rendered again with the same ETag;
 * - a render whose blob vanished between the lookup and the read (evicted by another node, deleted
 *   by hand) is rendered again, never an error;
 * - nothing outside `renders/`/`variants/` is tracked, and a version's thumbnail keeps its blob;
 * - two sweepers on one database at once (two pools, local store and S3 via s3rver) claim each entry
 *   once and stop at the target, not below it by counting twice (seeded sizes; the seed is printed);
 * - over HTTP (the server as a child process): `/file` variants past the bound are evicted oldest
 *   first, the image's own thumbnails are never tracked, an evicted variant answers 200 with its
 *   ETag again, and a render whose blob was deleted by hand is rendered again.
 */
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectPostgres, type Database, type Queryable } from '../persistence/db.ts';
import { migrate } from '../persistence/migrate.ts';
import { RenderPool } from '../renderer/pool.ts';
import { RenderCache, type SweepResult } from '../server/render-cache.ts';
import { RenderService, type RenderParams } from '../server/renders.ts';
import { blobKey, type BlobKey, type BlobStore } from '../storage/blob-store.ts';
import { LocalBlobStore } from '../storage/local.ts';
import { S3BlobStore } from '../storage/s3.ts';
import { createDatabase } from './support/databases.ts';
import { parseVariant, variantKey } from '../media/variants.ts';
import { waitFor } from './support/clients.ts';
import { createActor, createImage, createSession, createUser, openPool } from './support/fixtures.ts';
import { photoJpeg } from './support/images.ts';
import { metric } from './support/metrics.ts';
import { mulberry32 } from './support/random.ts';
import { canvasOf, layer, rect } from './support/render.ts';
import { startS3 } from './support/s3.ts';
import { startServerProcess, tempDir } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

let databaseUrl: string;
let db: Database;
let pool: RenderPool;

beforeAll(async () => {
  const database = await createDatabase('rcache');
  register(database.drop);
  databaseUrl = database.url;
  await migrate(databaseUrl);
  db = connectPostgres(databaseUrl, 4);
  register(() => db.close());
  pool = new RenderPool({ size: 1, timeoutMs: 20_000 });
  register(() => pool.close());
});

/** What the caches logged at warn level or above: a failed record or sweep fails the test. */
const warnings: string[] = [];
const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
afterEach(() => {
  expect(warnings.splice(0)).toEqual([]);
});

const canvas = canvasOf(64, 48, { a: layer(rect(40, 30, '#3366cc', { stroke: '#cc3333', strokeWidth: 3 }), { transform: [1, 0, 0, 1, 8, 6] }) }, '#ffffff');
const at = (width: number): RenderParams => ({ width, format: 'png' });
const VIEWER = 'u_nobody';

/** The tracked entries, key → size, through `q` (this file's database by default). */
async function rowsOf(q: Queryable = db): Promise<Map<string, number>> {
  const { rows: found } = await q.query<{ blob_key: string; size_bytes: number | string }>('SELECT blob_key, size_bytes FROM render_cache');
  return new Map(found.map((r) => [r.blob_key, Number(r.size_bytes)]));
}
const rows = () => rowsOf();

function localStore(): LocalBlobStore {
  const store = new LocalBlobStore(join(tempDir(register, 'ifc-rcache-'), 'blobs'));
  register(() => store.close());
  return store;
}

function service(blobs: BlobStore, cache?: RenderCache): RenderService {
  return new RenderService({ db, blobs, render: (c, images, options) => pool.render(c, images, options), ...(cache ? { cache } : {}) });
}

describe('render cache bound', () => {
  it('evicts the least recently used past the bound; a hot render survives; an evicted one renders again with its ETag', async () => {
    await db.query('TRUNCATE render_cache');
    // The size of one render, to set a bound of about five of them.
    const probe = await service(localStore()).renderCached(canvas, VIEWER, at(120));
    const blobs = localStore();
    let evictedEntries = 0;
    const cache = new RenderCache({ db, blobs, logger, maxBytes: probe.size * 5, touchAfterMs: 0, onEvicted: (n) => (evictedEntries += n) });
    const renders = service(blobs, cache);

    const hot = await renders.renderCached(canvas, VIEWER, at(120));
    expect(hot.cached).toBe(false);
    await cache.idle();
    const cold: Array<{ key: string; etag: string; width: number }> = [];
    for (let width = 121; width <= 136; width += 1) {
      const r = await renders.renderCached(canvas, VIEWER, at(width));
      expect(r.cached).toBe(false);
      cold.push({ key: r.key, etag: r.etag, width });
      await cache.idle();
      // The hot render is asked for after every other one: always the most recently used but one.
      expect((await renders.renderCached(canvas, VIEWER, at(120))).cached).toBe(true);
      await cache.idle();
    }

    const tracked = await rows();
    const total = [...tracked.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeLessThanOrEqual(cache.maxBytes);
    expect((await cache.totals()).bytes).toBe(total);
    expect(tracked.has(hot.key)).toBe(true);
    expect(await blobs.head(blobKey(hot.key))).toBeDefined();
    // The newest survive, the oldest are gone — rows and blobs alike.
    expect(tracked.has(cold.at(-1)!.key)).toBe(true);
    const gone = cold.filter((c) => !tracked.has(c.key));
    expect(gone.length).toBeGreaterThanOrEqual(cold.length - 5);
    expect(gone.map((c) => c.key)).toEqual(cold.slice(0, gone.length).map((c) => c.key));
    expect(evictedEntries).toBe(gone.length);
    for (const c of gone) expect(await blobs.head(blobKey(c.key))).toBeUndefined();
    for (const key of tracked.keys()) expect(await blobs.head(blobKey(key))).toBeDefined();

    // The oldest, asked again: rendered again, the same ETag, tracked again.
    const again = await renders.renderCached(canvas, VIEWER, at(gone[0]!.width));
    expect(again.cached).toBe(false);
    expect(again.etag).toBe(gone[0]!.etag);
    expect(again.key).toBe(gone[0]!.key);
    await cache.idle();
    expect((await rows()).has(again.key)).toBe(true);
    expect((await cache.totals()).bytes).toBeLessThanOrEqual(cache.maxBytes);
  });

  it('a cached render whose blob vanished before the read is rendered again, not an error', async () => {
    await db.query('TRUNCATE render_cache');
    const blobs = localStore();
    const cache = new RenderCache({ db, blobs, logger, maxBytes: 1024 * 1024 });
    const renders = service(blobs, cache);
    const first = await renders.renderCached(canvas, VIEWER, at(200));
    const firstBytes = first.data!;
    await cache.idle();

    // Found by head, then deleted (by another node's sweep, or by hand) before the read.
    const found = await renders.renderCached(canvas, VIEWER, at(200));
    expect(found.cached).toBe(true);
    expect(found.data).toBeUndefined();
    await blobs.delete(blobKey(found.key));
    const body = await renders.body(found, canvas, VIEWER, at(200));
    expect(Buffer.isBuffer(body)).toBe(true);
    expect((body as Buffer).equals(firstBytes)).toBe(true);
    expect(await blobs.head(blobKey(found.key))).toEqual({ size: firstBytes.length, contentType: 'image/png' });

    // Gone before the lookup: a plain miss.
    await blobs.delete(blobKey(found.key));
    const missed = await renders.renderCached(canvas, VIEWER, at(200));
    expect(missed.cached).toBe(false);
    expect(missed.etag).toBe(first.etag);
    await cache.idle();
    expect((await rows()).get(found.key)).toBe(firstBytes.length);

    // Present: the stored blob, streamed.
    const stream = await renders.body(await renders.renderCached(canvas, VIEWER, at(200)), canvas, VIEWER, at(200));
    expect(stream).toBeInstanceOf(Readable);
    (stream as Readable).destroy();
  });

  it('tracks nothing outside the cache prefixes and never deletes a version thumbnail', async () => {
    await db.query('TRUNCATE render_cache');
    const blobs = localStore();
    const cache = new RenderCache({ db, blobs, logger, maxBytes: 1000 });
    cache.stored('originals/abc', 10_000);
    cache.stored('uploads/abc', 10_000);
    cache.hit('originals/abc', 10_000);
    await cache.idle();
    expect(await rows()).toEqual(new Map());
    await expect(db.query(`INSERT INTO render_cache (blob_key, size_bytes) VALUES ('originals/x', 1)`)).rejects.toThrow(/check constraint/);

    // A version whose thumbnail_path names a render key.
    const pg = openPool(databaseUrl, register);
    const userId = await createUser(pg, 'owner');
    const imageId = await createImage(pg, userId);
    const thumb = blobKey(`renders/${'a'.repeat(64)}.webp`);
    await blobs.put(thumb, Buffer.alloc(3000, 1), 'image/webp');
    await pg.query(
      `INSERT INTO image_versions (version_id, image_id, version_number, created_by, canvas_state, file_size, is_current, thumbnail_path)
       VALUES ('ver_rcache1', $1, 1, $2, '{}', 0, true, $3)`,
      [imageId, userId, thumb],
    );
    // Stored or hit as a render: refused a row.
    cache.stored(thumb, 3000);
    cache.hit(thumb, 3000);
    await cache.idle();
    expect(await rows()).toEqual(new Map());
    // A row that slipped in anyway (recorded concurrently with the worker setting the path): the
    // sweep drops the row and keeps the blob; other entries are evicted as usual.
    await db.query(`INSERT INTO render_cache (blob_key, size_bytes, last_used_at) VALUES ($1, 3000, now() - interval '1 hour')`, [thumb]);
    const other = blobKey(`variants/bb/${'b'.repeat(64)}.jpeg`);
    await blobs.put(other, Buffer.alloc(2000, 2), 'image/jpeg');
    await db.query(`INSERT INTO render_cache (blob_key, size_bytes, last_used_at) VALUES ($1, 2000, now() - interval '30 minutes')`, [other]);
    const swept = await cache.sweep();
    expect(swept.evicted).toEqual([other]);
    expect(await rows()).toEqual(new Map());
    expect(await blobs.head(thumb)).toBeDefined();
    expect(await blobs.head(other)).toBeUndefined();
  });
});

/** Backends of this database waiting on a lock (a row lock held by another transaction). */
const LOCK_WAITERS = `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'`;
const dbName = (url: string) => new URL(url).pathname.slice(1);

/** `store`, whose first `delete` after `gate()` names a gate waits for it to open. */
function heldOnFirstDelete(store: BlobStore, gate: () => { entered: () => void; open: Promise<void> } | undefined): BlobStore {
  let held: unknown;
  return new Proxy(store, {
    get(target, name) {
      if (name === 'delete') {
        return async (key: BlobKey) => {
          const g = gate();
          if (g && held !== g) {
            held = g;
            g.entered();
            await g.open;
          }
          return target.delete(key);
        };
      }
      const value: unknown = Reflect.get(target, name, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

const stores: Record<'local' | 's3', () => Promise<BlobStore>> = {
  local: async () => localStore(),
  s3: async () => {
    const s3 = await startS3(register, 'rcache');
    const store = new S3BlobStore({ ...s3, forcePathStyle: true });
    register(() => store.close());
    return store;
  },
};

describe('the total behind the bound', () => {
  it('is read once, not summed after every store, until the estimate passes the bound or grows old', async () => {
    await db.query('TRUNCATE render_cache');
    const blobs = localStore();
    const key = (i: number) => `variants/${String(i % 100).padStart(2, '0')}/total-${i}.png`;
    const cache = new RenderCache({ db, blobs, logger, maxBytes: 10_000, totalsMaxAgeMs: 60_000 });
    for (let i = 0; i < 40; i += 1) {
      cache.stored(key(i), 200);
      await cache.idle();
    }
    expect((await rows()).size).toBe(40);
    expect(cache.totalsRead, 'one read for 40 stores under the bound').toBe(1);
    // 40 × 200 = 8,000; the 11th store more passes 10,000: read, and swept down to 9,000.
    for (let i = 40; i < 51; i += 1) {
      cache.stored(key(i), 200);
      await cache.idle();
    }
    expect(cache.totalsRead).toBe(2);
    const left = [...(await rows()).values()].reduce((x, y) => x + y, 0);
    expect(left).toBeLessThanOrEqual(cache.targetBytes);
    // A reading older than totalsMaxAgeMs is not trusted: the next store reads again.
    const aging = new RenderCache({ db, blobs, logger, maxBytes: 1_000_000, totalsMaxAgeMs: 0 });
    aging.stored(key(60), 200);
    await aging.idle();
    aging.stored(key(61), 200);
    await aging.idle();
    expect(aging.totalsRead).toBe(2);
  });
});

describe.each(['local', 's3'] as const)('two sweepers at once (%s store)', (kind) => {
  it('claim each entry once and stop at the target, not below it', async () => {
    const blobs = await stores[kind]();
    const seed = Number(process.env.CACHE_SEED ?? Date.now() % 1_000_000);
    console.log(`render-cache sweep seed: ${seed} (rerun with CACHE_SEED=${seed})`);
    const random = mulberry32(seed);
    // Two nodes: their own pools on one database, one bucket.
    const dbB = connectPostgres(databaseUrl, 4);
    register(() => dbB.close());
    const maxBytes = 150_000;
    const options = { logger, maxBytes, batchSize: 7 };
    // Node A's first blob delete of a round waits at a gate: A then holds its first claimed batch
    // (rows deleted, not committed) while B sweeps into it.
    let gate: { entered: () => void; open: Promise<void> } | undefined;
    const a = new RenderCache({ ...options, db, blobs: heldOnFirstDelete(blobs, () => gate) });
    const b = new RenderCache({ ...options, db: dbB, blobs });

    for (let round = 0; round < 4; round += 1) {
      await db.query('TRUNCATE render_cache');
      const sizes = new Map<string, number>();
      for (let i = 0; i < 120; i += 1) {
        const size = 500 + Math.floor(random() * 3000);
        const key = blobKey(`variants/${String(i % 100).padStart(2, '0')}/r${round}-${i}-${seed}.png`);
        await blobs.put(key, Buffer.alloc(size, i), 'image/png');
        sizes.set(key, size);
      }
      // Recorded one by one, oldest first, as stores would.
      const keys = [...sizes.keys()];
      for (const [i, key] of keys.entries()) {
        await db.query(`INSERT INTO render_cache (blob_key, size_bytes, last_used_at) VALUES ($1, $2, now() - $3::int * interval '1 second')`, [
          key,
          sizes.get(key),
          keys.length - i,
        ]);
      }
      const before = [...sizes.values()].reduce((x, y) => x + y, 0);
      expect(before).toBeGreaterThan(maxBytes);

      // Rounds 0 and 1: B's sweep provably runs into A's open batch (here it waits on A's row
      // locks until A commits). Rounds 2 and 3: both run free, interleaving as they happen to.
      let sweeps: Promise<[SweepResult, SweepResult]>;
      if (round < 2) {
        let entered!: () => void;
        let open!: () => void;
        const inside = new Promise<void>((resolve) => (entered = resolve));
        gate = { entered, open: new Promise<void>((resolve) => (open = resolve)) };
        const fromA = a.sweep();
        await inside;
        let bDone = false;
        const fromB = b.sweep().finally(() => (bDone = true));
        // B either waits on A's row locks or (a design that skips locked rows) finishes meanwhile.
        await waitFor(async () => bDone || (await db.query<{ n: number }>(LOCK_WAITERS, [dbName(databaseUrl)])).rows[0]!.n > 0, {
          what: "node B's claim waiting on node A's rows",
        });
        open();
        sweeps = Promise.all([fromA, fromB]);
      } else {
        gate = undefined;
        sweeps = Promise.all([a.sweep(), b.sweep()]);
      }
      const [fromA, fromB] = await sweeps;
      const evicted = [...fromA.evicted, ...fromB.evicted];
      expect(new Set(evicted).size).toBe(evicted.length); // nobody took an entry twice
      const left = await rows();
      const after = [...left.values()].reduce((x, y) => x + y, 0);
      // Counted once: what both report freed is exactly what left the table.
      expect(fromA.bytes + fromB.bytes).toBe(before - after);
      expect(evicted.length).toBe(sizes.size - left.size);
      // At the target, and below it by less than one entry (the last one taken).
      expect(after).toBeLessThanOrEqual(a.targetBytes);
      expect(after).toBeGreaterThan(a.targetBytes - Math.max(...sizes.values()));
      // Least recently used first: what is left is the newest.
      expect([...left.keys()].sort()).toEqual(keys.slice(keys.length - left.size).sort());
      for (const key of evicted) expect(await blobs.head(blobKey(key))).toBeUndefined();
      for (const key of left.keys()) expect(await blobs.head(blobKey(key))).toBeDefined();
      console.log(`round ${round}: node A evicted ${fromA.evicted.length}, node B ${fromB.evicted.length}; ${before} → ${after} bytes (target ${a.targetBytes})`);
    }
  });
});

describe('over HTTP: the server bounds resized variants and answers evicted renders', () => {
  it('evicts the oldest variants of /file past the bound, keeps the thumbnails, and answers an evicted one again with its ETag', async () => {
    const database = await createDatabase('rcache_http');
    register(database.drop);
    const maxBytes = 40_000;
    const server = await startServerProcess({
      transport: 'node',
      databaseUrl: database.url,
      register,
      // Nothing kept in memory, so every hit is a blob-store hit; no worker rendering thumbnails meanwhile.
      env: { RENDER_CACHE_MAX_BYTES: String(maxBytes), IMAGE_MEMORY_CACHE_BYTES: '0', RENDER_WORKER: 'off' },
    });
    const pg = openPool(database.url, register);
    const blobs = new LocalBlobStore(join(server.dataDir, 'blobs'));
    register(() => blobs.close());
    const owner = await createActor(pg, 'owner');
    const uploaded = await fetch(`${server.url}/api/images`, {
      method: 'POST',
      headers: { authorization: `Bearer ${owner.token}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(await photoJpeg(600, 400)),
    });
    expect(uploaded.status).toBe(201);
    const image = ((await uploaded.json()) as { image: { imageId: string; metadata: { sha256: string }; thumbnailPaths: Record<string, string> } }).image;
    const original = { mime: 'image/jpeg', hasAlpha: false, keepExif: false };
    const get = (query: string, headers: Record<string, string> = {}) =>
      fetch(`${server.url}/api/images/${image.imageId}/file?${query}`, { headers: { authorization: `Bearer ${owner.token}`, ...headers } });

    const asked: Array<{ key: string; etag: string; query: string }> = [];
    let total = 0;
    for (let width = 200; total <= maxBytes * 2; width += 8) {
      const query = `width=${width}&format=jpeg`;
      const res = await get(query);
      expect(res.status).toBe(200);
      total += (await res.arrayBuffer()).byteLength;
      asked.push({ key: variantKey(image.metadata.sha256, parseVariant({ width: String(width), format: 'jpeg' }, original)), etag: res.headers.get('etag')!, query });
    }
    const last = asked.at(-1)!;
    const tracked = await waitFor(
      async () => {
        const now = await rowsOf(pg);
        const sum = [...now.values()].reduce((a, b) => a + b, 0);
        return now.has(last.key) && sum <= maxBytes ? now : undefined;
      },
      { timeout: 20_000, what: 'the last variant recorded and the cache under its bound' },
    );
    const first = asked[0]!;
    expect(tracked.has(first.key)).toBe(false);
    expect(await blobs.head(blobKey(first.key))).toBeUndefined();
    // The thumbnails ingest stored are the image's own: untracked, never evicted.
    for (const key of Object.values(image.thumbnailPaths)) {
      expect(tracked.has(key)).toBe(false);
      expect(await blobs.head(blobKey(key))).toBeDefined();
    }
    expect(await metric(server, 'imageflow_render_cache_evicted_total')).toBe(asked.length - tracked.size);
    expect(await metric(server, 'imageflow_render_cache_bytes')).toBeLessThanOrEqual(maxBytes);
    console.log(`/file: ${asked.length} variants (${total} bytes) asked, ${asked.length - tracked.size} evicted, ${tracked.size} kept under ${maxBytes} bytes`);

    // The evicted one, asked again: resized again, 200, the same ETag; then stored and tracked again.
    const again = await get(first.query);
    expect(again.status).toBe(200);
    expect(again.headers.get('etag')).toBe(first.etag);
    await again.arrayBuffer();
    await waitFor(async () => ((await rowsOf(pg)).has(first.key) ? true : undefined), { timeout: 10_000, what: 'the re-made variant tracked' });

    // A render whose blob was deleted by hand: rendered again, 200, the same ETag.
    const sessionId = await createSession(server.url, owner.token, image.imageId);
    const render = () => fetch(`${server.url}/api/sessions/${sessionId}/render?width=64`, { headers: { authorization: `Bearer ${owner.token}` } });
    const r1 = await render();
    expect(r1.status).toBe(200);
    const bytes1 = Buffer.from(await r1.arrayBuffer());
    const key = blobKey(`renders/${r1.headers.get('etag')!.slice(1, -1)}.webp`);
    await waitFor(async () => ((await rowsOf(pg)).has(key) ? true : undefined), { timeout: 10_000, what: 'the render tracked' });
    await blobs.delete(key);
    const r2 = await render();
    expect(r2.status).toBe(200);
    expect(r2.headers.get('etag')).toBe(r1.headers.get('etag'));
    expect(Buffer.from(await r2.arrayBuffer()).equals(bytes1)).toBe(true);
    expect(await blobs.head(key)).toBeDefined();
  });
});

