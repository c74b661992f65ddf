/**
 * Awareness state (docs/CONTRACT.md "Awareness state"): `{ user: { id, name, color }, cursor: { x, y } | null,
 * selection: string[] }`. The server rebuilds every incoming state from these fields only, with
 * the whole `user` from the server: `id` = the token's subject, `name` = the user's `display_name`
 * (a client cannot call itself someone else), `color` = the participant's cursor colour.
 */
import { z } from 'zod';

/** Cursor colours handed out in order within a session (distinct while the palette lasts). */
export const CURSOR_PALETTE = [
  '#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#bfef45',
  '#fabed4', '#469990', '#dcbeff', '#9a6324', '#800000', '#aaffc3', '#808000', '#000075',
] as const;

/** A stable colour for a user without a participant row (the owner, or a full palette). */
export function colorFor(userId: string): string {
  let hash = 0;
  for (const ch of userId) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return CURSOR_PALETTE[hash % CURSOR_PALETTE.length]!;
}

const finite = z.number().finite();

export const awarenessInputSchema = z.object({
  /** Ignored: the server sets the whole `user`. */
  user: z.unknown().optional(),
  cursor: z.object({ x: finite, y: finite }).nullable().optional(),
  selection: z.array(z.string().max(20)).max(1000).optional(),
}).loose();

export interface AwarenessState {
  user: { id: string; name: string; color: string };
  cursor: { x: number; y: number } | null;
  selection: string[];
}

/** Rebuilds a client's state from the allowed fields; `null` when it is not an object at all. */
export function sanitizeAwareness(input: unknown, identity: { userId: string; name: string; color: string }): AwarenessState | null {
  const parsed = awarenessInputSchema.safeParse(input);
  if (!parsed.success) return null;
  return {
    user: { id: identity.userId, name: identity.name, color: identity.color },
    cursor: parsed.data.cursor ?? null,
    selection: parsed.data.selection ?? [],
  };
}
