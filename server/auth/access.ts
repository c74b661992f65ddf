/**
 * Who may do what in an edit session (docs/CONTRACT.md "Identity and access"), as pure decisions over
 * rows the repositories return, so the Hocuspocus hook and the HTTP routes share one rule.
 */
import { AppError } from '../../shared/errors.ts';
import type { UserRow } from '../../persistence/repositories/users.ts';
import type { AccessSource, SessionAccess } from './access-cache.ts';
import type { Claims } from './tokens.ts';

export type Role = 'owner' | 'editor' | 'viewer';

/** Decides a user's role in a session from its row; throws the fitting AppError. */
export function decideRole(row: SessionAccess | undefined, userId: string): Role {
  if (!row) throw new AppError('session_not_found');
  if (!row.is_active) throw new AppError('session_ended');
  if (row.is_expired) throw new AppError('session_expired');
  if (row.owner_id === userId) return 'owner';
  if (!row.is_participant) throw new AppError('forbidden', 'You are not a participant of this edit session.');
  return row.permissions?.canEdit === true ? 'editor' : 'viewer';
}

/** Checks that the token's user exists and is active, and its `sid` (if any) is a live login. */
export async function authenticate(source: AccessSource, claims: Claims): Promise<UserRow> {
  return (await authenticateUntil(source, claims)).user;
}

/**
 * `authenticate`, also saying how long the token's login session has left (ms, by the database's
 * clock; null without `sid`), so an open connection can be closed when it runs out.
 */
export async function authenticateUntil(source: AccessSource, claims: Claims): Promise<{ user: UserRow; loginExpiresInMs: number | null }> {
  const user = await source.user(claims.sub);
  if (!user || !user.is_active) throw new AppError('unknown_user');
  if (!claims.sid) return { user, loginExpiresInMs: null };
  const remaining = await source.loginRemainingMs(claims.sid, claims.sub);
  if (remaining === undefined) throw new AppError('login_session_invalid');
  return { user, loginExpiresInMs: remaining };
}

/**
 * The role of the token's user in a session. `source` is the database for a re-check, or the access
 * cache (server/auth/access-cache.ts) at connect and for HTTP.
 */
export async function resolveRole(
  source: AccessSource,
  claims: Claims,
  sessionId: string,
): Promise<{ role: Role; session: SessionAccess; user: UserRow; loginExpiresInMs: number | null }> {
  const { user, loginExpiresInMs } = await authenticateUntil(source, claims);
  const session = await source.sessionAccess(sessionId, claims.sub);
  return { role: decideRole(session, claims.sub), session: session!, user, loginExpiresInMs };
}
