/**
 * Draining (SIGTERM) and rolling restarts: real server processes on one PostgreSQL database and
 * the shared Redis (each file under its own key prefix), real clients.
 *
 * - One node drained while a peer node stays: `/readyz` turns 503 `draining` first while HTTP is
 *   still served, a new WebSocket is refused with 503 `shutting_down`, open sockets are closed
 *   with 1012, everything received is committed, the node's presence rows and awareness claims are
 *   released (not left for the sweeps: heartbeats and rounds are set too slow for them to act),
 *   its liveness channel is gone, its cursors disappear elsewhere at once, and it exits 0.
 * - Three nodes behind a load balancer that polls `/readyz` (test/support/balancer.ts), replaced
 *   one after another by a new generation (one node of surge) under a steady editing load from
 *   typed clients that reconnect through it: the balancer saw each node draining before it went,
 *   nothing any client wrote is lost (in every client and in the log), every client converges,
 *   every cursor set before the roll (never moved) is seen by every other client within 3 s of
 *   each move — before any provider's 15 s renewal could bring it back — and no cursor, presence
 *   row or claim of a drained node is left.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import type pg from 'pg';
import WebSocket from 'ws';
import * as Y from 'yjs';
import { connectCanvas, type CanvasClient } from '../client/index.ts';
import { migrate } from '../persistence/migrate.ts';
import { CloseCode } from '../shared/protocol.ts';
import { startBalancer } from './support/balancer.ts';
import { waitFor } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { attachPeer, peerSynced } from './support/peers.ts';
import { mulberry32 } from './support/random.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';
import { uwsLauncher } from './support/uws-runtime.ts';

type Register = (fn: () => Promise<void>) => void;
const fns: Array<() => Promise<void>> = [];
const register: Register = (fn) => void fns.unshift(fn);
afterAll(async () => {
  for (const fn of fns.splice(0)) await fn();
});

const SEED = process.env.ROLL_SEED ? Number(process.env.ROLL_SEED) : Math.floor(Math.random() * 2 ** 31);
console.log(`[rolling-restart] random seed ${SEED} (replay with ROLL_SEED=${SEED})`);

let databaseUrl: string;
let pool: pg.Pool;
let redis: Redis;
let owner: { userId: string; token: string };
let imageId: string;

beforeAll(async () => {
  const database = await createDatabase('roll');
  register(database.drop);
  databaseUrl = database.url;
  pool = openPool(database.url, register);
  redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  register(async () => void redis.disconnect());
  // The schema first, so the fixtures can go in before any node starts.
  await migrate(database.url);
  owner = await createActor(pool, 'roll-owner');
  imageId = await createImage(pool, owner.userId);
}, 60_000);

function startNode(nodeId: string, prefix: string, env: Record<string, string> = {}, transport: 'node' | 'uws' = 'node'): Promise<ServerProcess> {
  return startServerProcess({
    transport,
    databaseUrl,
    register,
    env: {
      REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      REDIS_PREFIX: prefix,
      REDIS_SYNC_INTERVAL_MS: '500',
      NODE_ID: nodeId,
      AUTOSAVE_QUIET_MS: '0',
      AUTOSAVE_ON_LEAVE: 'false',
      ...env,
    },
  });
}

/** The document as the log holds it, merged from its rows. */
async function logged(sessionId: string): Promise<Y.Doc> {
  const { rows } = await pool.query<{ payload: Buffer }>('SELECT payload FROM document_updates WHERE session_id = $1 ORDER BY seq', [sessionId]);
  const doc = new Y.Doc();
  for (const row of rows) Y.applyUpdate(doc, new Uint8Array(row.payload));
  return doc;
}

async function presenceRows(nodeId: string): Promise<number> {
  const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM node_presence WHERE node_id = $1', [nodeId]);
  return Number(rows[0]!.n);
}

/** A raw WebSocket upgrade: its HTTP answer when refused, 'open' when accepted. */
function tryUpgrade(url: string): Promise<{ status: number; body: string } | 'open' | 'failed'> {
  return new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.on('open', () => {
      socket.close();
      resolve('open');
    });
    socket.on('unexpected-response', (_request, response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    socket.on('error', () => resolve('failed'));
  });
}

const uws = uwsLauncher();
const transports = [
  { transport: 'node' as const, skip: false as const },
  { transport: 'uws' as const, skip: uws.ok ? (false as const) : uws.reason },
];

describe.each(transports)('draining one node (SIGTERM) on the $transport transport', ({ transport, skip }) => {
  it.skipIf(skip)(`answers /readyz 503 first, refuses new sockets, closes the open ones with 1012, releases its presence and claims, exits 0${skip ? ` (skipped: ${skip})` : ''}`, async () => {
    const prefix = `imageflow-test-${randomBytes(4).toString('hex')}`;
    // Heartbeats far slower than the test: only the drain itself can remove the rows and claims.
    const slow = { PRESENCE_HEARTBEAT_MS: '60000', REDIS_SYNC_INTERVAL_MS: '20000' };
    const [victim, peer] = await Promise.all([
      startNode('drain-a', prefix, { ...slow, DRAIN_DELAY_MS: '2000' }, transport),
      startNode('drain-b', prefix, slow),
    ]);
    const sessionId = await createSession(peer.url, owner.token, imageId);

    let closeEvent: { code: number; reason: string } | undefined;
    const leaving = attachPeer(victim.wsUrl, sessionId, owner.token, register);
    leaving.provider.on('close', ({ event }: { event: { code: number; reason: string } }) => (closeEvent ??= { code: event.code, reason: event.reason }));
    const watcher = attachPeer(peer.wsUrl, sessionId, owner.token, register);
    await Promise.all([leaving, watcher].map(peerSynced));
    leaving.provider.setAwarenessField('cursor', { x: 7, y: 7 });
    const id = leaving.doc.clientID;
    await waitFor(() => (watcher.provider.awareness!.getStates().get(id) as { cursor?: { x: number } } | undefined)?.cursor?.x === 7, {
      timeout: 10_000,
      what: 'the cursor on the other node',
    });
    const claimKey = `${prefix}:aw:{${sessionId}}`;
    const liveness = () => redis.pubsub('CHANNELS', `${prefix}:node:{${sessionId}}:drain-a-*`) as Promise<string[]>;
    await waitFor(async () => (await redis.hget(claimKey, String(id)))?.includes('|drain-a-'), { timeout: 10_000, what: 'the claim of node a' });
    await waitFor(async () => (await presenceRows('drain-a')) === 1, { timeout: 10_000, what: "node a's presence row" });
    expect(await liveness(), "node a's liveness channel of the session").toHaveLength(1);

    // Edits right before the signal: committed before the process goes.
    for (let n = 0; n < 50; n++) leaving.doc.getMap('drain').set(`k${n}`, n);
    victim.child.kill('SIGTERM');
    // During DRAIN_DELAY_MS: not ready, no new sockets, HTTP still served, the open socket still open.
    const ready = await waitFor(async () => {
      const r = await api(victim.url, 'GET', '/readyz');
      return r.status === 503 ? r : undefined;
    }, { timeout: 5_000, what: '/readyz 503' });
    expect(ready.body).toMatchObject({ status: 'draining' });
    expect((await api(victim.url, 'GET', '/healthz')).status).toBe(200);
    const refused = await tryUpgrade(victim.wsUrl);
    expect(refused).toMatchObject({ status: 503 });
    expect(JSON.parse((refused as { body: string }).body)).toMatchObject({ error: { code: 'shutting_down' } });
    expect(closeEvent).toBeUndefined();

    expect(await victim.exited).toBe(0);
    expect(closeEvent).toEqual({ code: CloseCode.ServiceRestart, reason: 'shutting_down' });
    expect(await tryUpgrade(victim.wsUrl)).toBe('failed');
    expect(victim.output()).toMatch(/"msg":"drained: every document stored, presence and claims released"/);
    // Released, not swept (the sweeps would take a minute here).
    expect(await presenceRows('drain-a')).toBe(0);
    expect(await redis.hget(claimKey, String(id))).toMatch(new RegExp(`^${owner.userId}\\|\\|\\d+$`));
    expect(await liveness()).toEqual([]);
    expect(watcher.provider.awareness!.getStates().has(id)).toBe(false);
    const stored = await logged(sessionId);
    for (let n = 0; n < 50; n++) expect(stored.getMap('drain').get(`k${n}`), `k${n}`).toBe(n);
    leaving.destroy();
    watcher.destroy();
    expect(await peer.stop()).toBe(0);
  }, 90_000);
});

/** Canonical JSON of what the roll edits (keys sorted: Y.Map iterates in local insertion order). */
const content = (doc: Y.Doc) => JSON.stringify(Object.entries(doc.getMap('roll').toJSON()).sort(([a], [b]) => (a < b ? -1 : 1)));

describe('rolling restart of three nodes under a steady editing load', () => {
  it('loses nothing, converges, and leaves no ghost cursor, presence row or claim', async () => {
    const prefix = `imageflow-test-${randomBytes(4).toString('hex')}`;
    const env = { PRESENCE_HEARTBEAT_MS: '500', DRAIN_DELAY_MS: '500' };
    const balancer = await startBalancer({ intervalMs: 50, register });
    const names = ['roll-0', 'roll-1', 'roll-2'];
    const first = await startNode(`${names[0]}-a`, prefix, env);
    // The old generation and, started at once beside it, the new one; each new node joins the
    // balancer just before its predecessor drains (a rolling update with one node of surge).
    const [rest, spares] = await Promise.all([
      Promise.all(names.slice(1).map((n) => startNode(`${n}-a`, prefix, env))),
      Promise.all(names.map((n) => startNode(`${n}-b`, prefix, env))),
    ]);
    const nodes = [first, ...rest];
    nodes.forEach((node, i) => balancer.set(`${names[i]}-a`, node.port));
    await waitFor(() => names.every((n) => balancer.healthy(`${n}-a`)), { timeout: 10_000, what: 'every node healthy behind the balancer' });
    const sessions = [await createSession(first.url, owner.token, imageId), await createSession(first.url, owner.token, imageId)];

    const rnd = mulberry32(SEED);
    const clients: CanvasClient[] = [];
    const lastClose: number[] = [];
    const lastSynced: number[] = [];
    for (let i = 0; i < 6; i++) {
      const client = connectCanvas({ url: balancer.wsUrl, sessionId: sessions[i % 2]!, token: owner.token, WebSocketPolyfill: WebSocket });
      register(async () => client.destroy());
      client.provider.on('close', () => (lastClose[i] = Date.now()));
      client.provider.on('synced', () => (lastSynced[i] = Date.now()));
      clients.push(client);
    }
    await waitFor(() => clients.every((c) => c.provider.isSynced), { timeout: 20_000, what: 'every client synced' });
    expect(new Set(names.filter((n) => balancer.routed(`${n}-a`) > 0)).size, 'the clients spread over the nodes').toBeGreaterThan(1);
    // Cursors set once, before the roll, and never moved again: each must survive every move.
    // Set at different moments, so the providers' 15 s renewals (which would also bring a lost
    // cursor back) do not fall together.
    for (const [i, c] of clients.entries()) {
      c.setCursor({ x: i, y: i });
      await new Promise((resolve) => setTimeout(resolve, Math.floor(rnd() * 2_000)));
    }
    const sees = (viewer: CanvasClient, i: number) => viewer.peers().some((p) => p.clientId === clients[i]!.doc.clientID && p.cursor?.x === i);
    const mates = (i: number) => clients.flatMap((c, j) => (j !== i && j % 2 === i % 2 ? [j] : []));
    await waitFor(() => clients.every((c, i) => mates(i).every((j) => sees(c, j))), { timeout: 15_000, what: 'every cursor seen before the roll' });

    // The load: each client writes `c<i>-<n>` every 10–40 ms until the roll is over.
    const written = clients.map(() => -1);
    const acked = clients.map(() => -1);
    let rolling = true;
    const writers = clients.map(async (client, i) => {
      for (let n = 0; rolling; n++) {
        client.doc.getMap('roll').set(`c${i}-${n}`, n);
        written[i] = n;
        await new Promise((resolve) => setTimeout(resolve, 10 + Math.floor(rnd() * 30)));
        // Every tenth edit waits for its acknowledgement (across a move to another node, too):
        // under load one takes longer than the pause between edits.
        if (n % 10 === 9) await waitFor(() => !rolling || !client.provider.hasUnsyncedChanges, { timeout: 30_000, what: `acknowledgement of c${i}-${n}` });
        if (!client.provider.hasUnsyncedChanges) acked[i] = n;
      }
    });
    await waitFor(() => acked.every((n) => n >= 10), { timeout: 20_000, what: 'some acknowledged edits on every client' });

    for (const [i, name] of names.entries()) {
      balancer.set(`${name}-b`, spares[i]!.port);
      await waitFor(() => balancer.healthy(`${name}-b`), { timeout: 10_000, what: `${name}-b behind the balancer` });
      const started = Date.now();
      expect(await nodes[i]!.stop(), `${name}-a exit code`).toBe(0);
      const drainedMs = Date.now() - started;
      expect(balancer.sawDraining(`${name}-a`), `the balancer saw ${name}-a draining before it went`).toBe(true);
      expect(await presenceRows(`${name}-a`), `presence rows of ${name}-a after its drain`).toBe(0);
      balancer.set(`${name}-a`, undefined);
      nodes[i] = spares[i]!;
      // Its clients are back (synced again after their socket closed) on the nodes left.
      const moved = clients.flatMap((_, k) => ((lastClose[k] ?? 0) >= started ? [k] : []));
      expect(moved.length, `clients moved off ${name}-a`).toBeGreaterThan(0);
      await waitFor(() => moved.every((k) => (lastSynced[k] ?? 0) > lastClose[k]!) && clients.every((c) => c.provider.isSynced), {
        timeout: 20_000,
        what: `every client back after ${name}-a`,
      });
      const back = Date.now();
      // …and so are their cursors, unmoved, well before any provider's 15 s renewal.
      await waitFor(() => clients.every((c, k) => mates(k).every((j) => sees(c, j))), { timeout: 3_000, what: `every cursor seen again after ${name}-a` });
      console.log(`[rolling-restart] ${name}-a drained in ${drainedMs} ms; ${moved.length} client(s) moved, synced again ${back - started} ms after the signal, cursors back ${Date.now() - back} ms later`);
    }
    rolling = false;
    await Promise.all(writers);
    await Promise.all(clients.map((c) => waitFor(() => !c.provider.hasUnsyncedChanges, { timeout: 20_000, what: 'the last acknowledgements' })));
    console.log(`[rolling-restart] written ${written.join(', ')}; acknowledged during the load ${acked.join(', ')}; balancer connect failures ${balancer.connectFailures}, dropped ${balancer.dropped}`);

    // Nothing written is lost, anywhere; the clients of each session converge.
    for (const [s, sessionId] of sessions.entries()) {
      const group = clients.filter((_, i) => i % 2 === s);
      await waitFor(() => group.every((c) => content(c.doc) === content(group[0]!.doc)), { timeout: 15_000, what: `convergence of session ${s}` });
      const stored = await logged(sessionId);
      expect(content(stored)).toBe(content(group[0]!.doc));
      for (const [i, top] of written.entries()) {
        if (i % 2 !== s) continue;
        for (let n = 0; n <= top; n++) expect(stored.getMap('roll').get(`c${i}-${n}`), `c${i}-${n}`).toBe(n);
      }
    }
    // Every cursor is back where it was, on every client, without moving; nobody else is there.
    await waitFor(() => clients.every((c, i) => mates(i).every((j) => sees(c, j))), { timeout: 15_000, what: 'every cursor seen after the roll' });
    for (const [i, client] of clients.entries()) {
      const ids = client.peers().map((p) => p.clientId).sort();
      expect(ids, `client ${i} sees exactly its session's other clients`).toEqual(mates(i).map((j) => clients[j]!.doc.clientID).sort());
    }
    // Presence rows and claims name only the live nodes.
    const { rows } = await pool.query<{ node_id: string }>('SELECT DISTINCT node_id FROM node_presence WHERE session_id = ANY($1)', [sessions]);
    expect(rows.map((r) => r.node_id).every((n) => n.endsWith('-b')), `presence rows of ${rows.map((r) => r.node_id).join(', ')}`).toBe(true);
    for (const sessionId of sessions) {
      const claims = await redis.hgetall(`${prefix}:aw:{${sessionId}}`);
      for (const value of Object.values(claims)) expect(value, 'a claim names a live node or none').not.toMatch(/\|roll-\d-a-/);
    }
    // The owner is online all along (every client is one of theirs): a drain's leave never won over the join elsewhere.
    for (const sessionId of sessions) {
      const listed = await api(nodes[0]!.url, 'GET', `/api/sessions/${sessionId}/participants`, { token: owner.token });
      expect(listed.body.participants.find((p: { userId: string }) => p.userId === owner.userId)?.isOnline).toBe(true);
    }
    for (const client of clients) client.destroy();
  }, 180_000);
});
