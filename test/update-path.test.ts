/**
 * The update path (server/extensions/updates.ts), driven in process: a server started in this
 * process on real PostgreSQL, real HocuspocusProvider clients over a real socket, and probes on the
 * server's own documents and log. No child processes.
 */
import type { beforeSyncPayload, Extension } from '@hocuspocus/server';
import { OutgoingMessage } from '@hocuspocus/server';
import pg from 'pg';
import pino from 'pino';
import * as Y from 'yjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../server/app.ts';
import { loadConfig } from '../server/config.ts';
import { isSyncStatusFrame } from '../server/extensions/updates.ts';
import { acknowledged, connectClient, waitFor } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { tempDir, TEST_SECRET } from './support/server-process.ts';
import { metric } from './support/metrics.ts';
import { authFrame, MessageType, rawClient, syncFrame, type RawClient } from './support/raw-client.ts';
import * as decoding from 'lib0/decoding';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown) await fn().catch(() => {});
});

/** A server started in this process on `databaseUrl` (node transport, no render worker), closed at teardown. */
async function inProcessServer(databaseUrl: string, env: Record<string, string> = {}): Promise<RunningServer> {
  const server = await startServer(
    loadConfig({
      DATABASE_URL: databaseUrl,
      AUTH_JWT_SECRET: TEST_SECRET,
      DATA_DIR: tempDir(register),
      HOST: '127.0.0.1',
      PORT: '0',
      TRANSPORT: 'node',
      AUTOSAVE_QUIET_MS: '0',
      RENDER_WORKER: 'off',
      ...env,
    }),
    { logger: pino({ level: 'silent' }) },
  );
  register(() => server.close());
  return server;
}

/** What a hook that runs after the update path saw of each client update. */
interface Seen {
  payloadStart: number[];
  /** The document already held the edit's value when the later hook ran. */
  applied: boolean;
}

describe('the update path, in process', () => {
  let server: RunningServer;
  let pool: pg.Pool;
  let wsUrl: string;
  let owner: { userId: string; token: string };
  const seen: Seen[] = [];

  beforeAll(async () => {
    const database = await createDatabase('updpath');
    register(database.drop);
    server = await inProcessServer(database.url);
    wsUrl = `${server.url.replace('http', 'ws')}/collab`;
    // A probe after every other extension: what Hocuspocus itself is about to read.
    const probe: Extension = {
      extensionName: 'probe',
      priority: -1_000,
      beforeSync({ type, payload, document }: beforeSyncPayload) {
        if (type === 2) seen.push({ payloadStart: [...payload.subarray(0, 2)], applied: document.getMap('probe').has('k') });
        return Promise.resolve();
      },
    };
    server.hocuspocus.configuration.extensions.push(probe);
    pool = openPool(database.url, register);
    owner = await createActor(pool, 'owner');
  });

  async function newSession(): Promise<string> {
    const imageId = await createImage(pool, owner.userId);
    return createSession(server.url, owner.token, imageId);
  }

  const rows = async (sessionId: string) =>
    (await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM document_updates WHERE session_id = $1 AND kind = 'update'", [sessionId])).rows[0]!.n;

  it('applies an edit once: later hooks find it applied and Hocuspocus is left the empty update; one log row', async () => {
    const sessionId = await newSession();
    const a = connectClient(wsUrl, sessionId, owner.token, register);
    const b = connectClient(wsUrl, sessionId, owner.token, register);
    await Promise.all([a.synced, b.synced]);
    const before = await rows(sessionId);
    const serverDoc = server.hocuspocus.documents.get(sessionId)!;
    let updateEvents = 0;
    serverDoc.on('update', () => (updateEvents += 1));
    seen.length = 0;

    a.doc.getMap('probe').set('k', 'v');
    await acknowledged(a);
    await waitFor(() => b.doc.getMap('probe').get('k') === 'v', { what: 'the edit at the other client' });

    expect(seen).toEqual([{ payloadStart: [0, 0], applied: true }]);
    expect(updateEvents).toBe(1);
    expect(await rows(sessionId)).toBe(before + 1);
  });

  it('releases the acknowledgement with the commit: held while the log cannot commit, broadcast meanwhile', async () => {
    const sessionId = await newSession();
    const a = connectClient(wsUrl, sessionId, owner.token, register);
    const b = connectClient(wsUrl, sessionId, owner.token, register);
    await Promise.all([a.synced, b.synced]);
    const locker = await pool.connect();
    let locked = true;
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE document_updates IN SHARE ROW EXCLUSIVE MODE');
      a.doc.getMap('probe').set('held', 1);
      // The other client has it at once: only the acknowledgement waits.
      await waitFor(() => b.doc.getMap('probe').get('held') === 1, { what: 'the edit broadcast while the commit is held' });
      // The insert is waiting on the lock, so the acknowledgement must still be outstanding.
      await waitFor(
        async () =>
          (await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")).rows[0]!.n > 0,
        { what: 'the log insert waiting on the lock' },
      );
      expect(a.provider.hasUnsyncedChanges).toBe(true);
      await locker.query('COMMIT');
      locked = false;
      await acknowledged(a);
      const stored = await pool.query<{ payload: Buffer }>("SELECT payload FROM document_updates WHERE session_id = $1 ORDER BY seq", [sessionId]);
      const doc = new Y.Doc();
      for (const row of stored.rows) Y.applyUpdate(doc, row.payload);
      expect(doc.getMap('probe').get('held')).toBe(1);
    } finally {
      if (locked) await locker.query('ROLLBACK').catch(() => {});
      locker.release();
    }
  });

  it('logs a change made on the server from the update event, and not one relayed from another node', async () => {
    const sessionId = await newSession();
    const a = connectClient(wsUrl, sessionId, owner.token, register);
    await a.synced;
    const before = await rows(sessionId);
    const direct = await server.hocuspocus.openDirectConnection(sessionId, { userId: owner.userId });
    try {
      await direct.transact((document) => document.getMap('probe').set('server', true));
      // Appended synchronously by the transaction: flushing now covers it.
      await server.log.flushed();
      expect(await rows(sessionId)).toBe(before + 1);
      const relayed = new Y.Doc();
      relayed.getMap('probe').set('relayed', true);
      Y.applyUpdate(server.hocuspocus.documents.get(sessionId)!, Y.encodeStateAsUpdate(relayed), { source: 'redis' });
      await server.log.flushed();
      expect(await rows(sessionId)).toBe(before + 1);
      await waitFor(() => a.doc.getMap('probe').get('relayed') === true, { what: 'the relayed change at the client' });
    } finally {
      await direct.disconnect();
    }
  });
});

describe('a client whose first updates build on edits this node lacks (it moved from another node)', () => {
  let server: RunningServer;
  let pool: pg.Pool;
  let wsUrl: string;
  let owner: { userId: string; token: string };

  beforeAll(async () => {
    const database = await createDatabase('updmove');
    register(database.drop);
    // A 3 s grace instead of the default 10 s: the test of a SyncStep2 that never comes waits it out.
    server = await inProcessServer(database.url, { UPDATE_HANDSHAKE_GRACE_MS: '3000' });
    wsUrl = `${server.url.replace('http', 'ws')}/collab`;
    pool = openPool(database.url, register);
    owner = await createActor(pool, 'owner');
  });

  /** A session loaded on the server (a provider keeps it), and a copy of its document made elsewhere. */
  async function movedClient() {
    const sessionId = await createSession(server.url, owner.token, await createImage(pool, owner.userId));
    const witness = connectClient(wsUrl, sessionId, owner.token, register);
    await witness.synced;
    const local = new Y.Doc();
    Y.applyUpdate(local, Y.encodeStateAsUpdate(server.hocuspocus.documents.get(sessionId)!));
    const raw = rawClient(wsUrl, register);
    await raw.opened;
    raw.send(authFrame(sessionId, owner.token));
    expect(await raw.authReply(sessionId)).toBe('authenticated');
    return { sessionId, witness, local, raw };
  }

  /** An edit of `doc` made elsewhere: `set` runs, the update it made is returned (and `doc` keeps it). */
  function edit(doc: Y.Doc, set: (m: Y.Map<unknown>) => void): Uint8Array {
    let update: Uint8Array | null = null;
    const capture = (u: Uint8Array) => (update = u);
    doc.on('update', capture);
    set(doc.getMap('probe'));
    doc.off('update', capture);
    return update!;
  }

  const statuses = (raw: RawClient, doc: string) => raw.log.filter((m) => m.doc === doc && m.type === MessageType.SyncStatus);
  const setAside = () => metric(server, 'imageflow_updates_set_aside_total');

  it('sets the update aside, acknowledges it only once the handshake SyncStep2 carried it, stores both', async () => {
    const { sessionId, witness, local, raw } = await movedClient();
    const serverDoc = server.hocuspocus.documents.get(sessionId)!;
    const before = await setAside();
    edit(local, (m) => m.set('moved', 'on the old node')); // never reaches this node
    const builds = edit(local, (m) => m.set('moved', 'here')); // depends on it
    raw.send(syncFrame(sessionId, 0, Y.encodeStateVector(local)));
    raw.send(syncFrame(sessionId, 2, builds));
    await waitFor(async () => (await setAside()) === before + 1, { what: 'the update set aside' });
    // The server's own SyncStep1 (a Sync message of sync type 0), sent after its SyncStep2 reply.
    const serverStep1 = () => raw.log.find((m) => m.doc === sessionId && (m.type === MessageType.Sync || m.type === MessageType.SyncReply) && m.body[0] === 0);
    await waitFor(serverStep1, { what: "the server's SyncStep1" });
    expect(statuses(raw, sessionId), 'no acknowledgement before the handshake').toEqual([]);
    expect(raw.log.some((m) => m.type === MessageType.Close || m.type === MessageType.Stateless)).toBe(false);
    expect(serverDoc.getMap('probe').has('moved')).toBe(false);

    // The handshake: the client answers the server's SyncStep1 with everything the server lacks.
    const reply = decoding.createDecoder(serverStep1()!.body);
    expect(decoding.readVarUint(reply)).toBe(0);
    const serverVector = decoding.readVarUint8Array(reply);
    raw.send(syncFrame(sessionId, 1, Y.encodeStateAsUpdate(local, serverVector)));
    await waitFor(() => statuses(raw, sessionId).length === 2, { what: 'both acknowledgements' });
    expect(statuses(raw, sessionId).map((m) => m.body[0])).toEqual([1, 1]);
    expect(serverDoc.getMap('probe').get('moved')).toBe('here');
    await waitFor(() => witness.doc.getMap('probe').get('moved') === 'here', { what: 'the other client sees it' });
    const stored = await pool.query<{ payload: Buffer }>('SELECT payload FROM document_updates WHERE session_id = $1 ORDER BY seq', [sessionId]);
    const logged = new Y.Doc();
    for (const row of stored.rows) Y.applyUpdate(logged, row.payload);
    expect(logged.getMap('probe').get('moved')).toBe('here');

    // After the handshake an honest client cannot send such an update: it is refused at once.
    edit(local, (m) => m.set('later', 'never sent'));
    raw.send(syncFrame(sessionId, 2, edit(local, (m) => m.set('later', 'builds on it'))));
    const refusal = await raw.refusal(sessionId);
    expect(refusal.error.code).toBe('invalid_update');
    expect(await setAside()).toBe(before + 1);
  });

  it('refuses the document invalid_update when the handshake SyncStep2 never comes', async () => {
    const { sessionId, local, raw } = await movedClient();
    edit(local, (m) => m.set('moved', 'on the old node'));
    const builds = edit(local, (m) => m.set('moved', 'here'));
    raw.send(syncFrame(sessionId, 0, Y.encodeStateVector(local)));
    raw.send(syncFrame(sessionId, 2, builds));
    const started = Date.now();
    const refusal = await raw.refusal(sessionId);
    expect(refusal.error.code).toBe('invalid_update');
    expect(refusal.closeReason).toBe('invalid_update');
    // After the grace (UPDATE_HANDSHAKE_GRACE_MS, 3 s here), not at once.
    expect(Date.now() - started).toBeGreaterThan(2_500);
    expect(statuses(raw, sessionId)).toEqual([]);
    expect(raw.ws.readyState).toBe(1);
  }, 30_000);
});

describe('isSyncStatusFrame', () => {
  it('recognises SyncStatus frames whatever the address length, and nothing else', () => {
    for (const address of ['a', 'ses_0123456789abcdef', 'x'.repeat(200), `ses_1\0${'s'.repeat(300)}`]) {
      expect(isSyncStatusFrame(new OutgoingMessage(address).writeSyncStatus(true).toUint8Array())).toBe(true);
      expect(isSyncStatusFrame(new OutgoingMessage(address).writeSyncStatus(false).toUint8Array())).toBe(true);
      expect(isSyncStatusFrame(new OutgoingMessage(address).createSyncMessage().writeUpdate(new Uint8Array([0, 0])).toUint8Array())).toBe(false);
      expect(isSyncStatusFrame(new OutgoingMessage(address).writeStateless('{}').toUint8Array())).toBe(false);
      const status = new OutgoingMessage(address).writeSyncStatus(true).toUint8Array();
      expect(isSyncStatusFrame(status.subarray(0, status.length - 2))).toBe(false);
    }
    expect(isSyncStatusFrame(new Uint8Array([]))).toBe(false);
    expect(isSyncStatusFrame(new Uint8Array([0x80, 0x80]))).toBe(false);
  });
});
