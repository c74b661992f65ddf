/** Named queries over `users` and `user_sessions`. */
import type { Queryable } from '../db.ts';

export interface UserRow {
  user_id: string;
  username: string;
  display_name: string;
  is_active: boolean;
}

export const userQueries = {
  get: `SELECT user_id, username, display_name, is_active FROM users WHERE user_id = $1`,
  getMany: `SELECT user_id, username, display_name, is_active FROM users WHERE user_id = ANY($1::varchar[])`,
  insert: `
    INSERT INTO users (user_id, username, email, password_hash, display_name)
    VALUES ($1, $2, $3, $4, $5)`,
  byUsername: `SELECT user_id, username, display_name, is_active FROM users WHERE username = $1`,
  any: `SELECT EXISTS (SELECT 1 FROM users) AS any`,
  list: `SELECT user_id, username, display_name, is_active FROM users ORDER BY created_at, user_id`,
  deactivate: `UPDATE users SET is_active = FALSE WHERE user_id = $1 RETURNING user_id, username, display_name, is_active`,
  loginSessionRemaining: `
    SELECT (extract(epoch FROM expires_at - now()) * 1000)::float8 AS expires_in_ms
    FROM user_sessions WHERE session_id = $1 AND user_id = $2 AND expires_at > now()`,
} as const;

export async function getUser(db: Queryable, userId: string): Promise<UserRow | undefined> {
  const { rows } = await db.query<UserRow>(userQueries.get, [userId]);
  return rows[0];
}

/** Several users in one round trip (absent ones are simply not in the answer). */
export async function getUsers(db: Queryable, userIds: readonly string[]): Promise<UserRow[]> {
  const { rows } = await db.query<UserRow>(userQueries.getMany, [userIds]);
  return rows;
}

export async function getUserByUsername(db: Queryable, username: string): Promise<UserRow | undefined> {
  const { rows } = await db.query<UserRow>(userQueries.byUsername, [username]);
  return rows[0];
}

export async function hasUsers(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ any: boolean }>(userQueries.any);
  return rows[0]?.any === true;
}

export async function listUsers(db: Queryable): Promise<UserRow[]> {
  const { rows } = await db.query<UserRow>(userQueries.list);
  return rows;
}

export async function deactivateUser(db: Queryable, userId: string): Promise<UserRow | undefined> {
  const { rows } = await db.query<UserRow>(userQueries.deactivate, [userId]);
  return rows[0];
}

export async function insertUser(
  db: Queryable,
  user: { userId: string; username: string; email: string; displayName: string; passwordHash?: string },
): Promise<void> {
  // No password login exists in this server: the placeholder hash matches no password.
  await db.query(userQueries.insert, [user.userId, user.username, user.email, user.passwordHash ?? '!', user.displayName]);
}

/** Milliseconds the login session `sid` of that user has left by the database's clock; undefined when it is gone or expired. */
export async function loginSessionRemainingMs(db: Queryable, sid: string, userId: string): Promise<number | undefined> {
  const { rows } = await db.query<{ expires_in_ms: number }>(userQueries.loginSessionRemaining, [sid, userId]);
  return rows[0]?.expires_in_ms;
}
