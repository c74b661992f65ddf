/**
 * The foundation end to end, on both transports and both databases: real HocuspocusProvider
 * clients against the real server started as a child process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import { acknowledged, connectClient, waitFor } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool, tokens } from './support/fixtures.ts';
import { matrix } from './support/matrix.ts';
import { metric } from './support/metrics.ts';
import { startServerProcess, tempDir, type ServerProcess } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

for (const c of matrix()) {
  describe.skipIf(c.skip)(`collaboration over ${c.name}${c.skip ? ` (skipped: ${c.skip})` : ''}`, () => {
    let server: ServerProcess;
    let databaseUrl: string | undefined;
    let dataDir: string;

    const start = () => startServerProcess({ transport: c.transport, databaseUrl, dataDir, register });

    beforeAll(async () => {
      dataDir = tempDir(register);
      if (c.database === 'postgres') {
        const db = await createDatabase('collab');
        register(db.drop);
        databaseUrl = db.url;
      }
      server = await start();
    });

    it('starts on the requested transport and reports healthy and ready', async () => {
      expect(server.transport).toBe(c.transport);
      const health = await api(server.url, 'GET', '/healthz');
      expect(health).toMatchObject({ status: 200, body: { status: 'ok' } });
      const ready = await api(server.url, 'GET', '/readyz');
      expect(ready).toMatchObject({ status: 200, body: { status: 'ready', checks: { database: true } } });
    });

    it('two clients on one session converge, and a restarted server serves the same content', async () => {
      const db = openPool(server.databaseUrl, register);
      const owner = await createActor(db, 'owner');
      const imageId = await createImage(db, owner.userId);
      const sessionId = await createSession(server.url, owner.token, imageId);

      const a = connectClient(server.wsUrl, sessionId, owner.token, register);
      const b = connectClient(server.wsUrl, sessionId, await tokens.sign(owner.userId), register);
      await Promise.all([a.synced, b.synced]);
      // The session was seeded with the image as one layer.
      expect(a.doc.getMap('meta').get('imageId')).toBe(imageId);
      expect(a.doc.getMap('layers').size).toBe(1);

      a.doc.getMap('meta').set('background', '#ff0000');
      b.doc.getText('notes').insert(0, 'hello from b');
      await waitFor(() => b.doc.getMap('meta').get('background') === '#ff0000', { what: 'a → b' });
      await waitFor(() => a.doc.getText('notes').toString() === 'hello from b', { what: 'b → a' });
      await Promise.all([acknowledged(a), acknowledged(b)]);
      expect(Y.encodeStateVector(a.doc)).toEqual(Y.encodeStateVector(b.doc));
      const before = a.doc.getMap('meta').toJSON();
      a.destroy();
      b.destroy();

      expect(await server.stop()).toBe(0);
      server = await start();
      const c2 = connectClient(server.wsUrl, sessionId, owner.token, register);
      await c2.synced;
      expect(c2.doc.getMap('meta').toJSON()).toEqual(before);
      expect(c2.doc.getText('notes').toString()).toBe('hello from b');
      expect(c2.doc.getMap('layers').size).toBe(1);
      c2.destroy();
    });

    it('exports Prometheus metrics that count committed updates', async () => {
      const res = await fetch(`${server.url}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/plain');
      const text = await res.text();
      const committed = /^imageflow_updates_committed_total\{node="[^"]+"\} (\d+)/m.exec(text);
      // The previous test's edits were acknowledged on this (restarted) server's predecessor; the
      // client that reconnected here synced without new edits, so make one and watch it count.
      const before = Number(committed?.[1] ?? 0);
      const db = openPool(server.databaseUrl, register);
      const owner = await createActor(db, 'owner');
      const sessionId = await createSession(server.url, owner.token, await createImage(db, owner.userId));
      const c1 = connectClient(server.wsUrl, sessionId, owner.token, register);
      await c1.synced;
      c1.doc.getMap('meta').set('counted', true);
      await acknowledged(c1);
      const after = await (await fetch(`${server.url}/metrics`)).text();
      const now = Number(/^imageflow_updates_committed_total\{node="[^"]+"\} (\d+)/m.exec(after)?.[1]);
      expect(now).toBeGreaterThan(before);
      expect(after).toMatch(/^imageflow_ack_wait_seconds_count\{node="[^"]+"\} [1-9]/m);
      expect(after).toMatch(/^imageflow_documents_loaded\{node="[^"]+"\} [1-9]/m);
      c1.destroy();
    });

    it('serves the same document to y-websocket clients on /yjs/<sessionId>', async () => {
      const db = openPool(server.databaseUrl, register);
      const owner = await createActor(db, 'owner');
      const imageId = await createImage(db, owner.userId);
      const sessionId = await createSession(server.url, owner.token, imageId);
      const hp = connectClient(server.wsUrl, sessionId, owner.token, register);
      const yDoc = new Y.Doc();
      const yws = new WebsocketProvider(server.wsUrl.replace(/\/collab$/, '/yjs'), sessionId, yDoc, {
        params: { token: owner.token },
        disableBc: true,
      });
      register(async () => yws.destroy());
      await hp.synced;
      await waitFor(() => yws.synced, { what: 'y-websocket sync' });
      expect(yDoc.getMap('meta').get('imageId')).toBe(imageId);
      yDoc.getMap('meta').set('from', 'y-websocket');
      hp.doc.getMap('meta').set('to', 'y-websocket');
      await waitFor(() => hp.doc.getMap('meta').get('from') === 'y-websocket', { what: 'y-websocket → hocuspocus' });
      await waitFor(() => yDoc.getMap('meta').get('to') === 'y-websocket', { what: 'hocuspocus → y-websocket' });

      // A bad token closes the socket with 4401 and the error code as reason.
      const closed = new Promise<{ code: number; reason: string }>((resolve) => {
        const ws = new WebSocket(`${server.wsUrl.replace(/\/collab$/, '/yjs')}/${sessionId}?token=nonsense`);
        ws.addEventListener('close', (event) => resolve({ code: event.code, reason: event.reason }));
      });
      expect(await closed).toEqual({ code: 4401, reason: 'unauthorized' });
    });

    it(`broadcasts ${c.transport === 'uws' ? 'as one native publish per topic, leaving a topic with its last connection' : 'one send per connection (no native pub/sub on node)'}`, async () => {
      const db = openPool(server.databaseUrl, register);
      const owner = await createActor(db, 'owner');
      const imageId = await createImage(db, owner.userId);
      const sessionId = await createSession(server.url, owner.token, imageId);
      const counts = async () => ({
        broadcasts: await metric(server, 'imageflow_broadcasts_published_total'),
        frames: await metric(server, 'imageflow_publish_frames_total'),
      });
      const a = connectClient(server.wsUrl, sessionId, owner.token, register);
      const b = connectClient(server.wsUrl, sessionId, await tokens.sign(owner.userId), register);
      const yDoc = new Y.Doc();
      const yws = new WebsocketProvider(server.wsUrl.replace(/\/collab$/, '/yjs'), sessionId, yDoc, { params: { token: owner.token }, disableBc: true });
      register(async () => yws.destroy());
      await Promise.all([a.synced, b.synced, waitFor(() => yws.synced, { what: 'y-websocket sync' })]);

      // Both protocols' topics exist: every broadcast is two frames, one per topic.
      const before = await counts();
      // One at a time: edits of one event-loop turn are merged into one broadcast.
      for (let i = 0; i < 5; i++) {
        a.doc.getMap('meta').set(`k${i}`, i);
        await waitFor(() => b.doc.getMap('meta').get(`k${i}`) === i && yDoc.getMap('meta').get(`k${i}`) === i, { what: `b and y-websocket see edit ${i}` });
      }
      const during = await counts();
      if (c.transport === 'node') {
        expect(during).toEqual({ broadcasts: 0, frames: 0 });
      } else {
        expect(during.broadcasts - before.broadcasts).toBeGreaterThanOrEqual(5);
        expect(during.frames - before.frames).toBe(2 * (during.broadcasts - before.broadcasts));
      }

      // The last HocuspocusProvider connection leaves its topic: y-websocket's frames alone remain.
      a.destroy();
      b.destroy();
      await waitFor(() => yws.awareness.getStates().size === 1, { what: 'y-websocket sees both providers leave' });
      const alone = await counts();
      let after = alone;
      for (let i = 0; i < 5; i++) {
        yDoc.getMap('meta').set(`y${i}`, i);
        const previous = after.broadcasts;
        after = await waitFor(async () => {
          const now = await counts();
          return c.transport === 'node' || now.broadcasts > previous ? now : null;
        }, { what: `the broadcast of y-websocket's edit ${i}` });
      }
      expect(after.frames - alone.frames).toBe(after.broadcasts - alone.broadcasts);
      const check = connectClient(server.wsUrl, sessionId, owner.token, register);
      await check.synced;
      expect(check.doc.getMap('meta').get('y4')).toBe(4);
      check.destroy();
    });

    it('refuses a session that does not exist, has ended or has expired, and a bad token', async () => {
      const db = openPool(server.databaseUrl, register);
      const owner = await createActor(db, 'owner');
      const imageId = await createImage(db, owner.userId);

      const missing = connectClient(server.wsUrl, 'ses_doesnotexist0000', owner.token, register);
      expect(await missing.refused).toBe('session_not_found');

      const ended = await createSession(server.url, owner.token, imageId);
      const live = connectClient(server.wsUrl, ended, owner.token, register);
      await live.synced;
      const end = await api(server.url, 'POST', `/api/sessions/${ended}/end`, { token: owner.token });
      expect(end).toMatchObject({ status: 200, body: { session: { isActive: false } } });
      const late = connectClient(server.wsUrl, ended, owner.token, register);
      expect(await late.refused).toBe('session_ended');

      const expiring = await createSession(server.url, owner.token, imageId);
      await db.query(`UPDATE edit_sessions SET expires_at = created_at + interval '1 millisecond' WHERE session_id = $1`, [expiring]);
      const expired = connectClient(server.wsUrl, expiring, owner.token, register);
      expect(await expired.refused).toBe('session_expired');

      const valid = await createSession(server.url, owner.token, imageId);
      const forged = connectClient(server.wsUrl, valid, `${owner.token.slice(0, -4)}AAAA`, register);
      expect(await forged.refused).toBe('unauthorized');
      const expiredToken = await tokens.sign(owner.userId, { expiresInSeconds: -10 });
      const stale = connectClient(server.wsUrl, valid, expiredToken, register);
      expect(await stale.refused).toBe('token_expired');

      const stranger = await createActor(db, 'stranger');
      const intruder = connectClient(server.wsUrl, valid, stranger.token, register);
      expect(await intruder.refused).toBe('forbidden');
    });
  });
}
