/**
 * The bench's PostgreSQL side: one throw-away database per run (created on the admin URL, dropped
 * at the end), the fixtures our server needs (a user and an image, written with the app's own
 * repositories), and the CPU that PostgreSQL backends serving the bench database spend.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { newImageId, newUserId } from '../../shared/ids.ts';
import { insertImage } from '../../persistence/repositories/images.ts';
import { insertUser } from '../../persistence/repositories/users.ts';
import { cpuOfPids } from './procfs.ts';
import { summarize, type Summary } from './stats.ts';

export const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';

export interface BenchDatabase {
  readonly name: string;
  readonly url: string;
  /** A small pool on the bench database (fixtures, probes). */
  readonly pool: pg.Pool;
  /** A connection to the admin database (pg_stat_activity look-ups). */
  readonly admin: pg.Client;
  drop(): Promise<void>;
}

export async function createBenchDatabase(): Promise<BenchDatabase> {
  const name = `bench_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  const url = u.toString();
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on('error', () => {}); // an idle client dropped with the database: nothing to do
  let dropped = false;
  return {
    name,
    url,
    pool,
    admin,
    drop: async () => {
      if (dropped) return;
      dropped = true;
      await pool.end();
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    },
  };
}

/** A user (the images bench uploads as one). */
export async function createUser(db: pg.Pool): Promise<string> {
  const userId = newUserId();
  await insertUser(db, { userId, username: `bench_${userId.slice(4)}`, email: `${userId}@example.invalid`, displayName: 'bench' });
  return userId;
}

/** The size of the image every bench session is made of (its initial canvas has this size). */
export const BENCH_IMAGE_SIZE = { width: 640, height: 480 } as const;

/** A user owning one private image: what `POST /api/sessions` needs. */
export async function createOwnerWithImage(db: pg.Pool): Promise<{ userId: string; imageId: string }> {
  const userId = await createUser(db);
  const imageId = newImageId();
  await insertImage(db, {
    imageId,
    userId,
    title: 'Bench image',
    filename: 'bench.png',
    mimeType: 'image/png',
    fileSize: 100,
    ...BENCH_IMAGE_SIZE,
    storagePath: `blobs/${imageId}.png`,
    privacyLevel: 'private',
  });
  return { userId, imageId };
}

/** Settings that decide what a commit costs, for the report. */
export async function commitSettings(admin: pg.Client): Promise<Record<string, string>> {
  const names = ['server_version', 'synchronous_commit', 'fsync', 'wal_sync_method', 'commit_delay'];
  const out: Record<string, string> = {};
  for (const name of names) {
    const { rows } = await admin.query<{ v: string }>(`SELECT current_setting($1) AS v`, [name]);
    out[name] = rows[0]?.v ?? '?';
  }
  return out;
}

/**
 * What a commit costs from this process, the floor under any acknowledgement that waits for one:
 * a `SELECT 1` round trip, and a one-row INSERT into a WAL-logged table committed on its own
 * (autocommit: one WAL flush per statement), as the update log commits its batches.
 */
export async function commitLatency(db: pg.Pool, count = 200): Promise<{ roundTrip: Summary; commit: Summary }> {
  await db.query('CREATE TABLE IF NOT EXISTS bench_commit_probe (id int, payload bytea)');
  const client = await db.connect();
  try {
    const payload = randomBytes(32);
    const time = async (sql: string, values: unknown[]) => {
      const samples: number[] = [];
      for (let i = 0; i < count + 20; i += 1) {
        const t0 = performance.now();
        await client.query(sql, values);
        if (i >= 20) samples.push(performance.now() - t0); // the first 20 are warm-up
      }
      return summarize(samples);
    };
    const roundTrip = await time('SELECT 1', []);
    const commit = await time('INSERT INTO bench_commit_probe VALUES (1, $1)', [payload]);
    return { roundTrip, commit };
  } finally {
    client.release();
    await db.query('DROP TABLE IF EXISTS bench_commit_probe');
  }
}

/**
 * CPU of the PostgreSQL backends connected to the bench database between `start()` and `stop()`.
 * Backends come and go (pools close idle connections), so they are polled every `everyMs`: a
 * backend's CPU counts up to its last sighting, and one born in the window counts from zero. The
 * WAL writer and checkpointer, shared by every database on the server, are not attributed.
 */
export function backendCpu(bench: BenchDatabase, everyMs = 200) {
  const first = new Map<number, number>();
  const last = new Map<number, number>();
  let timer: NodeJS.Timeout | undefined;
  let polling: Promise<void> = Promise.resolve();
  let started = false;
  let stopped = false;
  const poll = async () => {
    const { rows } = await bench.admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [bench.name]);
    for (const [pid, cpu] of cpuOfPids(rows.map((r) => r.pid))) {
      // Seen at the first poll: count from here. Born later: it started at zero in the window.
      if (!first.has(pid)) first.set(pid, started ? 0 : cpu);
      last.set(pid, cpu);
    }
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      polling = poll().then(schedule, schedule);
    }, everyMs);
  };
  return {
    start: async () => {
      await poll();
      started = true;
      schedule();
    },
    stop: async (): Promise<{ seconds: number; backends: number }> => {
      stopped = true;
      clearTimeout(timer);
      await polling;
      await poll();
      let seconds = 0;
      for (const [pid, cpu] of last) seconds += cpu - (first.get(pid) ?? cpu);
      return { seconds, backends: last.size };
    },
  };
}
