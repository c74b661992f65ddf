/**
 * Versions end to end with real HocuspocusProvider clients, the real server (child process, node
 * transport) and real PostgreSQL (the round trip also on embedded PGlite): snapshots, the round
 * trip through a new session, concurrent saves, the branching tree, restore, diff, autosave,
 * the stateless saveVersion message, activities and notifications, and refusals.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import * as Y from 'yjs';
import { jsonEqual, parseCanvas, readCanvas } from '../shared/canvas.ts';
import { addLayer, layerIds, moveLayer, removeLayer, updateLayer } from '../shared/layers.ts';
import { parseServerMessage, type VersionsServerMessage } from '../shared/versions.ts';
import { addEveryLayerType } from './support/canvas.ts';
import { acknowledged, connectClient, waitFor, type Client } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { mulberry32 } from './support/random.ts';
import { startServerProcess, tempDir, type ServerProcess } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

/** Stateless messages of the versions protocol a client received. */
function inbox(client: Client): VersionsServerMessage[] {
  const messages: VersionsServerMessage[] = [];
  client.provider.on('stateless', ({ payload }: { payload: string }) => {
    const message = parseServerMessage(payload);
    if (message) messages.push(message);
  });
  return messages;
}

const withoutRowIds = (layers: Array<Record<string, unknown>>) => layers.map(({ layerId: _id, createdAt: _at, ...rest }) => rest);

async function save(server: ServerProcess, token: string, sessionId: string, description?: string) {
  const res = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token, body: description ? { description } : {} });
  if (res.status !== 201) throw new Error(`save failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.version as { versionId: string; versionNumber: number; parentVersionId: string | null; branchName: string; kind: string };
}

/**
 * The round trip: a canvas with every layer type, saved as a version and loaded into a new
 * session, is identical — canvas and canvas_layers rows — when saved again from there.
 */
async function roundTrip(server: ServerProcess, db: pg.Pool) {
  const owner = await createActor(db, 'owner');
  const imageId = await createImage(db, owner.userId);
  const first = await createSession(server.url, owner.token, imageId);
  const a = connectClient(server.wsUrl, first, owner.token, register);
  await a.synced;
  const ids = addEveryLayerType(a.doc, imageId);
  moveLayer(a.doc, ids[4]!, 'bottom');
  a.doc.getMap('meta').set('background', '#fafafa');
  await acknowledged(a);
  const original = readCanvas(a.doc);

  const v1 = await save(server, owner.token, first, 'every layer type');
  expect(v1).toMatchObject({ versionNumber: 1, parentVersionId: null, branchName: 'main', kind: 'manual', isCurrent: true });
  const one = await api(server.url, 'GET', `/api/versions/${v1.versionId}`, { token: owner.token });
  expect(one.status).toBe(200);
  expect(one.body.canvasState).toEqual(original);
  expect(one.body.version.fileSize).toBe(Buffer.byteLength(JSON.stringify(one.body.canvasState)));
  // One canvas_layers row per layer, bottom to top, the canvas id as layer_key.
  expect(one.body.layers.map((l: { layerKey: string }) => l.layerKey)).toEqual(layerIds(a.doc));
  expect(one.body.layers.map((l: { layerOrder: number }) => l.layerOrder)).toEqual([0, 1, 2, 3, 4, 5, 6]);
  expect(one.body.layers.map((l: { layerType: string }) => l.layerType).sort()).toEqual(
    ['adjustment', 'adjustment', 'drawing', 'image', 'image', 'shape', 'text'].sort(),
  );
  const shapeRow = one.body.layers.find((l: { layerType: string }) => l.layerType === 'shape');
  expect(shapeRow).toMatchObject({ opacity: 0.12, visible: false, transformMatrix: [1, 0, 0, 1, 0, 0] });

  // A new session from that version: its live document is the version's canvas.
  const second = await createSession(server.url, owner.token, imageId, { fromVersionId: v1.versionId });
  const b = connectClient(server.wsUrl, second, owner.token, register);
  const inboxB = inbox(b);
  await b.synced;
  const loaded = readCanvas(b.doc);
  expect(loaded.layers).toEqual(original.layers);
  expect(loaded.meta).toEqual({ ...original.meta, baseVersionId: v1.versionId });

  // Saved again unchanged (this time through the stateless message): identical canvas and rows.
  b.provider.sendStateless(JSON.stringify({ type: 'saveVersion', description: 'again', requestId: 'r1' }));
  const saved = await waitFor(() => inboxB.find((m) => m.type === 'versionSaved'), { what: 'versionSaved' });
  expect(saved).toMatchObject({ type: 'versionSaved', requestId: 'r1', version: { versionNumber: 2, parentVersionId: v1.versionId } });
  const v2 = (saved as Extract<VersionsServerMessage, { type: 'versionSaved' }>).version;
  expect(v2.branchName).toBe(`branch-${second}`);
  const two = await api(server.url, 'GET', `/api/versions/${v2.versionId}`, { token: owner.token });
  expect(two.body.canvasState.layers).toEqual(one.body.canvasState.layers);
  expect(two.body.canvasState.meta).toEqual({ ...one.body.canvasState.meta, baseVersionId: v1.versionId });
  expect(withoutRowIds(two.body.layers)).toEqual(withoutRowIds(one.body.layers));
  a.destroy();
  b.destroy();
}

describe('versions (node transport, PostgreSQL)', () => {
  let server: ServerProcess;
  let db: pg.Pool;

  beforeAll(async () => {
    const database = await createDatabase('versions');
    register(database.drop);
    // The quiet-period autosave is off here (so version counts are exact); saving when the last
    // connection leaves stays on. The autosave suite below turns the timer on.
    // These tests save far more than RATE_LIMIT_VERSION_SAVES allows a person (test/save-limit.test.ts tests the limit).
    server = await startServerProcess({ transport: 'node', databaseUrl: database.url, register, env: { AUTOSAVE_QUIET_MS: '0', RATE_LIMIT_VERSION_SAVES: '100000' } });
    db = openPool(database.url, register);
  });

  it('round trip: a canvas of every layer type saved and loaded into a new session is identical', async () => {
    await roundTrip(server, db);
  });

  it('two sessions saving 50 versions each at once get 100 distinct, gap-free numbers; one current', async () => {
    const owner = await createActor(db, 'owner');
    const imageId = await createImage(db, owner.userId);
    const s1 = await createSession(server.url, owner.token, imageId);
    const s2 = await createSession(server.url, owner.token, imageId);
    const versions = await Promise.all(
      Array.from({ length: 100 }, (_, i) => save(server, owner.token, i % 2 === 0 ? s1 : s2, `save ${i}`)),
    );
    const numbers = versions.map((v) => v.versionNumber).sort((x, y) => x - y);
    expect(numbers).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    const { rows } = await db.query<{ version_number: number; is_current: boolean; session_id: string; parent_version_id: string | null; version_id: string }>(
      'SELECT version_id, version_number, is_current, session_id, parent_version_id FROM image_versions WHERE image_id = $1 ORDER BY version_number',
      [imageId],
    );
    expect(rows).toHaveLength(100);
    expect(rows.filter((r) => r.is_current).map((r) => r.version_number)).toEqual([100]);
    // Each session's saves form one chain: every version's parent is that session's previous one.
    for (const session of [s1, s2]) {
      const chain = rows.filter((r) => r.session_id === session);
      expect(chain).toHaveLength(50);
      chain.forEach((r, i) => expect(r.parent_version_id).toBe(i === 0 ? null : chain[i - 1]!.version_id));
    }
    const { rows: heads } = await db.query('SELECT session_id, head_version_id FROM edit_sessions WHERE image_id = $1', [imageId]);
    for (const head of heads) {
      expect(head.head_version_id).toBe(rows.filter((r) => r.session_id === head.session_id).at(-1)!.version_id);
    }
  });

  it('branches three levels deep; the tree comes back in one piece with depths and children', async () => {
    const owner = await createActor(db, 'owner');
    const imageId = await createImage(db, owner.userId);
    const editAndSave = async (sessionId: string, layerName: string) => {
      const client = connectClient(server.wsUrl, sessionId, owner.token, register);
      await client.synced;
      addLayer(client.doc, { type: 'image', name: layerName, data: { imageId } });
      await acknowledged(client);
      const version = await save(server, owner.token, sessionId, layerName);
      client.destroy();
      return version;
    };
    const main = await createSession(server.url, owner.token, imageId);
    // One client for both saves of the main session: a client leaving between them would race its
    // leave-autosave against the next client's edit (an autosave between m1 and m2).
    const mainClient = connectClient(server.wsUrl, main, owner.token, register);
    await mainClient.synced;
    const mainSave = async (layerName: string) => {
      addLayer(mainClient.doc, { type: 'image', name: layerName, data: { imageId } });
      await acknowledged(mainClient);
      return save(server, owner.token, main, layerName);
    };
    const m1 = await mainSave('m1');
    const m2 = await mainSave('m2');
    mainClient.destroy();
    const b1Session = await createSession(server.url, owner.token, imageId, { fromVersionId: m1.versionId, branchName: 'experiment' });
    const b1 = await editAndSave(b1Session, 'b1');
    const b2Session = await createSession(server.url, owner.token, imageId, { fromVersionId: b1.versionId });
    const b2 = await editAndSave(b2Session, 'b2');
    const b3Session = await createSession(server.url, owner.token, imageId, { fromVersionId: b2.versionId, branchName: 'deeper' });
    const b3 = await editAndSave(b3Session, 'b3');

    expect(b1).toMatchObject({ parentVersionId: m1.versionId, branchName: 'experiment' });
    expect(b2).toMatchObject({ parentVersionId: b1.versionId, branchName: `branch-${b2Session}` });
    expect(b3).toMatchObject({ parentVersionId: b2.versionId, branchName: 'deeper' });

    const tree = await api(server.url, 'GET', `/api/images/${imageId}/versions`, { token: owner.token });
    expect(tree.status).toBe(200);
    // Versions saved when the editing clients left (autosaves) may sit in the tree too; the
    // explicit ones must be exactly where they were saved.
    const byId = new Map(tree.body.versions.map((v: { versionId: string }) => [v.versionId, v]));
    expect(tree.body.rootVersionIds).toEqual([m1.versionId]);
    expect(byId.get(m1.versionId)).toMatchObject({ depth: 0 });
    expect(byId.get(m2.versionId)).toMatchObject({ depth: 1, parentVersionId: m1.versionId });
    expect(byId.get(b1.versionId)).toMatchObject({ depth: 1, branchName: 'experiment' });
    expect(byId.get(b2.versionId)).toMatchObject({ depth: 2 });
    expect(byId.get(b3.versionId)).toMatchObject({ depth: 3, branchName: 'deeper' });
    expect((byId.get(m1.versionId) as { childVersionIds: string[] }).childVersionIds).toEqual(expect.arrayContaining([m2.versionId, b1.versionId]));
    expect(tree.body.versions.filter((v: { isCurrent: boolean }) => v.isCurrent)).toHaveLength(1);
    const numbers = tree.body.versions.map((v: { versionNumber: number }) => v.versionNumber);
    expect(numbers).toEqual([...numbers].sort((x: number, y: number) => x - y));

    // The deepest branch's content: every layer added along its path, none from the others.
    const deepest = await api(server.url, 'GET', `/api/versions/${b3.versionId}`, { token: owner.token });
    const names = Object.values(deepest.body.canvasState.layers as Record<string, { name: string }>).map((l) => l.name).sort();
    expect(names).toEqual(['Original', 'b1', 'b2', 'b3', 'm1'].sort());
  });

  it('restore turns the live document into a version for every client, durably, and records it', async () => {
    const owner = await createActor(db, 'owner');
    const editor = await createActor(db, 'editor');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const invite = await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: editor.userId, permissions: { canEdit: true } },
    });
    expect(invite.status).toBe(201);
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    const b = connectClient(server.wsUrl, sessionId, editor.token, register);
    const inboxA = inbox(a);
    await Promise.all([a.synced, b.synced]);
    const ids = addEveryLayerType(a.doc, imageId);
    await acknowledged(a);
    const v1 = await save(server, owner.token, sessionId, 'before the mess');
    const target = readCanvas(a.doc);

    // b changes things: an update, a move, a removal, an addition.
    await waitFor(() => layerIds(b.doc).length === layerIds(a.doc).length, { what: 'b synced' });
    updateLayer(b.doc, ids[0]!, { opacity: 0.9, name: 'Changed' });
    moveLayer(b.doc, ids[1]!, 'top');
    removeLayer(b.doc, ids[2]!);
    const extra = addLayer(b.doc, { type: 'image', name: 'Extra', data: { imageId } });
    await acknowledged(b);
    const v2 = await save(server, editor.token, sessionId, 'after the mess');

    const diff = await api(server.url, 'GET', `/api/versions/${v1.versionId}/diff/${v2.versionId}`, { token: owner.token });
    expect(diff.status).toBe(200);
    expect(diff.body.from).toEqual({ versionId: v1.versionId, versionNumber: v1.versionNumber });
    expect(diff.body.added.map((x: { layerId: string }) => x.layerId)).toEqual([extra]);
    expect(diff.body.removed.map((x: { layerId: string }) => x.layerId)).toEqual([ids[2]]);
    expect(diff.body.changed).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ layerId: ids[0], fields: ['name', 'opacity'], after: { name: 'Changed', opacity: 0.9 } }),
        expect.objectContaining({ layerId: ids[1], fields: ['order'] }),
      ]),
    );
    expect(diff.body.changed).toHaveLength(2);

    // Restore as the editor: both clients end up on v1's canvas.
    const restored = await api(server.url, 'POST', `/api/sessions/${sessionId}/restore`, { token: editor.token, body: { versionId: v1.versionId } });
    expect(restored.status).toBe(201);
    expect(restored.body.version).toMatchObject({
      kind: 'restore',
      restoredFromVersionId: v1.versionId,
      parentVersionId: v2.versionId,
      createdBy: editor.userId,
      isCurrent: true,
    });
    const expected = { ...target, meta: { ...target.meta, baseVersionId: v1.versionId } };
    for (const client of [a, b]) {
      await waitFor(() => jsonEqual(readCanvas(client.doc), expected), { what: 'the restored canvas on every client' });
      expect(readCanvas(client.doc)).toEqual(expected);
    }
    await waitFor(() => inboxA.find((m) => m.type === 'versionSaved' && m.version.kind === 'restore'), { what: 'versionSaved for the restore' });
    const stored = await api(server.url, 'GET', `/api/versions/${restored.body.version.versionId}`, { token: owner.token });
    expect(stored.body.canvasState).toEqual(expected);

    // Activities for each save and the restore; notifications to the other member each time.
    const { rows: activities } = await db.query(
      `SELECT actor_id, activity_type, target_id, metadata FROM activities WHERE metadata->>'sessionId' = $1 ORDER BY created_at`,
      [sessionId],
    );
    expect(activities.map((r) => [r.actor_id, r.activity_type, r.target_id])).toEqual([
      [owner.userId, 'version_saved', v1.versionId],
      [editor.userId, 'version_saved', v2.versionId],
      [editor.userId, 'version_restored', restored.body.version.versionId],
    ]);
    expect(activities[2].metadata).toMatchObject({ restoredFromVersionId: v1.versionId, imageId });
    const { rows: notes } = await db.query(
      `SELECT user_id, type, actor_id, target_id, message FROM notifications WHERE data->>'sessionId' = $1 ORDER BY created_at`,
      [sessionId],
    );
    expect(notes.map((n) => [n.user_id, n.type, n.actor_id])).toEqual([
      [editor.userId, 'version_saved', owner.userId],
      [owner.userId, 'version_saved', editor.userId],
      [owner.userId, 'version_restored', editor.userId],
    ]);
    expect(notes[2].message).toContain(`version ${v1.versionNumber}`);

    // Durable: the restore is in the update log, so a killed server serves it.
    a.destroy();
    b.destroy();
    await server.kill();
    server = await startServerProcess({ transport: 'node', databaseUrl: server.databaseUrl, register, env: { AUTOSAVE_QUIET_MS: '0', RATE_LIMIT_VERSION_SAVES: '100000' } });
    const c = connectClient(server.wsUrl, sessionId, owner.token, register);
    await c.synced;
    expect(readCanvas(c.doc)).toEqual(expected);
    c.destroy();
  });

  it('restores into a session no client has open; the next client sees it', async () => {
    const owner = await createActor(db, 'owner');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const v1 = await save(server, owner.token, sessionId, 'original only');
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    await a.synced;
    addLayer(a.doc, { type: 'image', name: 'later', data: { imageId } });
    await acknowledged(a);
    a.destroy();
    const restored = await api(server.url, 'POST', `/api/sessions/${sessionId}/restore`, { token: owner.token, body: { versionId: v1.versionId } });
    expect(restored.status).toBe(201);
    const b = connectClient(server.wsUrl, sessionId, owner.token, register);
    await b.synced;
    const v1Canvas = (await api(server.url, 'GET', `/api/versions/${v1.versionId}`, { token: owner.token })).body.canvasState;
    expect(readCanvas(b.doc).layers).toEqual(v1Canvas.layers);
    b.destroy();
  });

  it('refuses an invalid canvas naming the layer and field, and writes nothing', async () => {
    const owner = await createActor(db, 'owner');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    const messages = inbox(a);
    await a.synced;
    const good = addLayer(a.doc, { type: 'image', name: 'ok', data: { imageId } });
    const bad = addLayer(a.doc, { type: 'text', name: 'bad', data: { text: 'x', fontFamily: 'Inter', fontSize: 12, color: '#000', align: 'left' } });
    a.doc.getMap<Y.Map<unknown>>('layers').get(bad)!.set('opacity', 7);
    await acknowledged(a);
    const res = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
    expect(res.status).toBe(422);
    expect(res.body.error.code).toBe('invalid_canvas');
    expect(res.body.error.message).toContain(`layer ${bad}, field opacity`);
    expect(res.body.error.message).not.toContain(good);
    a.provider.sendStateless(JSON.stringify({ type: 'saveVersion', requestId: 'x' }));
    const error = await waitFor(() => messages.find((m) => m.type === 'error'), { what: 'error reply' });
    expect(error).toMatchObject({ type: 'error', code: 'invalid_canvas', requestId: 'x' });
    // A canvas claiming another image is refused too.
    updateLayer(a.doc, bad, { opacity: 0.5 });
    a.doc.getMap('meta').set('imageId', 'img_someoneelse0000');
    await acknowledged(a);
    const foreign = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
    expect(foreign).toMatchObject({ status: 422, body: { error: { code: 'invalid_canvas' } } });
    expect(foreign.body.error.message).toContain('field meta.imageId');
    const { rows } = await db.query('SELECT count(*)::int AS n FROM image_versions WHERE image_id = $1', [imageId]);
    expect(rows[0].n).toBe(0);
    a.destroy();
  });

  it('the stateless saveVersion: every client hears versionSaved; read-only and malformed requests get an error', async () => {
    const owner = await createActor(db, 'owner');
    const viewer = await createActor(db, 'viewer');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: viewer.userId, permissions: { canEdit: false } },
    });
    const o = connectClient(server.wsUrl, sessionId, owner.token, register);
    const v = connectClient(server.wsUrl, sessionId, viewer.token, register);
    const inO = inbox(o);
    const inV = inbox(v);
    await Promise.all([o.synced, v.synced]);

    v.provider.sendStateless(JSON.stringify({ type: 'saveVersion', requestId: 'v1' }));
    await waitFor(() => inV.find((m) => m.type === 'error'), { what: 'viewer refused' });
    expect(inV.find((m) => m.type === 'error')).toMatchObject({ code: 'forbidden', requestId: 'v1' });
    o.provider.sendStateless(JSON.stringify({ type: 'saveVersion', description: 42 }));
    await waitFor(() => inO.find((m) => m.type === 'error'), { what: 'malformed refused' });
    expect(inO.find((m) => m.type === 'error')).toMatchObject({ code: 'invalid_body' });
    o.provider.sendStateless('not json at all'); // not ours: ignored, no crash
    o.provider.sendStateless(JSON.stringify({ type: 'somethingElse' }));

    o.provider.sendStateless(JSON.stringify({ type: 'saveVersion', description: 'from a client', requestId: 'o1' }));
    for (const box of [inO, inV]) {
      await waitFor(() => box.find((m) => m.type === 'versionSaved'), { what: 'versionSaved everywhere' });
    }
    expect(inV.find((m) => m.type === 'versionSaved')).toMatchObject({ requestId: 'o1', version: { description: 'from a client', kind: 'manual' } });
    const forbidden = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: viewer.token, body: {} });
    expect(forbidden).toMatchObject({ status: 403, body: { error: { code: 'forbidden' } } });
    const { rows } = await db.query('SELECT count(*)::int AS n FROM image_versions WHERE image_id = $1', [imageId]);
    expect(rows[0].n).toBe(1);
    // The server is still healthy after the junk.
    expect((await api(server.url, 'GET', '/healthz')).status).toBe(200);
    o.destroy();
    v.destroy();
  });

  it('saves when the last participant leaves, not when nothing changed since the last version', async () => {
    const owner = await createActor(db, 'owner');
    const editor = await createActor(db, 'editor');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: editor.userId, permissions: { canEdit: true } },
    });
    const count = async () =>
      (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM image_versions WHERE session_id = $1', [sessionId])).rows[0]!.n;

    // Changes, then a manual save, then only a change outside the canvas: leaving saves nothing.
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    await a.synced;
    addLayer(a.doc, { type: 'image', name: 'one', data: { imageId } });
    await acknowledged(a);
    await save(server, owner.token, sessionId, 'manual');
    a.doc.getText('notes').insert(0, 'not part of the canvas');
    await acknowledged(a);
    a.destroy();

    // Next visitor changes the canvas and leaves: an autosave by them.
    const b = connectClient(server.wsUrl, sessionId, editor.token, register);
    await b.synced;
    updateLayer(b.doc, layerIds(b.doc).at(-1)!, { name: 'renamed' });
    await acknowledged(b);
    b.destroy();
    await waitFor(async () => (await count()) >= 2, { timeout: 30_000, what: 'autosave on leave' });

    // A visitor who changes nothing leaves; then one more change and leave as a barrier.
    const c = connectClient(server.wsUrl, sessionId, owner.token, register);
    await c.synced;
    c.destroy();
    const d = connectClient(server.wsUrl, sessionId, owner.token, register);
    await d.synced;
    updateLayer(d.doc, layerIds(d.doc).at(-1)!, { visible: false });
    await acknowledged(d);
    d.destroy();
    await waitFor(async () => (await count()) >= 3, { timeout: 30_000, what: 'second autosave on leave' });

    const { rows } = await db.query(
      'SELECT kind, created_by, canvas_state FROM image_versions WHERE session_id = $1 ORDER BY version_number',
      [sessionId],
    );
    expect(rows.map((r) => r.kind)).toEqual(['manual', 'autosave', 'autosave']);
    expect(rows[1].created_by).toBe(editor.userId);
    const last = Object.values(rows[2].canvas_state.layers as Record<string, { name: string; visible: boolean }>).find((l) => l.name === 'renamed');
    expect(last).toMatchObject({ visible: false });
    // Autosaves write activities but notify no one: the only notification is the manual save's.
    const { rows: notes } = await db.query(`SELECT user_id, data->>'kind' AS kind FROM notifications WHERE data->>'sessionId' = $1`, [sessionId]);
    expect(notes).toEqual([{ user_id: editor.userId, kind: 'manual' }]);
    const { rows: activities } = await db.query(`SELECT metadata->>'kind' AS kind FROM activities WHERE metadata->>'sessionId' = $1 ORDER BY created_at`, [sessionId]);
    expect(activities.map((r) => r.kind)).toEqual(['manual', 'autosave', 'autosave']);
  });

  it("reading is not writing: only sessions the image's owner started move its current version; anyone else's is a fork", async () => {
    const owner = await createActor(db, 'owner');
    const ownersEditor = await createActor(db, 'ownersEditor');
    const stranger = await createActor(db, 'stranger');
    const strangersEditor = await createActor(db, 'strangersEditor');
    const imageId = await createImage(db, owner.userId, { privacyLevel: 'public' });
    const current = async () =>
      (await db.query<{ version_id: string }>('SELECT version_id FROM image_versions WHERE image_id = $1 AND is_current', [imageId])).rows.map(
        (r) => r.version_id,
      );
    const invite = (sessionId: string, token: string, userId: string) =>
      api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, { token, body: { userId, permissions: { canEdit: true } } });

    // Row "the image's owner": their saves move the current version.
    const ownerSession = await createSession(server.url, owner.token, imageId);
    const v1 = await save(server, owner.token, ownerSession, 'owner');
    expect(v1).toMatchObject({ isCurrent: true, branchName: 'main' });

    // Row "someone the image is visible to": a fork from the current version, on its own branch.
    const forked = await api(server.url, 'POST', '/api/sessions', { token: stranger.token, body: { imageId } });
    expect(forked.status).toBe(201);
    const fork = forked.body.session.sessionId as string;
    expect(forked.body.session).toMatchObject({ baseVersionId: v1.versionId, branchName: `fork-${fork}` });
    const s = connectClient(server.wsUrl, fork, stranger.token, register);
    const inboxS = inbox(s);
    await s.synced;
    addLayer(s.doc, { type: 'image', name: 'vandal', data: { imageId } });
    await acknowledged(s);
    // Every save path of the fork: HTTP, stateless, restore, autosave (the last one leaving).
    const httpSave = await save(server, stranger.token, fork, 'mine now');
    expect(httpSave).toMatchObject({ isCurrent: false, branchName: `fork-${fork}`, parentVersionId: v1.versionId });
    s.provider.sendStateless(JSON.stringify({ type: 'saveVersion', requestId: 'fork' }));
    const statelessSave = await waitFor(() => inboxS.find((m) => m.type === 'versionSaved' && m.requestId === 'fork'), { what: 'fork stateless save' });
    expect(statelessSave).toMatchObject({ version: { isCurrent: false } });
    const restored = await api(server.url, 'POST', `/api/sessions/${fork}/restore`, { token: stranger.token, body: { versionId: httpSave.versionId } });
    expect(restored).toMatchObject({ status: 201, body: { version: { isCurrent: false, kind: 'restore' } } });
    addLayer(s.doc, { type: 'image', name: 'vandal again', data: { imageId } });
    await acknowledged(s);
    s.destroy();
    await waitFor(async () => (await db.query(`SELECT 1 FROM image_versions WHERE session_id = $1 AND kind = 'autosave'`, [fork])).rowCount, {
      timeout: 30_000,
      what: 'fork autosave',
    });
    // Row "a participant the fork's owner let in": still the fork's.
    expect((await invite(fork, stranger.token, strangersEditor.userId)).status).toBe(201);
    expect(await save(server, strangersEditor.token, fork, 'helper')).toMatchObject({ isCurrent: false });
    // Row "the image's owner let into a fork": the fork's owner let them in, not the other way round.
    expect((await invite(fork, stranger.token, owner.userId)).status).toBe(201);
    expect(await save(server, owner.token, fork, 'owner visiting the fork')).toMatchObject({ isCurrent: false });

    expect(await current()).toEqual([v1.versionId]);
    const tree = await api(server.url, 'GET', `/api/images/${imageId}/versions`, { token: owner.token });
    expect(tree.body.currentVersionId).toBe(v1.versionId);
    // The owner's next session starts from their own work, not the fork's.
    const next = await api(server.url, 'POST', '/api/sessions', { token: owner.token, body: { imageId } });
    expect(next.body.session).toMatchObject({ baseVersionId: v1.versionId, branchName: 'main' });
    const o = connectClient(server.wsUrl, next.body.session.sessionId, owner.token, register);
    await o.synced;
    expect(Object.values(readCanvas(o.doc).layers).map((l) => l.name)).not.toContain('vandal');
    o.destroy();

    // Row "a participant the image's owner let in": their saves move the current version.
    expect((await invite(ownerSession, owner.token, ownersEditor.userId)).status).toBe(201);
    const v2 = await save(server, ownersEditor.token, ownerSession, 'invited editor');
    expect(v2).toMatchObject({ isCurrent: true });
    expect(await current()).toEqual([v2.versionId]);

    // A fork cannot take the owner's branches (main, or one of theirs) but may continue its own.
    const ownerBranch = await createSession(server.url, owner.token, imageId, { fromVersionId: v1.versionId, branchName: 'experiment' });
    const experiment = await save(server, owner.token, ownerBranch, 'experiment');
    for (const branchName of ['main', 'experiment']) {
      const taken = await api(server.url, 'POST', '/api/sessions', { token: stranger.token, body: { imageId, branchName } });
      expect(taken, branchName).toMatchObject({ status: 409, body: { error: { code: 'branch_taken' } } });
    }
    const again = await api(server.url, 'POST', '/api/sessions', {
      token: stranger.token,
      body: { imageId, fromVersionId: httpSave.versionId, branchName: `fork-${fork}` },
    });
    expect(again).toMatchObject({ status: 201, body: { session: { branchName: `fork-${fork}` } } });
    expect(await current()).toEqual([experiment.versionId]);
  });

  it("image layers may only name images the session's owner may see: every save path, restore, and a session from a version", async () => {
    const owner = await createActor(db, 'owner');
    const other = await createActor(db, 'other');
    const imageId = await createImage(db, owner.userId);
    const othersPrivate = await createImage(db, other.userId, { privacyLevel: 'private' });
    const othersPublic = await createImage(db, other.userId, { privacyLevel: 'public' });
    const othersFollowers = await createImage(db, other.userId, { privacyLevel: 'followers' });
    const count = async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM image_versions WHERE image_id = $1', [imageId])).rows[0]!.n;
    const sessionId = await createSession(server.url, owner.token, imageId);
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    const messages = inbox(a);
    await a.synced;
    const layers = a.doc.getMap<Y.Map<unknown>>('layers');

    // Someone else's private image, and an id that names no image: the same refusal, so the answer
    // does not tell which private images exist.
    const refusal = async (target: string) => {
      const layer = addLayer(a.doc, { type: 'image', name: 'borrowed', data: { imageId } });
      layers.get(layer)!.set('data', { imageId: target });
      await acknowledged(a);
      const res = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
      expect(res, target).toMatchObject({ status: 422, body: { error: { code: 'invalid_canvas' } } });
      expect(res.body.error.message).toContain(`layer ${layer}, field data.imageId`);
      removeLayer(a.doc, layer);
      await acknowledged(a);
      return (res.body.error.message as string).replaceAll(layer, 'L').replaceAll(target, 'I');
    };
    expect(await refusal(othersPrivate)).toBe(await refusal('img_nosuchimage0000'));
    expect(await refusal(othersFollowers)).toContain('may not see');
    // The stateless save and the autosave (on leave) refuse it too.
    const borrowed = addLayer(a.doc, { type: 'image', name: 'borrowed', data: { imageId } });
    layers.get(borrowed)!.set('data', { imageId: othersPrivate });
    await acknowledged(a);
    a.provider.sendStateless(JSON.stringify({ type: 'saveVersion', requestId: 'img' }));
    expect(await waitFor(() => messages.find((m) => m.type === 'error' && m.requestId === 'img'), { what: 'stateless refusal' })).toMatchObject({
      code: 'invalid_canvas',
    });
    a.destroy();
    await waitFor(() => new RegExp(`${sessionId}[^\\n]*autosave skipped: invalid canvas|autosave skipped: invalid canvas[^\\n]*${sessionId}`).test(server.output()), {
      timeout: 30_000,
      what: 'autosave skipped',
    });
    expect(await count()).toBe(0);

    // Images the owner may see: public, and followers-only once they follow.
    await db.query('INSERT INTO follows (follower_id, following_id) VALUES ($1, $2)', [owner.userId, other.userId]);
    const b = connectClient(server.wsUrl, sessionId, owner.token, register);
    await b.synced;
    b.doc.getMap<Y.Map<unknown>>('layers').get(borrowed)!.set('data', { imageId: othersFollowers });
    addLayer(b.doc, { type: 'image', name: 'public', data: { imageId: othersPublic } });
    await acknowledged(b);
    const allowed = await save(server, owner.token, sessionId, 'visible images');
    const v2 = await save(server, owner.token, sessionId, 'again');

    // The follow ends: the version now names an image its owner may not see. Restoring it is
    // refused before the live document changes; so is a session started from it.
    await db.query('DELETE FROM follows WHERE follower_id = $1 AND following_id = $2', [owner.userId, other.userId]);
    removeLayer(b.doc, borrowed);
    await acknowledged(b);
    const before = readCanvas(b.doc);
    const restore = await api(server.url, 'POST', `/api/sessions/${sessionId}/restore`, { token: owner.token, body: { versionId: allowed.versionId } });
    expect(restore).toMatchObject({ status: 422, body: { error: { code: 'invalid_canvas' } } });
    expect(restore.body.error.message).toContain(`layer ${borrowed}, field data.imageId`);
    expect(readCanvas(b.doc)).toEqual(before);
    const fromVersion = await api(server.url, 'POST', '/api/sessions', { token: owner.token, body: { imageId, fromVersionId: v2.versionId } });
    expect(fromVersion).toMatchObject({ status: 422, body: { error: { code: 'invalid_canvas' } } });
    expect(fromVersion.body.error.message).toContain(`layer ${borrowed}, field data.imageId`);
    expect(await count()).toBe(2);
    b.destroy();
  });

  it('restore answers 404 for a version the caller may not read, exactly as for an unknown id', async () => {
    const owner = await createActor(db, 'owner');
    const other = await createActor(db, 'other');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const othersImage = await createImage(db, other.userId, { privacyLevel: 'private' });
    const othersVersion = await save(server, other.token, await createSession(server.url, other.token, othersImage));
    const restore = (versionId: string) => api(server.url, 'POST', `/api/sessions/${sessionId}/restore`, { token: owner.token, body: { versionId } });
    const hidden = await restore(othersVersion.versionId);
    const unknown = await restore('ver_doesnotexist0000');
    expect(hidden).toMatchObject({ status: 404, body: { error: { code: 'version_not_found' } } });
    expect(hidden.body).toEqual(unknown.body);
  });

  it('NUL in a canvas string, a description or a branchName is refused naming the field, on every save path', async () => {
    const owner = await createActor(db, 'owner');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    const messages = inbox(a);
    await a.synced;
    const text = addLayer(a.doc, { type: 'text', name: 'ok', data: { text: 'x', fontFamily: 'Inter', fontSize: 12, color: '#000', align: 'left' } });
    a.doc.getMap<Y.Map<unknown>>('layers').get(text)!.set('name', 'bad\u0000name');
    await acknowledged(a);

    const http = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
    expect(http).toMatchObject({ status: 422, body: { error: { code: 'invalid_canvas' } } });
    expect(http.body.error.message).toContain(`layer ${text}, field name`);
    a.provider.sendStateless(JSON.stringify({ type: 'saveVersion', requestId: 'nul' }));
    expect(await waitFor(() => messages.find((m) => m.type === 'error'), { what: 'stateless refusal' })).toMatchObject({
      code: 'invalid_canvas',
      requestId: 'nul',
    });

    // Free text of requests: HTTP and stateless descriptions, a branch name; NUL and a lone surrogate.
    updateLayer(a.doc, text, { name: 'fine again' });
    await acknowledged(a);
    for (const description of ['a\u0000b', 'lone \ud800 high', 'lone \udc00 low']) {
      const res = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: { description } });
      expect(res).toMatchObject({ status: 400, body: { error: { code: 'invalid_body' } } });
      expect(res.body.error.message).toMatch(/^description: /);
    }
    a.provider.sendStateless(JSON.stringify({ type: 'saveVersion', description: 'a\u0000b', requestId: 'nul2' }));
    const statelessError = await waitFor(() => messages.find((m) => m.type === 'error' && m.requestId === 'nul2'), { what: 'stateless description refusal' });
    expect(statelessError).toMatchObject({ code: 'invalid_body', message: expect.stringMatching(/^description: /) });
    for (const branchName of ['x\u0000y', '\udfff']) {
      const res = await api(server.url, 'POST', '/api/sessions', { token: owner.token, body: { imageId, branchName } });
      expect(res).toMatchObject({ status: 400, body: { error: { code: 'invalid_body' } } });
      expect(res.body.error.message).toMatch(/^branchName: /);
    }

    // Autosave (the last participant leaving) skips the canvas as invalid instead of failing.
    a.doc.getMap<Y.Map<unknown>>('layers').get(text)!.set('name', 'nul\u0000again');
    await acknowledged(a);
    a.destroy();
    await waitFor(() => new RegExp(`${sessionId}[^\n]*autosave skipped: invalid canvas|autosave skipped: invalid canvas[^\n]*${sessionId}`).test(server.output()), {
      timeout: 30_000,
      what: 'autosave skipped as invalid',
    });
    expect(server.output()).not.toMatch(new RegExp(`autosave failed[^\\n]*${sessionId}|${sessionId}[^\\n]*autosave failed`));
    const { rows } = await db.query('SELECT count(*)::int AS n FROM image_versions WHERE image_id = $1', [imageId]);
    expect(rows[0].n).toBe(0);
    expect((await api(server.url, 'GET', '/healthz')).status).toBe(200);
  });

  it('a layer under the id __proto__ is refused by name, not silently dropped from the version', async () => {
    const owner = await createActor(db, 'owner');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    await a.synced;
    const proto = new Y.Map<unknown>();
    const layer = { type: 'image', name: 'hidden', order: 'b0', visible: true, opacity: 1, blendMode: 'normal', locked: false, data: { imageId }, transform: [1, 0, 0, 1, 0, 0], filters: [] };
    for (const [key, value] of Object.entries(layer)) proto.set(key, value);
    a.doc.getMap('layers').set('__proto__', proto);
    await acknowledged(a);
    const res = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
    expect(res).toMatchObject({ status: 422, body: { error: { code: 'invalid_canvas' } } });
    expect(res.body.error.message).toContain('layer __proto__');
    a.destroy();
  });

  it('seeded: every string the schema accepts is stored exactly by a real save; NUL and lone surrogates are refused', async () => {
    const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
    console.log(`string fuzz seed: ${seed} (rerun with FUZZ_SEED=${seed})`);
    const random = mulberry32(seed);
    const pick = <T,>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const unit = (): string => {
      const r = random();
      if (r < 0.08) return '\u0000';
      if (r < 0.16) return String.fromCharCode(0xd800 + Math.floor(random() * 0x400)); // lone high (unless a low follows)
      if (r < 0.24) return String.fromCharCode(0xdc00 + Math.floor(random() * 0x400)); // lone low (unless after a high)
      if (r < 0.34) return String.fromCodePoint(0x10000 + Math.floor(random() * 0xfffff)); // a valid pair
      if (r < 0.44) return String.fromCharCode(1 + Math.floor(random() * 31)); // other control characters
      return pick(['a', 'Z', '0', ' ', '"', '\\', '/', 'é', 'ß', '\u2028', '\ufeff', '\uffff', '\ufffd', '✓', '\u0085', '{', '%']);
    };
    const randomString = () => Array.from({ length: 1 + Math.floor(random() * 12) }, unit).join('');
    // The independent rule: no NUL, and UTF-8 round-trips (a lone surrogate does not).
    const storable = (value: string) => !value.includes('\u0000') && Buffer.from(value, 'utf8').toString('utf8') === value;
    /** The canvas as the server receives it: the client's state through a real Yjs encoding. */
    const asServerSees = (doc: Y.Doc) => {
      const copy = new Y.Doc();
      Y.applyUpdate(copy, Y.encodeStateAsUpdate(doc));
      const canvas = readCanvas(copy);
      copy.destroy();
      return canvas;
    };

    const owner = await createActor(db, 'owner');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const a = connectClient(server.wsUrl, sessionId, owner.token, register);
    await a.synced;
    const textData = { text: 'x', fontFamily: 'Inter', fontSize: 12, color: '#000', align: 'left' as const };
    const layer = addLayer(a.doc, { type: 'text', name: 'fuzz', data: textData });
    await acknowledged(a);
    const outcomes = { stored: 0, refused: 0 };

    for (let i = 0; i < 60; i++) {
      const value = randomString();
      const field = pick(['name', 'text', 'fontFamily', 'description'] as const);
      const context = `seed ${seed}, step ${i}, field ${field}, value ${JSON.stringify(value)}`;
      if (field === 'description') {
        const res = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: { description: value } });
        if (storable(value)) {
          expect(res.status, context).toBe(201);
          expect(res.body.version.description, context).toBe(value);
          const { rows } = await db.query(`SELECT metadata->>'description' AS d FROM activities WHERE target_id = $1`, [res.body.version.versionId]);
          expect(rows[0].d, context).toBe(value);
          outcomes.stored += 1;
        } else {
          expect(res, context).toMatchObject({ status: 400, body: { error: { code: 'invalid_body' } } });
          outcomes.refused += 1;
        }
        continue;
      }
      // Straight into the Y.Map: a client that does not validate (updateLayer would refuse).
      const yLayer = a.doc.getMap<Y.Map<unknown>>('layers').get(layer)!;
      if (field === 'name') yLayer.set('name', value);
      else yLayer.set('data', { ...textData, [field]: value });
      await acknowledged(a);
      const sent = asServerSees(a.doc);
      const sentValue = field === 'name' ? sent.layers[layer]!.name : (sent.layers[layer]!.data as Record<string, unknown>)[field];
      const res = await api(server.url, 'POST', `/api/sessions/${sessionId}/versions`, { token: owner.token, body: {} });
      if (storable(sentValue as string)) {
        expect(parseCanvas(sent).ok, context).toBe(true);
        expect(res.status, `${context}: ${JSON.stringify(res.body)}`).toBe(201);
        const stored = await api(server.url, 'GET', `/api/versions/${res.body.version.versionId}`, { token: owner.token });
        expect(stored.body.canvasState, context).toEqual(sent);
        const { rows } = await db.query<{ name: string }>('SELECT name FROM canvas_layers WHERE version_id = $1 AND layer_key = $2', [
          res.body.version.versionId,
          layer,
        ]);
        expect(rows[0]!.name, context).toBe(sent.layers[layer]!.name);
        outcomes.stored += 1;
      } else {
        expect(res, context).toMatchObject({ status: 422, body: { error: { code: 'invalid_canvas' } } });
        expect(res.body.error.message, context).toContain(`layer ${layer}, field ${field === 'name' ? 'name' : `data.${field}`}`);
        outcomes.refused += 1;
        // Back to a valid canvas for the next step.
        updateLayer(a.doc, layer, { name: 'fuzz', data: textData });
        await acknowledged(a);
      }
    }
    console.log(`string fuzz: ${outcomes.stored} stored, ${outcomes.refused} refused`);
    expect(outcomes.stored).toBeGreaterThan(5);
    expect(outcomes.refused).toBeGreaterThan(5);
    a.destroy();
  });

  it('reads need visibility or membership; bad requests get stable errors', async () => {
    const owner = await createActor(db, 'owner');
    const stranger = await createActor(db, 'stranger');
    const participant = await createActor(db, 'participant');
    const imageId = await createImage(db, owner.userId, { privacyLevel: 'private' });
    const otherImage = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const otherSession = await createSession(server.url, owner.token, otherImage);
    await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: participant.userId, permissions: { canEdit: false } },
    });
    const v1 = await save(server, owner.token, sessionId);
    const other = await save(server, owner.token, otherSession);

    const get = (path: string, token: string) => api(server.url, 'GET', path, { token });
    expect((await get(`/api/images/${imageId}/versions`, stranger.token)).body.error.code).toBe('image_not_found');
    expect((await get(`/api/versions/${v1.versionId}`, stranger.token)).status).toBe(404);
    expect((await get(`/api/versions/${v1.versionId}/diff/${other.versionId}`, stranger.token)).status).toBe(404);
    expect((await get(`/api/images/${imageId}/versions`, participant.token)).status).toBe(200);
    expect((await get(`/api/versions/${v1.versionId}`, participant.token)).status).toBe(200);
    expect((await get(`/api/versions/ver_doesnotexist0000`, owner.token)).body.error.code).toBe('version_not_found');
    expect((await get(`/api/versions/bad%20id`, owner.token)).body.error.code).toBe('version_not_found');

    const post = (path: string, token: string, body: unknown) => api(server.url, 'POST', path, { token, body });
    expect((await post(`/api/sessions/${sessionId}/versions`, owner.token, { description: 5 })).body.error.code).toBe('invalid_body');
    expect((await post(`/api/sessions/${sessionId}/restore`, owner.token, {})).body.error.code).toBe('invalid_body');
    expect((await post(`/api/sessions/${sessionId}/restore`, owner.token, { versionId: 'ver_doesnotexist0000' })).status).toBe(404);
    const mismatch = await post(`/api/sessions/${sessionId}/restore`, owner.token, { versionId: other.versionId });
    expect(mismatch).toMatchObject({ status: 409, body: { error: { code: 'version_image_mismatch' } } });
    expect((await post(`/api/sessions/${sessionId}/restore`, participant.token, { versionId: v1.versionId })).status).toBe(403);
    expect((await post(`/api/sessions/${sessionId}/versions`, stranger.token, {})).status).toBe(403);
    expect((await post(`/api/sessions/ses_doesnotexist0000/versions`, owner.token, {})).status).toBe(404);
    await api(server.url, 'POST', `/api/sessions/${otherSession}/end`, { token: owner.token });
    expect((await post(`/api/sessions/${otherSession}/versions`, owner.token, {})).status).toBe(410);
  });
});

/** A server with the quiet-period autosave at `quietMs`, an owner's session and one synced client with its inbox. */
async function quietSession(name: string, quietMs: number) {
  const database = await createDatabase(name);
  register(database.drop);
  const server = await startServerProcess({ transport: 'node', databaseUrl: database.url, register, env: { AUTOSAVE_QUIET_MS: String(quietMs) } });
  const db = openPool(database.url, register);
  const owner = await createActor(db, 'owner');
  const imageId = await createImage(db, owner.userId);
  const sessionId = await createSession(server.url, owner.token, imageId);
  const a = connectClient(server.wsUrl, sessionId, owner.token, register);
  const messages = inbox(a);
  await a.synced;
  return { server, db, owner, imageId, a, messages };
}

describe('versions with the quiet-period autosave', () => {
  it('saves a version after the document has been quiet, once per burst of edits', async () => {
    const { server, db, owner, imageId, a, messages } = await quietSession('autosave', 800);
    for (let i = 0; i < 5; i++) addLayer(a.doc, { type: 'image', name: `burst ${i}`, data: { imageId } });
    await acknowledged(a);
    const first = await waitFor(() => messages.find((m) => m.type === 'versionSaved'), { what: 'autosave after quiet period' });
    expect(first).toMatchObject({ version: { kind: 'autosave', createdBy: owner.userId, versionNumber: 1 } });
    const stored = await api(server.url, 'GET', `/api/versions/${(first as { version: { versionId: string } }).version.versionId}`, { token: owner.token });
    expect(stored.body.canvasState).toEqual(readCanvas(a.doc));

    a.doc.getText('notes').insert(0, 'outside the canvas'); // changes no version content
    updateLayer(a.doc, layerIds(a.doc).at(-1)!, { name: 'renamed' });
    await acknowledged(a);
    await waitFor(() => messages.filter((m) => m.type === 'versionSaved').length >= 2, { what: 'second autosave' });
    const { rows } = await db.query('SELECT kind, parent_version_id FROM image_versions WHERE image_id = $1 ORDER BY version_number', [imageId]);
    expect(rows.map((r) => r.kind)).toEqual(['autosave', 'autosave']);
    a.destroy();
  });
});

describe('the quiet period restarts at every change', () => {
  it('saves nothing while edits keep coming closer than the period, then once after the last', async () => {
    const { db, imageId, a, messages } = await quietSession('quiet', 600);
    const saved = () => messages.filter((m) => m.type === 'versionSaved').length;
    // An edit every 150 ms for 2.4 s: four times the period, never a quiet period.
    let n = 0;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        addLayer(a.doc, { type: 'image', name: `steady ${n}`, data: { imageId } });
        if (++n === 16) {
          clearInterval(timer);
          resolve();
        }
      }, 150);
    });
    await acknowledged(a);
    const lastEditAt = Date.now();
    expect(saved(), 'autosaves while edits kept coming').toBe(0);
    await waitFor(() => saved() === 1, { timeout: 10_000, what: 'the autosave after the last edit' });
    expect(Date.now() - lastEditAt).toBeGreaterThanOrEqual(400);
    const { rows } = await db.query("SELECT canvas_state FROM image_versions WHERE image_id = $1 AND kind = 'autosave'", [imageId]);
    expect(rows).toHaveLength(1);
    expect(Object.keys(rows[0].canvas_state.layers)).toHaveLength(layerIds(a.doc).length);
    a.destroy();
  });
});

describe('versions on embedded PGlite', () => {
  it('round trip: a canvas of every layer type saved and loaded into a new session is identical', async () => {
    const server = await startServerProcess({ transport: 'node', databaseUrl: undefined, dataDir: tempDir(register), register, env: { AUTOSAVE_QUIET_MS: '0' } });
    const db = openPool(server.databaseUrl, register);
    await roundTrip(server, db);
  });
});
