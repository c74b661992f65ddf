/** Named queries over `session_participants`. */
import type { Queryable } from '../db.ts';

export interface Permissions {
  canEdit: boolean;
  canComment: boolean;
}

export interface ParticipantRow {
  session_id: string;
  user_id: string;
  joined_at: Date | null;
  last_active_at: Date | null;
  permissions: Permissions;
  cursor_color: string | null;
  is_online: boolean;
}

const columns = 'session_id, user_id, joined_at, last_active_at, permissions, cursor_color, is_online';

export const participantQueries = {
  /**
   * Invites, or changes an existing participant's permissions. A new participant gets `$3` (the
   * defaults with the given fields on top) and the first palette colour not yet used in the
   * session (the unique index on (session_id, cursor_color) backs that up). An existing one keeps
   * every field the change `$5` leaves out: jsonb `||` merges the given fields into the stored ones
   * in the one statement, so two concurrent changes of different fields both stick.
   */
  upsert: `
    INSERT INTO session_participants (session_id, user_id, permissions, cursor_color, joined_at, last_active_at)
    VALUES ($1::varchar, $2::varchar, $3::jsonb, (
      SELECT c FROM unnest($4::varchar[]) WITH ORDINALITY AS p(c, i)
      WHERE c NOT IN (SELECT cursor_color FROM session_participants WHERE session_id = $1::varchar AND cursor_color IS NOT NULL)
      ORDER BY i LIMIT 1), NULL, NULL)
    ON CONFLICT (session_id, user_id) DO UPDATE
      SET permissions = COALESCE(session_participants.permissions, '{}'::jsonb) || $5::jsonb
    RETURNING ${columns}`,
  remove: `DELETE FROM session_participants WHERE session_id = $1 AND user_id = $2 RETURNING ${columns}`,
  get: `SELECT ${columns} FROM session_participants WHERE session_id = $1 AND user_id = $2`,
  /** With each participant's username and display name (what a participants list shows). */
  list: `
    SELECT ${columns.split(', ').map((c) => `p.${c}`).join(', ')}, u.username, u.display_name
    FROM session_participants p JOIN users u ON u.user_id = p.user_id
    WHERE p.session_id = $1 ORDER BY p.joined_at NULLS LAST, p.user_id`,
} as const;

/**
 * Invites `userId` with `initial` permissions, or, if they already take part, merges `change` into
 * their stored permissions (fields absent from `change` keep their value). Returns the row as stored.
 */
export async function upsertParticipant(
  db: Queryable,
  sessionId: string,
  userId: string,
  permissions: { initial: Permissions; change: Partial<Permissions> },
  palette: readonly string[],
): Promise<ParticipantRow> {
  const { rows } = await db.query<ParticipantRow>(participantQueries.upsert, [
    sessionId,
    userId,
    JSON.stringify(permissions.initial),
    palette,
    JSON.stringify(permissions.change),
  ]);
  return rows[0]!;
}

export async function removeParticipant(db: Queryable, sessionId: string, userId: string): Promise<ParticipantRow | undefined> {
  const { rows } = await db.query<ParticipantRow>(participantQueries.remove, [sessionId, userId]);
  return rows[0];
}

export async function getParticipant(db: Queryable, sessionId: string, userId: string): Promise<ParticipantRow | undefined> {
  const { rows } = await db.query<ParticipantRow>(participantQueries.get, [sessionId, userId]);
  return rows[0];
}

export type ListedParticipantRow = ParticipantRow & { username: string; display_name: string | null };

export async function listParticipants(db: Queryable, sessionId: string): Promise<ListedParticipantRow[]> {
  const { rows } = await db.query<ListedParticipantRow>(participantQueries.list, [sessionId]);
  return rows;
}
