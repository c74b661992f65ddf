/**
 * Named queries for presence across nodes: `node_presence` (each node's connections, heartbeated)
 * and the presence columns of `session_participants` (`joined_at`, `last_active_at`, `is_online`,
 * `left_at`). See migrations/004_presence.sql and server/extensions/presence.ts.
 */
import type { Queryable } from '../db.ts';

export const presenceQueries = {
  /** This node holds `connections` (> 0) connections of the user to the session. */
  upsertNode: `
    INSERT INTO node_presence (node_id, session_id, user_id, connections, heartbeat_at)
    VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (node_id, session_id, user_id) DO UPDATE SET connections = EXCLUDED.connections, heartbeat_at = now()`,
  deleteNode: `DELETE FROM node_presence WHERE node_id = $1 AND session_id = $2 AND user_id = $3`,
  /** Joined on some node: online; joined_at keeps the first join. */
  markOnline: `
    UPDATE session_participants
    SET is_online = TRUE, joined_at = COALESCE(joined_at, now()), last_active_at = now(), left_at = NULL
    WHERE session_id = $1 AND user_id = $2
    RETURNING cursor_color`,
  /** Left this node: offline unless another node still holds a connection (read after the delete). */
  recompute: `
    UPDATE session_participants p
    SET is_online = FALSE, left_at = now()
    WHERE p.session_id = $1 AND p.user_id = $2 AND p.is_online
      AND NOT EXISTS (SELECT 1 FROM node_presence n WHERE n.session_id = p.session_id AND n.user_id = p.user_id)`,
  touch: `UPDATE session_participants SET last_active_at = now() WHERE session_id = $1 AND user_id = $2`,
  heartbeat: `UPDATE node_presence SET heartbeat_at = now() WHERE node_id = $1`,
  /** Rows of nodes that stopped heartbeating (dead), or of this node's previous life. */
  sweepStale: `DELETE FROM node_presence WHERE heartbeat_at < now() - make_interval(secs => $1::double precision)`,
  clearNode: `DELETE FROM node_presence WHERE node_id = $1`,
  /** Does a node other than $2, alive within $3 seconds, hold a connection to session $1? */
  onlineElsewhere: `
    SELECT EXISTS (
      SELECT 1 FROM node_presence
      WHERE session_id = $1 AND node_id <> $2 AND heartbeat_at >= now() - make_interval(secs => $3::double precision)
    ) AS online`,
  /** Everyone marked online without a presence row on any node goes offline. */
  offlineOrphans: `
    UPDATE session_participants p
    SET is_online = FALSE, left_at = now()
    WHERE p.is_online
      AND NOT EXISTS (SELECT 1 FROM node_presence n WHERE n.session_id = p.session_id AND n.user_id = p.user_id)`,
  /**
   * The session's owner gets a participant row on first join, with the first free palette colour,
   * so presence and colours cover everyone. Does nothing if the row exists or the user is not the owner.
   */
  ensureOwner: `
    INSERT INTO session_participants (session_id, user_id, permissions, cursor_color, joined_at, last_active_at)
    SELECT $1::varchar, $2::varchar, '{"canEdit": true, "canComment": true}'::jsonb, (
      SELECT c FROM unnest($3::varchar[]) WITH ORDINALITY AS p(c, i)
      WHERE c NOT IN (SELECT cursor_color FROM session_participants WHERE session_id = $1::varchar AND cursor_color IS NOT NULL)
      ORDER BY i LIMIT 1), NULL, NULL
    WHERE EXISTS (SELECT 1 FROM edit_sessions WHERE session_id = $1::varchar AND owner_id = $2::varchar)
    ON CONFLICT (session_id, user_id) DO NOTHING`,
} as const;

export async function recordJoin(db: Queryable, nodeId: string, sessionId: string, userId: string, connections: number): Promise<string | null> {
  await db.query(presenceQueries.upsertNode, [nodeId, sessionId, userId, connections]);
  const { rows } = await db.query<{ cursor_color: string | null }>(presenceQueries.markOnline, [sessionId, userId]);
  return rows[0]?.cursor_color ?? null;
}

export async function recordLeave(db: Queryable, nodeId: string, sessionId: string, userId: string): Promise<void> {
  await db.query(presenceQueries.deleteNode, [nodeId, sessionId, userId]);
  await db.query(presenceQueries.recompute, [sessionId, userId]);
}

export async function touchParticipant(db: Queryable, sessionId: string, userId: string): Promise<void> {
  await db.query(presenceQueries.touch, [sessionId, userId]);
}

export async function heartbeatNode(db: Queryable, nodeId: string): Promise<void> {
  await db.query(presenceQueries.heartbeat, [nodeId]);
}

/** Deletes presence rows older than `staleSeconds` and marks whoever that leaves without a connection offline. */
export async function sweepPresence(db: Queryable, staleSeconds: number): Promise<number> {
  const { rowCount } = await db.query(presenceQueries.sweepStale, [staleSeconds]);
  const offline = await db.query(presenceQueries.offlineOrphans);
  return (rowCount ?? 0) + (offline.rowCount ?? 0);
}

export async function clearNodePresence(db: Queryable, nodeId: string): Promise<void> {
  await db.query(presenceQueries.clearNode, [nodeId]);
  await db.query(presenceQueries.offlineOrphans);
}

export async function ensureOwnerParticipant(db: Queryable, sessionId: string, userId: string, palette: readonly string[]): Promise<void> {
  try {
    await db.query(presenceQueries.ensureOwner, [sessionId, userId, palette]);
  } catch (error) {
    // 23505: an invitation took the same free colour at the same moment; once more picks the next.
    if ((error as { code?: string }).code !== '23505') throw error;
    await db.query(presenceQueries.ensureOwner, [sessionId, userId, palette]);
  }
}

export async function onlineElsewhere(db: Queryable, sessionId: string, nodeId: string, staleSeconds: number): Promise<boolean> {
  const { rows } = await db.query<{ online: boolean }>(presenceQueries.onlineElsewhere, [sessionId, nodeId, staleSeconds]);
  return rows[0]?.online === true;
}
