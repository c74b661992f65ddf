/**
 * The typed client (client/index.ts) against the real server, from Node (ws as the WebSocket):
 * canvas operations reach another client, undo reverts only the user's own change, `saved` turns
 * true only after the durable acknowledgement, versions save through the stateless channel, a
 * read-only user gets the refusal as a registry code, and presence is typed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connectCanvas, type CanvasClient } from '../client/index.ts';
import type { NewLayer } from '../shared/layers.ts';
import { waitFor } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { startServerProcess, tempDir, type ServerProcess } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

const rect = (name: string, x = 10): NewLayer => ({
  type: 'shape',
  name,
  data: { shape: 'rectangle', width: 50, height: 40, fill: '#ff0000', stroke: null, strokeWidth: 0 },
  transform: [1, 0, 0, 1, x, 20],
});

describe('typed client', () => {
  let server: ServerProcess;
  let sessionId: string;
  let owner: { userId: string; token: string };
  let viewer: { userId: string; token: string };

  const connect = (token: string): CanvasClient => {
    const client = connectCanvas({ url: server.wsUrl, sessionId, token, WebSocketPolyfill: WebSocket });
    register(async () => client.destroy());
    return client;
  };

  beforeAll(async () => {
    const database = await createDatabase('client');
    register(database.drop);
    server = await startServerProcess({ transport: 'node', databaseUrl: database.url, dataDir: tempDir(register), register });
    const db = openPool(server.databaseUrl, register);
    owner = await createActor(db, 'owner');
    viewer = await createActor(db, 'viewer');
    const imageId = await createImage(db, owner.userId);
    sessionId = await createSession(server.url, owner.token, imageId);
    const invited = await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: owner.token,
      body: { userId: viewer.userId, permissions: { canEdit: false } },
    });
    expect(invited.status).toBeLessThan(300);
  });

  it('adds, moves and restyles layers that another client sees; saved only after the acknowledgement', async () => {
    const a = connect(owner.token);
    const b = connect(owner.token);
    await Promise.all([
      waitFor(() => a.provider.synced && a.saved, { what: 'a synced and saved' }),
      waitFor(() => b.provider.synced, { what: 'b synced' }),
    ]);
    const savedStates: boolean[] = [];
    a.on('saved', (s) => savedStates.push(s));

    const id = a.addLayer(rect('box'));
    // The edit is local until the server has committed it.
    expect(a.saved).toBe(false);
    await a.whenSaved();
    expect(savedStates).toEqual([false, true]);

    a.translateLayer(id, 5, 0);
    a.updateLayer(id, { opacity: 0.5, blendMode: 'multiply' });
    a.reorderLayer(id, 'bottom');
    // Three edits, three updates: b may see the restyle before the reorder arrives, so wait for the last.
    await waitFor(() => b.layer(id)?.opacity === 0.5 && b.layerIds()[0] === id, { what: 'b sees the restyle and the reorder' });
    expect(b.layer(id)).toMatchObject({ blendMode: 'multiply', transform: [1, 0, 0, 1, 15, 20] });
    expect(b.layerIds()[0]).toBe(id);
    await a.whenSaved();
  });

  it("undo reverts only the user's own change, not a collaborator's", async () => {
    const a = connect(owner.token);
    const b = connect(owner.token);
    await Promise.all([waitFor(() => a.saved), waitFor(() => b.saved)]);
    const mine = a.addLayer(rect('mine'));
    await waitFor(() => b.layer(mine) !== undefined, { what: 'b sees a layer' });
    const theirs = b.addLayer(rect('theirs', 100));
    await waitFor(() => a.layer(theirs) !== undefined, { what: 'a sees b layer' });

    a.undo();
    expect(a.layer(mine)).toBeUndefined();
    expect(a.layer(theirs)).toBeDefined();
    await waitFor(() => b.layer(mine) === undefined, { what: 'the undo reaches b' });
    expect(b.layer(theirs)).toBeDefined();
    a.redo();
    await waitFor(() => b.layer(mine) !== undefined, { what: 'the redo reaches b' });
    await Promise.all([a.whenSaved(), b.whenSaved()]);
  });

  it('saves a version through the stateless channel and resolves with it', async () => {
    const a = connect(owner.token);
    await waitFor(() => a.saved);
    a.addLayer(rect('for the version'));
    await a.whenSaved();
    const version = await a.saveVersion('from the client');
    expect(version).toMatchObject({ description: 'from the client', sessionId });
    const read = await api(server.url, 'GET', `/api/versions/${version.versionId}`, { token: owner.token });
    expect(read.status).toBe(200);
  });

  it('a read-only user cannot write: saveVersion rejects with the registry code and edits reach nobody', async () => {
    const watcher = connect(owner.token);
    const v = connect(viewer.token);
    await Promise.all([waitFor(() => watcher.saved), waitFor(() => v.provider.synced, { what: 'viewer synced' })]);
    expect(v.canWrite).toBe(false);
    expect(watcher.canWrite).toBe(true);
    await expect(v.saveVersion('nope')).rejects.toMatchObject({ code: 'forbidden', source: 'stateless' });
    expect(v.lastError?.message).toBe('You do not have access to this resource.');

    const before = watcher.layerIds().length;
    const dropped = v.addLayer(rect('viewer edit'));
    // An edit of the owner after the viewer's proves the viewer's never arrived.
    const marker = watcher.addLayer(rect('marker'));
    await watcher.whenSaved();
    await waitFor(() => v.layer(marker) !== undefined, { what: 'the viewer receives the owner edit' });
    expect(watcher.layer(dropped)).toBeUndefined();
    expect(watcher.layerIds().length).toBe(before + 1);
  });

  it('typed presence: cursor and selection of a peer, with the server-forced identity', async () => {
    const a = connect(owner.token);
    const b = connect(viewer.token);
    await Promise.all([waitFor(() => a.provider.synced), waitFor(() => b.provider.synced)]);
    b.setCursor({ x: 12, y: 34 });
    b.setSelection(['lay_x']);
    await waitFor(() => a.peers().some((p) => p.cursor?.x === 12), { what: 'a sees b cursor' });
    const peer = a.peers().find((p) => p.cursor?.x === 12)!;
    expect(peer).toMatchObject({ user: { id: viewer.userId }, cursor: { x: 12, y: 34 }, selection: ['lay_x'] });
    expect(peer.user.color).toMatch(/^#[0-9a-f]{6}$/i);
  });

  it('a refused connection reports the registry code', async () => {
    const stranger = connect('not-a-token');
    await waitFor(() => stranger.lastError !== undefined, { what: 'the refusal' });
    expect(stranger.lastError).toMatchObject({ code: 'unauthorized', source: 'authentication' });
  });
});

describe('typed client: access changed while connected', () => {
  it('learns a demotion and a promotion in place (canWrite, access events), without reconnecting', async () => {
    const database = await createDatabase('clientacc');
    register(database.drop);
    const server = await startServerProcess({ transport: 'node', databaseUrl: database.url, dataDir: tempDir(register), register });
    const db = openPool(server.databaseUrl, register);
    const owner = await createActor(db, 'owner');
    const guest = await createActor(db, 'guest');
    const sessionId = await createSession(server.url, owner.token, await createImage(db, owner.userId));
    const set = (canEdit: boolean) =>
      api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, { token: owner.token, body: { userId: guest.userId, permissions: { canEdit } } });
    expect((await set(true)).status).toBeLessThan(300);
    const client = connectCanvas({ url: server.wsUrl, sessionId, token: guest.token, WebSocketPolyfill: WebSocket });
    register(async () => client.destroy());
    await waitFor(() => client.saved, { what: 'synced' });
    expect(client.canWrite).toBe(true);
    const seen: boolean[] = [];
    client.on('access', (canEdit) => seen.push(canEdit));
    await set(false);
    await waitFor(() => !client.canWrite, { what: 'demoted in place', timeout: 15_000 });
    await set(true);
    await waitFor(() => client.canWrite, { what: 'promoted in place', timeout: 15_000 });
    expect(seen).toEqual([false, true]);
    expect(client.status).toBe('connected');
  });
});
