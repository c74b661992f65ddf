/**
 * Durability of acknowledgements, end to end: real servers as child processes (node transport, a
 * fresh PostgreSQL database each), real HocuspocusProvider clients.
 *
 * - kill -9: every edit a client saw acknowledged is there after SIGKILL and a restart, read back
 *   from the update log (not from any graceful store).
 * - PostgreSQL cut mid-session (through a TCP proxy the test controls): acknowledgements are
 *   withheld and `/readyz` is 503 while edits keep flowing between clients; a new connection to an
 *   unloaded session is refused or held, never served or stored empty; after the restore every
 *   edit is acknowledged and survives a restart.
 * - A client that leaves with unacknowledged edits while the database is cut: the server keeps
 *   the document until the edits are stored.
 *
 * The random edit series are seeded; the seed is printed, and `DURABILITY_SEED=<n>` replays one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import * as Y from 'yjs';
import { appendUpdates } from '../persistence/repositories/documents.ts';
import { acknowledged, connectClient, waitFor, type Client } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool, tokens } from './support/fixtures.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';
import { startProxy, type TcpProxy } from './support/tcp-proxy.ts';
import { mulberry32 } from './support/random.ts';

type Register = (fn: () => Promise<void>) => void;

/** A teardown list for the enclosing `describe`, run in reverse order of registration. */
function useTeardown(): Register {
  const fns: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const fn of fns.splice(0)) await fn();
  });
  return (fn) => void fns.unshift(fn);
}

const DEADLINE = 20_000;
const SEED = process.env.DURABILITY_SEED ? Number(process.env.DURABILITY_SEED) : Math.floor(Math.random() * 2 ** 31);
console.log(`[durability] random seed ${SEED} (replay with DURABILITY_SEED=${SEED})`);

const prng = mulberry32;

const MAP = 'durabilityMap';
const LIST = 'durabilityList';
const TEXT = 'durabilityText';

/** Every shared type the tests look at, as plain JSON (the seeded canvas and ours). */
function content(doc: Y.Doc) {
  return {
    meta: doc.getMap('meta').toJSON(),
    layers: doc.getMap('layers').toJSON(),
    map: doc.getMap(MAP).toJSON(),
    list: doc.getArray(LIST).toJSON(),
    text: doc.getText(TEXT).toString(),
  };
}

type Content = ReturnType<typeof content>;

function contentOfUpdate(update: Uint8Array): Content {
  const doc = new Y.Doc();
  try {
    Y.applyUpdate(doc, update);
    return content(doc);
  } finally {
    doc.destroy();
  }
}

/** The union of what the clients hold: after all of them were acknowledged, exactly what the server acknowledged. */
function mergedState(clients: Client[]): Uint8Array {
  return Y.mergeUpdates(clients.map((c) => Y.encodeStateAsUpdate(c.doc)));
}

/** One random edit: a Y.Map set (keys collide on purpose), a Y.Array push, or a Y.Text insert. */
function randomEdit(doc: Y.Doc, rnd: () => number, tag: string): void {
  const r = rnd();
  if (r < 1 / 3) {
    doc.getMap(MAP).set(`k${Math.floor(rnd() * 24)}`, { tag, v: Math.floor(rnd() * 1e6) });
  } else if (r < 2 / 3) {
    doc.getArray(LIST).push([tag]);
  } else {
    const text = doc.getText(TEXT);
    text.insert(Math.floor(rnd() * (text.length + 1)), `<${tag}>`);
  }
}

/** The session's rows in `document_updates`, straight from PostgreSQL, and their merged content. */
async function storedLog(db: pg.Pool, sessionId: string) {
  const { rows } = await db.query<{ kind: string; payload: Buffer }>(
    'SELECT kind, payload FROM document_updates WHERE session_id = $1 ORDER BY seq',
    [sessionId],
  );
  const doc = new Y.Doc();
  try {
    for (const row of rows) Y.applyUpdate(doc, new Uint8Array(row.payload));
    return {
      rows: rows.length,
      updates: rows.filter((r) => r.kind === 'update').length,
      content: content(doc),
      state: Y.encodeStateAsUpdate(doc),
    };
  } finally {
    doc.destroy();
  }
}

async function readyz(server: ServerProcess): Promise<{ status: number; body: { checks?: { database?: boolean; updateLog?: boolean; backlog?: number } } }> {
  return api(server.url, 'GET', '/readyz');
}

/** A connected, synced client (fails with the refusal reason instead of hanging). */
async function syncedClient(server: ServerProcess, sessionId: string, token: string, register: Register): Promise<Client> {
  const client = connectClient(server.wsUrl, sessionId, token, register);
  const outcome = await Promise.race([
    client.synced.then(() => 'synced'),
    client.refused.then((reason) => `refused: ${reason}`),
    waitFor(() => false, { timeout: DEADLINE, what: 'sync' }).catch(() => 'timed out'),
  ]);
  if (outcome !== 'synced') throw new Error(`client for ${sessionId} did not sync (${outcome}); server output:\n${server.output()}`);
  return client;
}

/** `waitFor` with the deadline of these tests; on timeout, says what the state is now. */
async function waitUntil<T>(probe: () => T | Promise<T>, what: string, now?: () => string): Promise<NonNullable<T>> {
  try {
    return await waitFor(probe, { timeout: DEADLINE, what });
  } catch (error) {
    throw new Error(`${(error as Error).message}${now ? `; now: ${now()}` : ''}`, { cause: error });
  }
}

/** Fails with the server's log attached, so a failing durability test says what the server saw. */
async function withLog<T>(server: ServerProcess, what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw new Error(`${what}: ${(error as Error).message}\n--- server output ---\n${server.output()}`, { cause: error });
  }
}

describe('kill -9 after acknowledgement', () => {
  const register = useTeardown();
  let databaseUrl: string;
  let db: pg.Pool;
  let server: ServerProcess;
  let owner: { userId: string; token: string };
  let imageId: string;

  const start = () => startServerProcess({ transport: 'node', databaseUrl, register });

  beforeAll(async () => {
    const created = await createDatabase('durable');
    register(created.drop);
    databaseUrl = created.url;
    server = await start();
    db = openPool(databaseUrl, register);
    owner = await createActor(db, 'owner');
    imageId = await createImage(db, owner.userId);
  });

  it('every acknowledged edit of a random series survives SIGKILL and is served from the log', async () => {
    const rnd = prng(SEED);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const clients = await Promise.all(
      ['a', 'b', 'c'].map(async () => syncedClient(server, sessionId, await tokens.sign(owner.userId), register)),
    );

    const EDITS = 200;
    for (let i = 0; i < EDITS; i++) {
      const who = Math.floor(rnd() * clients.length);
      randomEdit(clients[who]!.doc, rnd, `${'abc'[who]}${i}`);
      // Let the sockets move now and then, so edits interleave with remote ones.
      if (rnd() < 0.25) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    // Every edit has been sent. The moment the last acknowledgement arrives, record what the
    // clients hold and SIGKILL the server in the same event: no graceful store, no final flush.
    let expectedState: Uint8Array | undefined;
    const killOnceAllAcknowledged = () => {
      if (expectedState || clients.some((c) => c.provider.hasUnsyncedChanges)) return;
      expectedState = mergedState(clients);
      server.child.kill('SIGKILL');
    };
    for (const c of clients) c.provider.on('unsyncedChanges', killOnceAllAcknowledged);
    killOnceAllAcknowledged();
    await withLog(server, 'acknowledgement', () => waitUntil(() => expectedState, 'every client to be acknowledged'));
    await server.exited;
    const expected = contentOfUpdate(expectedState!);
    for (const c of clients) c.destroy();
    expect(expected.list.length + expected.text.length).toBeGreaterThan(0);

    // The acknowledged data is in PostgreSQL, one row per accepted update (no compaction ran:
    // it needs COMPACT_AFTER_UPDATES = 500 updates), and the rows alone rebuild the content.
    const log = await storedLog(db, sessionId);
    expect(log.updates).toBeGreaterThanOrEqual(EDITS);
    expect(log.content).toEqual(expected);

    server = await start();
    const fresh = await syncedClient(server, sessionId, owner.token, register);
    expect(content(fresh.doc)).toEqual(expected);
    fresh.destroy();
  });

  it('killed mid-typing: everything acknowledged when the state was recorded is there after restart', async () => {
    const rnd = prng(SEED ^ 0x5eed);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const typist = await syncedClient(server, sessionId, owner.token, register);
    const watcher = await syncedClient(server, sessionId, await tokens.sign(owner.userId), register);
    watcher.doc.getMap(MAP).set('watcher', 'was here');
    await acknowledged(watcher, DEADLINE);

    // The typist only appends (list pushes, text at the end, fresh map keys), so "everything
    // recorded is there" can be checked as prefixes and a subset, besides the Yjs snapshot check.
    const MIN_EDITS = 60;
    let made = 0;
    let recorded: { state: Uint8Array; content: Content; made: number } | undefined;
    const killed = server.exited;
    typist.provider.on('unsyncedChanges', ({ number }: { number: number }) => {
      if (recorded || number !== 0 || made < MIN_EDITS) return;
      // Synchronously, in the acknowledgement's own event: record, then SIGKILL at once while the
      // typing loop goes on (later edits may or may not be stored).
      recorded = { state: Y.encodeStateAsUpdate(typist.doc), content: content(typist.doc), made };
      server.child.kill('SIGKILL');
    });

    let stop = false;
    void killed.then(() => (stop = true));
    const typing = (async () => {
      const deadline = Date.now() + DEADLINE;
      while (!stop && Date.now() < deadline) {
        const i = made++;
        const r = rnd();
        if (r < 0.4) typist.doc.getArray(LIST).push([`t${i}`]);
        else if (r < 0.8) typist.doc.getText(TEXT).insert(typist.doc.getText(TEXT).length, `t${i};`);
        else typist.doc.getMap(MAP).set(`t${i}`, i);
        // Typing rhythm: a few milliseconds between keystrokes, so the server keeps up now and
        // then and an "everything acknowledged" moment occurs while typing continues. Past
        // MIN_EDITS the pauses slowly grow, so such a moment comes on a slow machine too.
        const maxPause = 6 + Math.max(0, made - MIN_EDITS) / 5;
        await new Promise<void>((resolve) => setTimeout(resolve, Math.floor(rnd() * maxPause)));
      }
    })();
    await typing;
    await killed;
    const madeInAll = made;
    typist.destroy();
    watcher.destroy();
    if (!recorded) throw new Error(`no moment without unsynced changes in ${DEADLINE} ms of typing (${madeInAll} edits)`);
    console.log(`[durability] recorded after ${recorded.made} edits, typed ${madeInAll} before the kill was noticed`);
    expect(madeInAll).toBeGreaterThanOrEqual(recorded.made);

    server = await start();
    const fresh = await syncedClient(server, sessionId, owner.token, register);
    const after = content(fresh.doc);
    const rec = recorded.content;
    const lost = {
      listItems: rec.list.filter((item) => !after.list.includes(item)),
      mapKeys: Object.keys(rec.map).filter((key) => !(key in after.map)),
      text: after.text.startsWith(rec.text) ? '' : `recorded ends …${rec.text.slice(-40)}; restored ends …${after.text.slice(-40)}`,
    };
    expect(lost, `acknowledged edits lost by kill -9 (recorded after edit ${recorded.made})`).toEqual({ listItems: [], mapKeys: [], text: '' });
    expect(Y.snapshotContainsUpdate(Y.snapshot(fresh.doc), recorded.state)).toBe(true);
    expect(after.meta).toEqual(recorded.content.meta);
    expect(after.layers).toEqual(recorded.content.layers);
    expect(after.list.slice(0, recorded.content.list.length)).toEqual(recorded.content.list);
    expect(after.text.startsWith(recorded.content.text)).toBe(true);
    expect(after.map).toMatchObject(recorded.content.map);
    expect((await storedLog(db, sessionId)).updates).toBeGreaterThanOrEqual(recorded.made);
    fresh.destroy();
  });
});

/** A server whose PostgreSQL connection goes through a proxy the test can cut. */
async function proxiedSetup(register: Register, prefix: string) {
  const created = await createDatabase(prefix);
  register(created.drop);
  const proxy = await startProxy('127.0.0.1', Number(new URL(created.url).port || 5432), register);
  const viaProxy = new URL(created.url);
  viaProxy.hostname = '127.0.0.1';
  viaProxy.port = String(proxy.port);
  const start = () => startServerProcess({ transport: 'node', databaseUrl: viaProxy.toString(), register });
  const server = await start();
  // Fixtures and checks go straight to the database, never through the proxy.
  const db = openPool(created.url, register);
  return { proxy, db, start, server };
}

describe('PostgreSQL cut mid-session', () => {
  const register = useTeardown();
  let proxy: TcpProxy;
  let db: pg.Pool;
  let start: () => Promise<ServerProcess>;
  let server: ServerProcess;
  let owner: { userId: string; token: string };
  let sessionId: string;
  let otherSessionId: string;
  let otherContent: Content;
  let a: Client;
  let b: Client;
  const cutEdits: string[] = [];

  beforeAll(async () => {
    ({ proxy, db, start, server } = await proxiedSetup(register, 'cut'));
    owner = await createActor(db, 'owner');
    const imageId = await createImage(db, owner.userId);
    sessionId = await createSession(server.url, owner.token, imageId);

    // Another existing session with content beyond its seed, never loaded by this server: its
    // rows are written the way the log writes them.
    otherSessionId = await createSession(server.url, owner.token, imageId);
    const extra = new Y.Doc();
    extra.getMap(MAP).set('other', 'content that must never be lost');
    extra.getText(TEXT).insert(0, 'the other session');
    extra.getArray(LIST).push(['x', 'y', 'z']);
    await appendUpdates(db, [{ sessionId: otherSessionId, payload: Y.encodeStateAsUpdate(extra) }], 'test');
    extra.destroy();
    otherContent = (await storedLog(db, otherSessionId)).content;
    expect(otherContent.map).toEqual({ other: 'content that must never be lost' });
    expect(otherContent.layers).not.toEqual({});
  });

  it('acknowledges edits while PostgreSQL is reachable, and is ready', async () => {
    a = await syncedClient(server, sessionId, owner.token, register);
    b = await syncedClient(server, sessionId, await tokens.sign(owner.userId), register);
    a.doc.getMap(MAP).set('before', 'cut');
    b.doc.getText(TEXT).insert(0, 'b before the cut;');
    await Promise.all([acknowledged(a, DEADLINE), acknowledged(b, DEADLINE)]);
    expect(await readyz(server)).toMatchObject({ status: 200, body: { checks: { database: true, updateLog: true } } });
  });

  it('while cut: acknowledgements are withheld and /readyz turns 503', async () => {
    proxy.cut();
    a.doc.getArray(LIST).push(['cut-a0']);
    cutEdits.push('cut-a0');
    b.doc.getArray(LIST).push(['cut-b0']);
    cutEdits.push('cut-b0');
    const ready = await withLog(server, '/readyz during the cut', () =>
      waitFor(
        async () => {
          const r = await readyz(server);
          return r.status === 503 && r.body.checks?.updateLog === false && r.body.checks.database === false ? r : undefined;
        },
        { timeout: DEADLINE, what: '/readyz 503 with database and updateLog false' },
      ),
    );
    expect(ready.body.checks?.backlog).toBeGreaterThan(0);
    // Nothing written since the cut can have been committed, so nothing may have been acknowledged.
    expect(a.provider.hasUnsyncedChanges, 'a was acknowledged while PostgreSQL was unreachable').toBe(true);
    expect(b.provider.hasUnsyncedChanges, 'b was acknowledged while PostgreSQL was unreachable').toBe(true);
  });

  it('while cut: every edit still reaches the other client live', async () => {
    // Several edits from each side, each its own update message, as typing produces them.
    for (let i = 1; i <= 10; i++) {
      a.doc.getArray(LIST).push([`cut-a${i}`]);
      cutEdits.push(`cut-a${i}`);
      b.doc.getArray(LIST).push([`cut-b${i}`]);
      cutEdits.push(`cut-b${i}`);
    }
    a.doc.getText(TEXT).insert(0, 'a during the cut;');
    const list = (client: Client) => client.doc.getArray<string>(LIST).toArray();
    const missing = (client: Client, prefix: string) => cutEdits.filter((t) => t.startsWith(prefix) && !list(client).includes(t));
    await withLog(server, 'live broadcast during the cut', () =>
      waitUntil(() => missing(b, 'cut-a').length === 0, "b to see all of a's cut edits", () => `b lacks ${missing(b, 'cut-a').join(',')}`),
    );
    await waitUntil(() => missing(a, 'cut-b').length === 0, "a to see all of b's cut edits", () => `a lacks ${missing(a, 'cut-b').join(',')}`);
    await waitFor(() => b.doc.getText(TEXT).toString().includes('a during the cut;'), { timeout: DEADLINE, what: "a's text" });
    expect(a.provider.hasUnsyncedChanges).toBe(true);
    expect(b.provider.hasUnsyncedChanges).toBe(true);
    expect((await readyz(server)).status).toBe(503);
  });

  let late: Client | undefined;
  let lateOutcome: string | undefined;

  it('while cut: a new client of another session is refused or kept waiting, never served empty', async () => {
    late = connectClient(server.wsUrl, otherSessionId, await tokens.sign(owner.userId), register);
    void late.synced.then(() => (lateOutcome ??= 'synced'));
    void late.refused.then((reason) => (lateOutcome ??= `refused: ${reason}`));
    // Refused quickly is the expected path (authentication cannot read the database); "kept
    // waiting" is acceptable too, so a missing outcome after the deadline is not a failure.
    await waitFor(() => lateOutcome, { timeout: 10_000, what: 'refusal' }).catch(() => undefined);
    console.log(`[durability] new client during the cut: ${lateOutcome ?? 'kept waiting'}`);
    expect(lateOutcome ?? 'kept waiting').not.toBe('synced');
    // An outage must not be reported as a definitive answer about the session or the user.
    const definitive = ['session_not_found', 'session_ended', 'session_expired', 'forbidden', 'unauthorized', 'unknown_user'];
    expect(definitive.map((code) => `refused: ${code}`)).not.toContain(lateOutcome);
    if (lateOutcome) expect(lateOutcome).toBe('refused: not_ready');
    expect(content(late.doc)).toEqual({ meta: {}, layers: {}, map: {}, list: [], text: '' });
    expect(a.provider.hasUnsyncedChanges).toBe(true);
  });

  it('after restore: acknowledgements arrive, /readyz is 200, and the other session is served in full', async () => {
    proxy.restore();
    await withLog(server, 'acknowledgements after restore', () =>
      Promise.all([acknowledged(a, DEADLINE), acknowledged(b, DEADLINE)]),
    );
    await withLog(server, '/readyz after restore', () =>
      waitFor(async () => (await readyz(server)).status === 200, { timeout: DEADLINE, what: '/readyz 200' }),
    );
    expect(await readyz(server)).toMatchObject({ status: 200, body: { checks: { database: true, updateLog: true, backlog: 0 } } });

    const fresh = await syncedClient(server, otherSessionId, owner.token, register);
    expect(content(fresh.doc)).toEqual(otherContent);
    if (lateOutcome === undefined) {
      // It was kept waiting: now it must get the full content too.
      await waitFor(() => lateOutcome === 'synced', { timeout: DEADLINE, what: 'the waiting client to sync' });
      expect(content(late!.doc)).toEqual(otherContent);
    }
    late?.destroy();
    fresh.destroy();
    const stored = await storedLog(db, otherSessionId);
    expect(stored.content).toEqual(otherContent);
  });

  it('after a graceful restart every edit, including those made during the cut, is there', async () => {
    await waitFor(() => JSON.stringify(content(a.doc)) === JSON.stringify(content(b.doc)), { timeout: DEADLINE, what: 'a and b to converge' });
    const expected = contentOfUpdate(mergedState([a, b]));
    for (const tag of cutEdits) expect(expected.list).toContain(tag);
    expect(expected.text).toContain('a during the cut;');
    expect(expected.map).toEqual({ before: 'cut' });
    a.destroy();
    b.destroy();

    expect(await server.stop()).toBe(0);
    expect((await storedLog(db, sessionId)).content).toEqual(expected);
    server = await start();
    const fresh = await syncedClient(server, sessionId, owner.token, register);
    expect(content(fresh.doc)).toEqual(expected);
    fresh.destroy();
  });
});

describe('a client leaves with unacknowledged edits while PostgreSQL is cut', () => {
  const register = useTeardown();
  let proxy: TcpProxy;
  let db: pg.Pool;
  let start: () => Promise<ServerProcess>;
  let server: ServerProcess;

  beforeAll(async () => {
    ({ proxy, db, start, server } = await proxiedSetup(register, 'leave'));
  });

  it('keeps the document until the edits are stored, then serves them after restore and after a restart', async () => {
    const owner = await createActor(db, 'owner');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);

    const leaver = await syncedClient(server, sessionId, owner.token, register);
    leaver.doc.getMap(MAP).set('before', 'cut');
    await acknowledged(leaver, DEADLINE);

    proxy.cut();
    const tags: string[] = [];
    for (let i = 0; i < 10; i++) {
      leaver.doc.getArray(LIST).push([`left-${i}`]);
      tags.push(`left-${i}`);
    }
    leaver.doc.getText(TEXT).insert(0, 'typed while the database was away');
    // The server has the edits and cannot store them.
    await withLog(server, '/readyz during the cut', () =>
      waitFor(async () => (await readyz(server)).body.checks?.updateLog === false, { timeout: DEADLINE, what: 'updateLog: false' }),
    );
    expect(leaver.provider.hasUnsyncedChanges).toBe(true);
    const expected = content(leaver.doc);
    leaver.destroy(); // the last (only) client leaves with its edits unacknowledged

    proxy.restore();
    await withLog(server, '/readyz after restore', () =>
      waitFor(
        async () => {
          const r = await readyz(server);
          return r.status === 200 && r.body.checks?.backlog === 0;
        },
        { timeout: DEADLINE, what: '/readyz 200 with an empty backlog' },
      ),
    );
    const fresh = connectClient(server.wsUrl, sessionId, await tokens.sign(owner.userId), register);
    await withLog(server, 'the edits after restore', () =>
      waitFor(() => JSON.stringify(content(fresh.doc)) === JSON.stringify(expected), {
        timeout: DEADLINE,
        what: `the left client's edits (have ${JSON.stringify(content(fresh.doc).list)})`,
      }),
    );
    fresh.destroy();
    await withLog(server, 'the stored edits', () =>
      waitFor(async () => JSON.stringify((await storedLog(db, sessionId)).content) === JSON.stringify(expected), {
        timeout: DEADLINE,
        what: 'the rows to hold the edits',
      }),
    );

    expect(await server.stop()).toBe(0);
    server = await start();
    const afterRestart = await syncedClient(server, sessionId, owner.token, register);
    expect(content(afterRestart.doc)).toEqual(expected);
    afterRestart.destroy();
  });
});
