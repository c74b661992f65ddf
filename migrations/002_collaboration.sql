-- 002_collaboration: what real-time collaboration adds to the seed schema. Additions only: the seed's
-- names and types stay as they are (docs/CONTRACT.md, "additions allowed, renames not").
--
-- One edit session = one Yjs document (the WebSocket document name is edit_sessions.session_id).
-- Its durable form is an append-only update log (document_updates) that compaction periodically
-- folds into a snapshot row, plus a one-row summary per document (document_states) so that loading
-- and compaction decisions need no scan of the log.

-- Up Migration

-- ---------------------------------------------------------------------------------------------
-- edit_sessions: where in the version tree the session sits, and when it ended
-- ---------------------------------------------------------------------------------------------
-- base_version_id: the version the session's document was seeded from (POST /api/sessions
--   fromVersionId, or the image's current version). Kept so a restarted server can tell what the
--   session started from and so the version tree can show which sessions branched where.
-- head_version_id: the latest version saved from this session. A snapshot's new image_versions row
--   takes it as parent_version_id, so successive saves of one session form a chain, and two sessions
--   seeded from the same version form two branches. Starts equal to base_version_id.
-- Both ON DELETE SET NULL: pruning old versions must not delete the sessions that pointed at them.
-- (That both versions belong to edit_sessions.image_id is the writer's invariant; a foreign key
-- cannot express it against image_versions' single-column key.)
ALTER TABLE edit_sessions
  ADD COLUMN base_version_id VARCHAR(20) REFERENCES image_versions(version_id) ON DELETE SET NULL,
  ADD COLUMN head_version_id VARCHAR(20) REFERENCES image_versions(version_id) ON DELETE SET NULL,
  -- The branch the session's saves are recorded under (image_versions.branch_name); NULL = the
  -- image's main line.
  ADD COLUMN branch_name VARCHAR(100),
  -- When the session was ended (POST /api/sessions/:id/end sets it together with is_active = FALSE),
  -- as opposed to expires_at, the deadline. NULL while it has not been ended explicitly.
  ADD COLUMN ended_at TIMESTAMPTZ,
  ADD CONSTRAINT edit_sessions_ended_at_check CHECK (ended_at >= created_at);

-- ON DELETE SET NULL looks up referencing sessions for every deleted version; without these indexes
-- each version delete would scan edit_sessions. Partial: most sessions reference few versions.
CREATE INDEX idx_sessions_base_version_id ON edit_sessions (base_version_id) WHERE base_version_id IS NOT NULL;
CREATE INDEX idx_sessions_head_version_id ON edit_sessions (head_version_id) WHERE head_version_id IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- session_participants: presence
-- ---------------------------------------------------------------------------------------------
-- is_online: whether the participant has at least one open connection to the session right now;
--   lets the HTTP API and other nodes list who is present without asking every node's memory.
--   NOT NULL DEFAULT FALSE: an invited participant is offline until they connect.
-- left_at: when their last connection closed (NULL while connected or never connected); with
--   joined_at and last_active_at this is the presence history the seed's columns started.
ALTER TABLE session_participants
  ADD COLUMN is_online BOOLEAN NOT NULL DEFAULT FALSE,
  ADD COLUMN left_at TIMESTAMPTZ;

-- Each participant's cursor colour is how others tell them apart in awareness, so it is unique
-- within a session. Participants without a colour yet (NULL) do not collide.
CREATE UNIQUE INDEX idx_participants_session_color
  ON session_participants (session_id, cursor_color)
  WHERE cursor_color IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- document_updates: the durable Yjs update log
-- ---------------------------------------------------------------------------------------------
-- Every update the server acknowledges to a client is first appended here (the durable
-- acknowledgement of docs/CONTRACT.md: an acknowledged update survives kill -9 of any node).
--   seq: orders the rows of one document (replay order). The writer may assign it; when it does not,
--     the identity sequence does (persistence/repositories/documents.ts inserts without seq, so
--     several nodes can append to one document without coordinating). A writer that assigns seqs
--     itself must use one scheme per database: the primary key (session_id, seq) then makes two
--     writers that picked the same seq collide instead of silently overwriting each other.
--   kind: 'update' is one Yjs update as received (after Yjs accepted it; see docs/STACK-NOTES.md on
--     poisoned logs); 'snapshot' is a merged state written by compaction, which deletes the rows it
--     merged in the same transaction, so the snapshot replaces the rows below it. (With identity
--     seqs an update may commit after a snapshot with a lower seq than it without being in it;
--     compaction leaves such rows in place, and since Yjs updates commute, loading = applying every
--     row in seq order stays correct.)
--   byte_size: generated so that size accounting (document_states.byte_size, compaction triggers,
--     metrics) never disagrees with the payload.
--   node_id: which server node wrote the row (NODE_ID), for tracing multi-node incidents.
-- ON DELETE CASCADE: the log belongs to its session and goes with it.
CREATE TABLE document_updates (
  session_id VARCHAR(20) NOT NULL REFERENCES edit_sessions(session_id) ON DELETE CASCADE,
  seq BIGINT NOT NULL GENERATED BY DEFAULT AS IDENTITY,
  kind VARCHAR(10) NOT NULL,
  payload BYTEA NOT NULL,
  byte_size INTEGER GENERATED ALWAYS AS (octet_length(payload)) STORED,
  node_id VARCHAR(64),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),

  PRIMARY KEY (session_id, seq),
  CONSTRAINT document_updates_kind_check CHECK (kind IN ('update', 'snapshot')),
  -- seq 0 is document_states' "nothing written yet", so real rows start at 1.
  CONSTRAINT document_updates_seq_check CHECK (seq >= 1),
  -- An empty payload is not a Yjs update (the smallest valid one is 2 bytes).
  CONSTRAINT document_updates_payload_check CHECK (octet_length(payload) > 0)
);

-- Finding the latest snapshot of a document without document_states (recovery, consistency checks):
-- the snapshots only, newest first.
CREATE INDEX idx_document_updates_snapshots
  ON document_updates (session_id, seq DESC)
  WHERE kind = 'snapshot';

-- ---------------------------------------------------------------------------------------------
-- document_states: one summary row per document
-- ---------------------------------------------------------------------------------------------
-- Updated in the same transaction as the log rows it summarises, so it is exact:
--   last_seq: highest seq known written; 0 = empty log. (A writer that assigns seqs itself takes
--     last_seq + 1 while holding this row's lock: SELECT ... FOR UPDATE or UPDATE ... RETURNING.)
--   snapshot_seq: seq of the latest snapshot row; 0 = none yet. Loading starts there.
--   byte_size / update_count: what the log holds after snapshot_seq (or in total); compaction runs
--     when either grows past a threshold, without scanning the log.
--   compacted_at: when compaction last ran (NULL = never).
CREATE TABLE document_states (
  session_id VARCHAR(20) PRIMARY KEY REFERENCES edit_sessions(session_id) ON DELETE CASCADE,
  last_seq BIGINT NOT NULL DEFAULT 0,
  snapshot_seq BIGINT NOT NULL DEFAULT 0,
  byte_size BIGINT NOT NULL DEFAULT 0,
  update_count INTEGER NOT NULL DEFAULT 0,
  compacted_at TIMESTAMPTZ,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),

  CONSTRAINT document_states_last_seq_check CHECK (last_seq >= 0),
  CONSTRAINT document_states_snapshot_seq_check CHECK (snapshot_seq >= 0 AND snapshot_seq <= last_seq),
  CONSTRAINT document_states_byte_size_check CHECK (byte_size >= 0),
  CONSTRAINT document_states_update_count_check CHECK (update_count >= 0)
);

-- Down Migration

DROP TABLE IF EXISTS document_states;
DROP TABLE IF EXISTS document_updates;
DROP INDEX IF EXISTS idx_participants_session_color;
ALTER TABLE session_participants
  DROP COLUMN IF EXISTS left_at,
  DROP COLUMN IF EXISTS is_online;
DROP INDEX IF EXISTS idx_sessions_head_version_id;
DROP INDEX IF EXISTS idx_sessions_base_version_id;
ALTER TABLE edit_sessions
  DROP CONSTRAINT IF EXISTS edit_sessions_ended_at_check,
  DROP COLUMN IF EXISTS ended_at,
  DROP COLUMN IF EXISTS branch_name,
  DROP COLUMN IF EXISTS head_version_id,
  DROP COLUMN IF EXISTS base_version_id;
