/**
 * Presence in `session_participants` across nodes: two real servers on one database (and Redis:
 * the shared one, then a real Redis Cluster of this file's own, test/support/redis-cluster.ts),
 * real clients. Joining sets `joined_at` once and `is_online`; the owner gets a participant row with
 * a colour distinct within the session; cursor moves do not write `last_active_at` each time; the
 * user is offline only when their last connection on any node closes; a node killed with -9 does
 * not leave its users online (heartbeat + sweeper over `node_presence`).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { addLayer } from '../shared/layers.ts';
import { acknowledged, connectClient, waitFor, type Client } from './support/clients.ts';
import { metric } from './support/metrics.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { redisTopologies } from './support/redis-cluster.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';

const fns: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void fns.unshift(fn);
afterAll(async () => {
  for (const fn of fns.splice(0)) await fn();
});

interface Row {
  user_id: string;
  joined_at: Date | null;
  last_active_at: Date | null;
  is_online: boolean;
  cursor_color: string | null;
  left_at: Date | null;
}

describe.each(redisTopologies(register))('presence in session_participants, over $name', (topology) => {
  let nodes: ServerProcess[];
  let pool: pg.Pool;
  let owner: { userId: string; token: string };
  let guest: { userId: string; token: string };
  let sessionId: string;
  let imageId: string;

  const row = async (userId: string): Promise<Row | undefined> =>
    (
      await pool.query<Row>(
        'SELECT user_id, joined_at, last_active_at, is_online, cursor_color, left_at FROM session_participants WHERE session_id = $1 AND user_id = $2',
        [sessionId, userId],
      )
    ).rows[0];
  const online = async (userId: string) => (await row(userId))?.is_online === true;
  const connect = async (node: ServerProcess, token: string): Promise<Client> => {
    const client = connectClient(node.wsUrl, sessionId, token, register);
    await client.synced;
    return client;
  };

  beforeAll(async () => {
    const database = await createDatabase('pr');
    register(database.drop);
    const prefix = `imageflow-test-${randomBytes(4).toString('hex')}`;
    const redisEnv = await topology.env();
    const start = (i: number) =>
      startServerProcess({
        transport: 'node',
        databaseUrl: database.url,
        register,
        env: {
          ...redisEnv,
          REDIS_PREFIX: prefix,
          REDIS_SYNC_INTERVAL_MS: '500',
          PRESENCE_HEARTBEAT_MS: '400',
          NODE_ID: `presence-${i}`,
          AUTOSAVE_QUIET_MS: '0',
        },
      });
    const first = await start(0);
    nodes = [first, await start(1)];
    pool = openPool(database.url, register);
    owner = await createActor(pool, 'owner');
    guest = await createActor(pool, 'guest');
    imageId = await createImage(pool, owner.userId);
    sessionId = await createSession(first.url, owner.token, imageId);
    const invited = await api(first.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: guest.userId, permissions: { canEdit: true } },
    });
    expect(invited.status).toBe(201);
  }, 120_000);

  it('marks a joining participant online once, keeps joined_at, and lists them', async () => {
    expect((await row(guest.userId))?.joined_at).toBeNull();
    const a = await connect(nodes[0]!, guest.token);
    await waitFor(() => online(guest.userId), { timeout: 5_000, what: 'guest online' });
    const joined = (await row(guest.userId))!;
    expect(joined.joined_at).not.toBeNull();
    expect(joined.last_active_at).not.toBeNull();
    expect(joined.left_at).toBeNull();

    // Many cursor moves within the throttle window write last_active_at no more.
    for (let i = 0; i < 30; i++) a.provider.setAwarenessField('cursor', { x: i, y: i });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await row(guest.userId))!.last_active_at!.getTime()).toBe(joined.last_active_at!.getTime());

    const listed = await api(nodes[1]!.url, 'GET', `/api/sessions/${sessionId}/participants`, { token: owner.token });
    expect(listed.status).toBe(200);
    expect(listed.body.participants.find((p: { userId: string }) => p.userId === guest.userId).isOnline).toBe(true);

    // A second connection on another node; leaving the first keeps them online.
    const b = await connect(nodes[1]!, guest.token);
    a.destroy();
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await online(guest.userId)).toBe(true);
    b.destroy();
    await waitFor(async () => !(await online(guest.userId)), { timeout: 2_000, what: 'guest offline after the last connection left' });
    const left = (await row(guest.userId))!;
    expect(left.left_at).not.toBeNull();
    expect(left.joined_at!.getTime()).toBe(joined.joined_at!.getTime());

    const after = await api(nodes[0]!.url, 'GET', `/api/sessions/${sessionId}/participants`, { token: guest.token });
    expect(after.body.participants.find((p: { userId: string }) => p.userId === guest.userId).isOnline).toBe(false);
  }, 30_000);

  it('records a burst of one user\'s connections as their count, and their leaving once the last one closes', async () => {
    const connections = async () =>
      (
        await pool.query<{ connections: number }>('SELECT connections FROM node_presence WHERE node_id = $1 AND session_id = $2 AND user_id = $3', [
          'presence-0',
          sessionId,
          guest.userId,
        ])
      ).rows[0]?.connections ?? 0;
    // Opened at once: their joins queue behind each other and are coalesced (extensions/presence.ts).
    const burst = Array.from({ length: 15 }, () => connectClient(nodes[0]!.wsUrl, sessionId, guest.token, register));
    await Promise.all(burst.map((c) => c.synced));
    // The node row is written before `is_online` (two statements of one batch): wait for both.
    await waitFor(async () => (await connections()) === 15 && (await online(guest.userId)), { timeout: 5_000, what: 'the count of 15 connections, online' });
    const before = await metric(nodes[0]!, 'imageflow_presence_writes_total');
    // Closing all but one writes nothing (only the last leave of a node does): still online.
    for (const c of burst.slice(1)) c.destroy();
    try {
      await waitFor(async () => (await metric(nodes[0]!, 'imageflow_connections')) <= 1, { timeout: 5_000, what: 'the other 14 closed' });
      expect(await online(guest.userId)).toBe(true);
      expect(await connections()).toBeGreaterThan(0);
      expect((await metric(nodes[0]!, 'imageflow_presence_writes_total')) - before).toBe(0);
    } finally {
      burst[0]!.destroy();
    }
    await waitFor(async () => !(await online(guest.userId)), { timeout: 5_000, what: 'offline after the last' });
    expect(await connections()).toBe(0);
  }, 30_000);

  it('writes the joins of many users at once in one batch, not two statements each', async () => {
    // A session of its own: its 20 participants take every free cursor colour.
    const crowdSession = await createSession(nodes[0]!.url, owner.token, imageId);
    const users = await Promise.all(Array.from({ length: 20 }, (_, i) => createActor(pool, `crowd-${i}`)));
    for (const user of users) {
      const invited = await api(nodes[0]!.url, 'POST', `/api/sessions/${crowdSession}/participants`, {
        token: owner.token,
        body: { userId: user.userId, permissions: { canEdit: true } },
      });
      expect(invited.status).toBe(201);
    }
    const before = await metric(nodes[0]!, 'imageflow_presence_writes_total');
    // Presence writes wait behind this lock (reads do not): the first batch is held, and every
    // join arriving meanwhile must be written together after it (server/extensions/presence.ts).
    const lock = await pool.connect();
    const clients: Client[] = [];
    try {
      await lock.query('BEGIN');
      await lock.query('LOCK TABLE node_presence IN EXCLUSIVE MODE');
      clients.push(
        ...(await Promise.all(
          users.map(async (u) => {
            const client = connectClient(nodes[0]!.wsUrl, crowdSession, u.token, register);
            await client.synced;
            return client;
          }),
        )),
      );
      await lock.query('COMMIT');
    } finally {
      lock.release();
    }
    const crowdOnline = async (userId: string) =>
      (await pool.query('SELECT 1 FROM session_participants WHERE session_id = $1 AND user_id = $2 AND is_online', [crowdSession, userId])).rows.length === 1;
    await waitFor(async () => (await Promise.all(users.map((u) => crowdOnline(u.userId)))).every(Boolean), { timeout: 10_000, what: 'all 20 online' });
    const writes = (await metric(nodes[0]!, 'imageflow_presence_writes_total')) - before;
    // One batch of two statements held by the lock, one more for everyone who joined meanwhile
    // (one statement pair per connection would be 40).
    expect(writes).toBeLessThanOrEqual(4);
    for (const c of clients) c.destroy();
    await waitFor(async () => !(await Promise.all(users.map((u) => crowdOnline(u.userId)))).some(Boolean), { timeout: 10_000, what: 'all 20 offline' });
  }, 60_000);

  it('gives the owner a participant row with a colour distinct within the session', async () => {
    const c = await connect(nodes[0]!, owner.token);
    await waitFor(() => online(owner.userId), { timeout: 5_000, what: 'owner online' });
    const ownerRow = (await row(owner.userId))!;
    const guestRow = (await row(guest.userId))!;
    expect(ownerRow.cursor_color).toMatch(/^#/);
    expect(ownerRow.cursor_color).not.toBe(guestRow.cursor_color);
    // The owner's awareness, as others see it, carries that colour.
    const watcher = await connect(nodes[1]!, guest.token);
    c.provider.setAwarenessField('cursor', { x: 1, y: 1 });
    await waitFor(
      () =>
        (watcher.provider.awareness!.getStates().get(c.doc.clientID) as { user?: { color?: string } } | undefined)?.user?.color ===
        ownerRow.cursor_color,
      { timeout: 5_000, what: 'owner colour in awareness' },
    );
    watcher.destroy();
    c.destroy();
    await waitFor(async () => !(await online(owner.userId)), { timeout: 2_000, what: 'owner offline' });
  }, 30_000);

  it("autosaves when the session's last participant leaves, not when one node's last connection does", async () => {
    const autosaves = async () =>
      (await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM image_versions WHERE session_id = $1 AND kind = 'autosave'", [sessionId]))
        .rows[0]!.n;
    const a = await connect(nodes[0]!, owner.token);
    const b = await connect(nodes[1]!, guest.token);
    // Node 0 asks PostgreSQL who else is here: the guest's join on node 1 must be written first
    // (joins are batched; a leave in the same few milliseconds would rightly find no one).
    await waitFor(
      async () =>
        (await pool.query('SELECT 1 FROM node_presence WHERE node_id = $1 AND session_id = $2 AND user_id = $3', ['presence-1', sessionId, guest.userId])).rowCount === 1,
      { timeout: 5_000, what: "the guest's presence on node 1" },
    );
    const before = await autosaves();
    addLayer(a.doc, { type: 'image', name: 'from node 0', data: { imageId } });
    await acknowledged(a);
    a.destroy();
    // Node 0's last connection left while the guest is still on node 1: no version. Node 0
    // unloads the document only after its leave hooks (where an autosave would run) are done.
    await waitFor(async () => (await metric(nodes[0]!, 'imageflow_documents_loaded')) === 0, { timeout: 20_000, what: 'node 0 unloaded the document' });
    expect(await autosaves()).toBe(before);

    addLayer(b.doc, { type: 'image', name: 'from node 1', data: { imageId } });
    await acknowledged(b);
    b.destroy();
    // The leave hooks, the presence check across nodes and the version write take seconds under
    // CI load (5 s was too short); a missing autosave still fails here.
    await waitFor(async () => (await autosaves()) === before + 1, { timeout: 30_000, what: 'an autosave when the last participant left' });
    const { rows } = await pool.query<{ canvas_state: { layers: Record<string, { name: string }> } }>(
      "SELECT canvas_state FROM image_versions WHERE session_id = $1 AND kind = 'autosave' ORDER BY version_number DESC LIMIT 1",
      [sessionId],
    );
    expect(Object.values(rows[0]!.canvas_state.layers).map((l) => l.name)).toEqual(expect.arrayContaining(['from node 0', 'from node 1']));
    await waitFor(async () => (await metric(nodes[1]!, 'imageflow_documents_loaded')) === 0, { timeout: 20_000, what: 'node 1 unloaded the document' });
    expect(await autosaves()).toBe(before + 1);
  }, 90_000);

  it('does not leave the users of a node killed with -9 online', async () => {
    await connect(nodes[1]!, guest.token);
    await waitFor(() => online(guest.userId), { timeout: 5_000, what: 'guest online on node 1' });
    await nodes[1]!.kill();
    // Swept by node 0 once the dead node's rows are older than three heartbeats (3 × 400 ms).
    await waitFor(async () => !(await online(guest.userId)), { timeout: 5_000, what: 'guest offline after kill -9' });
    const { rows } = await pool.query('SELECT 1 FROM node_presence WHERE node_id = $1', ['presence-1']);
    expect(rows).toHaveLength(0);
  }, 30_000);
});
