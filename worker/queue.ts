/**
 * The render worker: takes `render_version` jobs from the durable queue in PostgreSQL
 * (graphile-worker 0.18) and renders each new version's thumbnails into the blob store.
 *
 * - **Enqueue** happens in the transaction that writes the version (server/versions.ts calls
 *   `enqueueRender`, graphile-worker's SQL `add_job`): a version exists exactly when its job does.
 *   `job_key = render:<versionId>` collapses duplicate requests into one pending job.
 * - **One job, one worker at a time**: graphile-worker locks a job (`locked_by`, `FOR UPDATE SKIP
 *   LOCKED`) when a worker takes it; other workers skip it.
 * - **Retries** with graphile-worker's exponential backoff (exp(attempt) seconds); after
 *   `maxAttempts` the job is parked: it stays in `graphile_worker.jobs` with `last_error` and is
 *   never run again by itself (`parkedJobs`, the `imageflow_render_jobs_parked` gauge).
 * - **A worker killed mid-job loses nothing**: graphile-worker would keep its job locked for four
 *   hours. Each worker process holds a session-level advisory lock on a connection of its own for
 *   as long as it lives, and registers its graphile-worker ids under that lock's key in
 *   `render_workers`. PostgreSQL releases the lock the moment the process's connection dies (kill
 *   -9 included). Every `sweepMs` each worker tries the other processes' locks: one it can take
 *   belongs to a dead process, whose jobs it unlocks at once (graphile-worker's
 *   `force_unlock_workers`) so another worker runs them. A live process that is merely slow (a
 *   stalled event loop, a long render) keeps its connection and its lock, so it is never taken for
 *   dead and no job runs on two workers at once. A job locked for `orphanAfterMs` by a worker id
 *   nobody registered (its process died between taking the job and writing its row) is unlocked too.
 *   A job is idempotent anyway: the render is content-addressed (same bytes, same key).
 * - **Done** = `image_versions.thumbnail_path` set to the first size's render key and a NOTIFY on
 *   `imageflow_thumbnail_ready`, in one transaction; every server node LISTENs and tells its own
 *   connections of that session (server/thumbnails.ts).
 */
import { randomInt } from 'node:crypto';
import { hostname } from 'node:os';
import { Logger as GraphileLogger, run, runMigrations, runOnce, type Runner, type TaskList, type WorkerEvents } from 'graphile-worker';
import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Database } from '../persistence/db.ts';
import {
  forgetWorkers,
  getRenderableVersion,
  holdLivenessLock,
  isLockFree,
  notify,
  orphanedWorkers,
  otherProcesses,
  RENDER_TASK,
  registerWorkers,
  setThumbnailPath,
  THUMBNAIL_CHANNEL,
  unlockWorkers,
} from '../persistence/repositories/renders.ts';
import { forgetCached } from '../persistence/repositories/render-cache.ts';
import { thumbnailParams, type RenderService } from '../server/renders.ts';

/** The NOTIFY payload of a finished version. */
export interface ThumbnailReadyPayload {
  versionId: string;
  imageId: string;
  sessionId: string | null;
  thumbnailPath: string;
  sizes: number[];
}

export interface RenderWorkerOptions {
  db: Database;
  renders: RenderService;
  logger: Logger;
  /** Thumbnail sizes (px, the longer side); the first one is `thumbnail_path`. */
  sizes: readonly number[];
  /** Jobs this process runs at once. */
  concurrency: number;
  /** How often this worker looks for dead workers' jobs. */
  sweepMs: number;
  /**
   * A job locked this long by a worker id nobody registered is taken for orphaned. Longer than any
   * job may run (every size's render at most RENDER_TIMEOUT_MS).
   */
  orphanAfterMs: number;
  /** Poll for due retries this often (new jobs arrive by LISTEN/NOTIFY at once). */
  pollIntervalMs?: number;
  /** A name for the `render_workers.process` column. */
  processName: string;
  onJob?: (outcome: 'done' | 'error' | 'parked', seconds: number) => void;
  /**
   * Called in-process after a version's thumbnails are committed. Only for the embedded database:
   * over pglite-socket a NOTIFY does not reach another connection's LISTEN (measured: the job
   * completes, the listener hears nothing), and the embedded mode is one process anyway.
   */
  onThumbnail?: (payload: ThumbnailReadyPayload) => void;
}

/** graphile-worker's own schema; its migrations run under its own lock. */
export async function migrateQueue(db: Database): Promise<void> {
  const pool = poolFor(db, 1);
  try {
    await runMigrations({ pgPool: pool, noPreparedStatements: db.kind === 'pglite', logger: quietLogger() });
  } finally {
    await pool.end();
  }
}

function poolFor(db: Database, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString: db.url, max, connectionTimeoutMillis: 5_000 });
  // An idle client losing its server: the next query reconnects (graphile-worker retries).
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

function quietLogger(logger?: Logger): GraphileLogger {
  return new GraphileLogger(() => (level, message, meta) => {
    if (!logger) return;
    if (level === 'error') logger.error({ ...meta }, `render queue: ${message}`);
    else if (level === 'warning') logger.warn({ ...meta }, `render queue: ${message}`);
    else logger.debug({ ...meta }, `render queue: ${message}`);
  });
}

export class RenderWorker {
  readonly #o: RenderWorkerOptions;
  readonly #workerIds = new Set<string>();
  readonly #events: WorkerEvents = new EventEmitter() as WorkerEvents;
  #runner: Runner | undefined;
  #pool: pg.Pool | undefined;
  #timer: NodeJS.Timeout | undefined;
  #beating: Promise<void> = Promise.resolve();
  /** This process's liveness lock (see the file's rules) and the connection holding it. */
  readonly #lockKey = randomInt(1, 2 ** 31 - 1);
  #lockClient: pg.Client | undefined;
  #stopped = false;
  #polling: Promise<void> | undefined;
  /** Embedded database: one process, no liveness lock or sweep (see `start`). */
  #embedded = false;
  #wake: (() => void) | undefined;
  /** Jobs finished by this process (tests and logs). */
  done = 0;

  constructor(options: RenderWorkerOptions) {
    this.#o = options;
  }

  async start(): Promise<void> {
    const { db, logger } = this.#o;
    // PGlite behind pglite-socket is one backend session shared by every connection: named
    // prepared statements of two connections collide ("prepared statement … already exists").
    const noPreparedStatements = db.kind === 'pglite';
    // One connection LISTENs for new jobs, the others run get_job/complete_job.
    const embedded = (this.#embedded = db.kind === 'pglite');
    // Embedded: one connection. pglite-socket multiplexes every connection onto PGlite's single
    // session and can interleave two connections' extended-protocol messages (measured here: "bind
    // message supplies 1 parameters, but prepared statement … requires 3"), so every extra
    // concurrent connection makes that likelier. One process owns the data directory, so there is
    // no other worker to watch: jobs a previous (killed) process left locked are unlocked at start.
    this.#pool = poolFor(db, embedded ? 1 : Math.max(2, this.#o.concurrency + 1));
    if (embedded) {
      const leftover = await orphanedWorkers(db, 0);
      await unlockWorkers(db, leftover);
      if (leftover.length > 0) logger.warn({ workers: leftover }, 'unlocked render jobs a previous process left locked');
    } else {
      await this.#holdLock();
    }
    // graphile-worker 0.18 locks jobs under the pool's id (`locked_by`), while its events name
    // each worker: register both, so whichever a job names is known to be ours.
    this.#events.on('pool:create', ({ workerPool }) => {
      this.#workerIds.add(workerPool.id);
      this.#beat();
    });
    this.#events.on('worker:create', ({ worker }) => {
      this.#workerIds.add(worker.workerId);
      this.#workerIds.add(worker.workerPool.id);
      this.#beat();
    });
    this.#events.on('worker:stop', ({ worker }) => {
      this.#workerIds.delete(worker.workerId);
    });
    this.#events.on('job:start', ({ job, worker }) => {
      logger.info({ job: job.id, key: job.key, attempt: job.attempts, worker: worker.workerId }, 'render job started');
    });
    this.#events.on('job:error', ({ job, error }) => {
      const parked = job.attempts >= job.max_attempts;
      logger.warn({ job: job.id, key: job.key, attempt: job.attempts, parked, err: error }, parked ? 'render job parked' : 'render job failed; will retry');
      this.#o.onJob?.(parked ? 'parked' : 'error', 0);
    });
    const taskList: TaskList = {
      [RENDER_TASK]: async (payload) => {
        const started = performance.now();
        const versionId = (payload as { versionId?: unknown } | null)?.versionId;
        if (typeof versionId !== 'string') throw new Error('render_version job without a versionId');
        await this.renderVersion(versionId);
        this.done += 1;
        const seconds = (performance.now() - started) / 1000;
        this.#o.onJob?.('done', seconds);
        logger.info({ versionId, seconds }, 'render job done');
      },
    };
    const options = {
      pgPool: this.#pool,
      concurrency: this.#o.concurrency,
      noHandleSignals: true,
      noPreparedStatements,
      taskList,
      events: this.#events,
      logger: quietLogger(logger),
    };
    if (embedded) {
      this.#polling = this.#pollLoop({ ...options, concurrency: 1 });
      return;
    }
    this.#runner = await run({ ...options, pollInterval: this.#o.pollIntervalMs ?? 1_000, parsedCronItems: [] });
    this.#timer = setInterval(() => this.#beat(), this.#o.sweepMs);
    this.#timer.unref();
    this.#beat();
  }

  /**
   * Embedded mode: graphile-worker's continuous runner over pglite-socket made other connections'
   * fresh rows invisible now and then (measured: 4 of 35 users just inserted by a test were
   * unknown to the server with it running, 0 of 15 without; PGlite is one backend session behind
   * the socket, and the runner's long-lived LISTEN connection is the difference). So there the
   * same queue is drained by graphile-worker's `runOnce` (no LISTEN) every `pollIntervalMs`
   * (500 ms): the same jobs, retries and parking, up to half a second more latency.
   */
  async #pollLoop(options: Parameters<typeof runOnce>[0]): Promise<void> {
    while (!this.#stopped) {
      const before = new Set(this.#workerIds);
      try {
        await runOnce(options);
      } catch (error) {
        this.#o.logger.warn({ err: error }, 'render queue round failed; retrying');
      }
      // Each round has fresh graphile-worker ids: forget the finished round's.
      const finished = [...this.#workerIds].filter((id) => !before.has(id));
      for (const id of finished) this.#workerIds.delete(id);
      await forgetWorkers(this.#o.db, finished).catch(() => {});
      if (this.#stopped) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.#o.pollIntervalMs ?? 500);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** Renders every thumbnail size of a version and marks it done (see the file's rules). */
  async renderVersion(versionId: string): Promise<void> {
    const { db, renders, sizes } = this.#o;
    const version = await getRenderableVersion(db, versionId);
    if (!version) {
      this.#o.logger.warn({ versionId }, 'render job for a version that no longer exists; dropped');
      return;
    }
    let first: string | undefined;
    for (const size of sizes) {
      const rendered = await renders.renderCached(version.canvas_state, version.viewer_id, thumbnailParams(size));
      first ??= rendered.key;
    }
    const payload: ThumbnailReadyPayload = {
      versionId,
      imageId: version.image_id,
      sessionId: version.session_id,
      thumbnailPath: first!,
      sizes: [...sizes],
    };
    await db.transaction(async (tx) => {
      await setThumbnailPath(tx, versionId, first!);
      // A version's thumbnail is not cache: out of the render cache's accounting, never evicted.
      await forgetCached(tx, first!);
      await notify(tx, THUMBNAIL_CHANNEL, JSON.stringify(payload));
    });
    this.#o.onThumbnail?.(payload);
  }

  /**
   * Takes this process's liveness lock on a connection of its own. If that connection drops (the
   * database restarted), the lock is gone and others may take our jobs for a dead process's: take
   * it again on a new connection at the next sweep.
   */
  async #holdLock(): Promise<void> {
    const client = new pg.Client({ connectionString: this.#o.db.url });
    const lost = () => {
      if (this.#lockClient === client) this.#lockClient = undefined;
      client.end().catch(() => {});
    };
    client.on('error', (error) => {
      this.#o.logger.warn({ err: error }, 'render worker lost its liveness connection; taking the lock again');
      lost();
    });
    client.on('end', lost);
    await client.connect();
    await holdLivenessLock(client, this.#lockKey);
    this.#lockClient = client;
  }

  /** One round: register our worker ids, then unlock the jobs of processes that are gone. */
  #beat(): void {
    if (this.#stopped || this.#embedded) return;
    this.#beating = this.#beating.then(async () => {
      if (this.#stopped) return;
      try {
        const { db, processName, orphanAfterMs, logger } = this.#o;
        if (!this.#lockClient) await this.#holdLock();
        const client = this.#lockClient!;
        await registerWorkers(client, [...this.#workerIds], this.#lockKey, processName);
        const dead: string[] = [];
        for (const other of await otherProcesses(client, this.#lockKey)) {
          if (await isLockFree(client, other.lock_key)) dead.push(...other.worker_ids);
        }
        dead.push(...(await orphanedWorkers(db, orphanAfterMs)).filter((id) => !this.#workerIds.has(id)));
        if (dead.length > 0) {
          await unlockWorkers(db, dead);
          await forgetWorkers(db, dead);
          logger.warn({ workers: dead }, 'render workers are gone (their liveness lock is free); their jobs are unlocked');
        }
      } catch (error) {
        this.#o.logger.warn({ err: error }, 'render worker sweep failed; retrying next round');
      }
    });
  }

  /** Lets running jobs finish (graphile-worker's graceful stop), then removes our rows. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#beating;
    const ids = [...this.#workerIds];
    try {
      await this.#runner?.stop();
      this.#wake?.();
      await this.#polling;
    } catch (error) {
      this.#o.logger.warn({ err: error }, 'render worker did not stop cleanly');
    }
    try {
      await forgetWorkers(this.#o.db, ids);
    } catch (error) {
      this.#o.logger.warn({ err: error }, 'could not remove render worker rows (they expire by heartbeat)');
    }
    await this.#pool?.end();
    // Ending the connection releases the liveness lock.
    await this.#lockClient?.end().catch(() => {});
  }
}

export const defaultProcessName = (name: string) => `${name}@${hostname()}:${process.pid}`.slice(0, 128);
