/**
 * Cross-node fan-out, a scenario of bench/run.ts: `npm run bench -- --only cross-node`
 * (`--only cross-node --check` only starts two nodes of each server and tells whether edits cross
 * between them; nothing is written).
 *
 * For each server — stock Hocuspocus + @hocuspocus/extension-redis (`bench/stock-server.ts` with
 * REDIS_URL) and ours on the node transport (`server/main.ts` with REDIS_URL) — two processes on
 * one throw-away PostgreSQL database and the real Redis, each server under its own key prefix and
 * node ids for this run. D documents × C clients, half of each document's clients on each node;
 * every client sets a new key at a fixed rate whose value is its send time (one process, one
 * clock). Every other client of the document records now − value when the key arrives, bucketed
 * by whether the writer sits on the same node or the other one. After a warm-up, a measured
 * window counts the edits sent in it, their deliveries per bucket, and the CPU of both server
 * processes (/proc utime+stime), of the PostgreSQL backends of the bench database, and of Redis
 * (`INFO`: used_cpu_sys + used_cpu_user, plus PUBLISH calls and network bytes). Then a cursor
 * phase on the same clients: cursor moves (awareness) instead of edits, with their own window,
 * delivery latencies, server CPU and PUBLISH calls.
 *
 * Writes the `bench:cross-node` section of bench/RESULTS.md. A server whose two nodes do not
 * deliver each other's edits within PROBE_MS is reported as not measured, with the reason.
 *
 * BENCH_CROSS_TARGETS=stock,ours (the default) picks servers; BENCH_DATABASE_URL the admin
 * database (default postgres://root@127.0.0.1:5432/test); BENCH_REDIS_URL the Redis (default
 * redis://127.0.0.1:6379); BENCH_SERVER_NODE_OPTIONS is passed to every server as NODE_OPTIONS. The rounds and sizes
 * come from the harness (`--quick`, `--tiny`, `--rounds`).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type * as Y from 'yjs';
import { repoRoot } from '../../test/support/uws-runtime.ts';
import type { ServerChild } from '../lib/child.ts';
import { connectMany, type BenchClient } from '../lib/clients.ts';
import { backendCpu, commitSettings, createBenchDatabase, type BenchDatabase } from '../lib/database.ts';
import { cpuSeconds, machineBusySeconds } from '../lib/procfs.ts';
import { deleteKeysWithPrefix, openRedis, redisCounters, REDIS_URL, type RedisConnection } from '../lib/redis.ts';
import { machineFacts, waitForQuiet, type MachineFacts } from '../lib/machine.ts';
import { writeSection } from '../lib/results-file.ts';
import { drain, MeasureWindow, tickEvery } from '../lib/window.ts';
import { fmt, fmtRatio, ratio, summarize, type Summary } from '../lib/stats.ts';
import { scrapeCommitMetrics } from '../lib/metrics.ts';
import { oursTarget, stockTarget, type Target } from '../lib/targets.ts';

/** Each server is measured this many times (fresh processes each time, the servers' order alternating); medians are reported. Set by runCrossNode. */
let ROUNDS = 3;
const FULL = {
  documents: 10,
  /** Even: half on each node. */
  clientsPerDocument: 4,
  editsPerSecondPerClient: 10,
  warmupMs: 3_000,
  windowMs: 10_000,
  /** Longest wait after the window for the window's edits to arrive everywhere. */
  drainMs: 5_000,
  /** The cursor phase, after the edits: every client moves its cursor (awareness) this often. */
  cursorMovesPerSecondPerClient: 10,
  cursorWarmupMs: 2_000,
  cursorWindowMs: 5_000,
  /** Longest wait for a quiet machine before each server (0: no wait, and no rerun of a disturbed window). */
  quietWaitMs: 15_000,
};
type CrossNodeOptions = typeof FULL;
/** The sizes of this run (set by runCrossNode from the harness's size). */
let OPTIONS: CrossNodeOptions = FULL;
/** The harness's sizes: full as above, quick with shorter windows, tiny just enough to run every step. */
export const CROSS_NODE_SIZES: Record<'full' | 'quick' | 'tiny', CrossNodeOptions> = {
  full: FULL,
  quick: { ...FULL, warmupMs: 1_500, windowMs: 4_000, drainMs: 3_000, cursorWarmupMs: 1_000, cursorWindowMs: 2_000, quietWaitMs: 2_000 },
  tiny: { ...FULL, documents: 2, warmupMs: 500, windowMs: 1_000, drainMs: 3_000, cursorWarmupMs: 300, cursorWindowMs: 700, quietWaitMs: 0 },
};
/** Longest wait for one edit on each node to reach every client of its document before the run. */
const PROBE_MS = 10_000;
/** Before each server, wait (at most OPTIONS.quietWaitMs) until other work uses under QUIET_CORES. */
const QUIET_CORES = 0.3;
/** A window beside more than BUSY_CORES of other work runs once more; the less disturbed is kept. */
const BUSY_CORES = 0.4;
const MAP = 'xnode';
const NOT_AVAILABLE = 'multi-node support not available yet';

interface System {
  id: 'stock' | 'ours';
  label: string;
  /** Redis key and channel prefix of this server in this run. */
  prefix: string;
  nodes: [Target, Target];
}

/** What readers of one bucket (writer on the same node, or on the other) received of the window. */
interface Deliveries {
  expected: number;
  delivered: number;
  latency: Summary;
}

interface CrossNodeResult {
  windowSeconds: number;
  sent: number;
  cross: Deliveries;
  same: Deliveries;
  deliveredPerSecond: number;
  /** Both node processes, and each. */
  serverCpuSeconds: number;
  nodeCpuSeconds: [number, number];
  pgCpuSeconds: number;
  redisCpuSeconds: number;
  redisPublishes: number;
  /** PUBLISH + SPUBLISH calls over the edits sent between the two Redis readings (`RedisCounters.at`). */
  publishesPerEdit: number;
  /** Group commits of both nodes' update logs in the window per edit sent in it (ours; undefined for stock, which commits none per edit). */
  commitsPerEdit: number | undefined;
  redisNetBytes: number;
  clientCpuSeconds: number;
  clientLoopDelayP99Ms: number;
  /** Cores busy with anything else on the machine in the window (whole machine minus all of the above). */
  otherCores: number;
  cursors: CursorResult;
}

/** The cursor phase: awareness updates (cursor moves) instead of document edits. */
interface CursorResult {
  windowSeconds: number;
  moves: number;
  cross: Deliveries;
  same: Deliveries;
  serverCpuSeconds: number;
  redisPublishes: number;
  /** PUBLISH + SPUBLISH calls over the moves made between the two Redis readings. */
  publishesPerMove: number;
}

/** One server's two nodes started, measured (or only checked), stopped, their keys deleted. */
interface RoundResult {
  round: number;
  result?: CrossNodeResult;
  /** Not measured: why. */
  error?: string;
  /** The probe found the nodes not exchanging edits (as opposed to a failure of the run). */
  unavailable?: boolean;
  stopExitCodes: Array<number | null>;
  keysDeleted: number;
  rerun?: string;
}

interface SystemResult {
  id: string;
  label: string;
  rounds: RoundResult[];
  /** Per-field median over the measured rounds. */
  result?: CrossNodeResult;
  error?: string;
  unavailable?: boolean;
}

const live = new Set<ServerChild>();
const cleanups: Array<() => Promise<void>> = [];

function log(message: string): void {
  process.stderr.write(`[cross-node] ${message}\n`);
}

async function cleanupAll(): Promise<void> {
  for (const child of live) await child.kill9();
  for (const fn of cleanups.splice(0).reverse()) {
    await Promise.race([fn().catch((error: unknown) => log(`cleanup: ${String(error)}`)), sleep(5_000)]);
  }
}

/** For the harness's watchdog and signals: kill this scenario's servers, drop its database, delete its Redis keys. */
export async function abortCrossNode(): Promise<void> {
  if (live.size === 0 && cleanups.length === 0) return;
  log('killing servers, dropping the database, deleting the run\'s Redis keys');
  await cleanupAll();
}


async function startTracked(target: Target): Promise<ServerChild> {
  const child = await target.start();
  live.add(child);
  void child.exited.then(() => live.delete(child));
  return child;
}

class Unavailable extends Error {}

interface Participant {
  client: BenchClient;
  /** 0 or 1: the node it is connected to. */
  node: number;
  /** Its index among all clients: the key prefix of its edits. */
  index: number;
  document: number;
}

/**
 * Connects the clients (per document: the first half to node a, the rest to node b) and checks
 * that edits cross: one client on each node sets a key, every client of the document must see
 * both within PROBE_MS.
 */
async function connectParticipants(system: System, servers: [ServerChild, ServerChild]): Promise<Participant[]> {
  const docs = await system.nodes[0].newDocuments(servers[0], OPTIONS.documents);
  const token = system.nodes[0].token();
  const half = OPTIONS.clientsPerDocument / 2;
  const participants: Participant[] = [];
  try {
    for (const node of [0, 1]) {
      const names = docs.flatMap((d) => Array.from({ length: half }, () => d));
      const clients = await connectMany(servers[node]!.wsUrl, names, token);
      clients.forEach((client, i) => {
        const document = Math.floor(i / half);
        participants.push({ client, node, document, index: document * OPTIONS.clientsPerDocument + node * half + (i % half) });
      });
    }
    const deadline = performance.now() + PROBE_MS;
    for (const p of participants) if (p.index % half === 0) p.client.doc.getMap<number>(MAP).set(`probe-${p.node}`, -1);
    const crossed = () => participants.filter((p) => p.client.doc.getMap<number>(MAP).has('probe-0') && p.client.doc.getMap<number>(MAP).has('probe-1')).length;
    while (crossed() < participants.length && performance.now() < deadline) await sleep(50);
    if (crossed() < participants.length) {
      throw new Unavailable(
        `two ${system.label} nodes on one Redis did not deliver each other's edits: after ${PROBE_MS / 1000} s, ${crossed()} of ${participants.length} clients had seen an edit from each node`,
      );
    }
  } catch (error) {
    for (const p of participants) p.client.destroy();
    throw error;
  }
  return participants;
}

async function measure(system: System, servers: [ServerChild, ServerChild], db: BenchDatabase, redis: RedisConnection): Promise<CrossNodeResult> {
  const participants = await connectParticipants(system, servers);
  const nodeOf = new Map(participants.map((p) => [p.index, p.node]));
  const window = new MeasureWindow();
  let sent = 0;
  const cross: number[] = [];
  const same: number[] = [];

  const observers: Array<() => void> = [];
  for (const p of participants) {
    const map = p.client.doc.getMap<number>(MAP);
    const observer = (event: Y.YMapEvent<number>, transaction: Y.Transaction) => {
      if (transaction.local) return;
      const now = performance.now();
      for (const key of event.keysChanged) {
        const sentAt = map.get(key);
        if (typeof sentAt !== 'number' || !window.has(sentAt)) continue;
        const writerNode = nodeOf.get(Number(key.slice(0, key.indexOf(':'))));
        (writerNode === p.node ? same : cross).push(now - sentAt);
      }
    };
    map.observe(observer);
    observers.push(() => map.unobserve(observer));
  }

  const period = 1000 / OPTIONS.editsPerSecondPerClient;
  const stops: Array<() => void> = [];
  /** Every edit's send time, to count those between the two Redis readings. */
  const sentAt: number[] = [];
  const startEditing = (p: Participant) => {
    let seq = 0;
    const map = p.client.doc.getMap<number>(MAP);
    stops.push(
      tickEvery(period, () => {
        const now = performance.now();
        map.set(`${p.index}:${seq++}`, now);
        sentAt.push(now);
        if (window.has(now)) sent += 1;
      }),
    );
  };

  const pg = backendCpu(db);
  const loop = monitorEventLoopDelay({ resolution: 5 });
  const pids = servers.map((s) => s.pid);
  try {
    participants.forEach(startEditing);
    await sleep(OPTIONS.warmupMs);

    await pg.start();
    const commits0 = await Promise.all(servers.map((s) => scrapeCommitMetrics(s.httpUrl)));
    const redis0 = await redisCounters(redis);
    const node0 = pids.map((pid) => cpuSeconds(pid));
    const client0 = process.cpuUsage();
    const machine0 = machineBusySeconds();
    loop.enable();
    window.open();
    await sleep(OPTIONS.windowMs);
    window.close();
    const node1 = pids.map((pid) => cpuSeconds(pid));
    const client1 = process.cpuUsage(client0);
    const machine1 = machineBusySeconds();
    loop.disable();
    const redis1 = await redisCounters(redis);
    const commits1 = await Promise.all(servers.map((s) => scrapeCommitMetrics(s.httpUrl)));
    const pgCpu = await pg.stop();
    for (const stop of stops) stop();
    // Both nodes' group commits in the window; undefined when a node has no metrics (stock).
    const commits = commits0.every((c, i) => c && commits1[i])
      ? commits0.reduce((n, c, i) => n + commits1[i]!.commitCount - c!.commitCount, 0)
      : undefined;

    const half = OPTIONS.clientsPerDocument / 2;
    const expectedSame = sent * (half - 1);
    const expectedCross = sent * half;
    await drain(() => same.length >= expectedSame && cross.length >= expectedCross, OPTIONS.drainMs);

    const cursors = await measureCursors(participants, pids, redis);
    const windowSeconds = window.seconds;
    const nodeCpuSeconds: [number, number] = [node1[0]! - node0[0]!, node1[1]! - node0[1]!];
    const serverCpuSeconds = nodeCpuSeconds[0] + nodeCpuSeconds[1];
    const clientCpuSeconds = (client1.user + client1.system) / 1e6;
    const redisCpuSeconds = redis1.cpuSeconds - redis0.cpuSeconds;
    return {
      windowSeconds,
      sent,
      cross: { expected: expectedCross, delivered: cross.length, latency: summarize(cross) },
      same: { expected: expectedSame, delivered: same.length, latency: summarize(same) },
      deliveredPerSecond: (cross.length + same.length) / windowSeconds,
      serverCpuSeconds,
      nodeCpuSeconds,
      pgCpuSeconds: pgCpu.seconds,
      redisCpuSeconds,
      redisPublishes: redis1.publishes - redis0.publishes,
      publishesPerEdit: (redis1.publishes - redis0.publishes) / between(sentAt, redis0.at, redis1.at),
      commitsPerEdit: commits === undefined ? undefined : commits / Math.max(1, sent),
      redisNetBytes: redis1.netInputBytes - redis0.netInputBytes + (redis1.netOutputBytes - redis0.netOutputBytes),
      clientCpuSeconds,
      clientLoopDelayP99Ms: loop.percentile(99) / 1e6,
      otherCores: Math.max(0, machine1 - machine0 - serverCpuSeconds - pgCpu.seconds - redisCpuSeconds - clientCpuSeconds) / windowSeconds,
      cursors,
    };
  } finally {
    for (const stop of stops) stop();
    for (const off of observers) off();
    for (const p of participants) p.client.destroy();
  }
}

/**
 * The cursor phase: every client moves its cursor (`awareness.setLocalStateField('cursor', {x:
 * send time, y: n})`) at a fixed rate; every other client of the document records now − x when
 * the move arrives, by whether the mover sits on the same node or the other one. The document is
 * not edited meanwhile, so the server CPU and Redis PUBLISH calls of the window are the awareness
 * path's.
 */
/** How many of `times` fall in [from, to). */
const between = (times: readonly number[], from: number, to: number) => times.filter((t) => t >= from && t < to).length;

async function measureCursors(participants: Participant[], pids: number[], redis: RedisConnection): Promise<CursorResult> {
  const nodeOfClient = new Map(participants.map((p) => [p.client.doc.clientID, p.node]));
  const window = new MeasureWindow();
  let moves = 0;
  const movedAt: number[] = [];
  const cross: number[] = [];
  const same: number[] = [];
  const offs: Array<() => void> = [];
  for (const p of participants) {
    const awareness = p.client.provider.awareness!;
    const onChange = ({ added, updated }: { added: number[]; updated: number[] }) => {
      const now = performance.now();
      for (const id of [...added, ...updated]) {
        if (id === awareness.clientID) continue;
        const sentAt = (awareness.getStates().get(id) as { cursor?: { x?: unknown } } | undefined)?.cursor?.x;
        if (typeof sentAt !== 'number' || !window.has(sentAt)) continue;
        (nodeOfClient.get(id) === p.node ? same : cross).push(now - sentAt);
      }
    };
    awareness.on('change', onChange);
    offs.push(() => awareness.off('change', onChange));
  }
  const period = 1000 / OPTIONS.cursorMovesPerSecondPerClient;
  const stops: Array<() => void> = [];
  try {
    for (const p of participants) {
      let n = 0;
      stops.push(
        tickEvery(period, () => {
          const now = performance.now();
          p.client.provider.awareness!.setLocalStateField('cursor', { x: now, y: n++ });
          movedAt.push(now);
          if (window.has(now)) moves += 1;
        }),
      );
    }
    await sleep(OPTIONS.cursorWarmupMs);
    const redis0 = await redisCounters(redis);
    const cpu0 = pids.map((pid) => cpuSeconds(pid));
    window.open();
    await sleep(OPTIONS.cursorWindowMs);
    window.close();
    const cpu1 = pids.map((pid) => cpuSeconds(pid));
    const redis1 = await redisCounters(redis);
    for (const stop of stops) stop();
    const half = OPTIONS.clientsPerDocument / 2;
    const expectedCross = moves * half;
    const expectedSame = moves * (half - 1);
    await drain(() => cross.length >= expectedCross && same.length >= expectedSame, OPTIONS.drainMs);
    return {
      windowSeconds: window.seconds,
      moves,
      cross: { expected: expectedCross, delivered: cross.length, latency: summarize(cross) },
      same: { expected: expectedSame, delivered: same.length, latency: summarize(same) },
      serverCpuSeconds: cpu1.reduce((sum, c, i) => sum + c - cpu0[i]!, 0),
      redisPublishes: redis1.publishes - redis0.publishes,
      publishesPerMove: (redis1.publishes - redis0.publishes) / between(movedAt, redis0.at, redis1.at),
    };
  } finally {
    for (const stop of stops) stop();
    for (const off of offs) off();
  }
}

async function benchSystem(system: System, db: BenchDatabase, redis: RedisConnection, checkOnly: boolean, round: number): Promise<RoundResult> {
  const out: RoundResult = { round, stopExitCodes: [], keysDeleted: 0 };
  const servers: ServerChild[] = [];
  try {
    if (!checkOnly) log(`${system.label}, round ${round}: machine busy before: ${(await waitForQuiet(QUIET_CORES, OPTIONS.quietWaitMs)).toFixed(2)} cores`);
    // One after the other: stock creates its table at start-up, ours migrates.
    for (const node of system.nodes) servers.push(await startTracked(node));
    const pair: [ServerChild, ServerChild] = [servers[0]!, servers[1]!];
    log(`${system.label}: nodes listening on ${pair[0].port} and ${pair[1].port}`);
    if (checkOnly) {
      const participants = await connectParticipants(system, pair);
      for (const p of participants) p.client.destroy();
      log(`${system.label}: edits cross between the two nodes`);
    } else {
      log(`${system.label}: ${OPTIONS.documents}×${OPTIONS.clientsPerDocument} clients, ${OPTIONS.editsPerSecondPerClient} edits/s each, ${OPTIONS.windowMs / 1000} s window`);
      let result = await measure(system, pair, db, redis);
      if (result.otherCores > BUSY_CORES && OPTIONS.quietWaitMs > 0) {
        log(`${system.label}: window ran beside ${result.otherCores.toFixed(2)} cores of other work; running it again`);
        await waitForQuiet(QUIET_CORES, OPTIONS.quietWaitMs);
        const second = await measure(system, pair, db, redis);
        out.rerun = `other load ${result.otherCores.toFixed(2)} then ${second.otherCores.toFixed(2)} cores; kept the lower`;
        if (second.otherCores < result.otherCores) result = second;
      }
      out.result = result;
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    out.error = message.split('\n')[0];
    out.unavailable = error instanceof Unavailable;
    log(`${system.label}: ${out.unavailable ? 'not measured' : 'FAILED'}: ${message}`);
    for (const [i, s] of servers.entries()) log(`${system.label} node ${'ab'[i]} output (tail):\n${s.output().slice(-1_500)}`);
  } finally {
    for (const s of servers) out.stopExitCodes.push(await s.stop());
    out.keysDeleted = await deleteKeysWithPrefix(redis, system.prefix);
    log(`${system.label}: stopped (exit codes ${out.stopExitCodes.map(String).join(', ')}); ${out.keysDeleted} Redis key(s) under ${system.prefix} deleted`);
  }
  return out;
}

function median(xs: readonly number[]): number {
  const sorted = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Each field the median over the rounds (so the fields of the result may come from different rounds). */
function medianResult(rounds: readonly CrossNodeResult[]): CrossNodeResult {
  const m = (f: (r: CrossNodeResult) => number) => median(rounds.map(f));
  const latency = (f: (r: CrossNodeResult) => Summary): Summary => ({
    n: m((r) => f(r).n),
    mean: m((r) => f(r).mean),
    p50: m((r) => f(r).p50),
    p99: m((r) => f(r).p99),
    max: m((r) => f(r).max),
  });
  return {
    windowSeconds: m((r) => r.windowSeconds),
    sent: m((r) => r.sent),
    cross: { expected: m((r) => r.cross.expected), delivered: m((r) => r.cross.delivered), latency: latency((r) => r.cross.latency) },
    same: { expected: m((r) => r.same.expected), delivered: m((r) => r.same.delivered), latency: latency((r) => r.same.latency) },
    deliveredPerSecond: m((r) => r.deliveredPerSecond),
    serverCpuSeconds: m((r) => r.serverCpuSeconds),
    nodeCpuSeconds: [m((r) => r.nodeCpuSeconds[0]), m((r) => r.nodeCpuSeconds[1])],
    pgCpuSeconds: m((r) => r.pgCpuSeconds),
    redisCpuSeconds: m((r) => r.redisCpuSeconds),
    redisPublishes: m((r) => r.redisPublishes),
    publishesPerEdit: m((r) => r.publishesPerEdit),
    commitsPerEdit: rounds.some((r) => r.commitsPerEdit === undefined) ? undefined : m((r) => r.commitsPerEdit!),
    redisNetBytes: m((r) => r.redisNetBytes),
    clientCpuSeconds: m((r) => r.clientCpuSeconds),
    clientLoopDelayP99Ms: m((r) => r.clientLoopDelayP99Ms),
    otherCores: m((r) => r.otherCores),
    cursors: {
      windowSeconds: m((r) => r.cursors.windowSeconds),
      moves: m((r) => r.cursors.moves),
      cross: { expected: m((r) => r.cursors.cross.expected), delivered: m((r) => r.cursors.cross.delivered), latency: latency((r) => r.cursors.cross.latency) },
      same: { expected: m((r) => r.cursors.same.expected), delivered: m((r) => r.cursors.same.delivered), latency: latency((r) => r.cursors.same.latency) },
      serverCpuSeconds: m((r) => r.cursors.serverCpuSeconds),
      redisPublishes: m((r) => r.cursors.redisPublishes),
      publishesPerMove: m((r) => r.cursors.publishesPerMove),
    },
  };
}

function table(head: string[], rows: string[][]): string {
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
  for (const r of rows) lines.push(`| ${r.join(' | ')} |`);
  return lines.join('\n');
}

/** Rows of `columns(result)` per measured server, then ours / stock where `ratioOf[i]`. */
function rowsWithRatio(results: SystemResult[], columns: (r: CrossNodeResult) => Array<[number | undefined, string]>, ratioOf: boolean[]): string[][] {
  const rows: string[][] = [];
  for (const s of results) {
    if (s.result) rows.push([s.label, ...columns(s.result).map(([, text]) => text)]);
    else rows.push([s.label, `not measured: ${s.error ?? '?'}`, ...columns(emptyResult()).slice(1).map(() => '')]);
  }
  const stock = results.find((s) => s.id === 'stock')?.result;
  const ours = results.find((s) => s.id === 'ours')?.result;
  if (stock && ours) {
    const o = columns(ours);
    const st = columns(stock);
    rows.push(['*ours / stock*', ...o.map(([x], i) => (ratioOf[i] ? `*${fmtRatio(ratio(x, st[i]![0]))}*` : ''))]);
  }
  return rows;
}

function emptyResult(): CrossNodeResult {
  const none = { expected: 0, delivered: 0, latency: summarize([]) };
  return {
    windowSeconds: 0, sent: 0, cross: none, same: none, deliveredPerSecond: 0, serverCpuSeconds: 0, nodeCpuSeconds: [0, 0],
    pgCpuSeconds: 0, redisCpuSeconds: 0, redisPublishes: 0, publishesPerEdit: 0, commitsPerEdit: undefined, redisNetBytes: 0, clientCpuSeconds: 0, clientLoopDelayP99Ms: 0, otherCores: 0,
    cursors: { windowSeconds: 0, moves: 0, cross: none, same: none, serverCpuSeconds: 0, redisPublishes: 0, publishesPerMove: 0 },
  };
}

interface Facts extends MachineFacts {
  command: string;
  redisVersion: string;
  extensionRedis: string;
}

function renderMarkdown(results: SystemResult[], facts: Facts): string {
  const ms = (x: number) => fmt(x, 2);
  const pct = (d: number, e: number) => (e > 0 ? `${((d / e) * 100).toFixed(1)} %` : '—');
  const perK = (seconds: number, r: CrossNodeResult) => (seconds / (r.cross.delivered + r.same.delivered)) * 1000;
  const parts: string[] = [];
  parts.push('## Cross-node fan-out: two nodes on one Redis, ours vs stock Hocuspocus + extension-redis (same machine, same run)');
  parts.push(
    [
      `- Command: \`${facts.command}\` (scenario cross-node of bench/run.ts; Node 24 from the \`node\` devDependency)`,
      `- Date: ${facts.startedAt.toISOString()} (took ${facts.durationSeconds.toFixed(0)} s)`,
      `- Machine: \`nproc\` = ${facts.nproc} (${facts.cpuModel}), Node ${facts.node}; all four server processes (two per server, one server at a time), the clients, PostgreSQL and Redis share these cores`,
      `- PostgreSQL ${facts.postgres.server_version ?? '?'} on loopback (synchronous_commit=${facts.postgres.synchronous_commit ?? '?'}); Redis ${facts.redisVersion} at ${REDIS_URL} (shared with anything else using it)`,
      `- Code: ${facts.git}`,
      `- stock = two \`bench/stock-server.ts\` processes: \`Server\` + \`@hocuspocus/extension-database\` + \`@hocuspocus/extension-redis\` ${facts.extensionRedis} with its defaults (store Redlock, 1 s initial-sync wait), \`REDIS_PREFIX\`/\`NAME\` per run and node. ours = two \`server/main.ts\` processes, node transport, \`REDIS_URL\`, \`REDIS_PREFIX\` per run, \`NODE_ID\` per node. Both on one fresh bench database; port 0, 127.0.0.1. Each server's Redis keys are deleted after its run (\`SCAN\` + \`DEL\` of its prefix).`,
      '- Ratios are ours / stock: below 1× means ours is lower (faster, cheaper).',
    ].join('\n'),
  );
  const o = OPTIONS;
  const half = o.clientsPerDocument / 2;
  parts.push(
    `${o.documents} documents × ${o.clientsPerDocument} clients (${half} on node a, ${half} on node b), each client setting a new key ${o.editsPerSecondPerClient}×/s (value = send time, one clock: every client lives in the bench process). Every other client of the document records the delivery latency: **cross-node** when the writer is connected to the other node (${half} readers per edit), **same-node** when to the same one (${half - 1}). Before the run, one edit from each node must reach every client within ${PROBE_MS / 1000} s. ${o.warmupMs / 1000} s warm-up, then a ${o.windowMs / 1000} s window; deliveries of the edits sent in the window (waiting up to ${o.drainMs / 1000} s after it).`,
  );
  parts.push(
    table(
      ['server', 'cross-node p50 ms', 'cross-node p99 ms', 'cross-node max ms', 'same-node p50 ms', 'same-node p99 ms', 'cross-node delivered / expected', 'same-node delivered / expected', 'deliveries / s'],
      rowsWithRatio(
        results,
        (r) => [
          [r.cross.latency.p50, ms(r.cross.latency.p50)],
          [r.cross.latency.p99, ms(r.cross.latency.p99)],
          [r.cross.latency.max, ms(r.cross.latency.max)],
          [r.same.latency.p50, ms(r.same.latency.p50)],
          [r.same.latency.p99, ms(r.same.latency.p99)],
          [undefined, `${fmt(r.cross.delivered, 0)} / ${fmt(r.cross.expected, 0)} (${pct(r.cross.delivered, r.cross.expected)})`],
          [undefined, `${fmt(r.same.delivered, 0)} / ${fmt(r.same.expected, 0)} (${pct(r.same.delivered, r.same.expected)})`],
          [r.deliveredPerSecond, fmt(r.deliveredPerSecond, 0)],
        ],
        [true, true, true, true, true, false, false, true],
      ),
    ),
  );
  parts.push(
    'How an edit crosses with stock extension-redis (read in its source): the writer\'s node publishes its state vector (SyncStep1) on the document\'s channel, at most once per event-loop turn; the other node answers on the writer\'s reply channel with its own SyncStep1 and a SyncStep2; the writer\'s node then publishes the diff (SyncStep2) on the other node\'s reply channel, which applies it and sends it to its clients: three Redis hops in sequence and about four PUBLISH calls per crossing, compared with one WebSocket send to a same-node reader. Ours (server/redis/fanout.ts): the writer\'s node publishes the update its client sent once on the document\'s channel and the other node applies it: one hop, one PUBLISH per edit. The anti-entropy announcement (one per document per node per REDIS_SYNC_INTERVAL_MS) rides on the next live update or cursor move of the document while it has traffic, and is a message of its own only when it is quiet; what is left above 1 per edit are the diffs answering announcements that found the announcer behind (updates still in flight).',
  );
  parts.push(
    'Cost of the window per 1,000 deliveries (cross-node + same-node): server = both node processes (/proc utime+stime), with each node\'s share; PostgreSQL = the backends connected to the bench database; Redis = the whole Redis process (`INFO` used_cpu_sys + used_cpu_user; PUBLISH + SPUBLISH calls from `INFO commandstats`; bytes = total_net_input_bytes + total_net_output_bytes), so anything else using this Redis meanwhile is counted too. "Other load" = the whole machine\'s busy time minus all of these and the bench process.',
  );
  parts.push(
    table(
      ['server', 'server CPU s / 1,000 deliveries', 'node a / node b CPU s', 'PostgreSQL CPU s / 1,000', 'Redis CPU s / 1,000', 'server + PostgreSQL + Redis CPU s / 1,000', 'Redis PUBLISH / 1,000 deliveries', 'Redis PUBLISH+SPUBLISH / edit', 'update-log group commits / edit (both nodes)', 'Redis kB / 1,000 deliveries', 'client CPU s', 'client loop p99 ms', 'other load, cores'],
      rowsWithRatio(
        results,
        (r) => {
          const total = perK(r.serverCpuSeconds + r.pgCpuSeconds + r.redisCpuSeconds, r);
          return [
            [perK(r.serverCpuSeconds, r), fmt(perK(r.serverCpuSeconds, r), 4)],
            [undefined, `${fmt(r.nodeCpuSeconds[0], 2)} / ${fmt(r.nodeCpuSeconds[1], 2)}`],
            [perK(r.pgCpuSeconds, r), fmt(perK(r.pgCpuSeconds, r), 4)],
            [perK(r.redisCpuSeconds, r), fmt(perK(r.redisCpuSeconds, r), 4)],
            [total, fmt(total, 4)],
            [perK(r.redisPublishes, r), fmt(perK(r.redisPublishes, r), 0)],
            [r.publishesPerEdit, fmt(r.publishesPerEdit, 3)],
            [undefined, r.commitsPerEdit === undefined ? '—' : fmt(r.commitsPerEdit, 2)],
            [perK(r.redisNetBytes / 1024, r), fmt(perK(r.redisNetBytes / 1024, r), 0)],
            [undefined, fmt(r.clientCpuSeconds, 2)],
            [undefined, ms(r.clientLoopDelayP99Ms)],
            [undefined, fmt(r.otherCores, 2)],
          ];
        },
        [true, false, true, true, true, true, true, false, true, false, false, false],
      ),
    ),
  );
  parts.push(
    `Cursor moves (awareness), after the edits: every client moves its cursor ${OPTIONS.cursorMovesPerSecondPerClient}×/s (x = send time), the document is not edited; ${OPTIONS.cursorWarmupMs / 1000} s warm-up, then a ${OPTIONS.cursorWindowMs / 1000} s window. Deliveries = a move seen by another client of the document. Stock extension-redis publishes every awareness change again from each node that relays it; ours publishes a change once, from the node of the client that made it.`,
  );
  const perKCursor = (seconds: number, r: CrossNodeResult) => {
    const delivered = r.cursors.cross.delivered + r.cursors.same.delivered;
    return delivered > 0 ? (seconds / delivered) * 1000 : Number.NaN;
  };
  parts.push(
    table(
      ['server', 'cross-node p50 ms', 'cross-node p99 ms', 'same-node p50 ms', 'cross-node delivered / expected', 'Redis PUBLISH / move', 'server CPU s / 1,000 deliveries'],
      rowsWithRatio(
        results,
        (r) => [
          [r.cursors.cross.latency.p50, ms(r.cursors.cross.latency.p50)],
          [r.cursors.cross.latency.p99, ms(r.cursors.cross.latency.p99)],
          [r.cursors.same.latency.p50, ms(r.cursors.same.latency.p50)],
          [undefined, `${fmt(r.cursors.cross.delivered, 0)} / ${fmt(r.cursors.cross.expected, 0)} (${pct(r.cursors.cross.delivered, r.cursors.cross.expected)})`],
          [r.cursors.publishesPerMove, fmt(r.cursors.publishesPerMove, 3)],
          [perKCursor(r.cursors.serverCpuSeconds, r), fmt(perKCursor(r.cursors.serverCpuSeconds, r), 4)],
        ],
        [true, true, true, false, true, true],
      ),
    ),
  );
  parts.push(
    `Each round on its own (fresh processes, fresh documents; the servers' order alternates between rounds). The tables above give each column's median over the ${ROUNDS} rounds (per-1,000 columns: median CPU over median deliveries).`,
  );
  const roundRows: string[][] = [];
  for (let round = 1; round <= Math.max(0, ...results.map((s) => s.rounds.length)); round += 1) {
    for (const s of results) {
      const x = s.rounds.find((y) => y.round === round);
      const r = x?.result;
      if (!x) continue;
      if (!r) {
        roundRows.push([`${round}`, s.label, `not measured: ${x.error ?? '?'}`, '', '', '', '', '', '']);
        continue;
      }
      roundRows.push([
        `${round}`,
        s.label,
        ms(r.cross.latency.p50),
        ms(r.cross.latency.p99),
        ms(r.same.latency.p50),
        ms(r.same.latency.p99),
        fmt(perK(r.serverCpuSeconds, r), 4),
        fmt(perK(r.redisCpuSeconds, r), 4),
        fmt(r.otherCores, 2),
      ]);
    }
  }
  parts.push(
    table(['round', 'server', 'cross-node p50 ms', 'cross-node p99 ms', 'same-node p50 ms', 'same-node p99 ms', 'server CPU s / 1,000', 'Redis CPU s / 1,000', 'other load, cores'], roundRows),
  );
  const notes: string[] = [];
  for (const s of results) {
    if (!s.result && s.id === 'ours' && s.unavailable) notes.push(`**ours: not measured — ${NOT_AVAILABLE}** (${s.error})`);
    else if (!s.result) notes.push(`**${s.label}: not measured** — ${s.error ?? 'unknown error'}`);
    for (const x of s.rounds) {
      const r = x.result;
      if (x.rerun) notes.push(`${s.label}, round ${x.round}: the window was run twice (${x.rerun}).`);
      if (r && (r.cross.delivered < r.cross.expected || r.same.delivered < r.same.expected)) {
        notes.push(`${s.label}, round ${x.round}: not every delivery arrived within ${o.drainMs / 1000} s after the window.`);
      }
      if (r && (r.cursors.cross.delivered < r.cursors.cross.expected || r.cursors.same.delivered < r.cursors.same.expected)) {
        notes.push(`${s.label}, round ${x.round}: not every cursor move arrived within ${o.drainMs / 1000} s after the cursor window.`);
      }
      if (r && r.otherCores > 0.25) notes.push(`${s.label}, round ${x.round}: ${r.otherCores.toFixed(2)} cores of other work ran during the window; its numbers are disturbed.`);
      if (x.stopExitCodes.some((c) => c !== 0)) notes.push(`${s.label}, round ${x.round}: SIGTERM exit codes ${x.stopExitCodes.map(String).join(' / ')}.`);
    }
  }
  if (notes.length > 0) parts.push(`### Notes from this run\n\n${notes.map((n) => `- ${n}`).join('\n')}`);
  parts.push(
    `_${ROUNDS} rounds, not a statistical study: compare the rounds before trusting a difference smaller than their spread. The clients run in the bench process on the same cores as the servers, PostgreSQL and Redis, so absolute latencies include client-side scheduling; ratios are fairer than absolutes._`,
  );
  return parts.join('\n\n');
}

function renderConsole(results: SystemResult[]): string {
  const lines = ['server                cross p50/p99 ms   same p50/p99 ms    deliv/s  srv s/1k  redis s/1k  pub/1k  pub/edit'];
  for (const s of results) {
    const r = s.result;
    if (!r) {
      lines.push(`${s.label.padEnd(21)} not measured: ${s.error ?? '?'}`);
      continue;
    }
    const d = r.cross.delivered + r.same.delivered;
    lines.push(
      [
        s.label.padEnd(21),
        `${fmt(r.cross.latency.p50)}/${fmt(r.cross.latency.p99)}`.padEnd(18),
        `${fmt(r.same.latency.p50)}/${fmt(r.same.latency.p99)}`.padEnd(18),
        fmt(r.deliveredPerSecond, 0).padEnd(8),
        fmt((r.serverCpuSeconds / d) * 1000, 4).padEnd(9),
        fmt((r.redisCpuSeconds / d) * 1000, 4).padEnd(11),
        fmt((r.redisPublishes / d) * 1000, 0).padEnd(7),
        fmt(r.publishesPerEdit, 2),
      ].join(' '),
    );
  }
  return lines.join('\n');
}


function systems(db: BenchDatabase, run: string): System[] {
  const wanted = (process.env.BENCH_CROSS_TARGETS ?? 'stock,ours').split(',').map((s) => s.trim());
  const out: System[] = [];
  if (wanted.includes('stock')) {
    const prefix = `bench-xnode-${run}-stock`;
    const node = (n: 'a' | 'b') =>
      stockTarget(db, { id: `stock-${n}`, label: `stock node ${n}`, env: { REDIS_URL, REDIS_PREFIX: prefix, NAME: `bench-${run}-stock-${n}` } });
    out.push({ id: 'stock', label: 'stock + extension-redis', prefix, nodes: [node('a'), node('b')] });
  }
  if (wanted.includes('ours')) {
    const prefix = `bench-xnode-${run}-ours`;
    const node = (n: 'a' | 'b') =>
      oursTarget(db, 'node', [], { id: `ours-${n}`, label: `ours (node) node ${n}`, env: { REDIS_URL, REDIS_PREFIX: prefix, NODE_ID: `bench-${run}-${n}` } });
    out.push({ id: 'ours', label: 'ours (node)', prefix, nodes: [node('a'), node('b')] });
  }
  return out;
}

/** The installed version (its package.json is not in its `exports`, so it is read from disk). */
function packageVersion(name: string): string {
  const file = join(repoRoot, 'node_modules', name, 'package.json');
  return existsSync(file) ? String((JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown }).version) : 'not installed';
}

export interface CrossNodeRun {
  size: 'full' | 'quick' | 'tiny';
  rounds: number;
  checkOnly: boolean;
  resultsFile: string;
  command: string;
}

/** Runs the scenario and writes its section; resolves with the console summary (throws if a server failed). */
export async function runCrossNode(run_: CrossNodeRun): Promise<string> {
  OPTIONS = CROSS_NODE_SIZES[run_.size];
  ROUNDS = run_.rounds;
  try {
    return await crossNode(run_);
  } finally {
    await cleanupAll();
  }
}

async function crossNode({ checkOnly, resultsFile, command }: CrossNodeRun): Promise<string> {
  const startedAt = new Date();
  const run = randomBytes(4).toString('hex');
  const redis = await openRedis();
  cleanups.push(async () => void redis.disconnect());
  const db = await createBenchDatabase();
  cleanups.push(db.drop);
  log(`database ${db.name}, Redis prefixes bench-xnode-${run}-*`);
  const list = systems(db, run);
  // Keys of a run killed half-way are deleted too (each server's run also deletes its own).
  cleanups.push(async () => {
    for (const s of list) await deleteKeysWithPrefix(redis, s.prefix);
  });
  for (const s of list) cleanups.push(async () => s.nodes.forEach((n) => n.cleanup()));
  const results: SystemResult[] = list.map((s) => ({ id: s.id, label: s.label, rounds: [] }));
  const rounds = checkOnly ? 1 : ROUNDS;
  for (let round = 1; round <= rounds; round += 1) {
    // Alternating order, so neither server always runs first (or right after the other).
    const order = round % 2 === 1 ? list : [...list].reverse();
    for (const s of order) {
      const result = results.find((r) => r.id === s.id)!;
      if (result.error) continue; // one failure (or nodes that do not exchange edits) ends that server's rounds
      const r = await benchSystem(s, db, redis, checkOnly, round);
      result.rounds.push(r);
      if (r.error) Object.assign(result, { error: r.error, unavailable: r.unavailable });
      await sleep(1_000); // let PostgreSQL, Redis and the machine settle between servers
    }
  }
  for (const r of results) {
    const measured = r.rounds.flatMap((x) => (x.result ? [x.result] : []));
    if (measured.length > 0 && !r.error) r.result = medianResult(measured);
  }
  if (checkOnly) {
    const lines = results.map((r) => `${r.label}: ${r.error ? `NO — ${r.error}` : 'edits cross between two nodes'}`).join('\n');
    if (results.some((r) => r.error)) throw new Error(`cross-node check failed:\n${lines}`);
    return lines;
  }
  const facts: Facts = {
    command,
    ...machineFacts(startedAt, await commitSettings(db.admin)),
    redisVersion: (await redisCounters(redis)).version,
    extensionRedis: packageVersion('@hocuspocus/extension-redis'),
  };
  writeSection(resultsFile, 'cross-node', renderMarkdown(results, facts));
  const failed = results.filter((r) => r.error && !r.unavailable);
  if (failed.length > 0) throw new Error(`cross-node: ${failed.map((r) => `${r.label}: ${r.error}`).join('; ')}`);
  return `${renderConsole(results)}\n\nwritten: ${resultsFile} (section bench:cross-node)`;
}
