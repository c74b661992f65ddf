/** Named queries over `edit_sessions` and `session_participants`. */
import type { Queryable } from '../db.ts';

export interface SessionRow {
  session_id: string;
  image_id: string;
  owner_id: string;
  created_at: Date;
  expires_at: Date;
  is_active: boolean;
  session_type: string;
  base_version_id: string | null;
  head_version_id: string | null;
  branch_name: string | null;
  ended_at: Date | null;
}

/** A session as seen by one user: the row plus that user's participant permissions, if any. */
export interface SessionAccessRow extends SessionRow {
  permissions: { canEdit?: boolean; canComment?: boolean } | null;
  cursor_color: string | null;
  is_participant: boolean;
  /** Evaluated by the database clock, so every node agrees on expiry. */
  is_expired: boolean;
  /** Milliseconds from the database's now to expires_at (≤ 0 once expired): a node arms its expiry timer from this, not from its own clock. */
  expires_in_ms: number;
}

const columns = `s.session_id, s.image_id, s.owner_id, s.created_at, s.expires_at, s.is_active, s.session_type,
  s.base_version_id, s.head_version_id, s.branch_name, s.ended_at`;

export const sessionQueries = {
  get: `SELECT ${columns} FROM edit_sessions s WHERE s.session_id = $1`,
  access: `
    SELECT ${columns}, p.permissions, p.cursor_color, (p.user_id IS NOT NULL) AS is_participant, (s.expires_at <= now()) AS is_expired,
           (extract(epoch FROM s.expires_at - now()) * 1000)::float8 AS expires_in_ms
    FROM edit_sessions s
    LEFT JOIN session_participants p ON p.session_id = s.session_id AND p.user_id = $2
    WHERE s.session_id = $1`,
  /** `access` for several (session, user) pairs at once; `k_user_id` says whose row it is. */
  accessMany: `
    SELECT ${columns}, k.user_id AS k_user_id, p.permissions, p.cursor_color, (p.user_id IS NOT NULL) AS is_participant,
           (s.expires_at <= now()) AS is_expired, (extract(epoch FROM s.expires_at - now()) * 1000)::float8 AS expires_in_ms
    FROM unnest($1::varchar[], $2::varchar[]) AS k(session_id, user_id)
    JOIN edit_sessions s ON s.session_id = k.session_id
    LEFT JOIN session_participants p ON p.session_id = s.session_id AND p.user_id = k.user_id`,
  insert: `
    INSERT INTO edit_sessions (session_id, image_id, owner_id, expires_at, session_type, base_version_id,
                               head_version_id, branch_name)
    VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, $6, $6, $7)
    RETURNING session_id, image_id, owner_id, created_at, expires_at, is_active, session_type,
              base_version_id, head_version_id, branch_name, ended_at`,
  activeOf: `
    SELECT ${columns} FROM edit_sessions s
    WHERE s.owner_id = $1 AND s.image_id = $2 AND s.is_active AND s.expires_at > now()
    ORDER BY s.created_at DESC`,
  end: `
    UPDATE edit_sessions SET is_active = FALSE, ended_at = COALESCE(ended_at, now())
    WHERE session_id = $1
    RETURNING session_id, image_id, owner_id, created_at, expires_at, is_active, session_type,
              base_version_id, head_version_id, branch_name, ended_at`,
} as const;

export async function getSession(db: Queryable, sessionId: string): Promise<SessionRow | undefined> {
  const { rows } = await db.query<SessionRow>(sessionQueries.get, [sessionId]);
  return rows[0];
}

/** `getSessionAccess` for several (session, user) pairs in one round trip: by `${sessionId}\0${userId}`. */
export async function getSessionAccesses(db: Queryable, pairs: ReadonlyArray<readonly [string, string]>): Promise<Map<string, SessionAccessRow>> {
  const { rows } = await db.query<SessionAccessRow & { k_user_id: string }>(sessionQueries.accessMany, [pairs.map((p) => p[0]), pairs.map((p) => p[1])]);
  const out = new Map<string, SessionAccessRow>();
  for (const { k_user_id: userId, ...row } of rows) out.set(`${row.session_id}\0${userId}`, row);
  return out;
}

export async function getSessionAccess(db: Queryable, sessionId: string, userId: string): Promise<SessionAccessRow | undefined> {
  const { rows } = await db.query<SessionAccessRow>(sessionQueries.access, [sessionId, userId]);
  return rows[0];
}

export async function insertSession(
  db: Queryable,
  s: {
    sessionId: string;
    imageId: string;
    ownerId: string;
    expiresInSeconds: number;
    sessionType: string;
    baseVersionId: string | null;
    branchName: string | null;
  },
): Promise<SessionRow> {
  const { rows } = await db.query<SessionRow>(sessionQueries.insert, [
    s.sessionId,
    s.imageId,
    s.ownerId,
    s.expiresInSeconds,
    s.sessionType,
    s.baseVersionId,
    s.branchName,
  ]);
  return rows[0]!;
}

export async function endSession(db: Queryable, sessionId: string): Promise<SessionRow | undefined> {
  const { rows } = await db.query<SessionRow>(sessionQueries.end, [sessionId]);
  return rows[0];
}

/** A user's active, unexpired sessions on one image, newest first. */
export async function listActiveSessionsOf(db: Queryable, ownerId: string, imageId: string): Promise<SessionRow[]> {
  const { rows } = await db.query<SessionRow>(sessionQueries.activeOf, [ownerId, imageId]);
  return rows;
}
