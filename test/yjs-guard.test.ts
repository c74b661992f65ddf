/**
 * The update guard in process (server/yjs-guard.ts + its worker): verdicts on honest and hostile
 * updates against a target document's state, batching while the worker is busy, and a job over
 * its budget in the middle of a batch refused alone.
 */
import * as encoding from 'lib0/encoding';
import * as Y from 'yjs';
import { afterEach, describe, expect, it } from 'vitest';
import { UpdateGuard, UpdateRejected } from '../server/yjs-guard.ts';

const guards: UpdateGuard[] = [];
afterEach(async () => {
  for (const guard of guards.splice(0)) await guard.close();
});
function guard(budgetMs = 2_000, budgetMsPerMiB = 0): UpdateGuard {
  const g = new UpdateGuard({ budgetMs, budgetMsPerMiB });
  guards.push(g);
  return g;
}

/** The update `edit` makes to a replica of `doc` (so it refers to `doc`'s content). */
function editOf(doc: Y.Doc, edit: (replica: Y.Doc) => void): Uint8Array {
  const replica = new Y.Doc();
  Y.applyUpdate(replica, Y.encodeStateAsUpdate(doc));
  let update!: Uint8Array;
  replica.on('update', (u: Uint8Array) => (update = u));
  edit(replica);
  return update;
}

function server(): Y.Doc {
  const doc = new Y.Doc();
  for (let author = 0; author < 5; author++) {
    const client = new Y.Doc();
    Y.applyUpdate(client, Y.encodeStateAsUpdate(doc));
    client.getMap('layers').set(`l${author}`, { x: author });
    client.getText('notes').insert(0, `note ${author} `);
    Y.applyUpdate(doc, Y.encodeStateAsUpdate(client));
  }
  return doc;
}

describe('the update guard', () => {
  it('accepts honest edits of existing content (overwrites, deletions, inserts between others)', async () => {
    const doc = server();
    const g = guard();
    const edits = [
      editOf(doc, (r) => r.getMap('layers').set('l2', { x: 99 })),
      editOf(doc, (r) => r.getMap('layers').delete('l0')),
      editOf(doc, (r) => r.getText('notes').insert(7, 'between')),
      editOf(doc, (r) => r.getText('notes').delete(2, 9)),
    ];
    for (const update of edits) await expect(g.check(update, { stateVector: Y.encodeStateVector(doc) })).resolves.toMatchObject({ contained: null });
  });

  it('refuses an update that needs changes the document does not have, and deletions of nothing', async () => {
    const doc = server();
    const g = guard();
    const ahead = new Y.Doc();
    Y.applyUpdate(ahead, Y.encodeStateAsUpdate(doc));
    ahead.getMap('layers').set('first', 1);
    const second = editOf(ahead, (r) => r.getMap('layers').set('first', 2)); // depends on `first`
    await expect(g.check(second, { stateVector: Y.encodeStateVector(doc) })).rejects.toThrow(/depends on changes the document does not have/);
    // Deleting clocks 0..9 of a client nobody has seen.
    const e = encoding.createEncoder();
    encoding.writeVarUint(e, 0);
    encoding.writeVarUint(e, 1);
    encoding.writeVarUint(e, 424242);
    encoding.writeVarUint(e, 1);
    encoding.writeVarUint(e, 0);
    encoding.writeVarUint(e, 10);
    await expect(g.check(encoding.toUint8Array(e), { stateVector: Y.encodeStateVector(doc) })).rejects.toThrow(/deletes changes that exist nowhere/);
    // Bytes Yjs cannot read at all.
    await expect(g.check(new Uint8Array([0xff, 0xff, 0xff]), { stateVector: Y.encodeStateVector(doc) })).rejects.toBeInstanceOf(UpdateRejected);
  });

  it('sends what queues up while the worker is busy as one batch, answered in order', async () => {
    const doc = server();
    const g = guard();
    const updates = Array.from({ length: 30 }, (_, i) => editOf(doc, (r) => r.getMap('layers').set(`n${i}`, i)));
    const order: number[] = [];
    await Promise.all(updates.map((u, i) => g.check(u, { stateVector: Y.encodeStateVector(doc) }).then(() => order.push(i))));
    expect(order).toEqual(updates.map((_, i) => i));
    // The first goes out alone to the idle worker; the 29 behind it go together.
    expect(g.batches).toBe(2);
  });

  it('refuses only the job over its budget in the middle of a batch; the others of the batch pass', async () => {
    const doc = server();
    const g = guard(15, 1);
    const slow = new Y.Doc();
    slow.transact(() => {
      const m = slow.getMap('m');
      for (let i = 0; i < 60_000; i++) m.set(`k${i}`, i);
    });
    const honest = (i: number) => editOf(doc, (r) => r.getMap('layers').set(`h${i}`, i));
    const jobs = [honest(0), honest(1), honest(2), Y.encodeStateAsUpdate(slow), honest(4), honest(5)];
    const outcomes = await Promise.all(
      jobs.map((u) =>
        g.check(u, { stateVector: Y.encodeStateVector(doc) }).then(
          () => 'accepted',
          (error: unknown) => (error instanceof UpdateRejected ? `refused: ${error.message}` : `error: ${String(error)}`),
        ),
      ),
    );
    expect(outcomes.map((o) => o.split(':')[0])).toEqual(['accepted', 'accepted', 'accepted', 'refused', 'accepted', 'accepted']);
    expect(outcomes[3]).toMatch(/budget/);
    expect(g.rejected).toBe(1);
  });
});
