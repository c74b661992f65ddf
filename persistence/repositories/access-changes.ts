/**
 * The access-change feed of migrations/005_access_changes.sql (and 008, 010): the channel its triggers notify,
 * the statement that subscribes to it, and the parser of its payloads.
 */
import { z } from 'zod';

export const ACCESS_CHANNEL = 'imageflow_access';

export const accessChangeQueries = {
  listen: `LISTEN ${ACCESS_CHANNEL}`,
  /** Liveness of the listening connection. */
  ping: `SELECT 1`,
} as const;

/** What changed, as the triggers name it (no decision: each node re-reads the rows). */
export type AccessChange =
  | { kind: 'participant'; sessionId: string; userId: string }
  | { kind: 'session'; sessionId: string }
  | { kind: 'user'; userId: string }
  | { kind: 'login'; loginSessionId: string; userId: string }
  /** Who may see an image, or how it is stored, changed (migration 010): no connection is affected. */
  | { kind: 'image'; imageId: string }
  /** A follow of `followerId` went or changed (migration 010): their view of 'followers' images. */
  | { kind: 'follow'; followerId: string };

const payload = z.discriminatedUnion('k', [
  z.object({ k: z.literal('participant'), s: z.string(), u: z.string() }),
  z.object({ k: z.literal('session'), s: z.string() }),
  z.object({ k: z.literal('user'), u: z.string() }),
  z.object({ k: z.literal('login'), l: z.string(), u: z.string() }),
  z.object({ k: z.literal('image'), i: z.string() }),
  z.object({ k: z.literal('follow'), u: z.string() }),
]);

/** Parses one notification payload; undefined for anything the triggers do not send. */
export function parseAccessChange(text: string | undefined): AccessChange | undefined {
  if (text === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const parsed = payload.safeParse(json);
  if (!parsed.success) return undefined;
  const p = parsed.data;
  switch (p.k) {
    case 'participant':
      return { kind: 'participant', sessionId: p.s, userId: p.u };
    case 'session':
      return { kind: 'session', sessionId: p.s };
    case 'user':
      return { kind: 'user', userId: p.u };
    case 'login':
      return { kind: 'login', loginSessionId: p.l, userId: p.u };
    case 'image':
      return { kind: 'image', imageId: p.i };
    case 'follow':
      return { kind: 'follow', followerId: p.u };
  }
}
