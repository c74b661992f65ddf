/**
 * Presence abuse, with real HocuspocusProvider clients and raw protocol clients:
 *
 * - one connection may use at most MAX_AWARENESS_CLIENTS_PER_CONNECTION clientIDs: a read-only
 *   socket announcing 5,000 in one message is closed (`too_many_awareness_clients`) and neither
 *   the others nor a late joiner ever receive those states;
 * - a clientID is bound to its user, not to whoever speaks first after a disconnect: a viewer
 *   cannot take a disconnected editor's clientID (one node, and across two nodes over Redis, where
 *   the claim hash names the user), and no echo (y-websocket sends back what it receives) moves one;
 * - `user.name` is the user's `display_name`, whatever the client sends; one state per client (no
 *   phantom state per message).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import * as decoding from 'lib0/decoding';
import type pg from 'pg';
import { WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';
import { fakeUpdates } from './support/awareness.ts';
import { waitFor } from './support/clients.ts';
import { attachPeer, peerSynced, type Peer } from './support/peers.ts';
import { createDatabase } from './support/databases.ts';
import { REDIS_URL, redisScratch } from './support/redis.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { metric } from './support/metrics.ts';
import { authFrame, awarenessFrame, rawClient, type RawClient } from './support/raw-client.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';

type Register = (fn: () => Promise<void>) => void;
const fns: Array<() => Promise<void>> = [];
const register: Register = (fn) => void fns.unshift(fn);
afterAll(async () => {
  for (const fn of fns.splice(0)) await fn();
});

/** Hocuspocus's per-document Close message type. */
const CLOSE = 7;

/** A provider for an existing (or new) document: a client reconnecting keeps its Y.Doc and clientID. */
const attach = (wsUrl: string, name: string, token: string, doc?: Y.Doc): Peer => attachPeer(wsUrl, name, token, register, doc);
const synced = peerSynced;

interface Seen {
  user?: { id?: string; name?: string; color?: string };
  cursor?: { x: number; y: number } | null;
}
const stateOf = (watcher: Peer, clientId: number) => watcher.provider.awareness!.getStates().get(clientId) as Seen | undefined;
const cursorX = (watcher: Peer, clientId: number) => stateOf(watcher, clientId)?.cursor?.x;

/** A raw socket authenticated to `sessionId`; `closeReason` resolves when the server closes that document. */
async function rawPeer(wsUrl: string, sessionId: string, token: string): Promise<RawClient & { closeReason: Promise<string> }> {
  const raw = rawClient(wsUrl, register);
  const closeReason = new Promise<string>((resolve) =>
    raw.ws.on('message', (data: Buffer) => {
      const d = decoding.createDecoder(new Uint8Array(data));
      if (decoding.readVarString(d).split('\0')[0] !== sessionId) return;
      if (decoding.readVarUint(d) === CLOSE) resolve(decoding.readVarString(d));
    }),
  );
  await raw.opened;
  raw.send(authFrame(sessionId, token));
  expect(await raw.authReply(sessionId)).toBe('authenticated');
  return Object.assign(raw, { closeReason });
}

/** `promise`, or a clear failure after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Moves `peer`'s cursor to x = from…to (a new provider's awareness clock starts behind the server's). */
function moves(peer: Peer, from: number, to: number): void {
  for (let x = from; x <= to; x++) peer.provider.setAwarenessField('cursor', { x, y: x });
}

describe('awareness abuse on one node', () => {
  let server: ServerProcess;
  let pool: pg.Pool;
  let owner: { userId: string; token: string };
  let alice: { userId: string; token: string };
  let viewer: { userId: string; token: string };
  let sessionId: string;

  beforeAll(async () => {
    const database = await createDatabase('aw');
    register(database.drop);
    server = await startServerProcess({ transport: 'node', databaseUrl: database.url, register, env: { AUTOSAVE_QUIET_MS: '0' } });
    pool = openPool(database.url, register);
    owner = await createActor(pool, 'owner');
    alice = await createActor(pool, 'alice');
    viewer = await createActor(pool, 'viewer');
    sessionId = await createSession(server.url, owner.token, await createImage(pool, owner.userId));
    for (const [user, canEdit] of [[alice, true], [viewer, false]] as const) {
      const invited = await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
        token: owner.token,
        body: { userId: user.userId, permissions: { canEdit } },
      });
      expect(invited.status).toBe(201);
    }
  }, 60_000);

  it('closes a read-only socket that announces 5,000 clientIDs; nobody, nor a late joiner, receives them', async () => {
    const watcher = attach(server.wsUrl, sessionId, owner.token);
    const sentinel = attach(server.wsUrl, sessionId, alice.token);
    await Promise.all([watcher, sentinel].map(synced));
    const raw = await rawPeer(server.wsUrl, sessionId, viewer.token);
    const base = 0x4000_0000;
    raw.send(awarenessFrame(sessionId, fakeUpdates(Array.from({ length: 5_000 }, (_, i) => [base + i, 1, { cursor: { x: i, y: i } }] as const))));
    expect(await within(raw.closeReason, 10_000, 'the flooding connection closed')).toBe('too_many_awareness_clients');
    // The sentinel's move follows the flood through the server: once the watcher has it, anything
    // the flood had added would have reached it too.
    sentinel.provider.setAwarenessField('cursor', { x: 42, y: 42 });
    await waitFor(() => cursorX(watcher, sentinel.doc.clientID) === 42, { timeout: 5_000, what: 'the sentinel at the watcher' });
    const floodIds = (peer: Peer) => [...peer.provider.awareness!.getStates().keys()].filter((id) => id >= base && id < base + 5_000);
    expect(floodIds(watcher)).toEqual([]);
    const late = attach(server.wsUrl, sessionId, owner.token);
    await synced(late);
    await waitFor(() => cursorX(late, sentinel.doc.clientID) === 42, { timeout: 5_000, what: 'the sentinel at the late joiner' });
    expect(floodIds(late)).toEqual([]);
    expect(late.provider.awareness!.getStates().size).toBeLessThanOrEqual(3);
    expect(await metric(server, 'imageflow_awareness_overflows_total')).toBeGreaterThanOrEqual(1);
    for (const p of [watcher, sentinel, late]) p.destroy();
  }, 30_000);

  it("does not let a viewer take a disconnected editor's clientID; she keeps it when she comes back", async () => {
    const watcher = attach(server.wsUrl, sessionId, owner.token);
    const first = attach(server.wsUrl, sessionId, alice.token);
    await Promise.all([watcher, first].map(synced));
    const id = first.doc.clientID;
    first.provider.setAwarenessField('cursor', { x: 1, y: 1 });
    await waitFor(() => cursorX(watcher, id) === 1, { timeout: 5_000, what: "Alice's cursor" });
    first.destroy();
    await waitFor(() => stateOf(watcher, id) === undefined, { timeout: 5_000, what: 'Alice gone' });

    // The viewer speaks first under her clientID (a clock far ahead), and for itself in the same message.
    const raw = await rawPeer(server.wsUrl, sessionId, viewer.token);
    const own = 0x3000_0001;
    raw.send(awarenessFrame(sessionId, fakeUpdates([[id, 1_000, { cursor: { x: 999, y: 999 } }], [own, 1, { cursor: { x: 7, y: 7 } }]])));
    await waitFor(() => cursorX(watcher, own) === 7, { timeout: 5_000, what: "the viewer's own state" });
    expect(stateOf(watcher, id)).toBeUndefined();

    // Alice comes back with the same document (same clientID): her cursor shows.
    const again = attach(server.wsUrl, sessionId, alice.token, first.doc);
    await synced(again);
    moves(again, 2, 12);
    await waitFor(() => cursorX(watcher, id) === 12, { timeout: 5_000, what: "Alice's cursor after she came back" });
    expect(stateOf(watcher, id)?.user?.id).toBe(alice.userId);
    raw.ws.close();
    await waitFor(() => stateOf(watcher, own) === undefined, { timeout: 5_000, what: 'the viewer gone' });
    for (const p of [watcher, again]) p.destroy();
  }, 30_000);

  it("lets no echo move a clientID: a y-websocket client of the same user sends back every state it receives", async () => {
    const watcher = attach(server.wsUrl, sessionId, owner.token);
    const a = attach(server.wsUrl, sessionId, alice.token);
    await Promise.all([watcher, a].map(synced));
    const echoer = new WebsocketProvider(server.wsUrl.replace(/\/collab$/, '/yjs'), sessionId, new Y.Doc(), {
      params: { token: alice.token },
      disableBc: true,
    });
    register(async () => echoer.destroy());
    await waitFor(() => echoer.synced, { timeout: 10_000, what: 'y-websocket sync' });
    a.provider.setAwarenessField('cursor', { x: 1, y: 1 });
    // The echoer has it (and has sent it back) before A moves on.
    await waitFor(() => (echoer.awareness.getStates().get(a.doc.clientID) as Seen | undefined)?.cursor?.x === 1, { timeout: 5_000, what: 'A at the echoer' });
    moves(a, 2, 5);
    await waitFor(() => cursorX(watcher, a.doc.clientID) === 5, { timeout: 5_000, what: "A's later moves" });
    // The echoer leaving removes only its own state.
    echoer.destroy();
    await waitFor(() => stateOf(watcher, echoer.awareness.clientID) === undefined, { timeout: 5_000, what: 'the echoer gone' });
    moves(a, 6, 6);
    await waitFor(() => cursorX(watcher, a.doc.clientID) === 6, { timeout: 5_000, what: "A's move after the echoer left" });
    for (const p of [watcher, a]) p.destroy();
  }, 30_000);

  it("shows every user under their display_name, whatever name the client sends", async () => {
    const watcher = attach(server.wsUrl, sessionId, owner.token);
    const a = attach(server.wsUrl, sessionId, alice.token);
    const v = attach(server.wsUrl, sessionId, viewer.token);
    await Promise.all([watcher, a, v].map(synced));
    a.provider.setAwarenessField('user', { id: owner.userId, name: 'Bob', color: '#000000' });
    a.provider.setAwarenessField('cursor', { x: 1, y: 1 });
    v.provider.setAwarenessField('user', { name: 'alice' });
    v.provider.setAwarenessField('cursor', { x: 2, y: 2 });
    await waitFor(() => cursorX(watcher, a.doc.clientID) === 1 && cursorX(watcher, v.doc.clientID) === 2, { timeout: 5_000, what: 'both cursors' });
    expect(stateOf(watcher, a.doc.clientID)?.user).toEqual({ id: alice.userId, name: 'alice', color: expect.stringMatching(/^#[0-9a-f]{6}$/) });
    expect(stateOf(watcher, v.doc.clientID)?.user).toMatchObject({ id: viewer.userId, name: 'viewer' });
    // One state per client: no phantom from the way Hocuspocus decodes each awareness message.
    // (Waited for: the clients of earlier tests may still be leaving.)
    const expected = JSON.stringify([watcher.doc.clientID, a.doc.clientID, v.doc.clientID].sort());
    const keys = () => JSON.stringify([...watcher.provider.awareness!.getStates().keys()].sort());
    await waitFor(() => keys() === expected, { timeout: 5_000, what: 'one state per client' }).catch(() => expect(keys()).toBe(expected));
    for (const p of [watcher, a, v]) p.destroy();
  }, 30_000);
});

describe('awareness bound to users across two nodes', () => {
  let nodes: ServerProcess[];
  let pool: pg.Pool;
  let owner: { userId: string; token: string };
  let alice: { userId: string; token: string };
  let viewer: { userId: string; token: string };
  let sessionId: string;
  let redis: Redis;
  let prefix: string;

  beforeAll(async () => {
    const database = await createDatabase('awn');
    register(database.drop);
    ({ prefix, redis } = redisScratch(register));
    const start = (i: number) =>
      startServerProcess({
        transport: 'node',
        databaseUrl: database.url,
        register,
        env: {
          REDIS_URL,
          REDIS_PREFIX: prefix,
          REDIS_SYNC_INTERVAL_MS: '500',
          NODE_ID: `aw-${i}`,
          AUTOSAVE_QUIET_MS: '0',
        },
      });
    const first = await start(0);
    nodes = [first, await start(1)];
    pool = openPool(database.url, register);
    owner = await createActor(pool, 'owner');
    alice = await createActor(pool, 'alice');
    viewer = await createActor(pool, 'viewer');
    sessionId = await createSession(first.url, owner.token, await createImage(pool, owner.userId));
    for (const [user, canEdit] of [[alice, true], [viewer, false]] as const) {
      const invited = await api(first.url, 'POST', `/api/sessions/${sessionId}/participants`, {
        token: owner.token,
        body: { userId: user.userId, permissions: { canEdit } },
      });
      expect(invited.status).toBe(201);
    }
  }, 120_000);

  it("does not let a viewer on another node take a disconnected editor's clientID", async () => {
    const watchers = nodes.map((node) => attach(node.wsUrl, sessionId, owner.token));
    const first = attach(nodes[0]!.wsUrl, sessionId, alice.token);
    await Promise.all([...watchers, first].map(synced));
    const id = first.doc.clientID;
    first.provider.setAwarenessField('cursor', { x: 1, y: 1 });
    for (const w of watchers) await waitFor(() => cursorX(w, id) === 1, { timeout: 5_000, what: "Alice's cursor" });
    // The claim hash binds the clientID to Alice (and names the node using it).
    expect(await redis.hget(`${prefix}:aw:{${sessionId}}`, String(id))).toMatch(new RegExp(`^${alice.userId}\\|aw-0-`));
    first.destroy();
    for (const w of watchers) await waitFor(() => stateOf(w, id) === undefined, { timeout: 5_000, what: 'Alice gone' });
    // Released, still hers.
    await waitFor(async () => (await redis.hget(`${prefix}:aw:{${sessionId}}`, String(id)))?.startsWith(`${alice.userId}||`), {
      timeout: 5_000,
      what: 'the release',
    });

    const raw = await rawPeer(nodes[1]!.wsUrl, sessionId, viewer.token);
    const own = 0x3000_0003;
    raw.send(awarenessFrame(sessionId, fakeUpdates([[id, 1_000, { cursor: { x: 999, y: 999 } }], [own, 1, { cursor: { x: 7, y: 7 } }]])));
    for (const w of watchers) await waitFor(() => cursorX(w, own) === 7, { timeout: 5_000, what: "the viewer's own state" });
    for (const w of watchers) expect(stateOf(w, id)).toBeUndefined();
    expect(await metric(nodes[1]!, 'imageflow_awareness_claims_refused_total')).toBeGreaterThanOrEqual(1);

    // Alice comes back on node 0 with the same document: everyone sees her again.
    const again = attach(nodes[0]!.wsUrl, sessionId, alice.token, first.doc);
    await synced(again);
    moves(again, 2, 12);
    for (const [i, w] of watchers.entries()) {
      await waitFor(() => cursorX(w, id) === 12, { timeout: 5_000, what: `Alice's cursor on node ${i} after she came back` });
    }
    for (const p of [...watchers, again]) p.destroy();
  }, 60_000);
});
