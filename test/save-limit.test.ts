/**
 * The limit on manual version saves per user and session (RATE_LIMIT_VERSION_SAVES), with real
 * servers and HocuspocusProvider clients: HTTP past it is 429 `rate_limited` with `Retry-After`, the
 * stateless `saveVersion` gets `{"type":"error","code":"rate_limited","requestId"}` on that
 * connection only; other users and other sessions keep their own budget; autosave is not limited;
 * with Redis the budget holds across two nodes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { addLayer } from '../shared/layers.ts';
import { acknowledged, connectClient, waitFor, type Client } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { REDIS_URL, redisScratch } from './support/redis.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';

type Register = (fn: () => Promise<void>) => void;
const fns: Array<() => Promise<void>> = [];
const register: Register = (fn) => void fns.unshift(fn);
afterAll(async () => {
  for (const fn of fns.splice(0)) await fn();
});

const LIMIT = 3;

interface Stateless {
  type: string;
  code?: string;
  requestId?: string;
}

/** A client that records every stateless message it receives. */
function listening(client: Client): Stateless[] {
  const got: Stateless[] = [];
  client.provider.on('stateless', ({ payload }: { payload: string }) => got.push(JSON.parse(payload) as Stateless));
  return got;
}

const save = (node: ServerProcess, sessionId: string, token: string) =>
  api(node.url, 'POST', `/api/sessions/${sessionId}/versions`, { token, body: { description: 'save' } });

async function manualVersions(pool: pg.Pool, sessionId: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM image_versions WHERE session_id = $1 AND kind = 'manual'", [sessionId]);
  return rows[0]!.n;
}

async function invite(node: ServerProcess, sessionId: string, ownerToken: string, userId: string): Promise<void> {
  const res = await api(node.url, 'POST', `/api/sessions/${sessionId}/participants`, { token: ownerToken, body: { userId, permissions: { canEdit: true } } });
  expect(res.status).toBe(201);
}

describe('version saves per user and session, one node', () => {
  let server: ServerProcess;
  let pool: pg.Pool;
  let owner: { userId: string; token: string };
  let editor: { userId: string; token: string };
  let imageId: string;

  beforeAll(async () => {
    const database = await createDatabase('sl');
    register(database.drop);
    server = await startServerProcess({
      transport: 'node',
      databaseUrl: database.url,
      register,
      env: { RATE_LIMIT_VERSION_SAVES: String(LIMIT), AUTOSAVE_QUIET_MS: '0' },
    });
    pool = openPool(database.url, register);
    owner = await createActor(pool, 'owner');
    editor = await createActor(pool, 'editor');
    imageId = await createImage(pool, owner.userId);
  }, 60_000);

  it('refuses a burst of stateless saves past the limit, answering only the sender; HTTP is then 429 with Retry-After', async () => {
    const sessionId = await createSession(server.url, owner.token, imageId);
    await invite(server, sessionId, owner.token, editor.userId);
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    const other = connectClient(server.wsUrl, sessionId, editor.token, register);
    await Promise.all([a.synced, other.synced]);
    const toA = listening(a);
    const toOther = listening(other);

    const burst = 20;
    for (let i = 0; i < burst; i++) a.provider.sendStateless(JSON.stringify({ type: 'saveVersion', requestId: `r${i}` }));
    const answered = () => toA.filter((m) => m.type === 'error' || (m.type === 'versionSaved' && m.requestId?.startsWith('r')));
    await waitFor(() => answered().length === burst, { timeout: 20_000, what: 'an answer to every save' });
    const refused = toA.filter((m) => m.type === 'error');
    expect(refused).toHaveLength(burst - LIMIT);
    for (const m of refused) expect(m).toMatchObject({ code: 'rate_limited', requestId: expect.stringMatching(/^r\d+$/) });
    expect(await manualVersions(pool, sessionId)).toBe(LIMIT);
    // The others hear about the saves that happened, never about someone else's refusals.
    await waitFor(() => toOther.filter((m) => m.type === 'versionSaved').length === LIMIT, { timeout: 5_000, what: 'versionSaved at the other client' });
    expect(toOther.filter((m) => m.type === 'error')).toEqual([]);

    const http = await save(server, sessionId, owner.token);
    expect(http.status).toBe(429);
    expect(http.body.error.code).toBe('rate_limited');
    // (api() drops headers: ask again for them.)
    const raw = await fetch(`${server.url}/api/sessions/${sessionId}/versions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${owner.token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    expect(raw.status).toBe(429);
    const retryAfter = Number(raw.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(await manualVersions(pool, sessionId)).toBe(LIMIT);
    // A restore writes a version too: the same budget.
    const saved = toA.find((m) => m.type === 'versionSaved') as unknown as { version: { versionId: string } };
    const restore = await api(server.url, 'POST', `/api/sessions/${sessionId}/restore`, { token: owner.token, body: { versionId: saved.version.versionId } });
    expect(restore.status).toBe(429);
    expect(restore.body.error.code).toBe('rate_limited');

    // Per user and per session: the editor here, and the owner in another session, still save.
    expect((await save(server, sessionId, editor.token)).status).toBe(201);
    const elsewhere = await createSession(server.url, owner.token, imageId);
    expect((await save(server, elsewhere, owner.token)).status).toBe(201);

    // Autosave is not limited: the owner's change is saved when the last participant leaves.
    addLayer(a.doc, { type: 'image', name: 'after the limit', data: { imageId } });
    await acknowledged(a);
    a.destroy();
    other.destroy();
    await waitFor(
      async () =>
        (await pool.query("SELECT 1 FROM image_versions WHERE session_id = $1 AND kind = 'autosave'", [sessionId])).rows.length === 1,
      { timeout: 10_000, what: 'the autosave when the last participant left' },
    );
  }, 60_000);
});

describe('version saves per user and session, two nodes over Redis', () => {
  it('holds the budget across nodes', async () => {
    const database = await createDatabase('sln');
    register(database.drop);
    const { prefix, redis } = redisScratch(register);
    const start = (i: number) =>
      startServerProcess({
        transport: 'node',
        databaseUrl: database.url,
        register,
        env: {
          REDIS_URL,
          REDIS_PREFIX: prefix,
          REDIS_SYNC_INTERVAL_MS: '500',
          NODE_ID: `sl-${i}`,
          RATE_LIMIT_VERSION_SAVES: String(LIMIT),
          AUTOSAVE_QUIET_MS: '0',
        },
      });
    const first = await start(0);
    const nodes = [first, await start(1)];
    const pool = openPool(database.url, register);
    const owner = await createActor(pool, 'owner');
    const sessionId = await createSession(first.url, owner.token, await createImage(pool, owner.userId));
    const statuses: number[] = [];
    for (const i of [0, 1, 0, 1, 0]) statuses.push((await save(nodes[i]!, sessionId, owner.token)).status);
    expect(statuses).toEqual([201, 201, 201, 429, 429]);
    expect(await manualVersions(pool, sessionId)).toBe(LIMIT);
    // The count lives under REDIS_PREFIX and expires.
    const keys = await redis.keys(`${prefix}:rl:save:*`);
    expect(keys).toHaveLength(1);
    expect(await redis.pttl(keys[0]!)).toBeGreaterThan(0);
  }, 120_000);
});
