/**
 * Who may do what in an edit session (docs/CONTRACT.md "Identity and access"), as pure decisions over
 * rows the repositories return, so the Hocuspocus hook and the HTTP routes share one rule.
 */
import { AppError } from '../../shared/errors.ts';
import type { Database } from '../../persistence/db.ts';
import { getUser, loginSessionRemainingMs, type UserRow } from '../../persistence/repositories/users.ts';
import { getSessionAccess, type SessionAccessRow } from '../../persistence/repositories/sessions.ts';
import type { Claims } from './tokens.ts';

export type Role = 'owner' | 'editor' | 'viewer';

/** Decides a user's role in a session from its row; throws the fitting AppError. */
export function decideRole(row: SessionAccessRow | undefined, userId: string): Role {
  if (!row) throw new AppError('session_not_found');
  if (!row.is_active) throw new AppError('session_ended');
  if (row.is_expired) throw new AppError('session_expired');
  if (row.owner_id === userId) return 'owner';
  if (!row.is_participant) throw new AppError('forbidden', 'You are not a participant of this edit session.');
  return row.permissions?.canEdit === true ? 'editor' : 'viewer';
}

/** Checks that the token's user exists and is active, and its `sid` (if any) is a live login. */
export async function authenticate(db: Database, claims: Claims): Promise<UserRow> {
  return (await authenticateUntil(db, claims)).user;
}

/**
 * `authenticate`, also saying how long the token's login session has left (ms, by the database's
 * clock; null without `sid`), so an open connection can be closed when it runs out.
 */
export async function authenticateUntil(db: Database, claims: Claims): Promise<{ user: UserRow; loginExpiresInMs: number | null }> {
  const user = await getUser(db, claims.sub);
  if (!user || !user.is_active) throw new AppError('unknown_user');
  if (!claims.sid) return { user, loginExpiresInMs: null };
  const remaining = await loginSessionRemainingMs(db, claims.sid, claims.sub);
  if (remaining === undefined) throw new AppError('login_session_invalid');
  return { user, loginExpiresInMs: remaining };
}

export async function resolveRole(
  db: Database,
  claims: Claims,
  sessionId: string,
): Promise<{ role: Role; session: SessionAccessRow; user: UserRow; loginExpiresInMs: number | null }> {
  const { user, loginExpiresInMs } = await authenticateUntil(db, claims);
  const session = await getSessionAccess(db, sessionId, claims.sub);
  return { role: decideRole(session, claims.sub), session: session!, user, loginExpiresInMs };
}
