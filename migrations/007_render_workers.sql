-- Up Migration

-- Liveness of render workers (worker/queue.ts). graphile-worker keeps a job locked by a worker
-- that died mid-job for four hours before anyone may take it again; each of our workers
-- heartbeats a row here per graphile-worker worker id, and any worker that finds a row three
-- beats old unlocks that worker's jobs at once (graphile-worker's forceUnlockWorkers) and deletes
-- the row. The job queue itself lives in graphile-worker's own schema (graphile_worker), which
-- its runner migrates at start-up.
CREATE TABLE render_workers (
  worker_id    VARCHAR(64) PRIMARY KEY,
  -- which process (NODE_ID / worker name and pid), for people reading the table
  process      VARCHAR(128) NOT NULL,
  heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_render_workers_heartbeat ON render_workers (heartbeat_at);

-- Down Migration
DROP TABLE render_workers;
