/**
 * An autosave records only a real change of the canvas by a person: not a visit that only moved a
 * cursor, not a value set to itself or an edit outside the canvas (also on a session that has no
 * version yet), not the echo of a restore. A real change is autosaved when the last participant
 * leaves; `AUTOSAVE_ON_LEAVE=false` with `AUTOSAVE_QUIET_MS=0` turns autosave off.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { acknowledged, connectClient, waitFor } from './support/clients.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { createDatabase } from './support/databases.ts';
import { metric } from './support/metrics.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

async function versionKinds(db: pg.Pool, sessionId: string): Promise<string[]> {
  const { rows } = await db.query<{ kind: string }>('SELECT kind FROM image_versions WHERE session_id = $1 ORDER BY version_number', [sessionId]);
  return rows.map((r) => r.kind);
}

describe('autosave records only real changes by a person', () => {
  let databaseUrl: string;
  let server: ServerProcess;
  let db: pg.Pool;

  beforeAll(async () => {
    const database = await createDatabase('autosave');
    register(database.drop);
    databaseUrl = database.url;
    // The quiet timer off: every autosave here is the one on the last participant's leave.
    server = await startServerProcess({ transport: 'node', databaseUrl, register, env: { AUTOSAVE_QUIET_MS: '0' } });
    db = openPool(databaseUrl, register);
  });

  it('a visit that changes nothing of the canvas records nothing; a real change is autosaved on leave', async () => {
    const owner = await createActor(db, 'owner');
    // Sessions on images with no version yet: no head version to compare an autosave with.
    const idle = await createSession(server.url, owner.token, await createImage(db, owner.userId));
    const real = await createSession(server.url, owner.token, await createImage(db, owner.userId));

    const visitor = connectClient(server.wsUrl, idle, owner.token, register);
    await visitor.synced;
    const meta = visitor.doc.getMap('meta');
    visitor.provider.setAwarenessField('cursor', { x: 3, y: 4 }); // presence only
    meta.set('width', meta.get('width')); // a Yjs change that leaves the canvas as it was
    visitor.doc.getMap('notes').set('scratch', 'outside the canvas');
    await acknowledged(visitor);
    visitor.destroy();
    // Unloaded: its last participant's leave has been handled (the autosave decision comes first).
    await waitFor(async () => (await metric(server, 'imageflow_documents_loaded')) === 0, { timeout: 20_000, what: 'idle session unloaded' });
    expect(await versionKinds(db, idle)).toEqual([]);

    const editor = connectClient(server.wsUrl, real, owner.token, register);
    await editor.synced;
    editor.doc.getMap('meta').set('background', '#336699');
    await acknowledged(editor);
    editor.destroy();

    await waitFor(async () => (await versionKinds(db, real)).length === 1, { timeout: 20_000, what: 'the real change autosaved' });
    expect(await versionKinds(db, real)).toEqual(['autosave']);
    expect(await server.stop()).toBe(0);
    expect(await versionKinds(db, idle)).toEqual([]);
  });

  it('a restore is recorded once, as the restore: its echo is not autosaved', async () => {
    server = await startServerProcess({ transport: 'node', databaseUrl, register, env: { AUTOSAVE_QUIET_MS: '0' } });
    const owner = await createActor(db, 'owner');
    const sessionId = await createSession(server.url, owner.token, await createImage(db, owner.userId));
    const client = connectClient(server.wsUrl, sessionId, owner.token, register);
    await client.synced;
    const meta = client.doc.getMap('meta');
    meta.set('background', '#111111');
    await acknowledged(client);
    const first = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
    expect(first.status).toBe(201);
    meta.set('background', '#222222');
    await acknowledged(client);
    expect((await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} })).status).toBe(201);
    const restored = await api(server.url, 'POST', `/api/sessions/${sessionId}/restore`, {
      token: owner.token,
      body: { versionId: first.body.version.versionId },
    });
    expect(restored.status).toBe(201);
    await waitFor(() => meta.get('background') === '#111111', { what: 'the restore reaching the client' });
    client.destroy();
    expect(await server.stop()).toBe(0);
    expect(await versionKinds(db, sessionId)).toEqual(['manual', 'manual', 'restore']);
  });

  it('AUTOSAVE_ON_LEAVE=false with AUTOSAVE_QUIET_MS=0 turns autosave off', async () => {
    server = await startServerProcess({
      transport: 'node',
      databaseUrl,
      register,
      env: { AUTOSAVE_QUIET_MS: '0', AUTOSAVE_ON_LEAVE: 'false' },
    });
    const owner = await createActor(db, 'owner');
    const sessionId = await createSession(server.url, owner.token, await createImage(db, owner.userId));
    const client = connectClient(server.wsUrl, sessionId, owner.token, register);
    await client.synced;
    client.doc.getMap('meta').set('background', '#abcdef');
    await acknowledged(client);
    client.destroy();
    expect(await server.stop()).toBe(0);
    expect(await versionKinds(db, sessionId)).toEqual([]);
  });
});
