/**
 * The guard's inline path (server/yjs-precheck.ts): what it lets through must be exactly what the
 * worker would accept and Yjs integrates without anything pending; everything else goes to the
 * worker. Seeded random edits of every content kind, mutated and truncated bytes, and the known
 * hostile shapes.
 */
import * as Y from 'yjs';
import { afterAll, describe, expect, it } from 'vitest';
import { UpdateGuard } from '../server/yjs-guard.ts';
import { inlineSafe } from '../server/yjs-precheck.ts';
import { mulberry32 } from './support/random.ts';

const guards: UpdateGuard[] = [];
afterAll(async () => {
  for (const g of guards) await g.close();
});

const SEED = process.env.PRECHECK_SEED ? Number(process.env.PRECHECK_SEED) : Math.floor(Math.random() * 2 ** 31);
console.log(`[yjs-precheck] random seed ${SEED} (replay with PRECHECK_SEED=${SEED})`);

/** The update `change` makes on `doc`. */
function updateOf(doc: Y.Doc, change: (doc: Y.Doc) => void): Uint8Array {
  let update: Uint8Array | null = null;
  const capture = (u: Uint8Array) => (update = update ? Y.mergeUpdates([update, u]) : u);
  doc.on('update', capture);
  change(doc);
  doc.off('update', capture);
  return update ?? new Uint8Array([0, 0]);
}

/** Applies `update` to a copy of `target`: whether Yjs keeps anything pending, or throws. */
/**
 * Applies `update` to a copy of `target`: 'clean', 'pending' (Yjs keeps something pending),
 * 'throws' (Yjs threw and the copy is unchanged) or 'throws-changed' (it threw after changing it).
 */
function integrate(target: Y.Doc, update: Uint8Array): 'clean' | 'pending' | 'throws' | 'throws-changed' {
  const copy = new Y.Doc({ gc: false });
  Y.applyUpdate(copy, Y.encodeStateAsUpdate(target));
  const before = Buffer.from(Y.encodeStateAsUpdate(copy)).toString('hex');
  try {
    Y.applyUpdate(copy, update);
    return copy.store.pendingStructs || copy.store.pendingDs ? 'pending' : 'clean';
  } catch {
    return Buffer.from(Y.encodeStateAsUpdate(copy)).toString('hex') === before ? 'throws' : 'throws-changed';
  } finally {
    copy.destroy();
  }
}

/** One random edit of every kind the editor and other clients make. */
function randomEdit(doc: Y.Doc, rnd: () => number): void {
  const pick = <T,>(xs: T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const map = doc.getMap('layers');
  const list = doc.getArray('order');
  const text = doc.getText('notes');
  const xml = doc.getXmlFragment('xml');
  const r = Math.floor(rnd() * 12);
  doc.transact(() => {
    switch (r) {
      case 0:
        map.set(`k${Math.floor(rnd() * 6)}`, pick([1, 'two', { x: rnd(), y: [1, 2, { z: null }] }, true, null, 3.5, new Uint8Array([1, 2, 3])]));
        break;
      case 1:
        if (map.size > 0) map.delete(pick([...map.keys()]));
        break;
      case 2:
        list.insert(Math.floor(rnd() * (list.length + 1)), [pick(['a', 'b']), Math.floor(rnd() * 100)]);
        break;
      case 3:
        if (list.length > 0) list.delete(Math.floor(rnd() * list.length), 1);
        break;
      case 4:
        text.insert(Math.floor(rnd() * (text.length + 1)), pick(['hi', 'ünï', '漢字', '😀x']), rnd() < 0.3 ? { bold: true } : undefined);
        break;
      case 5:
        if (text.length > 1) text.delete(Math.floor(rnd() * (text.length - 1)), 1 + Math.floor(rnd() * Math.min(3, text.length - 1)));
        break;
      case 6:
        if (text.length > 1) text.format(0, Math.min(text.length, 3), { italic: rnd() < 0.5 ? true : null });
        break;
      case 7:
        text.insertEmbed(Math.floor(rnd() * (text.length + 1)), { image: 'x.png' });
        break;
      case 8: {
        const nested = new Y.Map<unknown>();
        nested.set('v', rnd());
        map.set(`nested${Math.floor(rnd() * 3)}`, nested);
        break;
      }
      case 9: {
        const element = new Y.XmlElement('p');
        element.insert(0, [new Y.XmlText('t')]);
        element.setAttribute('a', 'b');
        xml.insert(xml.length, [element]);
        break;
      }
      case 10: {
        const nested = map.get('nested0');
        if (nested instanceof Y.Map) nested.set('w', Math.floor(rnd() * 10));
        else map.set('nested0', new Y.Array());
        break;
      }
      default:
        doc.getMap('meta').set('background', `#${Math.floor(rnd() * 0xffffff).toString(16)}`);
    }
  });
}

describe('inlineSafe', () => {
  it('lets through only what integrates cleanly and the worker accepts (seeded random edits, three clients, partial syncs)', async () => {
    const rnd = mulberry32(SEED);
    const guard = new UpdateGuard({ budgetMs: 1_000, budgetMsPerMiB: 1_000 });
    guards.push(guard);
    const server = new Y.Doc({ gc: false });
    const clients = [new Y.Doc(), new Y.Doc(), new Y.Doc()];
    let inline = 0;
    let checked = 0;
    let pendingSeen = 0;
    // Updates a client made that the server does not have yet (in transit), per client, in order.
    const inTransit = clients.map(() => [] as Uint8Array[]);
    for (let step = 0; step < 600; step++) {
      const c = Math.floor(rnd() * clients.length);
      const client = clients[c]!;
      const queue = inTransit[c]!;
      // Sometimes what was in transit arrives, in order.
      if (rnd() < 0.3) {
        while (queue.length > 0 && integrate(server, queue[0]!) === 'clean') Y.applyUpdate(server, queue.shift()!);
      }
      // Sometimes a client catches up with the server first; otherwise it edits on stale state.
      if (rnd() < 0.5) Y.applyUpdate(client, Y.encodeStateAsUpdate(server, Y.encodeStateVector(client)));
      // Sometimes it has another client's edits the server lacks (they reached it another way).
      if (rnd() < 0.15) {
        const other = clients[(c + 1 + Math.floor(rnd() * (clients.length - 1))) % clients.length]!;
        Y.applyUpdate(client, Y.encodeStateAsUpdate(other, Y.encodeStateVector(client)));
      }
      const update = updateOf(client, (d) => randomEdit(d, rnd));
      if (rnd() < 0.1) {
        queue.push(update); // held up on the way: the client's next edits build on it
        continue;
      }
      checked += 1;
      const safe = inlineSafe(update, server);
      const outcome = integrate(server, update);
      if (outcome === 'pending') pendingSeen += 1;
      if (safe) {
        inline += 1;
        expect(outcome, `seed ${SEED} step ${step}: inline but ${outcome}`).toBe('clean');
        await expect(guard.check(update, { stateVector: Y.encodeStateVector(server) })).resolves.toMatchObject({ contained: null });
      }
      if (outcome === 'clean' && queue.length === 0) Y.applyUpdate(server, update);
      else queue.push(update);
    }
    console.log(`[yjs-precheck] ${inline} of ${checked} updates inline; ${pendingSeen} would have been pending`);
    // Most honest small edits go inline (the point of it), and the pending ones were met and kept out.
    expect(inline).toBeGreaterThan(checked * 0.5);
    expect(pendingSeen).toBeGreaterThan(0);
  });

  it('sends to the worker: pending structs, deletions of nothing, a gap, a big update, the yjs#687 bytes, every truncation', () => {
    const server = new Y.Doc();
    server.getMap('m').set('a', 1);
    const ahead = new Y.Doc();
    Y.applyUpdate(ahead, Y.encodeStateAsUpdate(server));
    updateOf(ahead, (d) => d.getMap('m').set('first', 1)); // the server never gets this
    const dependent = updateOf(ahead, (d) => d.getMap('m').set('first', 2));
    expect(integrate(server, dependent)).toBe('pending');
    expect(inlineSafe(dependent, server)).toBe(false);
    // Another client's edit of that change: no gap in its own clocks, only a reference the server lacks.
    const other = new Y.Doc();
    Y.applyUpdate(other, Y.encodeStateAsUpdate(ahead));
    const crossClient = updateOf(other, (d) => d.getMap('m').set('first', 3));
    expect(integrate(server, crossClient)).toBe('pending');
    expect(inlineSafe(crossClient, server)).toBe(false);
    const deletes = updateOf(other, (d) => d.getMap('m').delete('first'));
    expect(integrate(server, deletes)).toBe('pending');
    expect(inlineSafe(deletes, server)).toBe(false);
    // A deletion of clocks nobody has: client 424242, clocks 0..9.
    expect(inlineSafe(new Uint8Array([0, 1, 0xb2, 0xf2, 0x19, 1, 0, 10]), server)).toBe(false);
    // A block that starts after what the server has of that client (a gap).
    const gap = new Y.Doc();
    updateOf(gap, (d) => d.getMap('m').set('x', 1));
    const second = updateOf(gap, (d) => d.getArray('l').insert(0, [1]));
    expect(inlineSafe(second, server)).toBe(false);
    // Too big for inline, however ordinary.
    const big = updateOf(new Y.Doc(), (d) => d.getText('t').insert(0, 'x'.repeat(2_000)));
    expect(inlineSafe(big, server)).toBe(false);
    expect(inlineSafe(big, server, 4_096)).toBe(true);
    expect(inlineSafe(Buffer.from('00010000000001000100010200001602000001fdffffffff7f0000', 'hex'), server)).toBe(false);
    // Every strict prefix of an ordinary update: never inline.
    const ordinary = updateOf(new Y.Doc(), (d) => {
      d.getMap('m').set('k', { nested: [1, 2, 3] });
      d.getText('t').insert(0, 'hello', { bold: true });
    });
    expect(inlineSafe(ordinary, server)).toBe(true);
    for (let n = 0; n < ordinary.length; n++) expect(inlineSafe(ordinary.subarray(0, n), server), `prefix ${n}`).toBe(false);
    // Trailing bytes: Yjs would ignore them; inline does not guess.
    expect(inlineSafe(new Uint8Array([...ordinary, 0]), server)).toBe(false);
  });

  it('mutated bytes it lets through integrate cleanly or throw while Yjs reads them, changing nothing (seeded)', () => {
    const rnd = mulberry32(SEED + 7);
    const server = new Y.Doc({ gc: false });
    const source = new Y.Doc();
    Y.applyUpdate(source, Y.encodeStateAsUpdate(server));
    const corpus: Uint8Array[] = [];
    for (let i = 0; i < 40; i++) corpus.push(updateOf(source, (d) => randomEdit(d, rnd)));
    let through = 0;
    for (let i = 0; i < 3_000; i++) {
      const bytes = new Uint8Array(corpus[Math.floor(rnd() * corpus.length)]!);
      const flips = 1 + Math.floor(rnd() * 3);
      for (let f = 0; f < flips; f++) {
        const at = Math.floor(rnd() * bytes.length);
        bytes[at] = bytes[at]! ^ (1 << Math.floor(rnd() * 8));
      }
      if (!inlineSafe(bytes, server)) continue;
      through += 1;
      const outcome = integrate(server, bytes);
      expect(['clean', 'throws'], `seed ${SEED + 7} mutation ${i}: ${Buffer.from(bytes).toString('hex')}`).toContain(outcome);
    }
    console.log(`[yjs-precheck] ${through} of 3000 mutated updates passed the inline read`);
  });
});
