/**
 * Access changes act on every node, and session expiry acts on open connections.
 *
 * Two real servers (child processes) on one PostgreSQL database and the shared Redis; node B
 * reaches PostgreSQL through a TCP proxy the test can cut. Real HocuspocusProvider clients: the
 * owner on node A, the participant on node B.
 *
 * - Removal, demotion, promotion and ending through node A's HTTP API act on node B within a
 *   second; edits after that never reach the owner nor the log.
 * - Deactivating a user and revoking a login session by plain SQL act too (only on the named
 *   connections); a login session that runs out closes its connections at its expires_at.
 * - Node B cut off from PostgreSQL misses a change; it re-checks its connections when its feed
 *   listens again (not after ACCESS_RECHECK_MS, which is ten minutes here).
 * - Expiry: at `expires_at` connections close with `session_expired`; before that (an expiry set
 *   by hand) a stateless `saveVersion` records nothing.
 * - A node that cannot check access (database cut) closes connections past ACCESS_RECHECK_MS.
 * - PGlite: the feed hears the server's own commits (not rolled-back ones, not bookkeeping); a
 *   change made by hand through another connection acts within ACCESS_RECHECK_MS.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import * as Y from 'yjs';
import { newId } from '../shared/ids.ts';
import { acknowledged, waitFor } from './support/clients.ts';
import { attachPeer, peerSynced, type Peer } from './support/peers.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool, tokens } from './support/fixtures.ts';
import { startServerProcess, tempDir, type ServerProcess } from './support/server-process.ts';
import { startProxy, type TcpProxy } from './support/tcp-proxy.ts';
import { metric } from './support/metrics.ts';
import pino from 'pino';
import { openEmbedded } from '../persistence/db.ts';
import { migrate } from '../persistence/migrate.ts';
import type { AccessChange } from '../persistence/repositories/access-changes.ts';
import { insertUser } from '../persistence/repositories/users.ts';
import { AccessFeed } from '../server/auth/access-feed.ts';
import { redisTopologies } from './support/redis-cluster.ts';

const fns: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void fns.unshift(fn);
afterAll(async () => {
  for (const fn of fns.splice(0)) await fn();
});

const attach = (wsUrl: string, name: string, token: string): Peer => attachPeer(wsUrl, name, token, register);
const synced = peerSynced;
const meta = (p: Peer) => p.doc.getMap('meta');

/** Waits for the server to close `peer`'s document with `reason`; returns how long it took from `since`. */
async function closedWith(peer: Peer, reason: string, since: number, timeout = 5_000): Promise<number> {
  await waitFor(() => peer.closed() !== undefined, { timeout, what: `close (${reason})` });
  expect(peer.closed()).toBe(reason);
  return Date.now() - since;
}

/** Prints a measured latency (ms) and returns it. */
function measured(what: string, ms: number): number {
  console.log(`[access-nodes] ${what}: acted on the other node ${ms} ms after the change committed`);
  return ms;
}

/** Counts the lines of a node's log with this message. */
const logCount = (node: ServerProcess, msg: string) => node.output().split('\n').filter((l) => l.includes(`"msg":"${msg}"`)).length;

describe.each(redisTopologies(register))('two nodes on one database, over $name: access changes act everywhere', (topology) => {
  let a: ServerProcess;
  let b: ServerProcess;
  let dbProxy: TcpProxy;
  let pool: pg.Pool;
  let owner: { userId: string; token: string };
  let imageId: string;
  const prefix = `imageflow-test-${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    const database = await createDatabase('an');
    register(database.drop);
    const direct = new URL(database.url);
    dbProxy = await startProxy(direct.hostname, Number(direct.port || 5432), register);
    const proxied = new URL(database.url);
    proxied.port = String(dbProxy.port);
    const redisEnv = await topology.env();
    const env = (id: string) => ({
      ...redisEnv,
      REDIS_PREFIX: prefix,
      REDIS_SYNC_INTERVAL_MS: '500',
      PRESENCE_HEARTBEAT_MS: '500',
      AUTOSAVE_QUIET_MS: '0',
      // Ten minutes: nothing in these tests may be explained by the periodic re-check.
      ACCESS_RECHECK_MS: '600000',
      NODE_ID: id,
    });
    a = await startServerProcess({ transport: 'node', databaseUrl: database.url, register, env: env('node-a') });
    b = await startServerProcess({ transport: 'node', databaseUrl: proxied.toString(), register, env: env('node-b') });
    pool = openPool(database.url, register);
    owner = await createActor(pool, 'owner');
    imageId = await createImage(pool, owner.userId);
  }, 120_000);

  /** A fresh session with `participant` invited (canEdit), the owner on A and the participant on B, synced. */
  async function setup(options: { participantToken?: string; participant?: { userId: string; token: string } } = {}) {
    const participant = options.participant ?? (await createActor(pool, 'participant'));
    const sessionId = await createSession(a.url, owner.token, imageId);
    const invited = await api(a.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: participant.userId, permissions: { canEdit: true } },
    });
    expect(invited.status).toBe(201);
    const o = attach(a.wsUrl, sessionId, owner.token);
    const p = attach(b.wsUrl, sessionId, options.participantToken ?? participant.token);
    await Promise.all([synced(o), synced(p)]);
    // The participant writes across nodes before anything changes.
    meta(p).set('before', true);
    await acknowledged(p, 10_000);
    await waitFor(() => meta(o).get('before') === true, { timeout: 10_000, what: 'edit across nodes' });
    return { participant, sessionId, o, p };
  }

  /**
   * Proves an edit made on B after the change never arrives: another client of the owner on B
   * writes a sentinel after it; once the owner on A has the sentinel and it is stored, the
   * earlier edit would have been relayed and stored before it.
   */
  async function neverArrives(o: Peer, sessionId: string, key: string): Promise<void> {
    const sentinel = attach(b.wsUrl, sessionId, owner.token);
    await synced(sentinel);
    const mark = `sentinel-${key}`;
    meta(sentinel).set(mark, true);
    await acknowledged(sentinel, 10_000);
    await waitFor(() => meta(o).get(mark) === true, { timeout: 10_000, what: 'sentinel at the owner' });
    expect(meta(o).has(key)).toBe(false);
    const { rows } = await pool.query<{ payload: Buffer }>('SELECT payload FROM document_updates WHERE session_id = $1 ORDER BY seq', [sessionId]);
    const stored = new Y.Doc();
    for (const row of rows) Y.applyUpdate(stored, new Uint8Array(row.payload));
    expect(stored.getMap('meta').get(mark)).toBe(true);
    expect(stored.getMap('meta').has(key)).toBe(false);
    sentinel.destroy();
  }

  it('removal through node A closes the participant on node B within a second; later edits reach no one', async () => {
    const { participant, sessionId, o, p } = await setup();
    const removed = await api(a.url, 'DELETE', `/api/sessions/${sessionId}/participants/${participant.userId}`, { token: owner.token });
    expect(removed.status).toBe(204);
    // Measured from the answer: the change has committed by then.
    expect(measured('removal', await closedWith(p, 'participant_removed', Date.now()))).toBeLessThan(1_000);
    meta(p).set('afterRemoval', true);
    await neverArrives(o, sessionId, 'afterRemoval');
    expect(p.provider.hasUnsyncedChanges).toBe(true);
  }, 60_000);

  it('demotion through node A makes the participant read-only on node B within a second; promotion makes it read-write in place', async () => {
    const { participant, sessionId, o, p } = await setup();
    // A second connection of the participant on B: it writes while demoted (the first one then
    // stays without an unacknowledged gap, so its edit after the promotion can integrate).
    const p2 = attach(b.wsUrl, sessionId, participant.token);
    await synced(p2);
    const flipsBefore = logCount(b, 'access changed on an open connection');
    const demoted = await api(a.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: participant.userId, permissions: { canEdit: false } },
    });
    expect(demoted.status).toBe(201);
    const answered = Date.now();
    await waitFor(() => logCount(b, 'access changed on an open connection') >= flipsBefore + 2, { timeout: 5_000, what: 'demotion on node B' });
    expect(measured('demotion', Date.now() - answered)).toBeLessThan(1_000);
    meta(p2).set('afterDemotion', true);
    await neverArrives(o, sessionId, 'afterDemotion');
    expect(p2.provider.hasUnsyncedChanges).toBe(true);
    expect(p.closed()).toBeUndefined();
    p2.destroy();

    const promoted = await api(a.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: participant.userId, permissions: { canEdit: true } },
    });
    expect(promoted.status).toBe(201);
    await waitFor(() => logCount(b, 'access changed on an open connection') >= flipsBefore + 3, { timeout: 5_000, what: 'promotion on node B' });
    meta(p).set('afterPromotion', true);
    await acknowledged(p, 10_000);
    await waitFor(() => meta(o).get('afterPromotion') === true, { timeout: 10_000, what: 'edit after promotion at the owner' });
    expect(p.closed()).toBeUndefined();
  }, 60_000);

  it('ending the session through node A closes node B\'s connections (session_ended)', async () => {
    const { sessionId, o, p } = await setup();
    expect((await api(a.url, 'POST', `/api/sessions/${sessionId}/end`, { token: owner.token })).status).toBe(200);
    expect(measured('end', await closedWith(p, 'session_ended', Date.now()))).toBeLessThan(1_000);
    await waitFor(() => o.closed() !== undefined, { what: 'owner closed' });
  }, 60_000);

  it('a user deactivated by plain SQL is closed on every node (unknown_user)', async () => {
    const { participant, o, p } = await setup();
    await pool.query('UPDATE users SET is_active = FALSE WHERE user_id = $1', [participant.userId]);
    expect(measured('deactivation', await closedWith(p, 'unknown_user', Date.now()))).toBeLessThan(1_000);
    expect(o.closed()).toBeUndefined();
  }, 60_000);

  it('a login session revoked by plain SQL closes exactly the connections using it (login_session_invalid)', async () => {
    const participant = await createActor(pool, 'participant');
    const sid = newId('session');
    await pool.query(
      `INSERT INTO user_sessions (session_id, user_id, refresh_token_hash, expires_at) VALUES ($1, $2, $3, now() + interval '1 hour')`,
      [sid, participant.userId, randomBytes(16).toString('hex')],
    );
    const withSid = await tokens.sign(participant.userId, { sid });
    const { sessionId, p } = await setup({ participant, participantToken: withSid });
    // Another connection of the same user without that login session stays.
    const other = attach(b.wsUrl, sessionId, participant.token);
    await synced(other);
    await pool.query('DELETE FROM user_sessions WHERE session_id = $1', [sid]);
    expect(measured('login revoked', await closedWith(p, 'login_session_invalid', Date.now()))).toBeLessThan(1_000);
    meta(other).set('otherStillWrites', true);
    await acknowledged(other, 10_000);
    expect(other.closed()).toBeUndefined();
  }, 60_000);

  it('a login session that runs out while connected closes the connections using it at its expires_at', async () => {
    const participant = await createActor(pool, 'participant');
    const sid = newId('session');
    await pool.query(
      `INSERT INTO user_sessions (session_id, user_id, refresh_token_hash, expires_at) VALUES ($1, $2, $3, now() + interval '1 hour')`,
      [sid, participant.userId, randomBytes(16).toString('hex')],
    );
    const withSid = await tokens.sign(participant.userId, { sid });
    const { sessionId, p } = await setup({ participant, participantToken: withSid });
    const other = attach(b.wsUrl, sessionId, participant.token);
    await synced(other);
    // Three seconds left, with the notification lost (trigger off): only the deadline learnt at
    // the last check can close it. A session re-check makes node B learn the new expiry first.
    await pool.query('ALTER TABLE user_sessions DISABLE TRIGGER user_sessions_access_update');
    try {
      await pool.query(`UPDATE user_sessions SET expires_at = now() + interval '3 seconds' WHERE session_id = $1`, [sid]);
    } finally {
      await pool.query('ALTER TABLE user_sessions ENABLE TRIGGER user_sessions_access_update');
    }
    const checks = await metric(b, 'imageflow_access_checks_total');
    await pool.query(`UPDATE edit_sessions SET expires_at = expires_at + interval '1 hour' WHERE session_id = $1`, [sessionId]);
    await waitFor(async () => (await metric(b, 'imageflow_access_checks_total')) >= checks + 2, { what: 'node B re-checked the session' });
    const started = Date.now();
    expect(p.closed()).toBeUndefined();
    await closedWith(p, 'login_session_invalid', started, 10_000);
    expect(other.closed()).toBeUndefined();
  }, 60_000);

  it('a node cut off from its change feed re-checks its connections when the feed is back', async () => {
    const { participant, sessionId, p } = await setup();
    const lost = logCount(b, 'access feed lost; reconnecting');
    const back = logCount(b, 'access feed listening again; re-checking every connection');
    dbProxy.cut();
    register(async () => dbProxy.restore());
    await waitFor(() => logCount(b, 'access feed lost; reconnecting') > lost, { timeout: 15_000, what: 'feed lost on node B' });
    expect(await metric(b, 'imageflow_access_feed_listening')).toBe(0);
    // Made while node B cannot hear it.
    await pool.query('DELETE FROM session_participants WHERE session_id = $1 AND user_id = $2', [sessionId, participant.userId]);
    await waitFor(async () => (await api(b.url, 'GET', '/readyz')).status === 503, { timeout: 15_000, what: 'node B unready' });
    expect(p.closed()).toBeUndefined();
    const restored = Date.now();
    dbProxy.restore();
    await waitFor(() => logCount(b, 'access feed listening again; re-checking every connection') > back, { timeout: 15_000, what: 'feed back' });
    expect(await closedWith(p, 'participant_removed', restored, 15_000)).toBeLessThan(10_000);
    expect(await metric(b, 'imageflow_access_feed_listening')).toBe(1);
    expect(await metric(b, 'imageflow_access_feed_connects_total')).toBeGreaterThanOrEqual(2);
  }, 60_000);

  it('closes every node\'s connections when the session expires; a save after expires_at records nothing', async () => {
    const { sessionId, o, p } = await setup();
    const versions = async () => Number((await pool.query('SELECT count(*)::int AS n FROM image_versions WHERE session_id = $1', [sessionId])).rows[0].n);
    const before = await versions();
    // Expire it two seconds from now, by hand: the change reaches both nodes, which arm their timers.
    await pool.query(`UPDATE edit_sessions SET expires_at = now() + interval '2 seconds' WHERE session_id = $1`, [sessionId]);
    const started = Date.now();
    await closedWith(p, 'session_expired', started, 10_000);
    await closedWith(o, 'session_expired', started, 10_000);
    expect(Date.now() - started).toBeGreaterThan(1_000);
    expect(await versions()).toBe(before);
    const after = await api(a.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
    expect(after).toMatchObject({ status: 410, body: { error: { code: 'session_expired' } } });
  }, 60_000);
});

describe('one node: expiry enforced on open connections', () => {
  let node: ServerProcess;
  let pool: pg.Pool;
  let owner: { userId: string; token: string };
  let imageId: string;

  beforeAll(async () => {
    const database = await createDatabase('ax');
    register(database.drop);
    node = await startServerProcess({ transport: 'node', databaseUrl: database.url, register, env: { AUTOSAVE_QUIET_MS: '0' } });
    pool = openPool(database.url, register);
    owner = await createActor(pool, 'owner');
    imageId = await createImage(pool, owner.userId);
  }, 60_000);

  it('closes connections at expires_at by the timer armed at connect (session_expired)', async () => {
    const sessionId = await createSession(node.url, owner.token, imageId);
    // Three seconds left when the client connects; no change is made after that.
    await pool.query(`UPDATE edit_sessions SET expires_at = now() + interval '3 seconds' WHERE session_id = $1`, [sessionId]);
    const o = attach(node.wsUrl, sessionId, owner.token);
    await synced(o);
    const connected = Date.now();
    meta(o).set('inTime', true);
    await acknowledged(o, 10_000);
    await closedWith(o, 'session_expired', connected, 10_000);
    const stored = await pool.query<{ payload: Buffer }>('SELECT payload FROM document_updates WHERE session_id = $1', [sessionId]);
    const doc = new Y.Doc();
    for (const row of stored.rows) Y.applyUpdate(doc, new Uint8Array(row.payload));
    expect(doc.getMap('meta').get('inTime')).toBe(true);
  }, 30_000);

  it('a stateless saveVersion re-checks access: after expires_at it records nothing, even when the change was never notified', async () => {
    const sessionId = await createSession(node.url, owner.token, imageId);
    const o = attach(node.wsUrl, sessionId, owner.token);
    await synced(o);
    meta(o).set('background', '#112233');
    await acknowledged(o, 10_000);
    const reply = (id: string) => o.stateless.find((m) => (m as { requestId?: string }).requestId === id) as { type?: string } | undefined;
    // A saveVersion works while the session runs (and leaves nothing for the autosave on leave).
    o.provider.sendStateless(JSON.stringify({ type: 'saveVersion', requestId: 'r1' }));
    await waitFor(() => reply('r1'), { what: 'first save' });
    expect(reply('r1')).toMatchObject({ type: 'versionSaved' });
    const count = async () => Number((await pool.query('SELECT count(*)::int AS n FROM image_versions WHERE session_id = $1', [sessionId])).rows[0].n);
    const saved = await count();
    // Expired in the database (so HTTP says 410), with the notification lost: the trigger is off.
    await pool.query('ALTER TABLE edit_sessions DISABLE TRIGGER edit_sessions_access_update');
    try {
      await pool.query(`UPDATE edit_sessions SET expires_at = created_at + interval '1 millisecond' WHERE session_id = $1`, [sessionId]);
    } finally {
      await pool.query('ALTER TABLE edit_sessions ENABLE TRIGGER edit_sessions_access_update');
    }
    expect((await api(node.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} })).status).toBe(410);
    expect(o.closed()).toBeUndefined();
    o.provider.sendStateless(JSON.stringify({ type: 'saveVersion', requestId: 'r2' }));
    await closedWith(o, 'session_expired', Date.now(), 10_000);
    expect(await count()).toBe(saved);
    expect(reply('r2')?.type).not.toBe('versionSaved');
  }, 30_000);
});

describe('a node that cannot check access', () => {
  it('closes connections unchecked for longer than ACCESS_RECHECK_MS (not_ready)', async () => {
    const database = await createDatabase('au');
    register(database.drop);
    const direct = new URL(database.url);
    const proxy = await startProxy(direct.hostname, Number(direct.port || 5432), register);
    const proxied = new URL(database.url);
    proxied.port = String(proxy.port);
    const node = await startServerProcess({
      transport: 'node',
      databaseUrl: proxied.toString(),
      register,
      env: { ACCESS_RECHECK_MS: '1000', AUTOSAVE_QUIET_MS: '0' },
    });
    const pool = openPool(database.url, register);
    const owner = await createActor(pool, 'owner');
    const sessionId = await createSession(node.url, owner.token, await createImage(pool, owner.userId));
    const o = attach(node.wsUrl, sessionId, owner.token);
    await synced(o);
    // Re-checked and allowed, sweep after sweep, while the database answers.
    const checks = await metric(node, 'imageflow_access_checks_total');
    await waitFor(async () => (await metric(node, 'imageflow_access_checks_total')) >= checks + 3, { timeout: 15_000, what: 'three periodic re-checks' });
    expect(o.closed()).toBeUndefined();
    proxy.cut();
    register(async () => proxy.restore());
    const cut = Date.now();
    await closedWith(o, 'not_ready', cut, 10_000);
    console.log(`[access-nodes] unchecked connection closed ${Date.now() - cut} ms after the database was cut (bound 1000 ms)`);
  }, 60_000);
});

describe('embedded PGlite', () => {
  it('the feed hears changes committed through the server\'s own connections (one backend, delivered to the committer)', async () => {
    const db = await openEmbedded(tempDir(register, 'feed-'));
    register(() => db.close());
    await migrate(db.url);
    const changes: AccessChange[] = [];
    const feed = new AccessFeed({ db, nodeId: 'feed-test', logger: pino({ level: 'silent' }), handlers: { onChange: (c) => void changes.push(c), onResync: () => {} } });
    await feed.start();
    register(() => feed.close());
    const userId = newId('user');
    await insertUser(db, { userId, username: `u_${userId.slice(4)}`, email: `${userId}@example.invalid`, displayName: 'u' });
    await db.transaction(async (tx) => {
      await tx.query('UPDATE users SET is_active = FALSE WHERE user_id = $1', [userId]);
    });
    await waitFor(() => changes.some((c) => c.kind === 'user' && c.userId === userId), { what: 'user change on PGlite' });
    // A rolled-back change is never announced, and presence bookkeeping is silent.
    await db.transaction(async (tx) => {
      await tx.query('UPDATE users SET is_active = TRUE WHERE user_id = $1', [userId]);
      throw new Error('roll back');
    }).catch(() => {});
    await db.query('UPDATE users SET last_login_at = now() WHERE user_id = $1', [userId]);
    await db.query('UPDATE users SET is_active = TRUE WHERE user_id = $1', [userId]);
    await waitFor(() => changes.filter((c) => c.kind === 'user').length >= 2, { what: 'second user change' });
    expect(changes.filter((c) => c.kind === 'user')).toHaveLength(2);
  }, 60_000);

  it('a participant removed through another connection to the embedded database is closed within the bound', async () => {
    const node = await startServerProcess({ transport: 'node', register, env: { ACCESS_RECHECK_MS: '1000', AUTOSAVE_QUIET_MS: '0' } });
    const pool = openPool(node.databaseUrl, register);
    const owner = await createActor(pool, 'owner');
    const participant = await createActor(pool, 'participant');
    const image = await createImage(pool, owner.userId);
    const sessionId = await createSession(node.url, owner.token, image);
    expect(
      (await api(node.url, 'POST', `/api/sessions/${sessionId}/participants`, { token: owner.token, body: { userId: participant.userId, permissions: { canEdit: true } } }))
        .status,
    ).toBe(201);
    const p = attach(node.wsUrl, sessionId, participant.token);
    await synced(p);
    const started = Date.now();
    await pool.query('DELETE FROM session_participants WHERE session_id = $1 AND user_id = $2', [sessionId, participant.userId]);
    expect(await closedWith(p, 'participant_removed', started, 10_000)).toBeLessThan(3_000);
  }, 60_000);
});
