/**
 * Access control with real clients: owner, invited editor, invited viewer, stranger; removal and
 * demotion mid-session; awareness that cannot be spoofed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as Y from 'yjs';
import { applyAwarenessUpdate } from 'y-protocols/awareness';
import { fakeUpdate } from './support/awareness.ts';
import { acknowledged, connectClient, waitFor, type Client } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { matrix } from './support/matrix.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';
import type pg from 'pg';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});
// Both transports: on uWebSockets.js broadcasts are native publishes (server/transport/publish.ts),
// and a removed or refused connection must leave its topic as it leaves the document.
for (const c of matrix().filter((m) => m.database === 'postgres')) {
describe.skipIf(c.skip)(`access over the ${c.transport} transport${c.skip ? ` (skipped: ${c.skip})` : ''}`, () => {
  let server: ServerProcess;
  let db: pg.Pool;

  beforeAll(async () => {
    const database = await createDatabase('access');
    register(database.drop);
    server = await startServerProcess({ transport: c.transport, databaseUrl: database.url, register });
    db = openPool(database.url, register);
  });

  /** The session's content as stored: every log row merged. */
  async function storedDoc(sessionId: string): Promise<Y.Doc> {
    const { rows } = await db.query<{ payload: Buffer }>('SELECT payload FROM document_updates WHERE session_id = $1 ORDER BY seq', [sessionId]);
    const doc = new Y.Doc();
    for (const row of rows) Y.applyUpdate(doc, row.payload);
    return doc;
  }

  async function setup() {
    const owner = await createActor(db, 'owner');
    const editor = await createActor(db, 'editor');
    const viewer = await createActor(db, 'viewer');
    const stranger = await createActor(db, 'stranger');
    const imageId = await createImage(db, owner.userId);
    const sessionId = await createSession(server.url, owner.token, imageId);
    const invite = (userId: string, canEdit: boolean) =>
      api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, { token: owner.token, body: { userId, permissions: { canEdit } } });
    expect((await invite(editor.userId, true)).status).toBe(201);
    expect((await invite(viewer.userId, false)).status).toBe(201);
    return { owner, editor, viewer, stranger, sessionId, invite };
  }

  /** One client per actor on `sessionId`, in that order, once every one has synced. */
  async function synced<T extends Array<{ token: string }>>(sessionId: string, ...actors: T): Promise<{ [K in keyof T]: Client }> {
    const clients = actors.map((a) => connectClient(server.wsUrl, sessionId, a.token, register));
    await Promise.all(clients.map((c) => c.synced));
    return clients as { [K in keyof T]: Client };
  }

  describe('who may join and write', () => {
    it('an invited editor edits; a viewer\'s edits reach no one and are never stored; a stranger is refused', async () => {
      const { owner, editor, viewer, stranger, sessionId } = await setup();
      const [o, e, v] = await synced(sessionId, owner, editor, viewer);

      e.doc.getMap('meta').set('background', '#00ff00');
      await acknowledged(e);
      await waitFor(() => o.doc.getMap('meta').get('background') === '#00ff00', { what: 'editor edit at owner' });
      await waitFor(() => v.doc.getMap('meta').get('background') === '#00ff00', { what: 'editor edit at viewer' });

      v.doc.getMap('meta').set('viewerWasHere', true);
      // The owner's next edit is acknowledged after the viewer's attempt was handled (one server,
      // ordered per connection; the sentinel travels the same path to the editor).
      o.doc.getMap('meta').set('sentinel', 1);
      await acknowledged(o);
      await waitFor(() => e.doc.getMap('meta').get('sentinel') === 1, { what: 'sentinel at editor' });
      expect(v.provider.hasUnsyncedChanges).toBe(true);
      expect(o.doc.getMap('meta').has('viewerWasHere')).toBe(false);
      expect(e.doc.getMap('meta').has('viewerWasHere')).toBe(false);
      const stored = await storedDoc(sessionId);
      expect(stored.getMap('meta').get('sentinel')).toBe(1);
      expect(stored.getMap('meta').has('viewerWasHere')).toBe(false);

      const s = connectClient(server.wsUrl, sessionId, stranger.token, register);
      expect(await s.refused).toBe('forbidden');
    });

    it('only the owner manages participants, with clear errors', async () => {
      const { editor, viewer, sessionId, owner } = await setup();
      const asEditor = await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
        token: editor.token,
        body: { userId: viewer.userId, permissions: { canEdit: true } },
      });
      expect(asEditor).toMatchObject({ status: 403, body: { error: { code: 'not_session_owner' } } });
      const unknown = await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
        token: owner.token,
        body: { userId: 'usr_nobody000000000', permissions: {} },
      });
      expect(unknown).toMatchObject({ status: 404, body: { error: { code: 'user_not_found' } } });
      const bad = await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, { token: owner.token, body: { userId: 42 } });
      expect(bad).toMatchObject({ status: 400, body: { error: { code: 'invalid_body' } } });
      const list = await api(server.url, 'GET', `/api/sessions/${sessionId}/participants`, { token: editor.token });
      expect(list.status).toBe(200);
      const colors = list.body.participants.map((p: { cursorColor: string }) => p.cursorColor);
      expect(new Set(colors).size).toBe(2);
      for (const color of colors) expect(color).toMatch(/^#[0-9a-f]{6}$/);
      const gone = await api(server.url, 'DELETE', `/api/sessions/${sessionId}/participants/${viewer.userId}x`, { token: owner.token });
      expect(gone).toMatchObject({ status: 404, body: { error: { code: 'participant_not_found' } } });
    });

    it('the owner cannot remove themselves from their own session (and stays connected)', async () => {
      const { owner, sessionId } = await setup();
      const o = connectClient(server.wsUrl, sessionId, owner.token, register);
      await o.synced;
      // Presence gives the connected owner a participant row (their colour): the row exists.
      await waitFor(
        async () => (await db.query('SELECT 1 FROM session_participants WHERE session_id = $1 AND user_id = $2', [sessionId, owner.userId])).rowCount,
        { what: "the owner's participant row" },
      );
      let closed: string | undefined;
      o.provider.on('close', ({ event }: { event: { reason: string } }) => (closed = event.reason));
      const self = await api(server.url, 'DELETE', `/api/sessions/${sessionId}/participants/${owner.userId}`, { token: owner.token });
      expect(self).toMatchObject({ status: 409, body: { error: { code: 'owner_not_removable' } } });
      o.doc.getMap('meta').set('stillHere', true);
      await acknowledged(o);
      expect(closed).toBeUndefined();
      expect((await storedDoc(sessionId)).getMap('meta').get('stillHere')).toBe(true);
    });

    it('permission changes merge into the stored ones; an invitation without canEdit is read-only', async () => {
      const { owner, editor, viewer, sessionId } = await setup();
      const newcomer = await createActor(db, 'newcomer');
      const change = (userId: string, permissions: Record<string, boolean>) =>
        api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, { token: owner.token, body: { userId, permissions } });

      const [o, v, e] = await synced(sessionId, owner, viewer, editor);

      // A change naming only canComment keeps everything else: the viewer stays read-only, live.
      const viewerChanged = await change(viewer.userId, { canComment: false });
      expect(viewerChanged).toMatchObject({ status: 201, body: { participant: { permissions: { canEdit: false, canComment: false } } } });
      const editorChanged = await change(editor.userId, { canComment: false });
      expect(editorChanged).toMatchObject({ status: 201, body: { participant: { permissions: { canEdit: true, canComment: false } } } });
      v.doc.getMap('meta').set('viewerAfterChange', true);
      e.doc.getMap('meta').set('editorAfterChange', true);
      await acknowledged(e);
      o.doc.getMap('meta').set('sentinel', 1);
      await acknowledged(o);
      await waitFor(() => v.doc.getMap('meta').get('sentinel') === 1, { what: 'sentinel at viewer' });
      await waitFor(() => o.doc.getMap('meta').get('editorAfterChange') === true, { what: "the editor's edit at the owner" });
      expect(o.doc.getMap('meta').has('viewerAfterChange')).toBe(false);
      expect((await storedDoc(sessionId)).getMap('meta').has('viewerAfterChange')).toBe(false);

      // A new participant invited without canEdit is read-only (canComment defaults to true).
      const invited = await change(newcomer.userId, {});
      expect(invited).toMatchObject({ status: 201, body: { participant: { permissions: { canEdit: false, canComment: true } } } });
      const n = connectClient(server.wsUrl, sessionId, newcomer.token, register);
      await n.synced;
      n.doc.getMap('meta').set('newcomerWasHere', true);
      o.doc.getMap('meta').set('sentinel', 2);
      await acknowledged(o);
      await waitFor(() => n.doc.getMap('meta').get('sentinel') === 2, { what: 'sentinel at newcomer' });
      expect(o.doc.getMap('meta').has('newcomerWasHere')).toBe(false);
      // Saying canEdit makes them an editor; a later canComment change leaves that alone.
      expect(await change(newcomer.userId, { canEdit: true })).toMatchObject({ body: { participant: { permissions: { canEdit: true, canComment: true } } } });
      expect(await change(newcomer.userId, { canComment: false })).toMatchObject({ body: { participant: { permissions: { canEdit: true, canComment: false } } } });
      const { rows } = await db.query('SELECT permissions FROM session_participants WHERE session_id = $1 AND user_id = $2', [sessionId, newcomer.userId]);
      expect(rows[0].permissions).toEqual({ canEdit: true, canComment: false });
    });

    it('removal mid-session cuts the user off within a second; demotion makes them read-only at once', async () => {
      const { owner, editor, viewer, sessionId, invite } = await setup();
      const [o, e, v] = await synced(sessionId, owner, editor, viewer);
      let closedReason: string | undefined;
      v.provider.on('close', ({ event }: { event: { reason: string } }) => (closedReason = event.reason));

      const started = Date.now();
      const removed = await api(server.url, 'DELETE', `/api/sessions/${sessionId}/participants/${viewer.userId}`, { token: owner.token });
      expect(removed.status).toBe(204);
      await waitFor(() => closedReason === 'participant_removed', { timeout: 1_000, what: 'removal notice' });
      expect(Date.now() - started).toBeLessThan(1_000);
      // The removed viewer no longer receives edits.
      o.doc.getMap('meta').set('afterRemoval', true);
      await acknowledged(o);
      await waitFor(() => e.doc.getMap('meta').get('afterRemoval') === true, { what: 'edit at editor' });
      expect(v.doc.getMap('meta').has('afterRemoval')).toBe(false);
      // And cannot come back.
      const again = connectClient(server.wsUrl, sessionId, viewer.token, register);
      expect(await again.refused).toBe('forbidden');

      // Demote the editor while connected: the next edit is refused, not applied, not stored.
      expect((await invite(editor.userId, false)).status).toBe(201);
      e.doc.getMap('meta').set('afterDemotion', true);
      o.doc.getMap('meta').set('sentinel2', true);
      await acknowledged(o);
      await waitFor(() => e.doc.getMap('meta').get('sentinel2') === true, { what: 'sentinel at demoted editor' });
      expect(o.doc.getMap('meta').has('afterDemotion')).toBe(false);
      expect((await storedDoc(sessionId)).getMap('meta').has('afterDemotion')).toBe(false);
    });

    it('a token that expires while connected ends write access', async () => {
      const { owner, sessionId } = await setup();
      const { tokens } = await import('./support/fixtures.ts');
      const shortLived = await tokens.sign(owner.userId, { expiresInSeconds: 2 });
      // A connection of the same session with a later deadline is already there: the session's
      // one expiry timer must move to the new, earlier deadline, and leave this one alone.
      const o = connectClient(server.wsUrl, sessionId, owner.token, register);
      await o.synced;
      let ownerClosed = false;
      o.provider.on('close', () => (ownerClosed = true));
      const c = connectClient(server.wsUrl, sessionId, shortLived, register);
      await c.synced;
      let closedReason: string | undefined;
      c.provider.on('close', ({ event }: { event: { reason: string } }) => (closedReason = event.reason));
      await waitFor(() => closedReason === 'token_expired', { timeout: 5_000, what: 'expiry close' });
      c.doc.getMap('meta').set('afterExpiry', true);
      expect(ownerClosed).toBe(false);
      o.doc.getMap('meta').set('sentinel', true);
      await acknowledged(o);
      expect((await storedDoc(sessionId)).getMap('meta').has('afterExpiry')).toBe(false);
    });
  });

  describe('who may start a session on an image (the seed\'s privacy rules)', () => {
    it('public: anyone; followers: the owner\'s followers; private: the owner only', async () => {
      const owner = await createActor(db, 'owner');
      const follower = await createActor(db, 'follower');
      const stranger = await createActor(db, 'stranger');
      await db.query('INSERT INTO follows (follower_id, following_id) VALUES ($1, $2)', [follower.userId, owner.userId]);
      const images = {
        public: await createImage(db, owner.userId, { privacyLevel: 'public' }),
        followers: await createImage(db, owner.userId, { privacyLevel: 'followers' }),
        private: await createImage(db, owner.userId, { privacyLevel: 'private' }),
      };
      const attempt = async (token: string, imageId: string) =>
        (await api(server.url, 'POST', '/api/sessions', { token, body: { imageId } })).status;
      expect(await attempt(stranger.token, images.public)).toBe(201);
      expect(await attempt(stranger.token, images.followers)).toBe(404);
      expect(await attempt(stranger.token, images.private)).toBe(404);
      expect(await attempt(follower.token, images.followers)).toBe(201);
      expect(await attempt(follower.token, images.private)).toBe(404);
      expect(await attempt(owner.token, images.private)).toBe(201);
    });
  });

  describe('awareness', () => {
    it('forces user.id and colour, and drops updates for another connection\'s clientID', async () => {
      const { owner, editor, viewer, sessionId } = await setup();
      const a = connectClient(server.wsUrl, sessionId, owner.token, register);
      const b = connectClient(server.wsUrl, sessionId, editor.token, register);
      const watcher = connectClient(server.wsUrl, sessionId, viewer.token, register);
      await Promise.all([a.synced, b.synced, watcher.synced]);
      const seen = () => watcher.provider.awareness!.getStates();

      a.provider.setAwarenessField('user', { id: 'usr_pretender000000', name: 'Alice', color: '#000000' });
      a.provider.setAwarenessField('cursor', { x: 1, y: 1 });
      const aId = a.doc.clientID;
      await waitFor(() => (seen().get(aId) as { cursor?: { x: number } } | undefined)?.cursor?.x === 1, { what: 'A at watcher' });
      const aState = seen().get(aId) as { user: { id: string; name: string; color: string } };
      // The name is the user's display_name, not what the client sent.
      expect(aState.user).toEqual({ id: owner.userId, name: 'owner', color: expect.stringMatching(/^#[0-9a-f]{6}$/) });

      // B forges A's clientID with a newer clock: first an overwrite, then a removal.
      const clock = (a.provider.awareness!.meta.get(aId)?.clock ?? 0) + 10;
      const overwrite = fakeUpdate(aId, clock, { user: { name: 'Mallory' }, cursor: { x: 999, y: 999 } });
      applyAwarenessUpdate(b.provider.awareness!, overwrite, 'spoof');
      const removal = fakeUpdate(aId, clock + 1, null);
      applyAwarenessUpdate(b.provider.awareness!, removal, 'spoof');
      // B's own state, after the forgeries, is the sentinel that they have been handled.
      b.provider.setAwarenessField('cursor', { x: 42, y: 42 });
      await waitFor(() => (seen().get(b.doc.clientID) as { cursor?: { x: number } } | undefined)?.cursor?.x === 42, {
        what: 'B sentinel at watcher',
      });
      const after = seen().get(aId) as { cursor: { x: number }; user: { name: string } } | undefined;
      expect(after?.cursor.x).toBe(1);
      expect(after?.user.name).toBe('owner');
    });
  });
});
}
