import { Awareness, encodeAwarenessUpdate } from 'y-protocols/awareness';
import * as Y from 'yjs';

/** An awareness update claiming `clientId` at `clock` with `state` (null = removal): a forgery's raw material. */
export function fakeUpdate(clientId: number, clock: number, state: unknown): Uint8Array {
  const doc = new Y.Doc();
  const aw = new Awareness(doc);
  aw.states.set(clientId, state as Record<string, unknown>);
  aw.meta.set(clientId, { clock, lastUpdated: Date.now() });
  const update = encodeAwarenessUpdate(aw, [clientId]);
  aw.destroy();
  return update;
}

/** One awareness update carrying every `[clientId, clock, state]` given: many clientIDs in one message. */
export function fakeUpdates(entries: ReadonlyArray<readonly [clientId: number, clock: number, state: unknown]>): Uint8Array {
  const doc = new Y.Doc();
  const aw = new Awareness(doc);
  for (const [clientId, clock, state] of entries) {
    aw.states.set(clientId, state as Record<string, unknown>);
    aw.meta.set(clientId, { clock, lastUpdated: Date.now() });
  }
  const update = encodeAwarenessUpdate(aw, entries.map(([clientId]) => clientId));
  aw.destroy();
  return update;
}
