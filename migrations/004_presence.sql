-- 004: presence across nodes. session_participants.is_online (002) says whether a participant has
-- at least one open connection to the session on any node. Each node records its own connections
-- here and heartbeats its rows; a node that dies (kill -9) stops heartbeating, and any live node's
-- sweeper deletes rows older than three heartbeats and recomputes is_online, so nobody stays
-- online forever because of a dead node.

-- Up Migration

-- node_id: NODE_ID of the server holding the connections; connections: how many of this user's
-- connections to the session that node holds (> 0: a row exists only while there is one);
-- heartbeat_at: moved by the owning node every PRESENCE_HEARTBEAT_MS.
CREATE TABLE node_presence (
  node_id VARCHAR(64) NOT NULL,
  session_id VARCHAR(20) NOT NULL REFERENCES edit_sessions(session_id) ON DELETE CASCADE,
  user_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  connections INTEGER NOT NULL,
  heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),

  PRIMARY KEY (node_id, session_id, user_id),
  CONSTRAINT node_presence_connections_check CHECK (connections > 0)
);

-- is_online is recomputed per (session, user) and swept by heartbeat age.
CREATE INDEX idx_node_presence_session_user ON node_presence (session_id, user_id);
CREATE INDEX idx_node_presence_heartbeat ON node_presence (heartbeat_at);
-- The sweeper's "online but no presence row left" pass reads only online participants.
CREATE INDEX idx_participants_online ON session_participants (session_id, user_id) WHERE is_online;

-- Down Migration

DROP INDEX IF EXISTS idx_participants_online;
DROP TABLE IF EXISTS node_presence;
