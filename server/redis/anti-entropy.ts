/**
 * Anti-entropy: what repairs the at-most-once delivery of Redis pub/sub (a message published while
 * a subscriber reconnects is gone). Every sync interval, and at once when a Redis connection is
 * ready again, each node announces per loaded document its state vector and a digest of its delete
 * set; a node that holds structs the sender lacks, or whose delete set differs (a delete-only
 * update does not move the state vector), answers with `encodeStateAsUpdate(doc, senderVector)` —
 * to the sender only: a diff computed for one state vector must not reach other nodes, which
 * could apply its deletes without the structs they delete (hocuspocus#1151). Pure functions over
 * Yjs documents; the extension sends and receives.
 */
import { createHash } from 'node:crypto';
import * as Y from 'yjs';
import type { StateMessage } from './wire.ts';

/** Pure: does `local` hold a struct that the peer with state vector `remote` lacks? */
export function hasStructsMissingFrom(local: ReadonlyMap<number, number>, remote: ReadonlyMap<number, number>): boolean {
  for (const [client, clock] of local) if (clock > (remote.get(client) ?? 0)) return true;
  return false;
}

/**
 * The digest of a document's delete set (the part of its state a state vector misses): the update
 * for its own state vector holds no structs, only the delete set.
 */
export function deleteSetDigest(doc: Y.Doc, stateVector: Uint8Array = Y.encodeStateVector(doc)): string {
  return createHash('sha1').update(Y.encodeStateAsUpdate(doc, stateVector)).digest('base64');
}

/** This node's announcement for one document. */
export function stateMessage(sender: string, document: string, doc: Y.Doc): StateMessage {
  const stateVector = Y.encodeStateVector(doc);
  return { type: 'state', sender, document, stateVector, deleteSetDigest: deleteSetDigest(doc, stateVector) };
}

/**
 * What the sender of `state` lacks of `doc`: null when it has everything `doc` has; the diff
 * otherwise — except `'in-flight'` when a `settled` state vector (this node's of a round ago) is
 * given and everything the sender lacks is newer than it. Those are updates this node published
 * since, most likely still on their way to the sender when it announced (each edit crossing the
 * other way in the same few milliseconds); a diff for them would be a second copy of each. The
 * delete-set digests are compared only when no struct is missing; the caller bounds how often in a
 * row a peer is left to a later announcement (`#answerState` in server/extensions/redis-sync.ts).
 */
export function diffFor(doc: Y.Doc, state: Pick<StateMessage, 'stateVector' | 'deleteSetDigest'>): Uint8Array | null;
export function diffFor(
  doc: Y.Doc,
  state: Pick<StateMessage, 'stateVector' | 'deleteSetDigest'>,
  settled: ReadonlyMap<number, number> | undefined,
): Uint8Array | 'in-flight' | null;
export function diffFor(
  doc: Y.Doc,
  state: Pick<StateMessage, 'stateVector' | 'deleteSetDigest'>,
  settled?: ReadonlyMap<number, number>,
): Uint8Array | 'in-flight' | null {
  const localVector = Y.encodeStateVector(doc);
  const remote = Y.decodeStateVector(state.stateVector);
  if (hasStructsMissingFrom(Y.decodeStateVector(localVector), remote)) {
    if (settled && !hasStructsMissingFrom(settled, remote)) return 'in-flight';
    return Y.encodeStateAsUpdate(doc, state.stateVector);
  }
  if (state.deleteSetDigest === deleteSetDigest(doc, localVector)) return null;
  return Y.encodeStateAsUpdate(doc, state.stateVector);
}

/** A document's state vector, decoded (what `diffFor` takes as `settled`). */
export const stateVectorOf = (doc: Y.Doc): Map<number, number> => Y.decodeStateVector(Y.encodeStateVector(doc));
