-- Up Migration

-- Which render worker processes are alive (worker/queue.ts). graphile-worker keeps a job locked by
-- a worker that died mid-job for four hours before anyone may take it again. Each worker process
-- holds a session-level advisory lock (lock_key, in the namespace classid 0x52454e44) on a
-- connection of its own for as long as it lives, and records here which graphile-worker worker
-- ids it runs. PostgreSQL releases the lock the moment the process's connection dies (kill -9
-- included); any worker that can take a dead process's lock unlocks that process's jobs at once
-- (graphile-worker's force_unlock_workers) and deletes its rows. A live process that is merely
-- slow keeps its connection and its lock, so it is never taken for dead.
-- The job queue itself lives in graphile-worker's own schema (graphile_worker), which its runner
-- migrates at start-up.
CREATE TABLE render_workers (
  worker_id     VARCHAR(64) PRIMARY KEY,
  lock_key      INTEGER NOT NULL,
  -- which process (NODE_ID / worker name, host and pid), for people reading the table
  process       VARCHAR(128) NOT NULL,
  registered_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_render_workers_lock ON render_workers (lock_key);

-- Down Migration
DROP TABLE render_workers;
