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
