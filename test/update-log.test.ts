/** The durable update log on both engines: group commit, load, compaction, orphaned rows. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as Y from 'yjs';
import type { Database } from '../persistence/db.ts';
import { UpdateLog } from '../persistence/update-log.ts';
import { newImageId, newSessionId, newUserId } from '../shared/ids.ts';
import { insertImage } from '../persistence/repositories/images.ts';
import { insertSession } from '../persistence/repositories/sessions.ts';
import { insertUser } from '../persistence/repositories/users.ts';
import { waitFor } from './support/clients.ts';
import { engines, openEngine } from './support/engines.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

async function newSession(db: Database): Promise<string> {
  const userId = newUserId();
  const imageId = newImageId();
  const sessionId = newSessionId();
  await insertUser(db, { userId, username: userId, email: `${userId}@x.invalid`, displayName: 'u' });
  await insertImage(db, {
    imageId, userId, title: 't', filename: 'f.png', mimeType: 'image/png', fileSize: 1, width: 1, height: 1, storagePath: 'x',
  });
  await insertSession(db, {
    sessionId, imageId, ownerId: userId, expiresInSeconds: 3600, sessionType: 'solo', baseVersionId: null, branchName: null,
  });
  return sessionId;
}

async function rowCount(db: Database, sessionId: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM document_updates WHERE session_id = $1', [sessionId]);
  return rows[0]!.n;
}

for (const engine of engines) {
  describe(`update log on ${engine}`, () => {
    let db: Database;
    let log: UpdateLog;
    const errors: string[] = [];

    beforeAll(async () => {
      db = await openEngine(engine, register);
      log = new UpdateLog(db, { nodeId: 'test', onError: (_e, context) => errors.push(context) });
      register(() => log.close());
    });

    it('stores every update of concurrent writers and loads the merged state', async () => {
      const sessionId = await newSession(db);
      const source = new Y.Doc();
      source.on('update', (update: Uint8Array) => log.append(sessionId, update));
      const text = source.getText('t');
      for (let i = 0; i < 300; i++) text.insert(text.length, `${i % 10}`);
      await log.flushed();
      expect(log.backlog).toBe(0);
      expect(await rowCount(db, sessionId)).toBe(300);

      const loaded = await log.load(sessionId);
      const copy = new Y.Doc();
      Y.applyUpdate(copy, loaded.state);
      expect(copy.getText('t').toString()).toBe(text.toString());
      expect(loaded.rows).toBe(300);
    });

    it('answers an unknown document with an empty state, not an error', async () => {
      const loaded = await log.load('ses_nothinghere0000');
      expect(loaded).toEqual({ state: new Uint8Array(0), rows: 0, bytes: 0 });
    });

    it('compacts the rows into one snapshot with the same content, keeping later rows', async () => {
      const sessionId = await newSession(db);
      const source = new Y.Doc();
      source.on('update', (update: Uint8Array) => log.append(sessionId, update));
      const map = source.getMap('m');
      for (let i = 0; i < 50; i++) map.set(`k${i % 7}`, i);
      await log.flushed();
      expect(log.updatesSinceCompaction(sessionId)).toBe(50);

      expect(await log.compact(sessionId)).toBe(50);
      expect(await rowCount(db, sessionId)).toBe(1);
      expect(log.updatesSinceCompaction(sessionId)).toBe(0);

      map.set('after', true);
      await log.flushed();
      const copy = new Y.Doc();
      Y.applyUpdate(copy, (await log.load(sessionId)).state);
      expect(copy.getMap('m').toJSON()).toEqual(map.toJSON());
      const { rows } = await db.query<{ kind: string }>('SELECT kind FROM document_updates WHERE session_id = $1 ORDER BY seq', [sessionId]);
      expect(rows.map((r) => r.kind)).toEqual(['snapshot', 'update']);
    });

    it('keeps other sessions\' updates when a batch holds one for a deleted session', async () => {
      const kept = await newSession(db);
      const doomed = await newSession(db);
      await db.query('DELETE FROM edit_sessions WHERE session_id = $1', [doomed]);
      const a = new Y.Doc();
      a.getMap('m').set('x', 1);
      log.append(doomed, Y.encodeStateAsUpdate(a));
      log.append(kept, Y.encodeStateAsUpdate(a));
      await log.flushed();
      expect(await rowCount(db, kept)).toBe(1);
      expect(errors.some((e) => e.includes(doomed))).toBe(true);
    });
  });
}

describe('update log with two writers (PostgreSQL)', () => {
  it('commits a later batch while an earlier one waits, and says flushed only once both are in', async () => {
    const db = await openEngine('postgres', register);
    const log = new UpdateLog(db, { nodeId: 'test', writers: 2 });
    register(() => log.close());
    const [held, free] = [await newSession(db), await newSession(db)];
    // A row lock on the held session's row makes the insert that references it wait (its foreign
    // key check needs a KEY SHARE lock that FOR UPDATE excludes); the other session's does not.
    const pg = await import('pg');
    const locker = new pg.default.Client({ connectionString: db.url });
    await locker.connect();
    register(() => locker.end());
    await locker.query('BEGIN');
    await locker.query('SELECT 1 FROM edit_sessions WHERE session_id = $1 FOR UPDATE', [held]);
    let released = false;
    try {
      log.append(held, new Uint8Array([0, 0]));
      log.append(free, new Uint8Array([0, 0]));
      let flushed = false;
      const done = log.flushed().then(() => (flushed = true));
      // The second writer's batch lands while the first waits on the lock.
      await waitFor(async () => (await rowCount(db, free)) === 1, { what: "the free session's batch committed" });
      expect(await rowCount(db, held)).toBe(0);
      expect(flushed, 'flushed before the earlier batch committed').toBe(false);
      expect(log.backlog).toBe(1);
      await locker.query('COMMIT');
      released = true;
      await done;
      expect(await rowCount(db, held)).toBe(1);
      expect(log.backlog).toBe(0);
    } finally {
      if (!released) await locker.query('ROLLBACK').catch(() => {});
    }
  });
});

describe('the append as a prepared statement (PostgreSQL)', () => {
  it('runs as the named statement append_updates on the pooled connection', async () => {
    const { connectPostgres } = await import('../persistence/db.ts');
    const setup = await openEngine('postgres', register);
    // One pooled connection, so the query after the appends sees that connection's statements.
    const db = connectPostgres(setup.url, 1);
    register(() => db.close());
    const sessionId = await newSession(db);
    const log = new UpdateLog(db, { nodeId: 'test' });
    register(() => log.close());
    for (let i = 0; i < 3; i++) {
      log.append(sessionId, new Uint8Array([0, 0]));
      await log.flushed();
    }
    expect(await rowCount(db, sessionId)).toBe(3);
    const { rows } = await db.query<{ name: string }>('SELECT name FROM pg_prepared_statements');
    expect(rows.map((r) => r.name)).toEqual(['append_updates']);
  });
});

describe('the gather window (PostgreSQL)', () => {
  it('commits updates of separate event-loop turns inside the window as one batch, not before the window ends', async () => {
    const db = await openEngine('postgres', register);
    const batches: number[] = [];
    const log = new UpdateLog(db, { nodeId: 'test', gatherMs: 150, onCommit: (rows) => batches.push(rows) });
    register(() => log.close());
    const sessionId = await newSession(db);
    const started = performance.now();
    for (let i = 0; i < 3; i++) {
      log.append(sessionId, new Uint8Array([0, 0]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await rowCount(db, sessionId), 'committed inside the window').toBe(0);
    await log.flushed();
    expect(performance.now() - started).toBeGreaterThanOrEqual(145);
    expect(batches).toEqual([3]);
    expect(await rowCount(db, sessionId)).toBe(3);

    // Without a window the first update goes at once and the next ones wait for it.
    const eager = new UpdateLog(db, { nodeId: 'test', onCommit: (rows) => batches.push(rows) });
    register(() => eager.close());
    batches.length = 0;
    for (let i = 0; i < 3; i++) {
      eager.append(sessionId, new Uint8Array([0, 0]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await eager.flushed();
    expect(batches.length).toBeGreaterThan(1);
  });

  it('options left undefined take their defaults (a config value left out still commits), and nonsense is refused', async () => {
    const db = await openEngine('postgres', register);
    const log = new UpdateLog(db, { nodeId: 'test', gatherMs: undefined, maxBatchRows: undefined, writers: undefined, merge: undefined });
    register(() => log.close());
    const sessionId = await newSession(db);
    log.append(sessionId, new Uint8Array([0, 0]));
    await log.flushed();
    expect(await rowCount(db, sessionId)).toBe(1);
    expect(() => new UpdateLog(db, { nodeId: 'test', gatherMs: Number.NaN })).toThrow(/gatherMs/);
    expect(() => new UpdateLog(db, { nodeId: 'test', maxBatchRows: 0 })).toThrow(/maxBatchRows/);
  });

  it('close() commits what is gathering at once', async () => {
    const db = await openEngine('postgres', register);
    const log = new UpdateLog(db, { nodeId: 'test', gatherMs: 60_000 });
    const sessionId = await newSession(db);
    log.append(sessionId, new Uint8Array([0, 0]));
    const started = performance.now();
    await log.close();
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(await rowCount(db, sessionId)).toBe(1);
  });
});

describe('lazy rows: changes relayed from another node (PostgreSQL)', () => {
  it('start no commit of their own: they go with the next ordinary row, or with a flushed() that waits for them', async () => {
    const db = await openEngine('postgres', register);
    const batches: number[] = [];
    const log = new UpdateLog(db, { nodeId: 'test', lazyMs: 60_000, onCommit: (rows) => batches.push(rows) });
    register(() => log.close());
    const sessionId = await newSession(db);
    log.append(sessionId, new Uint8Array([0, 0]), { lazy: true });
    log.append(sessionId, new Uint8Array([0, 0]), { lazy: true });
    // An ordinary row written meanwhile would show; give the log a few turns to start a batch.
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(batches, 'no batch for lazy rows alone').toEqual([]);
    expect(log.backlog).toBe(2);
    log.append(sessionId, new Uint8Array([0, 0]));
    await log.flushed();
    expect(batches, 'the lazy rows went with the ordinary one').toEqual([3]);
    expect(await rowCount(db, sessionId)).toBe(3);

    // Lazy rows alone, then an acknowledgement's wait: flushed() starts their batch.
    log.append(sessionId, new Uint8Array([0, 0]), { lazy: true });
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(batches).toEqual([3]);
    const started = performance.now();
    await log.flushed();
    expect(performance.now() - started, 'not held for lazyMs').toBeLessThan(10_000);
    expect(batches).toEqual([3, 1]);
    expect(await rowCount(db, sessionId)).toBe(4);
  });

  it('are committed on their own after lazyMs, and at close', async () => {
    const db = await openEngine('postgres', register);
    const log = new UpdateLog(db, { nodeId: 'test', lazyMs: 100 });
    const sessionId = await newSession(db);
    const started = performance.now();
    log.append(sessionId, new Uint8Array([0, 0]), { lazy: true });
    await waitFor(async () => (await rowCount(db, sessionId)) === 1, { timeout: 5_000, what: 'the lazy row committed after lazyMs' });
    expect(performance.now() - started).toBeGreaterThanOrEqual(95);

    const slow = new UpdateLog(db, { nodeId: 'test', lazyMs: 60_000 });
    slow.append(sessionId, new Uint8Array([0, 0]), { lazy: true });
    await slow.close();
    expect(await rowCount(db, sessionId)).toBe(2);
    await log.close();
  });
});

describe('compaction by two nodes of one session (PostgreSQL)', () => {
  it('the second node, finding the rows already merged by the first, skips instead of compacting again', async () => {
    const db = await openEngine('postgres', register);
    const a = new UpdateLog(db, { nodeId: 'node-a' });
    const b = new UpdateLog(db, { nodeId: 'node-b' });
    register(() => a.close());
    register(() => b.close());
    const sessionId = await newSession(db);
    // Both nodes log every change they hold: each has 10 rows of its own here.
    for (let i = 0; i < 10; i++) {
      a.append(sessionId, new Uint8Array([0, 0]));
      b.append(sessionId, new Uint8Array([0, 0]));
    }
    await Promise.all([a.flushed(), b.flushed()]);
    expect(await a.compact(sessionId, { minUpdates: 10 })).toBe(20);
    // Two rows arrive after the first compaction; the second node's threshold is not reached again.
    b.append(sessionId, new Uint8Array([0, 0]));
    b.append(sessionId, new Uint8Array([0, 0]));
    await b.flushed();
    expect(await b.compact(sessionId, { minUpdates: 10 }), 'skipped').toBe(0);
    expect(await rowCount(db, sessionId), 'the snapshot and the two rows').toBe(3);
    expect(b.updatesSinceCompaction(sessionId), 'counted from what the first node left').toBe(2);
    // Without the floor (an explicit compaction) the rows are merged.
    expect(await b.compact(sessionId)).toBe(3);
    expect(await rowCount(db, sessionId)).toBe(1);
  });
});

describe('compaction through the merge worker (PostgreSQL)', () => {
  it('merges in the worker thread to the same state as on the event loop, and a failed merge keeps every row', async () => {
    const { MergeWorker, mergeInline } = await import('../persistence/merge.ts');
    const db = await openEngine('postgres', register);
    const worker = new MergeWorker();
    register(() => worker.close());
    const log = new UpdateLog(db, { nodeId: 'test', merge: worker.merge });
    register(() => log.close());
    const sessionId = await newSession(db);
    const source = new Y.Doc();
    source.on('update', (update: Uint8Array) => log.append(sessionId, update));
    const text = source.getText('t');
    for (let i = 0; i < 400; i++) {
      text.insert(Math.floor(text.length / 2), `${i % 10}`);
      if (i % 3 === 0) source.getMap('m').set(`k${i % 11}`, { i, at: 'x'.repeat(i % 40) });
    }
    await log.flushed();
    const { rows } = await db.query<{ payload: Uint8Array }>('SELECT payload FROM document_updates WHERE session_id = $1 ORDER BY seq', [sessionId]);
    const inline = await mergeInline(rows.map((r) => r.payload));

    const merged = await log.compact(sessionId);
    expect(merged).toBe(rows.length);
    expect(worker.merged, 'merged in the worker').toBe(1);
    const { rows: after } = await db.query<{ payload: Uint8Array }>('SELECT payload FROM document_updates WHERE session_id = $1', [sessionId]);
    expect(after).toHaveLength(1);
    expect(Buffer.from(after[0]!.payload).equals(Buffer.from(inline)), 'the snapshot is the state merged on the event loop').toBe(true);
    const copy = new Y.Doc();
    Y.applyUpdate(copy, after[0]!.payload);
    expect(copy.getText('t').toString()).toBe(text.toString());
    expect(copy.getMap('m').toJSON()).toEqual(source.getMap('m').toJSON());

    // Bytes Yjs cannot read fail the job in the worker (an error reply), and the next job still runs.
    await expect(worker.merge([new Uint8Array([0xff, 0xff, 0xff])])).rejects.toThrow(/merging the log failed/);
    expect(Buffer.from(await worker.merge([after[0]!.payload])).equals(Buffer.from(inline))).toBe(true);

    // A compaction whose merge fails changes nothing: the rows stay as they were.
    const failing = new UpdateLog(db, { nodeId: 'test', merge: () => Promise.reject(new Error('no merge')) });
    register(() => failing.close());
    text.insert(0, 'more');
    await log.flushed();
    await expect(failing.compact(sessionId)).rejects.toThrow('no merge');
    expect(await rowCount(db, sessionId)).toBe(2);
  });
});

describe('compactions on one node (PostgreSQL)', () => {
  it('run one at a time: the second starts its merge only after the first is done', async () => {
    const { mergeInline } = await import('../persistence/merge.ts');
    const db = await openEngine('postgres', register);
    const started: number[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const log = new UpdateLog(db, {
      nodeId: 'test',
      merge: async (payloads) => {
        started.push(payloads.length);
        if (started.length === 1) await held;
        return mergeInline(payloads);
      },
    });
    register(() => log.close());
    const sessions = [await newSession(db), await newSession(db)];
    for (const [n, sessionId] of sessions.entries()) {
      for (let i = 0; i < 3 + n; i++) log.append(sessionId, Y.encodeStateAsUpdate(new Y.Doc()));
    }
    await log.flushed();
    const first = log.compact(sessions[0]!);
    const second = log.compact(sessions[1]!);
    await waitFor(() => started.length === 1, { what: 'the first merge started' });
    // The second's transaction, lock and read would be done long before this if it ran alongside.
    for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
    await db.query('SELECT 1');
    expect(started, 'the second merge waits for the first compaction').toEqual([3]);
    release();
    expect(await first).toBe(3);
    expect(await second).toBe(4);
    expect(started).toEqual([3, 4]);
  });
});
