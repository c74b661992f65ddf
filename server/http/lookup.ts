/**
 * Discovery: `GET /api/sessions/:id`, `GET /api/sessions?imageId=&state=` (the caller's own sessions
 * and those they take part in) and `GET /api/users?username=` (find someone to invite). The same
 * access rules as the rest: a session is visible to its owner and participants (anyone else: 403,
 * or 410 once it ended or expired — what joining it would answer); a user lookup needs a valid token
 * and answers only active users, by exact username.
 */
import type { Hono } from 'hono';
import { z } from 'zod';
import { AppError } from '../../shared/errors.ts';
import { isId } from '../../shared/ids.ts';
import { decideRole, type Role } from '../auth/access.ts';
import { getSessionAccess, type SessionAccessRow } from '../../persistence/repositories/sessions.ts';
import { listSessionsOfMember } from '../../persistence/repositories/session-lookup.ts';
import { getUserByUsername } from '../../persistence/repositories/users.ts';
import { sessionJson, type HttpDeps } from './app.ts';
import type { Env } from './json.ts';

/** The caller's role in a session they belong to (ended or not). */
function memberRole(row: SessionAccessRow, userId: string): Role {
  if (row.owner_id === userId) return 'owner';
  return row.permissions?.canEdit === true ? 'editor' : 'viewer';
}

function memberSessionJson(row: SessionAccessRow, userId: string) {
  return { ...sessionJson(row), isExpired: row.is_expired, role: memberRole(row, userId) };
}

const listQuery = z.strictObject({
  imageId: z.string().refine(isId, 'must be an id').optional(),
  state: z.enum(['active', 'all']).default('active'),
  limit: z.coerce.number().int().min(1).max(500).default(100),
});

const userQuery = z.strictObject({ username: z.string().min(1).max(50) });

function parseQuery<T>(schema: z.ZodType<T>, query: Record<string, string>): T {
  const parsed = schema.safeParse(query);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new AppError('bad_request', `${issue.path.join('.') || 'query'}: ${issue.message}`);
  }
  return parsed.data;
}

export function registerLookupRoutes(app: Hono<Env>, deps: HttpDeps): void {
  app.get('/api/sessions/:id', async (c) => {
    const userId = c.get('claims').sub;
    const sessionId = c.req.param('id');
    const row = isId(sessionId) ? await getSessionAccess(deps.db, sessionId, userId) : undefined;
    if (!row) throw new AppError('session_not_found');
    // Not a member: the answer joining would give (410 ended/expired, else 403).
    if (row.owner_id !== userId && !row.is_participant) decideRole(row, userId);
    return c.json({ session: memberSessionJson(row, userId) });
  });

  app.get('/api/sessions', async (c) => {
    const userId = c.get('claims').sub;
    const query = parseQuery(listQuery, c.req.query());
    const rows = await listSessionsOfMember(deps.db, userId, {
      imageId: query.imageId,
      activeOnly: query.state === 'active',
      limit: query.limit,
    });
    return c.json({ sessions: rows.map((row) => memberSessionJson(row, userId)) });
  });

  app.get('/api/users', async (c) => {
    const { username } = parseQuery(userQuery, c.req.query());
    const user = await getUserByUsername(deps.db, username);
    if (!user || !user.is_active) throw new AppError('user_not_found', 'No active user with that username exists.');
    return c.json({ user: { userId: user.user_id, username: user.username, displayName: user.display_name } });
  });
}
