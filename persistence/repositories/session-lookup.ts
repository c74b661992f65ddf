/** Named queries for discovering edit sessions: the ones a user owns or takes part in. */
import type { Queryable } from '../db.ts';
import type { SessionAccessRow } from './sessions.ts';

const columns = `s.session_id, s.image_id, s.owner_id, s.created_at, s.expires_at, s.is_active, s.session_type,
  s.base_version_id, s.head_version_id, s.branch_name, s.ended_at`;

export const sessionLookupQueries = {
  /**
   * Sessions `$1` owns or is a participant of, newest first; `$2` an image id or NULL for all;
   * `$3` true for active, unexpired ones only. At most `$4`.
   */
  memberOf: `
    SELECT ${columns}, p.permissions, p.cursor_color, (p.user_id IS NOT NULL) AS is_participant,
           (s.expires_at <= now()) AS is_expired
    FROM edit_sessions s
    LEFT JOIN session_participants p ON p.session_id = s.session_id AND p.user_id = $1
    WHERE (s.owner_id = $1 OR p.user_id IS NOT NULL)
      AND ($2::varchar IS NULL OR s.image_id = $2)
      AND (NOT $3::boolean OR (s.is_active AND s.expires_at > now()))
    ORDER BY s.created_at DESC, s.session_id
    LIMIT $4`,
} as const;

export async function listSessionsOfMember(
  db: Queryable,
  userId: string,
  options: { imageId?: string | undefined; activeOnly: boolean; limit: number },
): Promise<SessionAccessRow[]> {
  const { rows } = await db.query<SessionAccessRow>(sessionLookupQueries.memberOf, [
    userId,
    options.imageId ?? null,
    options.activeOnly,
    options.limit,
  ]);
  return rows;
}
