/**
 * The pure parts of the Redis fan-out (server/redis/), in process: the wire codec (every message
 * round-trips; truncated, trailing, unknown-version and unknown-type bytes are refused), the names
 * (one hash slot per session), the anti-entropy decision (a peer behind in structs or in deletes
 * gets a diff that brings it level, a peer level gets none), and the sweep's two-round confirmation.
 */
import { describe, expect, it } from 'vitest';
import * as encoding from 'lib0/encoding';
import * as Y from 'yjs';
import { deleteSetDigest, diffFor, hasStructsMissingFrom, stateMessage, stateVectorOf } from '../server/redis/anti-entropy.ts';
import { RedisNames } from '../server/redis/keys.ts';
import { confirmUnused } from '../server/redis/presence-sweep.ts';
import { decodeMessage, encodeMessage, WIRE_VERSION, WireError, type SyncMessage } from '../server/redis/wire.ts';

const samples: SyncMessage[] = [
  { type: 'state', sender: 'node-a-1234', document: 'ses_abc', stateVector: new Uint8Array([1, 2, 3]), deleteSetDigest: 'digest==' },
  { type: 'state', sender: 'n', document: '', stateVector: new Uint8Array(), deleteSetDigest: '' },
  { type: 'awareness-removed', sender: 'node-b', document: 'ses_x', clientIds: [0, 1, 2 ** 32 - 1, 12345] },
  { type: 'awareness-removed', sender: 'node-b', document: 'ses_x', clientIds: [] },
  { type: 'update', sender: 'node-a', document: 'ses_x', bytes: new Uint8Array([0, 0]) },
  { type: 'update-with-state', sender: 'node-a', document: 'ses_x', bytes: new Uint8Array([0, 0]), stateVector: new Uint8Array([1, 5, 9]), deleteSetDigest: 'd==' },
  { type: 'awareness-with-state', sender: 'node-a', document: 'ses_x', bytes: new Uint8Array([1, 2]), stateVector: new Uint8Array([0]), deleteSetDigest: '' },
  { type: 'diff', sender: 'node-a', document: 'ses_x', bytes: new Uint8Array([1, 2, 3, 4]) },
  { type: 'awareness', sender: 'node-a', document: 'ses_x', bytes: new Uint8Array([1, 200, 1, 0]) },
  { type: 'hello', sender: 'node-c', document: 'ses_y', stateVector: new Uint8Array([0]) },
  { type: 'stateless', sender: 'node-c', document: 'ses_y', payload: '{"type":"versionSaved"}' },
];

describe('wire codec', () => {
  it.each(samples.map((m) => [m.type, m] as const))('round-trips a %s message', (_type, message) => {
    expect(decodeMessage(encodeMessage(message))).toEqual(message);
  });

  it('refuses every truncation of every message', () => {
    for (const message of samples) {
      const bytes = encodeMessage(message);
      for (let n = 0; n < bytes.length; n++) expect(() => decodeMessage(bytes.subarray(0, n)), `${message.type} cut at ${n}`).toThrow(WireError);
    }
  });

  it('refuses trailing bytes, another version, an unknown type', () => {
    const bytes = encodeMessage(samples[0]!);
    expect(() => decodeMessage(new Uint8Array([...bytes, 0]))).toThrow(/bytes after the message/);
    expect(() => decodeMessage(new Uint8Array([WIRE_VERSION + 1, ...bytes.subarray(1)]))).toThrow(/version/);
    const e = encoding.createEncoder();
    encoding.writeVarUint(e, WIRE_VERSION);
    encoding.writeVarUint(e, 99);
    encoding.writeVarString(e, 'a');
    encoding.writeVarString(e, 'b');
    expect(() => decodeMessage(encoding.toUint8Array(e))).toThrow(/unknown message type 99/);
  });

  it('refuses a count of ids larger than the bytes that follow', () => {
    const e = encoding.createEncoder();
    encoding.writeVarUint(e, WIRE_VERSION);
    encoding.writeVarUint(e, 1);
    encoding.writeVarString(e, 'a');
    encoding.writeVarString(e, 'b');
    encoding.writeVarUint(e, 1_000_000_000);
    expect(() => decodeMessage(encoding.toUint8Array(e))).toThrow(WireError);
  });
});

describe('names', () => {
  it('puts everything of one session under its hash tag, and nothing of another', () => {
    const names = new RedisNames('pfx');
    const tagged = [names.claims('ses_a'), names.document('ses_a'), names.node('ses_a', 'node-1'), names.nodePrefix('ses_a')];
    for (const name of tagged) {
      expect(name.startsWith('pfx:')).toBe(true);
      // Redis Cluster hashes the part between the first { and the next }.
      expect(/\{([^}]*)\}/.exec(name)?.[1]).toBe('ses_a');
    }
    expect(names.node('ses_a', 'node-1').startsWith(names.nodePrefix('ses_a'))).toBe(true);
    expect(names.claims('ses_b')).not.toBe(names.claims('ses_a'));
  });
});

describe('anti-entropy', () => {
  const pair = () => {
    const a = new Y.Doc();
    const b = new Y.Doc();
    a.getText('t').insert(0, 'hello world');
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a));
    return { a, b };
  };

  it('sends nothing to a peer that is level', () => {
    const { a, b } = pair();
    expect(diffFor(a, stateMessage('b', 'doc', b))).toBeNull();
    expect(diffFor(b, stateMessage('a', 'doc', a))).toBeNull();
  });

  it('brings a peer behind in structs level, and only the one behind is answered', () => {
    const { a, b } = pair();
    a.getMap('m').set('k', 1);
    expect(hasStructsMissingFrom(Y.decodeStateVector(Y.encodeStateVector(a)), Y.decodeStateVector(Y.encodeStateVector(b)))).toBe(true);
    const diff = diffFor(a, stateMessage('b', 'doc', b));
    expect(diff).not.toBeNull();
    // b, ahead in nothing, has nothing for a (a's digest differs only by what b lacks).
    expect(hasStructsMissingFrom(Y.decodeStateVector(Y.encodeStateVector(b)), Y.decodeStateVector(Y.encodeStateVector(a)))).toBe(false);
    Y.applyUpdate(b, diff!);
    expect(b.getMap('m').get('k')).toBe(1);
    expect(diffFor(a, stateMessage('b', 'doc', b))).toBeNull();
  });

  it('brings a peer behind only in deletes level (a delete does not move the state vector)', () => {
    const { a, b } = pair();
    a.getText('t').delete(0, 6);
    expect(Y.encodeStateVector(a)).toEqual(Y.encodeStateVector(b));
    expect(deleteSetDigest(a)).not.toBe(deleteSetDigest(b));
    const diff = diffFor(a, stateMessage('b', 'doc', b));
    expect(diff).not.toBeNull();
    Y.applyUpdate(b, diff!);
    expect(b.getText('t').toString()).toBe('world');
    expect(diffFor(a, stateMessage('b', 'doc', b))).toBeNull();
    expect(diffFor(b, stateMessage('a', 'doc', a))).toBeNull();
  });

  it('leaves a peer lacking only what is newer than the settled state to its next announcement', () => {
    const { a, b } = pair();
    const settled = stateVectorOf(a);
    a.getMap('m').set('k', 1); // a's edit of this round, crossing b's announcement
    expect(diffFor(a, stateMessage('b', 'doc', b), settled)).toBe('in-flight');
    // Without the settled state (the next announcement of a deferred peer), it is answered.
    const diff = diffFor(a, stateMessage('b', 'doc', b), undefined);
    expect(diff).toBeInstanceOf(Uint8Array);
    Y.applyUpdate(b, diff as Uint8Array);
    expect(b.getMap('m').get('k')).toBe(1);
  });

  it('answers at once a peer lacking anything the settled state holds', () => {
    const { a, b } = pair();
    a.getMap('m').set('old', 1); // lost on its way to b a round ago
    const settled = stateVectorOf(a);
    a.getMap('m').set('new', 2);
    const diff = diffFor(a, stateMessage('b', 'doc', b), settled);
    expect(diff).toBeInstanceOf(Uint8Array);
    Y.applyUpdate(b, diff as Uint8Array);
    expect(b.getMap('m').toJSON()).toEqual({ old: 1, new: 2 });
  });

  it('answers a peer behind only in deletes at once, settled state or not', () => {
    const { a, b } = pair();
    const settled = stateVectorOf(a);
    a.getText('t').delete(0, 6);
    const diff = diffFor(a, stateMessage('b', 'doc', b), settled);
    expect(diff).toBeInstanceOf(Uint8Array);
    Y.applyUpdate(b, diff as Uint8Array);
    expect(b.getText('t').toString()).toBe('world');
  });
});

describe('presence sweep confirmation', () => {
  it('removes only what two consecutive rounds reported', () => {
    const first = confirmUnused(new Set(), [1, 2]);
    expect(first.remove).toEqual([]);
    expect([...first.suspects]).toEqual([1, 2]);
    // 1 came back (claimed again by a node whose connection blipped); 2 is still unused; 3 is new.
    const second = confirmUnused(first.suspects, [2, 3]);
    expect(second.remove).toEqual([2]);
    expect([...second.suspects]).toEqual([3]);
    expect(confirmUnused(second.suspects, []).remove).toEqual([]);
  });
});
