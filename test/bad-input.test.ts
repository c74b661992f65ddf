/**
 * Bad input, table-driven, plus a seeded fuzzer of mutated real messages. Every case must close
 * (or refuse) only the offending socket with the expected code, while a witness pair of real
 * providers on the same server keeps syncing within its deadline.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as Y from 'yjs';
import { Awareness, encodeAwarenessUpdate } from 'y-protocols/awareness';
import { acknowledged, connectClient, waitFor, type Client } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { api, createActor, createImage, createSession, openPool } from './support/fixtures.ts';
import { authFrame, awarenessFrame, frame, rawClient, syncFrame, MessageType, type RawClient } from './support/raw-client.ts';
import { startServerProcess, type ServerProcess } from './support/server-process.ts';
import { mulberry32 } from './support/random.ts';
import { metric } from './support/metrics.ts';
import { uwsLauncher } from './support/uws-runtime.ts';
import * as encoding from 'lib0/encoding';
import { generateNKeysBetween } from 'fractional-indexing';
import { IDENTITY, textLayerSchema } from '../shared/canvas.ts';
import { appendUpdates } from '../persistence/repositories/documents.ts';
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import WebSocket from 'ws';
import { WebsocketProvider } from 'y-websocket';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

const MiB = 1024 * 1024;
const LIMITS = {
  MAX_MESSAGE_BYTES: String(MiB),
  MAX_DOCUMENT_BYTES: String(3 * MiB),
  MAX_DOCUMENTS_PER_SOCKET: '3',
  MAX_ATTACHMENTS_PER_DOCUMENT: '2',
  RATE_LIMIT_MESSAGES: '200',
  AUTH_TIMEOUT_MS: '1500',
};

interface Env {
  server: ServerProcess;
  db: pg.Pool;
  token: string;
  userId: string;
  imageId: string;
  /** A session the attacks use (the attacker is its owner: a fully authorized but hostile client). */
  sessionId: string;
  witnesses: [Client, Client];
  witnessSession: string;
}

async function environment(name: string, env: Record<string, string>, transport: 'node' | 'uws' = 'node'): Promise<Env> {
  const database = await createDatabase(name);
  register(database.drop);
  const server = await startServerProcess({ transport, databaseUrl: database.url, env, register });
  const db = openPool(database.url, register);
  const actor = await createActor(db, 'attacker');
  const imageId = await createImage(db, actor.userId);
  const sessionId = await createSession(server.url, actor.token, imageId);
  const witnessSession = await createSession(server.url, actor.token, imageId);
  const a = connectClient(server.wsUrl, witnessSession, actor.token, register);
  const b = connectClient(server.wsUrl, witnessSession, actor.token, register);
  await Promise.all([a.synced, b.synced]);
  return { server, db, token: actor.token, userId: actor.userId, imageId, sessionId, witnesses: [a, b], witnessSession };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms))),
  ]).finally(() => clearTimeout(timer));
}

/**
 * How long a witness round may take. A round takes 20–100 ms here and under 1 s with the test
 * pinned to one busy core; CI runs two files at once on a machine loaded ~10 on 2 cores, where a
 * 2 s deadline failed with no refusal, worker restart or stall in the server's log (fuzz seed
 * 281366 passes in isolation). A wedged server, a dropped witness or a stall over 10 s still
 * fails it.
 */
const WITNESS_DEADLINE_MS = 10_000;

let witnessRound = 0;
/** The witnesses still sync: an edit by one is acknowledged and seen by the other within the deadline. */
async function witnessesStillSync(env: Env): Promise<void> {
  const [a, b] = env.witnesses;
  const round = ++witnessRound;
  const started = Date.now();
  a.doc.getMap('w').set('round', round);
  await acknowledged(a, WITNESS_DEADLINE_MS);
  await waitFor(() => b.doc.getMap('w').get('round') === round, { timeout: WITNESS_DEADLINE_MS, what: `witness round ${round}` });
  expect(Date.now() - started).toBeLessThan(WITNESS_DEADLINE_MS);
}

/** A raw socket authenticated on the attack session, its document connection established. */
async function attacker(env: Env, doc = env.sessionId) {
  const raw = rawClient(env.server.wsUrl, register);
  await raw.opened;
  raw.send(authFrame(doc, env.token));
  expect(await raw.authReply(doc)).toBe('authenticated');
  // The server answers SyncStep1 only once the document connection exists.
  raw.send(syncFrame(doc, 0, Y.encodeStateVector(new Y.Doc())));
  await raw.received(doc, MessageType.Sync);
  return raw;
}

function bigTextUpdate(bytes: number): Uint8Array {
  const doc = new Y.Doc();
  doc.getText('big').insert(0, 'x'.repeat(bytes));
  return Y.encodeStateAsUpdate(doc);
}

describe('bad input', () => {
  let env: Env;
  beforeAll(async () => {
    env = await environment('bad', LIMITS);
  });

  /**
   * `code`: the socket is closed with it (and `reason`). `refused`: only the attacked document is
   * refused, with that registry code in a stateless error and its Close message; the socket stays.
   */
  const cases: Array<{
    name: string;
    code?: number;
    refused?: string;
    reason?: string;
    attack: (env: Env) => Promise<RawClient>;
  }> = [
    {
      name: 'an oversize frame',
      code: 1009,
      attack: async (e) => {
        const raw = await attacker(e);
        raw.send(syncFrame(e.sessionId, 2, bigTextUpdate(MiB + 10)));
        return raw;
      },
    },
    {
      name: 'a document growing past its maximum',
      refused: 'document_too_large',
      attack: async (e) => {
        const raw = await attacker(e);
        for (let i = 0; i < 4; i++) {
          const doc = new Y.Doc();
          doc.getText(`chunk${i}`).insert(0, 'y'.repeat(900 * 1024));
          raw.send(syncFrame(e.sessionId, 2, Y.encodeStateAsUpdate(doc)));
        }
        return raw;
      },
    },
    {
      name: 'a malformed Yjs update',
      refused: 'invalid_update',
      attack: async (e) => {
        const raw = await attacker(e);
        raw.send(syncFrame(e.sessionId, 2, new Uint8Array([1, 2, 3, 250, 250, 250])));
        return raw;
      },
    },
    {
      name: 'a truncated Hocuspocus message',
      code: 1007,
      reason: 'malformed_message',
      attack: async (e) => {
        const raw = await attacker(e);
        raw.send(new Uint8Array([200, 1, 65]));
        return raw;
      },
    },
    {
      name: 'an unknown message type',
      code: 1003,
      reason: 'unknown_message_type',
      attack: async (e) => {
        const raw = await attacker(e);
        raw.send(frame(e.sessionId, 99));
        return raw;
      },
    },
    {
      name: 'the server-internal BroadcastStateless opcode',
      code: 1003,
      reason: 'unknown_message_type',
      attack: async (e) => {
        const raw = await attacker(e);
        raw.send(frame(e.sessionId, MessageType.BroadcastStateless, () => {}));
        return raw;
      },
    },
    {
      name: 'a flood before authentication',
      code: 4205,
      attack: async (e) => {
        const raw = rawClient(e.server.wsUrl, register);
        await raw.opened;
        const update = syncFrame(e.sessionId, 2, bigTextUpdate(10));
        for (let i = 0; i < 150; i++) raw.send(update);
        return raw;
      },
    },
    {
      name: 'a socket that never authenticates',
      code: 4408,
      reason: 'authentication_timeout',
      attack: async (e) => {
        const raw = rawClient(e.server.wsUrl, register);
        await raw.opened;
        return raw;
      },
    },
    {
      name: 'a flood after authentication',
      code: 1008,
      reason: 'rate_limited',
      attack: async (e) => {
        const raw = await attacker(e);
        const aw = new Awareness(new Y.Doc());
        aw.setLocalState({ cursor: { x: 0, y: 0 } });
        const msg = awarenessFrame(e.sessionId, encodeAwarenessUpdate(aw, [aw.clientID]));
        for (let i = 0; i < 2_000 && raw.ws.readyState === 1; i++) raw.send(msg);
        return raw;
      },
    },
    ...(
      [
        ['a sync message of subtype 7', (d: string) => frame(d, MessageType.Sync, (e) => encoding.writeVarUint(e, 7))],
        [
          'a truncated SyncStep2',
          (d: string) =>
            frame(d, MessageType.Sync, (e) => {
              encoding.writeVarUint(e, 1);
              encoding.writeVarUint(e, 1000); // says 1000 bytes follow
              encoding.writeUint8Array(e, new Uint8Array([0, 0]));
            }),
        ],
        ['a truncated awareness update', (d: string) => awarenessFrame(d, new Uint8Array([1, 200]))],
        [
          'an awareness state that is not JSON',
          (d: string) =>
            awarenessFrame(
              d,
              (() => {
                const e = encoding.createEncoder();
                encoding.writeVarUint(e, 1);
                encoding.writeVarUint(e, 12345);
                encoding.writeVarUint(e, 1);
                encoding.writeVarString(e, '{"cursor": nope');
                return encoding.toUint8Array(e);
              })(),
            ),
        ],
        [
          'a stateless message that is not UTF-8',
          (d: string) =>
            frame(d, MessageType.Stateless, (e) => {
              encoding.writeVarUint(e, 2);
              encoding.writeUint8Array(e, new Uint8Array([0xc3, 0x28]));
            }),
        ],
      ] as const
    ).map(([name, build]) => ({
      name: `malformed content in a valid envelope: ${name}`,
      code: 1007,
      reason: 'malformed_message',
      attack: async (e: Env) => {
        const raw = await attacker(e);
        raw.send(build(e.sessionId));
        return raw;
      },
    })),
    {
      name: 'the yjs#687 run-length bomb sent as an update',
      refused: 'invalid_update',
      attack: async (e) => {
        const raw = await attacker(e);
        raw.send(syncFrame(e.sessionId, 2, Buffer.from('00010000000001000100010200001602000001fdffffffff7f0000', 'hex')));
        // In the V1 format Yjs accepts these bytes harmlessly, or refuses them (they need state the
        // document lacks). Either way the socket must stay usable: end on a certain refusal.
        raw.send(syncFrame(e.sessionId, 2, new Uint8Array([0xff, 0xff, 0xff])));
        return raw;
      },
    },
  ];

  for (const c of cases) {
    const outcome = c.refused ? `refuses the document: ${c.refused}` : `closes the socket: ${c.code}${c.reason ? ` ${c.reason}` : ''}`;
    it(`${outcome} — only the offender — on ${c.name}`, async () => {
      const offender = await c.attack(env);
      // Generous: a CPU-starved guard worker is only stopped after its wall cap (at least 5 s).
      if (c.refused) {
        const refusal = await within(offender.refusal(env.sessionId), 20_000, 'the document was not refused within 20 s');
        expect(refusal.error).toMatchObject({ type: 'error', code: c.refused });
        expect(refusal.closeReason).toBe(c.refused);
        // The socket stays: a provider would otherwise reconnect and resend the same bytes.
        expect(offender.ws.readyState).toBe(1);
      } else {
        const closed = await within(offender.closed, 20_000, 'offender was not closed within 20 s');
        expect(closed.code).toBe(c.code);
        if (c.reason) expect(closed.reason).toBe(c.reason);
      }
      await witnessesStillSync(env);
    });
  }

  it('refuses more documents per socket than allowed, keeping the socket and its documents', async () => {
    const extra = await Promise.all([0, 1, 2].map(() => createSession(env.server.url, env.token, env.imageId)));
    // The third document is slow to load (a log of 20,000 one-character updates): Hocuspocus
    // answers "authenticated" before it loads a document, so the fourth request arrives while the
    // third is still loading, and must be counted against the slot the third already took.
    const slow = new Y.Doc();
    const rows: Array<{ sessionId: string; payload: Uint8Array }> = [];
    slow.on('update', (update: Uint8Array) => rows.push({ sessionId: extra[1]!, payload: update }));
    for (let i = 0; i < 20_000; i++) slow.getText('slow').insert(i, 'x');
    await appendUpdates(env.db, rows, 'test');
    const raw = rawClient(env.server.wsUrl, register);
    await raw.opened;
    for (const doc of [env.sessionId, extra[0]!, extra[1]!]) {
      raw.send(authFrame(doc, env.token));
      expect(await raw.authReply(doc)).toBe('authenticated');
    }
    raw.send(authFrame(extra[2]!, env.token));
    expect(await raw.authReply(extra[2]!)).toBe('too_many_documents');
    expect(raw.ws.readyState).toBe(1);
    await witnessesStillSync(env);
  });

  it('counts attachments, not names: `name\\0suffix` addresses take slots, one document is attached at most twice, metrics show them', async () => {
    const [w, t, u, v] = await Promise.all([0, 1, 2, 3].map(() => createSession(env.server.url, env.token, env.imageId)));
    const attachments = () => metric(env.server, 'imageflow_document_attachments');
    const before = await attachments();
    const raw = rawClient(env.server.wsUrl, register);
    await raw.opened;
    const open = async (address: string) => {
      raw.send(authFrame(address, env.token));
      return raw.authReply(address);
    };
    expect(await open(`${w}\0a`)).toBe('authenticated');
    expect(await open(`${w}\0b`)).toBe('authenticated');
    // A third address of the same document: each would be its own copy of every broadcast.
    expect(await open(`${w}\0c`)).toBe('too_many_attachments');
    expect(await open(t!)).toBe('authenticated');
    // Three attachments held (two of them one document): the socket is full.
    expect(await open(u!)).toBe('too_many_documents');
    await waitFor(async () => (await attachments()) === before + 3, { what: 'three attachments in /metrics' });
    // Closing one address of a document frees exactly one slot, while the other stays attached.
    raw.send(frame(`${w}\0a`, MessageType.Close));
    await waitFor(() => raw.log.some((m) => m.doc === w && m.type === MessageType.Close), { what: 'the close of the first address' });
    expect(await open(v!)).toBe('authenticated');
    expect(await open(u!)).toBe('too_many_documents');
    await waitFor(async () => (await attachments()) === before + 3, { what: 'still three attachments' });
    expect(raw.ws.readyState).toBe(1);
    await witnessesStillSync(env);
  });

  it('printed no stack trace for any of it: one structured line per refusal, codes from the registry', () => {
    const output = env.server.output();
    expect(output).not.toMatch(/^\s+at /m);
    expect(output).not.toContain('Reset Connection');
    const refusals = output.split('\n').filter((line) => line.includes('"code":"malformed_message"'));
    expect(refusals.length).toBeGreaterThanOrEqual(5);
    for (const line of refusals) expect(() => JSON.parse(line) as unknown).not.toThrow();
  });

  it('refuses a /yjs/ path that is not a session id before the upgrade (404 session_not_found)', async () => {
    const url = env.server.wsUrl.replace(/\/collab$/, '/yjs/a%2Fb');
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.on('unexpected-response', (_req, res) => {
        resolve(res.statusCode ?? 0);
        ws.terminate();
      });
      ws.on('open', () => {
        ws.terminate();
        reject(new Error('the upgrade was accepted'));
      });
      ws.on('error', () => {});
    });
    expect(status).toBe(404);
    await witnessesStillSync(env);
  });

  it('never stored anything it refused: the attack session loads cleanly', async () => {
    const { rows } = await env.db.query<{ payload: Buffer }>('SELECT payload FROM document_updates WHERE session_id = $1', [env.sessionId]);
    const doc = new Y.Doc();
    for (const row of rows) Y.applyUpdate(doc, row.payload);
    expect(doc.getText('big').length).toBe(0);
    expect(doc.getText('chunk3').length).toBe(0);
    expect((await api(env.server.url, 'GET', '/readyz')).status).toBe(200);
  });
});

describe('updates that take too long to decode (yjs#687)', () => {
  it('are refused without stalling the event loop for other clients', async () => {
    // A budget far below what this update costs stands in for a bomb (a real one is refused the same way).
    const env = await environment('slow', { MAX_MESSAGE_BYTES: String(2 * MiB), UPDATE_DECODE_BUDGET_MS: '15', UPDATE_DECODE_BUDGET_MS_PER_MIB: '1' });
    const slow = new Y.Doc();
    slow.transact(() => {
      const m = slow.getMap('m');
      for (let i = 0; i < 60_000; i++) m.set(`k${i}`, i);
    });
    const raw = await attacker(env);
    raw.send(syncFrame(env.sessionId, 2, Y.encodeStateAsUpdate(slow)));
    await witnessesStillSync(env);
    const refusal = await raw.refusal(env.sessionId);
    expect(refusal.error.code).toBe('invalid_update');
    expect(refusal.closeReason).toBe('invalid_update');
    await witnessesStillSync(env);
  });
});

/** A V1 update of only a delete set: `ranges` ranges of `client`, clocks from `start`, every `step`th clock deleted. */
function deleteSetUpdate(client: number, ranges: number, random: () => number, step?: number): Uint8Array {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, 0); // no structs
  encoding.writeVarUint(e, 1); // one client in the delete set
  encoding.writeVarUint(e, client);
  encoding.writeVarUint(e, ranges);
  let clock = 0;
  for (let i = 0; i < ranges; i++) {
    encoding.writeVarUint(e, clock);
    encoding.writeVarUint(e, 1);
    // Mostly every other clock: absolute clocks stay under 2^21, three bytes each (V1 writes them whole).
    clock += step ?? (random() < 0.05 ? 3 : 2);
  }
  return encoding.toUint8Array(e);
}

/** `n` valid text layers added in one transaction, as one update (what an editor's provider sends). */
function manyTextLayers(doc: Y.Doc, n: number): void {
  const keys = generateNKeysBetween(null, null, n);
  doc.transact(() => {
    const layers = doc.getMap<Y.Map<unknown>>('layers');
    for (let i = 0; i < n; i++) {
      const layer = new Y.Map<unknown>();
      layers.set(`lay_${String(i).padStart(21, '0')}`, layer);
      const fields = textLayerSchema.parse({
        type: 'text',
        name: `Text ${i}`,
        visible: true,
        opacity: 1,
        blendMode: 'normal',
        locked: false,
        transform: IDENTITY,
        filters: [],
        order: keys[i],
        data: { text: `Caption number ${i}`, fontFamily: 'Inter', fontSize: 24, color: '#112233', align: 'left' },
      });
      for (const [key, value] of Object.entries(fields)) layer.set(key, value);
    }
  });
}

/**
 * What `attack` cost the server's event loop: the CPU time (ms) of its main thread, read from
 * `/proc/<pid>/task/<pid>/stat` (the main thread's id is the process id), which is what decoding
 * on the event loop would add to; and, for the log, the longest event-loop stall from its own
 * delay monitor (`/metrics`, which resets the maximum at each scrape). The stall is wall-clock
 * time: on a machine loaded ~10 on 2 cores the same ~100 ms of CPU stretched to 950 ms, so the
 * tests assert on CPU time, which load does not inflate.
 */
async function eventLoopCost(server: ServerProcess, attack: () => Promise<unknown>): Promise<{ cpuMs: number; stallMs: number }> {
  const lag = 'imageflow_process_nodejs_eventloop_lag_max_seconds';
  const pid = server.child.pid!;
  const ticks = () => {
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    const fields = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(fields[11]) + Number(fields[12]);
  };
  await metric(server, lag); // resets the maximum
  const before = ticks();
  await attack();
  const cpuMs = ((ticks() - before) * 1000) / CLOCK_TICKS_PER_SECOND;
  return { cpuMs, stallMs: (await metric(server, lag)) * 1000 };
}

/** CPU time of `work` in this thread, ms. */
function threadCpuMs(work: () => void): number {
  const before = process.threadCpuUsage();
  work();
  const used = process.threadCpuUsage(before);
  return (used.user + used.system) / 1000;
}

/** USER_HZ, the unit of /proc's CPU times: 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

describe('viewers (read-only connections) go through the same guard', () => {
  let env: Env;
  let viewer: { userId: string; token: string };
  beforeAll(async () => {
    env = await environment('viewer', { RATE_LIMIT_BYTES: String(64 * MiB) });
    viewer = await createActor(env.db, 'viewer');
    const res = await api(env.server.url, 'POST', `/api/sessions/${env.sessionId}/participants`, {
      token: env.token,
      body: { userId: viewer.userId, permissions: { canEdit: false } },
    });
    expect(res.status).toBe(201);
  });

  async function viewerSocket(session = env.sessionId) {
    const raw = rawClient(env.server.wsUrl, register);
    await raw.opened;
    raw.send(authFrame(session, viewer.token));
    expect(await raw.authReply(session)).toBe('authenticated');
    raw.send(syncFrame(session, 0, Y.encodeStateVector(new Y.Doc())));
    await raw.received(session, MessageType.Sync);
    return raw;
  }

  it("refuses a viewer's SyncStep2 of deletions of nothing without decoding it on the event loop, like an editor's", async () => {
    const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
    console.log(`delete-set seed: ${seed} (rerun with FUZZ_SEED=${seed})`);
    // ~975,000 random ranges of a client the document does not have: ~3.9 MB, under the frame limit.
    const update = deleteSetUpdate(424242, 975_000, mulberry32(seed));
    expect(update.byteLength).toBeGreaterThan(3 * MiB);
    expect(update.byteLength).toBeLessThan(4 * MiB - 100);
    const bomb = syncFrame(env.sessionId, 1, update);
    // What decoding one of them costs on this machine, in this thread (the hazard the guard's
    // worker keeps off the event loop): the budget below scales with it, so a slower machine
    // does not fail a server that never decodes, and one that decodes fails on any machine.
    const decodeMs = Math.min(...[0, 1].map(() => threadCpuMs(() => Y.applyUpdate(new Y.Doc(), update))));
    const budgetMs = 150 + 3 * decodeMs;
    for (const role of ['viewer', 'editor'] as const) {
      const raw = role === 'viewer' ? await viewerSocket() : await attacker(env);
      const refusal = raw.refusal(env.sessionId);
      const cost = await eventLoopCost(env.server, async () => {
        for (let i = 0; i < 6; i++) raw.send(bomb);
        await refusal;
        await witnessesStillSync(env);
      });
      expect((await refusal).error.code, role).toBe('invalid_update');
      // Receiving the six frames and handing them to the worker costs the main thread 100–250 ms
      // of CPU (one decode here took 130–200 ms); decoding them on the event loop adds six decodes.
      console.log(
        `${role}: event loop during six SyncStep2 of deletions of nothing: ${cost.cpuMs.toFixed(0)} ms CPU, longest stall ${cost.stallMs.toFixed(0)} ms (one decode here: ${decodeMs.toFixed(0)} ms, budget ${budgetMs.toFixed(0)} ms)`,
      );
      expect(cost.cpuMs, `${role}: main-thread CPU time`).toBeLessThan(budgetMs);
      expect(raw.ws.readyState).toBe(1);
      await witnessesStillSync(env);
    }
  });

  it('closes a y-websocket viewer that edits with 4403 read_only, which y-websocket takes as final', async () => {
    const doc = new Y.Doc();
    const yws = new WebsocketProvider(env.server.wsUrl.replace(/\/collab$/, '/yjs'), env.sessionId, doc, {
      params: { token: viewer.token },
      disableBc: true,
    });
    register(async () => yws.destroy());
    const closed = new Promise<{ code: number; reason: string }>((resolve) => yws.on('closed', (event: { code: number; reason: string }) => resolve(event)));
    await waitFor(() => yws.synced, { what: 'the y-websocket viewer synced' });
    doc.getMap('meta').set('viewer', 'was here');
    expect(await within(closed, 10_000, 'the viewer was not told')).toEqual({ code: 4403, reason: 'read_only' });
    expect(yws.shouldConnect).toBe(false); // no reconnect loop
    await witnessesStillSync(env);
  });

  it("answers a viewer's SyncStep2 that deletes real content from the worker: not applied, SyncStatus false, no stall", async () => {
    // A session whose text has 1,950,000 characters from one client; the viewer asks to delete
    // every other one (975,000 ranges, ~3.9 MB): valid, but never applied for a viewer.
    const session = await createSession(env.server.url, env.token, env.imageId);
    const invited = await api(env.server.url, 'POST', `/api/sessions/${session}/participants`, {
      token: env.token,
      body: { userId: viewer.userId, permissions: { canEdit: false } },
    });
    expect(invited.status).toBe(201);
    const source = new Y.Doc();
    source.getText('long').insert(0, 'x'.repeat(1_950_000));
    await appendUpdates(env.db, [{ sessionId: session, payload: Y.encodeStateAsUpdate(source) }], 'test');
    const deletes = syncFrame(session, 1, deleteSetUpdate(source.clientID, 975_000, Math.random, 2));
    const raw = await viewerSocket(session);
    const before = raw.log.filter((m) => m.doc === session && m.type === MessageType.SyncStatus).length;
    const frames = 12;
    const statusCount = () => raw.log.filter((m) => m.doc === session && m.type === MessageType.SyncStatus).length;
    const cost = await eventLoopCost(env.server, async () => {
      for (let i = 0; i < frames; i++) raw.send(deletes);
      await waitFor(() => statusCount() >= before + frames, { timeout: 60_000, what: 'a SyncStatus answer to each' });
    });
    const statuses = raw.log.filter((m) => m.doc === session && m.type === MessageType.SyncStatus).slice(before);
    expect(statuses.map((m) => m.body[0])).toEqual(new Array(frames).fill(0)); // "not applied"
    // Answered from the worker, each costs the event loop a snapshot of the document: ~330 ms of
    // main-thread CPU for all twelve. Decoding them on the event loop (Hocuspocus's read-only
    // path) takes ~1.5 s of it.
    console.log(
      `event loop while a viewer sent ${frames} SyncStep2 of 975,000 deletions: ${cost.cpuMs.toFixed(0)} ms CPU, longest stall ${cost.stallMs.toFixed(0)} ms`,
    );
    expect(cost.cpuMs, 'main-thread CPU time').toBeLessThan(800);
    // Nothing was deleted, and a real viewer provider still completes its handshake.
    const reader = connectClient(env.server.wsUrl, session, viewer.token, register);
    await reader.synced;
    await waitFor(() => reader.doc.getText('long').length === 1_950_000, { what: 'the viewer sees the text' });
    await acknowledged(reader);
    expect(raw.ws.readyState).toBe(1);
  });
});

describe('a client that does not read', () => {
  it('is closed client_too_slow once it is owed more than MAX_BUFFERED_BYTES; the others keep syncing', async () => {
    const env = await environment('slowreader', { MAX_BUFFERED_BYTES: String(2 * MiB) });
    // A 1 MB document: each SyncStep1 with an empty state vector makes the server send all of it.
    const content = new Y.Doc();
    content.getText('t').insert(0, 'z'.repeat(MiB));
    await appendUpdates(env.db, [{ sessionId: env.sessionId, payload: Y.encodeStateAsUpdate(content) }], 'test');
    const raw = await attacker(env);
    const sockets = await metric(env.server, 'imageflow_connections');
    raw.ws.pause(); // reads nothing from now on; the kernel's buffers fill, then the server's
    const ask = syncFrame(env.sessionId, 0, Y.encodeStateVector(new Y.Doc()));
    for (let i = 0; i < 60; i++) raw.send(ask); // 60 MB owed
    await waitFor(() => env.server.output().includes('"code":"client_too_slow"'), { timeout: 30_000, what: 'the server closing the slow socket' });
    await witnessesStillSync(env);
    // Closed, then cut after its grace: the socket is gone from the server.
    await waitFor(async () => (await metric(env.server, 'imageflow_connections')) === sockets - 1, { timeout: 10_000, what: 'the slow socket gone' });
    await witnessesStillSync(env);
    raw.ws.resume();
    const closed = await raw.closed;
    // What it sees depends on whether the close frame reached it before the cut: 1008 or 1006.
    expect([1006, 1008]).toContain(closed.code);
  });
});

const uws = uwsLauncher();
describe.skipIf(!uws.ok)(`a client that does not read, on uWebSockets.js${uws.ok ? '' : ` (skipped: ${uws.reason})`}`, () => {
  it('is closed client_too_slow when the broadcasts published to it overflow MAX_BUFFERED_BYTES', async () => {
    const env = await environment('slowpub', { MAX_BUFFERED_BYTES: String(2 * MiB), MAX_DOCUMENT_BYTES: String(128 * MiB) }, 'uws');
    const raw = await attacker(env);
    const writer = connectClient(env.server.wsUrl, env.sessionId, env.token, register);
    await writer.synced;
    const published = await metric(env.server, 'imageflow_broadcasts_published_total');
    raw.ws.pause();
    // Edits of 1 MiB, each broadcast (published) to the paused reader too, until the server gives
    // up on it. The kernel's socket buffers take the first tens of MiB (loopback TCP autotunes the
    // receive buffer up to net.ipv4.tcp_rmem's maximum, 32 MiB here), so at most 64 MiB are sent.
    const slow = () => env.server.output().includes('"code":"client_too_slow"');
    for (let i = 0; i < 64 && !slow(); i++) {
      writer.doc.getText(`big${i}`).insert(0, 'y'.repeat(1024 * 1024));
      await acknowledged(writer, 20_000);
    }
    await waitFor(slow, { timeout: 10_000, what: 'the server closing the slow socket' });
    expect(await metric(env.server, 'imageflow_broadcasts_published_total')).toBeGreaterThan(published);
    await witnessesStillSync(env);
    writer.doc.getMap('meta').set('after', true);
    await acknowledged(writer);
    raw.ws.resume();
    const closed = await raw.closed;
    expect([1006, 1008]).toContain(closed.code);
  }, 90_000);
});

describe('a legitimate large edit', () => {
  it('lands: 10,000 text layers in one transaction (over 3 MiB) are accepted, stored and seen', async () => {
    const env = await environment('large', {});
    const [a, b] = env.witnesses;
    const before = b.doc.getMap('layers').size; // the session starts with the image as one layer
    manyTextLayers(a.doc, 10_000);
    expect(Y.encodeStateAsUpdate(a.doc).byteLength).toBeGreaterThan(3 * MiB);
    await acknowledged(a, 60_000);
    await waitFor(() => b.doc.getMap('layers').size === before + 10_000, { timeout: 60_000, what: 'the other client sees 10,000 more layers' });
    expect(await metric(env.server, 'imageflow_updates_refused_total')).toBe(0);
  }, 180_000);

  it('refused, it tells the provider why and is not resent: a stateless error, the document closed, the socket kept', async () => {
    // A budget no update of this size meets, to have the provider's edit refused.
    const env = await environment('refused', { UPDATE_DECODE_BUDGET_MS: '10', UPDATE_DECODE_BUDGET_MS_PER_MIB: '1' });
    const client = connectClient(env.server.wsUrl, env.sessionId, env.token, register);
    await client.synced;
    const stateless: string[] = [];
    const closes: Array<{ code: number; reason: string }> = [];
    let disconnects = 0;
    client.provider.on('stateless', ({ payload }: { payload: string }) => stateless.push(payload));
    client.provider.on('close', ({ event }: { event: { code: number; reason: string } }) => closes.push({ code: event.code, reason: event.reason }));
    client.provider.configuration.websocketProvider.on('disconnect', () => (disconnects += 1));
    manyTextLayers(client.doc, 5_000); // ~100 ms of CPU to decode
    await waitFor(() => closes.length > 0, { timeout: 20_000, what: 'the provider sees the document closed' });
    expect(JSON.parse(stateless[0]!)).toMatchObject({ type: 'error', code: 'invalid_update' });
    // What HocuspocusProvider reports for a closed document: code 1000, the registry code as reason.
    expect(closes[0]).toEqual({ code: 1000, reason: 'invalid_update' });
    // Two witness rounds later: the socket never dropped, and the edit was refused exactly once.
    await witnessesStillSync(env);
    await witnessesStillSync(env);
    expect(disconnects).toBe(0);
    expect(client.provider.hasUnsyncedChanges).toBe(true);
    expect(await metric(env.server, 'imageflow_updates_refused_total')).toBe(1);
  });
});

describe('seeded fuzzer of mutated real messages', () => {
  it('survives every mutation: only offenders close, witnesses keep syncing, nothing poisoned is stored', async () => {
    const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
    console.log(`fuzz seed: ${seed} (rerun with FUZZ_SEED=${seed})`);
    const random = mulberry32(seed);
    const env = await environment('fuzz', LIMITS);

    // Real messages a provider sends: built with the same encoders from real Yjs activity.
    const source = new Y.Doc();
    const updates: Uint8Array[] = [];
    source.on('update', (u: Uint8Array) => updates.push(u));
    source.getMap('meta').set('background', '#123456');
    source.getText('t').insert(0, 'hello world');
    source.getArray('a').push([1, 'two', { three: 3 }]);
    source.getText('t').delete(0, 5);
    const aw = new Awareness(new Y.Doc());
    aw.setLocalState({ user: { name: 'f' }, cursor: { x: 1, y: 2 }, selection: ['lay_1'] });
    const corpus = [
      ...updates.map((u) => syncFrame(env.sessionId, 2, u)),
      syncFrame(env.sessionId, 0, Y.encodeStateVector(source)),
      syncFrame(env.sessionId, 1, Y.encodeStateAsUpdate(source)),
      awarenessFrame(env.sessionId, encodeAwarenessUpdate(aw, [aw.clientID])),
      frame(env.sessionId, MessageType.QueryAwareness),
      frame(env.sessionId, MessageType.Stateless, (e) => encoding.writeVarString(e, '{"type":"ping","at":1}')),
    ];
    // Awareness and stateless messages are also mutated inside their content: the JSON text of an
    // awareness state and of a stateless payload, byte by byte (so also into invalid UTF-8).
    const awarenessWith = (state: Uint8Array) => {
      const e = encoding.createEncoder();
      encoding.writeVarUint(e, 1);
      encoding.writeVarUint(e, aw.clientID);
      encoding.writeVarUint(e, 1 + Math.floor(random() * 1000));
      encoding.writeVarUint8Array(e, state);
      return awarenessFrame(env.sessionId, encoding.toUint8Array(e));
    };
    const statelessWith = (payload: Uint8Array) => frame(env.sessionId, MessageType.Stateless, (e) => encoding.writeVarUint8Array(e, payload));
    const stateJson = new TextEncoder().encode(JSON.stringify(aw.getLocalState()));
    const statelessJson = new TextEncoder().encode('{"type":"ping","at":1}');
    const contentMutations = [() => awarenessWith(mutateBytes(stateJson, random)), () => statelessWith(mutateBytes(statelessJson, random))];
    const log: string[] = [];
    const rounds = 6;
    const perRound = 25;
    for (let round = 0; round < rounds; round++) {
      const raw = await attacker(env);
      for (let i = 0; i < perRound && raw.ws.readyState === 1; i++) {
        const mutated =
          random() < 0.3
            ? contentMutations[Math.floor(random() * contentMutations.length)]!()
            : mutate(corpus[Math.floor(random() * corpus.length)]!, random);
        log.push(Buffer.from(mutated).toString('hex').slice(0, 120));
        raw.send(mutated);
      }
      await witnessesStillSync(env).catch((error: unknown) => {
        throw new Error(`witnesses stopped syncing (seed ${seed}); last frames:\n${log.slice(-10).join('\n')}\n${String(error)}`);
      });
      raw.ws.terminate();
    }
    expect(env.server.child.exitCode).toBeNull();
    // Every refusal was one structured line: no stack trace, no Hocuspocus "Reset Connection".
    expect(env.server.output(), `seed ${seed}`).not.toMatch(/^\s+at /m);
    // Whatever was stored loads, quickly, into a valid document.
    const { rows } = await env.db.query<{ payload: Buffer }>('SELECT payload FROM document_updates WHERE session_id = $1', [env.sessionId]);
    const started = Date.now();
    const doc = new Y.Doc();
    for (const row of rows) Y.applyUpdate(doc, row.payload);
    expect(Date.now() - started).toBeLessThan(2_000);
    // A fresh client loads the attacked session.
    const fresh = connectClient(env.server.wsUrl, env.sessionId, env.token, register);
    await fresh.synced;
    fresh.destroy();
  });
});

/** Byte-level mutations of `input` alone (no envelope to keep). */
function mutateBytes(input: Uint8Array, random: () => number): Uint8Array {
  const bytes = Array.from(input);
  const ops = 1 + Math.floor(random() * 3);
  for (let k = 0; k < ops; k++) {
    const at = Math.floor(random() * Math.max(1, bytes.length));
    switch (Math.floor(random() * 4)) {
      case 0:
        if (bytes.length) bytes[at] = bytes[at]! ^ (1 << Math.floor(random() * 8));
        break;
      case 1:
        bytes.length = at;
        break;
      case 2:
        bytes.splice(at, 0, 0x80 + Math.floor(random() * 0x80)); // a stray UTF-8 continuation or lead byte
        break;
      default:
        bytes.splice(at, 0, ...new TextEncoder().encode('"}{,'.charAt(Math.floor(random() * 4))));
    }
  }
  return new Uint8Array(bytes);
}

function mutate(input: Uint8Array, random: () => number): Uint8Array {
  const bytes = Array.from(input);
  const ops = 1 + Math.floor(random() * 4);
  for (let k = 0; k < ops; k++) {
    const at = Math.floor(random() * Math.max(1, bytes.length));
    switch (Math.floor(random() * 5)) {
      case 0: // flip a bit
        if (bytes.length) bytes[at] = bytes[at]! ^ (1 << Math.floor(random() * 8));
        break;
      case 1: // truncate
        bytes.length = at;
        break;
      case 2: // insert a random byte
        bytes.splice(at, 0, Math.floor(random() * 256));
        break;
      case 3: // a huge varint
        bytes.splice(at, 0, 0xff, 0xff, 0xff, 0xff, 0x0f);
        break;
      default: // duplicate a slice
        bytes.splice(at, 0, ...bytes.slice(at, at + 8));
    }
  }
  // Keep the document name intact often enough that mutations reach the Yjs decoders.
  return new Uint8Array(random() < 0.7 ? [...input.slice(0, 21), ...bytes.slice(21)] : bytes);
}

const echoTransports = ['node', ...(uwsLauncher().ok ? ['uws' as const] : [])] as const;
describe.each(echoTransports)('the echo, on the %s transport', (transport) => {
  it('does not send an update back to the connection it came from; every other connection gets it', async () => {
    // On uws the witnesses' broadcasts are one topic publish, from the writer's own socket.
    const env = await environment(`echo_${transport}`, {}, transport);
    const session = env.witnessSession;
    const raw = await attacker(env, session);
    const writer = new Y.Doc();
    writer.getMap('w').set('echo-from-raw', 1);
    const sentAt = raw.log.length;
    raw.send(syncFrame(session, 2, Y.encodeStateAsUpdate(writer)));
    // The witnesses (providers on other connections) get it...
    await waitFor(() => env.witnesses.every((w) => w.doc.getMap('w').get('echo-from-raw') === 1), { timeout: 10_000, what: 'the update at the witnesses' });
    // ...and the writer its acknowledgement, which the server sends after the broadcast (the
    // flush runs before the commit returns), on the same socket, so an echo would have come first.
    await waitFor(() => raw.log.slice(sentAt).some((m) => m.doc === session && m.type === MessageType.SyncStatus), { timeout: 10_000, what: "the writer's acknowledgement" });
    const updatesBack = raw.log.slice(sentAt).filter((m) => m.doc === session && m.type === MessageType.Sync && m.body[0] === 2);
    expect(updatesBack, 'sync updates sent back to the writer').toHaveLength(0);
    // A change from another connection still reaches it.
    env.witnesses[0]!.doc.getMap('w').set('echo-from-witness', 2);
    await waitFor(() => raw.log.slice(sentAt).some((m) => m.doc === session && m.type === MessageType.Sync && m.body[0] === 2), { timeout: 10_000, what: "the witness's update at the raw socket" });
  });
});
