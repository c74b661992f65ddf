/**
 * The render worker end to end: real worker processes (`worker/main.ts`, as `npm run worker`
 * starts them) on one real PostgreSQL queue, versions written through `recordVersion` (so each
 * job is enqueued inside the version's transaction), thumbnails in a real local blob store.
 *
 * - two workers, 50 versions: every thumbnail made, each job run exactly once;
 * - a worker killed with SIGKILL in the middle of a job: the other worker takes the job over and
 *   finishes it (graphile-worker alone would keep it locked for four hours);
 * - a job that keeps failing is retried with backoff, then parked with its error;
 * - a version rolled back leaves no job behind (enqueue is in the version's transaction).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import sharp from 'sharp';
import { connectPostgres, type Database } from '../persistence/db.ts';
import { migrate } from '../persistence/migrate.ts';
import { insertSession } from '../persistence/repositories/sessions.ts';
import { insertVersion } from '../persistence/repositories/versions.ts';
import { enqueueRender, parkedJobs, RENDER_TASK } from '../persistence/repositories/renders.ts';
import { recordVersion } from '../server/versions.ts';
import { migrateQueue } from '../worker/queue.ts';
import type { Canvas } from '../shared/canvas.ts';
import { newSessionId, newVersionId } from '../shared/ids.ts';
import { LocalBlobStore } from '../storage/local.ts';
import { blobKey } from '../storage/blob-store.ts';
import { waitFor } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { createImage, createUser, openPool } from './support/fixtures.ts';
import { tempDir } from './support/server-process.ts';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

let db: Database;
let databaseUrl: string;
let dataDir: string;
let blobs: LocalBlobStore;
let ownerId: string;
let imageId: string;
let imageKey: string;

const SWEEP_MS = '300';

function canvas(
  background: string,
  options: { width?: number; height?: number; imageLayers?: number; blendMode?: Canvas['layers'][string]['blendMode'] } = {},
): Canvas {
  const layers: Canvas['layers'] = {};
  for (let i = 0; i < (options.imageLayers ?? 1); i += 1) {
    layers[`lay_image${i}`] = {
      type: 'image',
      name: `photo ${i}`,
      order: `a${i}`,
      visible: true,
      opacity: 1,
      blendMode: options.blendMode ?? 'normal',
      locked: false,
      // scaled up to cover the canvas
      transform: [(options.width ?? 320) / 64, 0, 0, (options.height ?? 240) / 48, 0, 0],
      filters: [],
      data: { imageId },
    };
  }
  return {
    meta: { width: options.width ?? 320, height: options.height ?? 240, background, imageId, baseVersionId: null },
    layers,
  };
}

async function newSession(): Promise<string> {
  const sessionId = newSessionId();
  await insertSession(db, {
    sessionId,
    imageId,
    ownerId,
    expiresInSeconds: 3600,
    sessionType: 'collaborative',
    baseVersionId: null,
    branchName: 'main',
  });
  return sessionId;
}

async function save(sessionId: string, c: Canvas): Promise<string> {
  const recorded = await recordVersion(db, { sessionId, userId: ownerId, canvas: c, description: null, kind: 'manual' });
  return recorded!.version.version_id;
}

/** A worker process for this test only: killed when the test ends, so none outlives a failure. */
const startWorker = (name: string, env: Record<string, string> = {}) =>
  startWorkerProcess({
    name,
    databaseUrl,
    dataDir,
    register: (kill) => onTestFinished(kill),
    env: { RENDER_WORKER_SWEEP_MS: SWEEP_MS, ...env },
  });

/** Fails with the worker's log tail, which says why. */
const withLog = (worker: WorkerProcess) => (error: unknown) => {
  throw new Error(`${String(error)}\n--- ${worker.name} ---\n${worker.output().slice(-3000)}`);
};

const doneBy = (worker: WorkerProcess) =>
  worker
    .entries()
    .filter((e) => e.msg === 'render job done')
    .map((e) => e.versionId!);

async function thumbnails(versionIds: readonly string[]): Promise<Map<string, string | null>> {
  const { rows } = await db.query<{ version_id: string; thumbnail_path: string | null }>(
    'SELECT version_id, thumbnail_path FROM image_versions WHERE version_id = ANY($1)',
    [versionIds],
  );
  return new Map(rows.map((r) => [r.version_id, r.thumbnail_path]));
}

async function renderJobsLeft(): Promise<number> {
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE task_identifier = $1', [RENDER_TASK]);
  return rows[0]!.n;
}

beforeAll(async () => {
  const database = await createDatabase('render');
  register(database.drop);
  databaseUrl = database.url;
  await migrate(databaseUrl);
  db = connectPostgres(databaseUrl, 4);
  register(() => db.close());
  await migrateQueue(db);
  dataDir = tempDir(register, 'ifc-render-');
  blobs = new LocalBlobStore(join(dataDir, 'blobs'));
  register(() => blobs.close());
  const png = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#3366cc' } }).png().toBuffer();
  imageKey = (await blobs.putStream('originals/', Readable.from([png]), 'image/png')).key;
  const pool = openPool(databaseUrl, register);
  ownerId = await createUser(pool, 'owner');
  imageId = await createImage(pool, ownerId, { privacyLevel: 'private' });
  await db.query('UPDATE images SET storage_path = $2 WHERE image_id = $1', [imageId, imageKey]);
});

describe('render worker', () => {
  it.skipIf(process.platform !== 'linux')('lowers its libuv pool threads to MEDIA_THREAD_NICE, as the server does', async () => {
    const worker = await startWorker('worker-nice', { MEDIA_THREAD_NICE: '7' });
    const pid = worker.child.pid!;
    const poolNice = () =>
      readdirSync(`/proc/${pid}/task`)
        .filter((tid) => readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() === 'libuv-worker')
        // Field 19 of stat is the nice value; the command name (field 2) has no spaces here.
        .map((tid) => Number(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(' ')[18]));
    await waitFor(() => poolNice().length > 0 && poolNice().every((n) => n === 7), { timeout: 10_000, what: 'the pool at nice 7' });
  });

  it('two workers, 50 versions: every thumbnail made, each job run exactly once', async () => {
    const a = await startWorker('worker-a');
    const b = await startWorker('worker-b');
    const sessionId = await newSession();
    const ids: string[] = [];
    for (let i = 0; i < 50; i += 1) ids.push(await save(sessionId, canvas(`#${(0x100000 + i * 4099).toString(16).slice(-6)}`)));

    await waitFor(async () => [...(await thumbnails(ids)).values()].every((p) => p !== null), {
      timeout: 120_000,
      interval: 200,
      what: 'all 50 thumbnails',
    }).catch(withLog(a));
    const done = [...doneBy(a), ...doneBy(b)];
    expect(done.sort()).toEqual([...ids].sort()); // each exactly once, none missing, none twice
    for (const [, path] of await thumbnails(ids)) {
      expect(path).toMatch(/^renders\/[0-9a-f]{64}\.webp$/);
      const head = await blobs.head(blobKey(path!));
      expect(head?.contentType).toBe('image/webp');
    }
    expect(await renderJobsLeft()).toBe(0);
    await Promise.all([a.stop(), b.stop()]);
  }, 300_000);

  it('a worker killed mid-job: the other takes the job over and finishes it', async () => {
    // A big thumbnail of a canvas whose layers blend per pixel in JavaScript (luminosity is not
    // native in libvips): rendering takes seconds, so the kill lands inside the job.
    const slow = { RENDER_CONCURRENCY: '1', THUMBNAIL_SIZES: '4000' };
    const a = await startWorker('worker-doomed', slow);
    const sessionId = await newSession();
    const versionId = await save(sessionId, canvas('#ffffff', { width: 4000, height: 4000, imageLayers: 3, blendMode: 'luminosity' }));
    await waitFor(() => a.entries().some((e) => e.msg === 'render job started' && e.key === `render:${versionId}`), {
      timeout: 60_000,
      what: 'worker A to start the job',
    }).catch(withLog(a));
    await a.kill();
    expect(doneBy(a), 'the render finished before the kill; the test canvas is too fast').not.toContain(versionId);
    expect((await thumbnails([versionId])).get(versionId)).toBeNull();

    const b = await startWorker('worker-survivor', slow);
    await waitFor(() => doneBy(b).includes(versionId), { timeout: 120_000, interval: 100, what: 'worker B to finish the job' }).catch(withLog(b));
    expect(b.entries().some((e) => e.msg?.includes('liveness lock is free'))).toBe(true);
    expect((await thumbnails([versionId])).get(versionId)).toMatch(/^renders\//);
    expect(await renderJobsLeft()).toBe(0);
    await b.stop();
  }, 300_000);

  it('a job that keeps failing is retried with backoff, then parked with its error', async () => {
    const worker = await startWorker('worker-retry');
    const sessionId = await newSession();
    // A version whose canvas does not match the schema (written around recordVersion's check):
    // every attempt fails the same way.
    const versionId = newVersionId();
    await db.transaction(async (tx) => {
      await insertVersion(tx, {
        versionId,
        imageId,
        parentVersionId: null,
        versionNumber: 1000,
        branchName: 'main',
        createdBy: ownerId,
        description: 'broken',
        canvasState: { meta: { width: -1 }, layers: {} },
        fileSize: 10,
        sessionId,
        kind: 'manual',
        restoredFromVersionId: null,
        isCurrent: false,
      });
      await enqueueRender(tx, versionId, 2);
    });
    const parked = await waitFor(async () => (await parkedJobs(db)).find((j) => j.key === `render:${versionId}`), {
      timeout: 120_000,
      interval: 200,
      what: 'the job to be parked',
    }).catch(withLog(worker));
    expect(parked.attempts).toBe(2);
    expect(parked.last_error).toMatch(/does not match the schema/);
    // The worker logs after its database update: its line may reach us after the row does.
    const ours = () => worker.entries().filter((e) => e.key === `render:${versionId}`);
    await waitFor(() => ours().some((e) => e.msg === 'render job parked'), { timeout: 10_000, what: "the worker's 'parked' log line" });
    const entries = ours();
    expect(entries.filter((e) => e.msg === 'render job failed; will retry')).toHaveLength(1);
    expect(entries.filter((e) => e.msg === 'render job parked')).toHaveLength(1);
    expect((await thumbnails([versionId])).get(versionId)).toBeNull();
    await worker.stop();
  }, 180_000);

  it('collapses duplicate requests for one version into one pending job; a rolled-back version leaves none', async () => {
    const sessionId = await newSession();
    const versionId = await save(sessionId, canvas('#abcdef')); // no worker runs: the job waits
    await enqueueRender(db, versionId);
    await enqueueRender(db, versionId);
    const jobs = await db.query('SELECT 1 FROM graphile_worker.jobs WHERE key = $1', [`render:${versionId}`]);
    expect(jobs.rows).toHaveLength(1);

    await expect(
      db.transaction(async (tx) => {
        await enqueueRender(tx, 'ver_rolledback000000');
        throw new Error('the version transaction fails');
      }),
    ).rejects.toThrow(/fails/);
    const { rows } = await db.query('SELECT 1 FROM graphile_worker.jobs WHERE key = $1', ['render:ver_rolledback000000']);
    expect(rows).toHaveLength(0);
  });
});
