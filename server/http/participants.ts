/** `/api/sessions/:id/participants`: invite, remove (owner only) and list. */
import type { Hono } from 'hono';
import { z } from 'zod';
import { AppError } from '../../shared/errors.ts';
import { isId } from '../../shared/ids.ts';
import { decideRole } from '../auth/access.ts';
import { getSessionAccess } from '../../persistence/repositories/sessions.ts';
import { inviteParticipant, participantJson, removeSessionParticipant, sessionParticipants } from '../participants.ts';
import type { HttpDeps } from './app.ts';
import { readJson, type Env } from './json.ts';

const inviteBody = z.strictObject({
  userId: z.string().refine(isId, 'must be an id'),
  permissions: z.strictObject({ canEdit: z.boolean().optional(), canComment: z.boolean().optional() }).default({}),
});

export function registerParticipantRoutes(app: Hono<Env>, deps: HttpDeps): void {
  app.post('/api/sessions/:id/participants', async (c) => {
    const body = await readJson(c, inviteBody);
    const participant = await inviteParticipant(deps, c.req.param('id'), c.get('claims').sub, body);
    return c.json({ participant: participantJson(participant) }, 201);
  });

  app.delete('/api/sessions/:id/participants/:userId', async (c) => {
    await removeSessionParticipant(deps, c.req.param('id'), c.get('claims').sub, c.req.param('userId'));
    return c.body(null, 204);
  });

  app.get('/api/sessions/:id/participants', async (c) => {
    const sessionId = c.req.param('id');
    const userId = c.get('claims').sub;
    const access = await getSessionAccess(deps.db, sessionId, userId);
    if (!access) throw new AppError('session_not_found');
    if (access.owner_id !== userId && !access.is_participant) decideRole(access, userId);
    const participants = await sessionParticipants(deps.db, sessionId);
    return c.json({ participants: participants.map(participantJson) });
  });
}
