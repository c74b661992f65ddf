/**
 * Inviting and removing session participants (owner only). A change to someone's access takes
 * effect on their open connections at once: removal closes them; a changed `canEdit` flips them
 * between read-write and read-only in place.
 *
 * Permissions merge (README "Who may do what"): a change names only the fields it changes; a
 * field it leaves out keeps its stored value. A new participant gets `NEW_PARTICIPANT` for every
 * field the invitation leaves out: read-only (`canEdit: false`) unless the owner says otherwise.
 */
import type { Hocuspocus } from '@hocuspocus/server';
import { AppError } from '../shared/errors.ts';
import { CURSOR_PALETTE } from '../shared/presence.ts';
import type { Database } from '../persistence/db.ts';
import {
  listParticipants,
  removeParticipant,
  upsertParticipant,
  type ListedParticipantRow,
  type ParticipantRow,
  type Permissions,
} from '../persistence/repositories/participants.ts';
import { getSession, type SessionRow } from '../persistence/repositories/sessions.ts';
import { getUser } from '../persistence/repositories/users.ts';
import type { AccessChange } from '../persistence/repositories/access-changes.ts';
import { applyAccessChange } from './extensions/auth.ts';

interface Deps {
  db: Database;
  hocuspocus: Hocuspocus;
  /** Drops the cached access row this node just changed (the feed's notification follows). */
  access?: { invalidate(change: AccessChange): void };
}

/** What a new participant may do when the invitation does not say. */
export const NEW_PARTICIPANT: Permissions = { canEdit: false, canComment: true };

async function ownedSession(db: Database, sessionId: string, userId: string): Promise<SessionRow> {
  const session = await getSession(db, sessionId);
  if (!session) throw new AppError('session_not_found');
  if (session.owner_id !== userId) throw new AppError('not_session_owner');
  return session;
}

export async function inviteParticipant(
  deps: Deps,
  sessionId: string,
  actorId: string,
  input: { userId: string; permissions: Partial<Permissions> },
): Promise<ParticipantRow> {
  const session = await ownedSession(deps.db, sessionId, actorId);
  if (!session.is_active) throw new AppError('session_ended');
  if (input.userId === session.owner_id) throw new AppError('invalid_body', 'userId: the owner is not invited; they always have access.');
  const user = await getUser(deps.db, input.userId);
  if (!user || !user.is_active) throw new AppError('user_not_found');
  const change: Partial<Permissions> = {};
  if (input.permissions.canEdit !== undefined) change.canEdit = input.permissions.canEdit;
  if (input.permissions.canComment !== undefined) change.canComment = input.permissions.canComment;
  const permissions = { initial: { ...NEW_PARTICIPANT, ...change }, change };
  let row: ParticipantRow;
  try {
    row = await upsertParticipant(deps.db, sessionId, input.userId, permissions, CURSOR_PALETTE);
  } catch (error) {
    // 23505: two invitations raced for the same free colour; the second retries once.
    if ((error as { code?: string }).code !== '23505') throw error;
    row = await upsertParticipant(deps.db, sessionId, input.userId, permissions, CURSOR_PALETTE);
  }
  deps.access?.invalidate({ kind: 'participant', sessionId, userId: input.userId });
  // The role follows the permissions as stored after the merge, not the request's fields.
  applyAccessChange(deps.hocuspocus, sessionId, input.userId, row.permissions.canEdit === true ? 'editor' : 'viewer');
  return row;
}

export async function removeSessionParticipant(deps: Deps, sessionId: string, actorId: string, userId: string): Promise<void> {
  const session = await ownedSession(deps.db, sessionId, actorId);
  // The owner's access comes from owning the session, not from a participant row (presence gives
  // them one for their colour): removing that row would only kick them out of their own session.
  if (userId === session.owner_id) throw new AppError('owner_not_removable');
  const removed = await removeParticipant(deps.db, sessionId, userId);
  if (!removed) throw new AppError('participant_not_found');
  deps.access?.invalidate({ kind: 'participant', sessionId, userId });
  applyAccessChange(deps.hocuspocus, sessionId, userId, null, 'participant_removed');
}

export async function sessionParticipants(db: Database, sessionId: string): Promise<ListedParticipantRow[]> {
  return listParticipants(db, sessionId);
}

/** A participant in camelCase; listed rows also carry the user's username and display name. */
export function participantJson(p: ParticipantRow | ListedParticipantRow) {
  return {
    sessionId: p.session_id,
    userId: p.user_id,
    permissions: p.permissions,
    cursorColor: p.cursor_color,
    joinedAt: p.joined_at?.toISOString() ?? null,
    lastActiveAt: p.last_active_at?.toISOString() ?? null,
    isOnline: p.is_online,
    ...('username' in p ? { username: p.username, displayName: p.display_name } : {}),
  };
}
