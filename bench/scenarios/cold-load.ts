/**
 * Cold load of a session whose log holds N updates, before and after compaction.
 *
 * The N updates are made once per run in the bench (a Y.Doc setting keys of one map in N separate
 * transactions — N small updates, many overwriting earlier ones, as editing does) and written:
 * - for ours, as N rows of the session's update log (`appendUpdates`, the server's own named
 *   query) into sessions the server has never opened; half of those sessions are then compacted
 *   by `UpdateLog.compact` (the code the server's store hook runs) into one snapshot row;
 * - for stock, which stores only the merged document, as its one `stock_documents` row (the same
 *   bytes before and after: stock has no log to compact).
 * A client then opens each session for the first time: the time from creating the provider to
 * synced (server reads and merges the rows, then syncs), and the server's CPU meanwhile. A second
 * client opening the same, now loaded, document gives the connect + sync cost without the load.
 */
import * as Y from 'yjs';
import { connectPostgres } from '../../persistence/db.ts';
import { appendUpdates } from '../../persistence/repositories/documents.ts';
import { UpdateLog } from '../../persistence/update-log.ts';
import { connectSynced } from '../lib/clients.ts';
import type { ServerChild } from '../lib/child.ts';
import type { BenchDatabase } from '../lib/database.ts';
import { cpuSeconds } from '../lib/procfs.ts';
import { summarize, type Summary } from '../lib/stats.ts';
import type { Target } from '../lib/targets.ts';

export interface ColdLoadOptions {
  updates: number;
  /** Sessions loaded per state (before / after compaction). */
  loads: number;
}

export interface ColdLoadCase {
  rows: number;
  loadMs: Summary;
  serverCpuMs: Summary;
  warmConnectMs: Summary;
}

export interface ColdLoadResult {
  updates: number;
  updateBytes: number;
  stateBytes: number;
  before: ColdLoadCase;
  after: ColdLoadCase;
}

interface Fixture {
  updates: Uint8Array[];
  state: Uint8Array;
}

const fixtures = new Map<number, Fixture>();

/** N small updates of one document, and its merged state; made once per size and run. */
export function coldFixture(count: number): Fixture {
  const cached = fixtures.get(count);
  if (cached) return cached;
  const doc = new Y.Doc();
  const updates: Uint8Array[] = [];
  doc.on('update', (update: Uint8Array) => updates.push(update));
  const map = doc.getMap<string>('coldload');
  for (let i = 0; i < count; i += 1) map.set(`k${i % 500}`, `edit ${i} of the cold-load bench`);
  const fixture = { updates, state: Y.encodeStateAsUpdate(doc) };
  doc.destroy();
  fixtures.set(count, fixture);
  return fixture;
}

async function openCold(target: Target, server: ServerChild, name: string): Promise<{ loadMs: number; cpuMs: number; warmMs: number }> {
  const cpu0 = cpuSeconds(server.pid);
  const t0 = performance.now();
  const first = await connectSynced(server.wsUrl, name, target.token(), 60_000);
  const loadMs = performance.now() - t0;
  const cpuMs = (cpuSeconds(server.pid) - cpu0) * 1000;
  try {
    if (first.doc.getMap('coldload').size === 0) throw new Error(`cold load of ${name}: the document arrived empty`);
    const t1 = performance.now();
    const second = await connectSynced(server.wsUrl, name, target.token(), 60_000);
    const warmMs = performance.now() - t1;
    second.destroy();
    return { loadMs, cpuMs, warmMs };
  } finally {
    first.destroy();
  }
}

function summarizeCase(rows: number, samples: Array<{ loadMs: number; cpuMs: number; warmMs: number }>): ColdLoadCase {
  return {
    rows,
    loadMs: summarize(samples.map((s) => s.loadMs)),
    serverCpuMs: summarize(samples.map((s) => s.cpuMs)),
    warmConnectMs: summarize(samples.map((s) => s.warmMs)),
  };
}

export async function runColdLoad(target: Target, server: ServerChild, db: BenchDatabase, options: ColdLoadOptions): Promise<ColdLoadResult> {
  const fixture = coldFixture(options.updates);
  const names = await target.newDocuments(server, options.loads * 2);
  const beforeNames = names.slice(0, options.loads);
  const afterNames = names.slice(options.loads);
  let beforeRows = 1;
  let afterRows = 1;
  if (target.storageTable === 'document_updates') {
    const database = connectPostgres(db.url, 2);
    try {
      const log = new UpdateLog(database, { nodeId: 'bench-cold-load' });
      for (const sessionId of names) {
        for (let i = 0; i < fixture.updates.length; i += 2_000) {
          await appendUpdates(database, fixture.updates.slice(i, i + 2_000).map((payload) => ({ sessionId, payload })), 'bench-cold-load');
        }
      }
      for (const sessionId of afterNames) await log.compact(sessionId);
      const count = async (sessionId: string) =>
        (await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM document_updates WHERE session_id = $1', [sessionId])).rows[0]!.n;
      beforeRows = await count(beforeNames[0]!);
      afterRows = await count(afterNames[0]!);
    } finally {
      await database.close();
    }
  } else {
    for (const name of names) {
      await db.pool.query('INSERT INTO stock_documents (name, data) VALUES ($1, $2)', [name, Buffer.from(fixture.state)]);
    }
  }
  const before = [];
  for (const name of beforeNames) before.push(await openCold(target, server, name));
  const after = [];
  for (const name of afterNames) after.push(await openCold(target, server, name));
  return {
    updates: options.updates,
    updateBytes: fixture.updates.reduce((n, u) => n + u.byteLength, 0),
    stateBytes: fixture.state.byteLength,
    before: summarizeCase(beforeRows, before),
    after: summarizeCase(afterRows, after),
  };
}
