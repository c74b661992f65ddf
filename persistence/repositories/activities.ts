/** Named queries over `activities` (the social feed) and `notifications`. */
import type { Queryable } from '../db.ts';

export interface NewActivity {
  activityId: string;
  actorId: string;
  activityType: string;
  targetType: string;
  targetId: string;
  metadata: Record<string, unknown>;
}

export interface NewNotification {
  notificationId: string;
  userId: string;
  type: string;
  actorId: string | null;
  targetType: string | null;
  targetId: string | null;
  message: string;
  data: Record<string, unknown>;
}

export const activityQueries = {
  insert: `
    INSERT INTO activities (activity_id, actor_id, activity_type, target_type, target_id, metadata)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb)`,
  /** The owner and every participant of a session, except one user (the actor). */
  sessionMembersExcept: `
    SELECT owner_id AS user_id FROM edit_sessions WHERE session_id = $1 AND owner_id <> $2
    UNION
    SELECT user_id FROM session_participants WHERE session_id = $1 AND user_id <> $2`,
  insertNotifications: `
    INSERT INTO notifications (notification_id, user_id, type, actor_id, target_type, target_id, message, data)
    SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::varchar[], $6::varchar[],
                         $7::text[], $8::jsonb[])`,
  actorName: `SELECT display_name FROM users WHERE user_id = $1`,
} as const;

export async function insertActivity(db: Queryable, a: NewActivity): Promise<void> {
  await db.query(activityQueries.insert, [a.activityId, a.actorId, a.activityType, a.targetType, a.targetId, JSON.stringify(a.metadata)]);
}

export async function sessionMembersExcept(db: Queryable, sessionId: string, exceptUserId: string): Promise<string[]> {
  const { rows } = await db.query<{ user_id: string }>(activityQueries.sessionMembersExcept, [sessionId, exceptUserId]);
  return rows.map((r) => r.user_id);
}

export async function insertNotifications(db: Queryable, notifications: readonly NewNotification[]): Promise<void> {
  if (notifications.length === 0) return;
  await db.query(activityQueries.insertNotifications, [
    notifications.map((n) => n.notificationId),
    notifications.map((n) => n.userId),
    notifications.map((n) => n.type),
    notifications.map((n) => n.actorId),
    notifications.map((n) => n.targetType),
    notifications.map((n) => n.targetId),
    notifications.map((n) => n.message),
    notifications.map((n) => JSON.stringify(n.data)),
  ]);
}

export async function actorDisplayName(db: Queryable, userId: string): Promise<string | undefined> {
  const { rows } = await db.query<{ display_name: string }>(activityQueries.actorName, [userId]);
  return rows[0]?.display_name;
}
