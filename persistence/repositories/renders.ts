/**
 * Named queries of the render worker and the render routes: the durable job queue
 * (graphile-worker's schema `graphile_worker`, migrated by its own runner at start-up), the
 * version's thumbnail, the images a render may show, and the workers' liveness (advisory locks and
 * `render_workers`, migration 007).
 */
import type { Queryable } from '../db.ts';

/** graphile-worker's task name for "render this version's thumbnails". */
export const RENDER_TASK = 'render_version';
/** The channel a worker NOTIFYs when a version's thumbnails are ready (payload: JSON, see below). */
export const THUMBNAIL_CHANNEL = 'imageflow_thumbnail_ready';

/** What a render needs of a version: its canvas and whose eyes it is rendered for. */
export interface RenderableVersionRow {
  version_id: string;
  image_id: string;
  session_id: string | null;
  canvas_state: unknown;
  thumbnail_path: string | null;
  /** The session's owner, or (a version without session) the image's owner. */
  viewer_id: string;
}

export interface VisibleImageRow {
  image_id: string;
  storage_path: string;
}

export interface QueueCounts {
  /** Waiting to run (including retries waiting for their backoff). */
  waiting: number;
  running: number;
  /** Failed `max_attempts` times: kept with their last error, never run again by themselves. */
  parked: number;
}

export interface ParkedJobRow {
  id: string;
  key: string | null;
  attempts: number;
  last_error: string | null;
}

/** The advisory-lock namespace (classid) of render workers' liveness locks: 'REND'. */
export const LOCK_CLASS = 0x52454e44;

export const renderQueries = {
  /**
   * Enqueues a version's render in the caller's transaction (graphile-worker's own SQL API, so
   * the job exists exactly when the version does). `job_key` collapses duplicate requests for one
   * version into one pending job.
   */
  enqueue: `
    SELECT (graphile_worker.add_job($1::text, json_build_object('versionId', $2::text), job_key := $3::text,
                                    max_attempts := $4::int)).id AS id`,
  version: `
    SELECT v.version_id, v.image_id, v.session_id, v.canvas_state, v.thumbnail_path,
           COALESCE(s.owner_id, i.user_id) AS viewer_id
    FROM image_versions v
    JOIN images i ON i.image_id = v.image_id
    LEFT JOIN edit_sessions s ON s.session_id = v.session_id
    WHERE v.version_id = $1`,
  /**
   * Of the given images, those `$2` may see (the seed's images_view_policy, as
   * persistence/repositories/images.ts `visibleTo`): public, their own, `followers` of people they
   * follow. Anything else — another user's private original — is never read for a render.
   */
  visibleImages: `
    SELECT i.image_id, i.storage_path FROM images i
    WHERE i.image_id = ANY($1::varchar[]) AND NOT i.is_deleted AND (
      i.privacy_level = 'public' OR i.user_id = $2 OR (i.privacy_level = 'followers' AND EXISTS (
        SELECT 1 FROM follows f WHERE f.follower_id = $2 AND f.following_id = i.user_id)))`,
  setThumbnail: `UPDATE image_versions SET thumbnail_path = $2 WHERE version_id = $1`,
  notify: `SELECT pg_notify($1, $2)`,
  register: `
    INSERT INTO render_workers (worker_id, lock_key, process) VALUES ($1, $2, $3)
    ON CONFLICT (worker_id) DO UPDATE SET lock_key = EXCLUDED.lock_key, process = EXCLUDED.process`,
  forget: `DELETE FROM render_workers WHERE worker_id = ANY($1::varchar[])`,
  /** Holds a process's liveness lock for the life of its connection. */
  lock: `SELECT pg_advisory_lock(${LOCK_CLASS}, $1)`,
  /** True when nobody holds `$1` — its process is gone; the caller must `unlock` it again. */
  tryLock: `SELECT pg_try_advisory_lock(${LOCK_CLASS}, $1) AS free`,
  unlockKey: `SELECT pg_advisory_unlock(${LOCK_CLASS}, $1)`,
  /** Other processes' lock keys and the worker ids each runs. */
  others: `
    SELECT lock_key, array_agg(worker_id ORDER BY worker_id) AS worker_ids FROM render_workers
    WHERE lock_key <> $1 GROUP BY lock_key`,
  /**
   * Render jobs locked for longer than `$1` ms by a worker id no process has registered: its
   * process died between taking its first job and writing its row.
   */
  orphans: `
    SELECT DISTINCT j.locked_by FROM graphile_worker.jobs j
    WHERE j.task_identifier = $2 AND j.locked_by IS NOT NULL
      AND j.locked_at < now() - $1::int * interval '1 millisecond'
      AND NOT EXISTS (SELECT 1 FROM render_workers w WHERE w.worker_id = j.locked_by)`,
  /** graphile-worker's own function: the jobs those workers held become available again at once. */
  unlock: `SELECT graphile_worker.force_unlock_workers($1::text[])`,
  counts: `
    SELECT count(*) FILTER (WHERE locked_at IS NULL AND attempts < max_attempts)::int AS waiting,
           count(*) FILTER (WHERE locked_at IS NOT NULL)::int AS running,
           count(*) FILTER (WHERE locked_at IS NULL AND attempts >= max_attempts)::int AS parked
    FROM graphile_worker.jobs WHERE task_identifier = $1`,
  parked: `
    SELECT id::text AS id, key, attempts, last_error FROM graphile_worker.jobs
    WHERE task_identifier = $1 AND locked_at IS NULL AND attempts >= max_attempts ORDER BY id`,
} as const;

export const renderJobKey = (versionId: string) => `render:${versionId}`;

/**
 * Attempts before a render job is parked. graphile-worker waits exp(attempt) seconds between
 * attempts: retries after about 3 s, 7 s, 20 s and 55 s, parked about 1.5 min after the first try.
 */
export const RENDER_MAX_ATTEMPTS = 5;

/** Enqueues the render of a version inside `tx` (call it in the transaction that writes the version). */
export async function enqueueRender(tx: Queryable, versionId: string, maxAttempts = RENDER_MAX_ATTEMPTS): Promise<string> {
  const { rows } = await tx.query<{ id: string }>(renderQueries.enqueue, [RENDER_TASK, versionId, renderJobKey(versionId), maxAttempts]);
  return String(rows[0]!.id);
}

export async function getRenderableVersion(db: Queryable, versionId: string): Promise<RenderableVersionRow | undefined> {
  const { rows } = await db.query<RenderableVersionRow>(renderQueries.version, [versionId]);
  return rows[0];
}

export async function visibleImages(db: Queryable, imageIds: readonly string[], viewerId: string): Promise<VisibleImageRow[]> {
  if (imageIds.length === 0) return [];
  const { rows } = await db.query<VisibleImageRow>(renderQueries.visibleImages, [imageIds, viewerId]);
  return rows;
}

export async function setThumbnailPath(tx: Queryable, versionId: string, path: string): Promise<void> {
  await tx.query(renderQueries.setThumbnail, [versionId, path]);
}

/** NOTIFY on `channel`; inside a transaction it is delivered at commit, and not at all on rollback. */
export async function notify(tx: Queryable, channel: string, payload: string): Promise<void> {
  await tx.query(renderQueries.notify, [channel, payload]);
}

export async function registerWorkers(db: Queryable, workerIds: readonly string[], lockKey: number, process: string): Promise<void> {
  for (const id of workerIds) await db.query(renderQueries.register, [id, lockKey, process]);
}

export async function forgetWorkers(db: Queryable, workerIds: readonly string[]): Promise<void> {
  if (workerIds.length > 0) await db.query(renderQueries.forget, [workerIds]);
}

/** Takes the liveness lock `key` on `client` and keeps it for as long as that connection lives. */
export async function holdLivenessLock(client: Queryable, key: number): Promise<void> {
  await client.query(renderQueries.lock, [key]);
}

/** Whether the process holding `key` is gone (its lock is free). Run it on one connection. */
export async function isLockFree(client: Queryable, key: number): Promise<boolean> {
  const { rows } = await client.query<{ free: boolean }>(renderQueries.tryLock, [key]);
  if (!rows[0]?.free) return false;
  await client.query(renderQueries.unlockKey, [key]);
  return true;
}

export async function otherProcesses(db: Queryable, ownKey: number): Promise<Array<{ lock_key: number; worker_ids: string[] }>> {
  const { rows } = await db.query<{ lock_key: number; worker_ids: string[] }>(renderQueries.others, [ownKey]);
  return rows;
}

export async function orphanedWorkers(db: Queryable, olderThanMs: number): Promise<string[]> {
  const { rows } = await db.query<{ locked_by: string }>(renderQueries.orphans, [olderThanMs, RENDER_TASK]);
  return rows.map((r) => r.locked_by);
}

export async function unlockWorkers(db: Queryable, workerIds: readonly string[]): Promise<void> {
  if (workerIds.length > 0) await db.query(renderQueries.unlock, [workerIds]);
}

export async function queueCounts(db: Queryable): Promise<QueueCounts> {
  const { rows } = await db.query<QueueCounts>(renderQueries.counts, [RENDER_TASK]);
  return rows[0] ?? { waiting: 0, running: 0, parked: 0 };
}

export async function parkedJobs(db: Queryable): Promise<ParkedJobRow[]> {
  const { rows } = await db.query<ParkedJobRow>(renderQueries.parked, [RENDER_TASK]);
  return rows;
}
