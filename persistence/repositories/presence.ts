/**
 * Named queries for presence across nodes: `node_presence` (each node's connections, heartbeated)
 * and the presence columns of `session_participants` (`joined_at`, `last_active_at`, `is_online`,
 * `left_at`). See migrations/004_presence.sql and server/extensions/presence.ts.
 *
 * Joins, leaves and activity take arrays of (session, user[, connections]): the presence extension
 * writes one batch at a time, one statement per kind for the whole batch, so a thousand users
 * joining at once cost a few statements, not two each. session_participants rows are locked in key
 * order first, so two nodes' batches over the same participants do not deadlock.
 */
import type { Queryable } from '../db.ts';

/**
 * The participants ($1 sessions, $2 users, pairwise) of a batch, as `l`, their rows locked in key
 * order: two nodes' batches over the same participants then take their locks in the same order.
 */
const lockedInKeyOrder = (where: string) => `(
      SELECT sp.session_id, sp.user_id FROM session_participants sp
      JOIN unnest($1::varchar[], $2::varchar[]) AS t(s, u) ON sp.session_id = t.s AND sp.user_id = t.u
      ${where}
      ORDER BY sp.session_id, sp.user_id FOR UPDATE OF sp
    ) l`;

export const presenceQueries = {
  /** This node holds `connections` (> 0) connections of each user to the session. */
  upsertNodes: `
    INSERT INTO node_presence (node_id, session_id, user_id, connections, heartbeat_at)
    SELECT $1, t.s, t.u, t.c, now() FROM unnest($2::varchar[], $3::varchar[], $4::int[]) AS t(s, u, c)
    ON CONFLICT (node_id, session_id, user_id) DO UPDATE SET connections = EXCLUDED.connections, heartbeat_at = now()`,
  /** Joined on some node: online; joined_at keeps the first join. */
  markOnlineMany: `
    UPDATE session_participants p
    SET is_online = TRUE, joined_at = COALESCE(p.joined_at, now()), last_active_at = now(), left_at = NULL
    FROM ${lockedInKeyOrder('')}
    WHERE p.session_id = l.session_id AND p.user_id = l.user_id
    RETURNING p.session_id, p.user_id, p.cursor_color`,
  /** Left this node: its rows go. */
  deleteNodes: `
    DELETE FROM node_presence n USING unnest($2::varchar[], $3::varchar[]) AS t(s, u)
    WHERE n.node_id = $1 AND n.session_id = t.s AND n.user_id = t.u`,
  /** Left this node: offline unless another node still holds a connection (read after the delete). */
  recomputeMany: `
    UPDATE session_participants p
    SET is_online = FALSE, left_at = now()
    FROM ${lockedInKeyOrder('WHERE sp.is_online')}
    WHERE p.session_id = l.session_id AND p.user_id = l.user_id
      AND NOT EXISTS (SELECT 1 FROM node_presence n WHERE n.session_id = p.session_id AND n.user_id = p.user_id)`,
  /** Activity: last_active_at = now. */
  touchMany: `
    UPDATE session_participants p SET last_active_at = now()
    FROM ${lockedInKeyOrder('')}
    WHERE p.session_id = l.session_id AND p.user_id = l.user_id`,
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

/** One participant of a batch; `connections` only for joins. */
export interface PresenceKey {
  sessionId: string;
  userId: string;
  connections?: number;
}

/** 40P01: PostgreSQL chose this statement as a deadlock's victim; it did nothing, run it again. */
async function retryDeadlock<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (error) {
      if ((error as { code?: string }).code !== '40P01' || attempt >= 3) throw error;
    }
  }
}

/**
 * Joins of a batch, each with this node's connection count: their node rows, then online. Two
 * statements whatever the batch's size (the row is written before online is set, as for one).
 * Returns each participant's cursor colour by `${session}\0${user}`.
 */
export async function recordJoins(db: Queryable, nodeId: string, joins: readonly PresenceKey[]): Promise<Map<string, string | null>> {
  const sessions = joins.map((j) => j.sessionId);
  const users = joins.map((j) => j.userId);
  await db.query(presenceQueries.upsertNodes, [nodeId, sessions, users, joins.map((j) => j.connections ?? 1)]);
  const { rows } = await retryDeadlock(() =>
    db.query<{ session_id: string; user_id: string; cursor_color: string | null }>(presenceQueries.markOnlineMany, [sessions, users]),
  );
  return new Map(rows.map((r) => [`${r.session_id}\0${r.user_id}`, r.cursor_color]));
}

/** Leaves of a batch: their node rows deleted, then each offline unless another node still holds a row (read after the delete). */
export async function recordLeaves(db: Queryable, nodeId: string, leaves: readonly PresenceKey[]): Promise<void> {
  const sessions = leaves.map((l) => l.sessionId);
  const users = leaves.map((l) => l.userId);
  await db.query(presenceQueries.deleteNodes, [nodeId, sessions, users]);
  await retryDeadlock(() => db.query(presenceQueries.recomputeMany, [sessions, users]));
}

/** Activity of a batch: `last_active_at` = now. */
export async function touchParticipants(db: Queryable, keys: readonly PresenceKey[]): Promise<void> {
  await retryDeadlock(() => db.query(presenceQueries.touchMany, [keys.map((k) => k.sessionId), keys.map((k) => k.userId)]));
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
