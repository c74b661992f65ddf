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
  insert: `
    INSERT INTO users (user_id, username, email, password_hash, display_name)
    VALUES ($1, $2, $3, $4, $5)`,
  loginSessionValid: `
    SELECT 1 FROM user_sessions WHERE session_id = $1 AND user_id = $2 AND expires_at > now()`,
} as const;

export async function getUser(db: Queryable, userId: string): Promise<UserRow | undefined> {
  const { rows } = await db.query<UserRow>(userQueries.get, [userId]);
  return rows[0];
}

export async function insertUser(
  db: Queryable,
  user: { userId: string; username: string; email: string; displayName: string; passwordHash?: string },
): Promise<void> {
  // No password login exists in this server: the placeholder hash matches no password.
  await db.query(userQueries.insert, [user.userId, user.username, user.email, user.passwordHash ?? '!', user.displayName]);
}

/** True when `sid` names an unexpired login session of that user. */
export async function isLoginSessionValid(db: Queryable, sid: string, userId: string): Promise<boolean> {
  const { rowCount } = await db.query(userQueries.loginSessionValid, [sid, userId]);
  return (rowCount ?? 0) > 0;
}
