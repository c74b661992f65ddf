/**
 * `npm run bench`: the one bench harness — ours against stock Hocuspocus 4 + extension-database
 * on the same PostgreSQL, side by side on this machine in one run. Never part of the tests'
 * outcomes: speed is not a test result (test/bench-quick.test.ts only checks the harness runs).
 *
 *   npm run bench                     full (under 15 min on an idle 2-core machine)
 *   npm run bench -- --quick          every figure of the issue's table, smaller (under 2 min)
 *   npm run bench -- --tiny           everything at a size that only proves it runs (the test)
 *   npm run bench -- --only a,b       only these scenarios (names below)
 *   npm run bench -- --rounds N       rounds of the table scenarios (default 3; the servers' order rotates each round)
 *   npm run bench -- --results FILE   write the sections there instead of bench/RESULTS.md
 *   npm run bench -- --only cross-node --check   do two nodes of each server exchange edits?
 *
 * Scenarios (default full: all but the media ones; --quick: the table's and profile):
 * - table scenarios, per round and server, on one freshly started server process:
 *   `connections` (memory per idle authenticated connection, accept rate), `fanout` (server CPU
 *   per delivery, delivery p99), `ack-rate` (durable acknowledgements at p99 < 25 ms),
 *   `cold-load` (a session with a 10,000-update log, before and after compaction);
 * - `profile`: the fan-out under `--cpu-prof`, top functions and origins ours beside stock, RSS;
 * - `collab`: acknowledgement latency, kill -9 durability, acknowledgement while the commit is
 *   held, memory and fan-out at the first bench's size (one round);
 * - `cross-node`: two nodes of each server on one Redis; `versions`: version snapshots and trees;
 * - media (`--only media` = all three): `render` (the 20-layer 1080p canvas in-process, beside
 *   sharp alone compositing one of the same size), `images` (resize by URL over HTTP beside sharp
 *   alone in-process, cached variants, 12 MP ingest), `renders` (editing delivery p99 alone and
 *   while renders, thumbnails and ingests run at full speed);
 * - many nodes (only with --only): `roll` (three nodes restarted one after another behind a
 *   /readyz-polling balancer under an editing load; BENCH_ROLL_CLIENTS=typed for the typed client)
 *   and `storm` (a node holding many connections killed with -9, its clients reconnecting to the
 *   survivor).
 *
 * Servers: BENCH_TARGETS=stock,ours-node,ours-uws (the default; uws where uWebSockets.js can be
 * started). BENCH_DATABASE_URL is the admin database (default postgres://root@127.0.0.1:5432/test),
 * one throw-away database per run. BENCH_SERVER_NODE_OPTIONS is passed to every server.
 */
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { repoRoot, uwsLauncher } from '../test/support/uws-runtime.ts';
import type { ServerChild } from './lib/child.ts';
import { summarizeProfile, type ProfileSummary } from './lib/cpuprofile.ts';
import { commitSettings, createBenchDatabase, type BenchDatabase } from './lib/database.ts';
import { record, type Values } from './lib/figures.ts';
import { abortFleets } from './lib/fleet.ts';
import { killLoadgens } from './lib/loadgen.ts';
import { machineFacts, runBounded } from './lib/machine.ts';
import { busyCores } from './lib/procfs.ts';
import type { TargetResult } from './lib/report.ts';
import { writeSection } from './lib/results-file.ts';
import { renderProfiles, renderSummary, renderTableDetails, type RoundRecord, type SizeFacts } from './lib/summary.ts';
import { oursTarget, stockTarget, type Target } from './lib/targets.ts';
import { runAckRate, type AckRateOptions } from './scenarios/ack-rate.ts';
import { runColdLoad, type ColdLoadOptions } from './scenarios/cold-load.ts';
import { COLLAB_SIZES, runCollab } from './scenarios/collab.ts';
import { runConnections, type ConnectionsOptions } from './scenarios/connections.ts';
import { abortCrossNode, runCrossNode } from './scenarios/cross-node.ts';
import { runFanout, type FanoutOptions } from './scenarios/fanout.ts';
import { runImages } from './scenarios/images.ts';
import { runRender } from './scenarios/render.ts';
import { runRenders } from './scenarios/renders.ts';
import { runRoll } from './scenarios/roll.ts';
import { runStorm } from './scenarios/storm.ts';
import { runVersions } from './scenarios/versions.ts';

type Size = 'full' | 'quick' | 'tiny';

interface Sizes {
  connections: ConnectionsOptions;
  fanout: FanoutOptions;
  ackRate: AckRateOptions;
  coldLoad: ColdLoadOptions;
  profileFanout: FanoutOptions;
  watchdogMs: number;
}

/** The issue's fan-out: 20 documents × 10 readers, one writer per document at 20 updates/s. */
const ISSUE_FANOUT = { documents: 20, clientsPerDocument: 11, writersPerDocument: 1, editsPerSecondPerClient: 20 };
const RATES = [250, 500, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000];

const SIZES: Record<Size, Sizes> = {
  full: {
    connections: { connections: 5_000, documents: 100, loadgens: 4, concurrency: 64 },
    fanout: { ...ISSUE_FANOUT, warmupMs: 2_000, windowMs: 8_000, drainMs: 3_000 },
    ackRate: { clients: 100, loadgens: 2, rates: RATES, p99BoundMs: 25, warmupMs: 500, windowMs: 2_000, drainMs: 2_000 },
    coldLoad: { updates: 10_000, loads: 2 },
    profileFanout: { ...ISSUE_FANOUT, warmupMs: 2_000, windowMs: 8_000, drainMs: 2_000 },
    watchdogMs: 25 * 60_000,
  },
  quick: {
    connections: { connections: 500, documents: 20, loadgens: 2, concurrency: 64 },
    fanout: { ...ISSUE_FANOUT, warmupMs: 500, windowMs: 2_000, drainMs: 2_000 },
    ackRate: { clients: 50, loadgens: 1, rates: [250, 1_000, 2_500, 5_000, 7_500], p99BoundMs: 25, warmupMs: 300, windowMs: 700, drainMs: 1_000 },
    coldLoad: { updates: 10_000, loads: 1 },
    profileFanout: { ...ISSUE_FANOUT, warmupMs: 500, windowMs: 2_000, drainMs: 1_000 },
    watchdogMs: 6 * 60_000,
  },
  tiny: {
    connections: { connections: 20, documents: 4, loadgens: 2, concurrency: 5 },
    fanout: { documents: 2, clientsPerDocument: 3, writersPerDocument: 1, editsPerSecondPerClient: 20, warmupMs: 200, windowMs: 500, drainMs: 2_000 },
    ackRate: { clients: 4, loadgens: 1, rates: [40, 80], p99BoundMs: 25, warmupMs: 100, windowMs: 300, drainMs: 1_000 },
    coldLoad: { updates: 300, loads: 1 },
    profileFanout: { documents: 2, clientsPerDocument: 3, writersPerDocument: 1, editsPerSecondPerClient: 20, warmupMs: 200, windowMs: 500, drainMs: 1_000 },
    watchdogMs: 5 * 60_000,
  },
};

const TABLE = ['connections', 'fanout', 'ack-rate', 'cold-load'] as const;
type TableScenario = (typeof TABLE)[number];
const MEDIA = ['render', 'images', 'renders'] as const;
/** Many nodes restarted or killed under load: only with --only (they need nothing the others measure). */
const FLEET = ['roll', 'storm'] as const;
const ALL = [...TABLE, 'profile', 'collab', 'versions', 'cross-node', ...MEDIA, ...FLEET] as const;
type Scenario = (typeof ALL)[number];

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    tiny: { type: 'boolean', default: false },
    only: { type: 'string' },
    rounds: { type: 'string' },
    results: { type: 'string' },
    check: { type: 'boolean', default: false },
  },
});
const size: Size = args.tiny ? 'tiny' : args.quick ? 'quick' : 'full';
const sizes = SIZES[size];
const rounds = Math.max(1, Math.min(9, Number(args.rounds ?? 3) || 3));
const resultsFile = resolve(args.results ?? join(repoRoot, 'bench/RESULTS.md'));
/** The table's, summary's and profile's sections of a --quick or --tiny run are kept apart from the full run's. */
const suffix = size === 'full' ? '' : `-${size}`;
const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;

function selected(): Set<Scenario> {
  if (args.only) {
    const names = args.only.split(',').map((s) => s.trim());
    const out = new Set<Scenario>();
    for (const n of names) {
      if (n === 'table') TABLE.forEach((t) => out.add(t));
      else if (n === 'media') MEDIA.forEach((t) => out.add(t));
      else if ((ALL as readonly string[]).includes(n)) out.add(n as Scenario);
      else throw new Error(`unknown scenario ${JSON.stringify(n)}; known: table, media, ${ALL.join(', ')}`);
    }
    return out;
  }
  if (size === 'quick') return new Set<Scenario>([...TABLE, 'profile']);
  return new Set<Scenario>(ALL.filter((s) => !(MEDIA as readonly string[]).includes(s) && !(FLEET as readonly string[]).includes(s)));
}

const live = new Set<ServerChild>();
let dropDatabase: (() => Promise<void>) | undefined;

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

/** Watchdog and signals: kill every server and load generator, try to drop the database, exit. */
async function abort(reason: string, code: number): Promise<never> {
  log(`${reason}: killing servers`);
  killLoadgens();
  for (const child of live) await child.kill9();
  await Promise.race([abortCrossNode().catch(() => {}), sleep(10_000)]);
  await Promise.race([abortFleets(), sleep(10_000)]);
  if (dropDatabase) await Promise.race([dropDatabase().catch(() => {}), sleep(5_000)]);
  process.exit(code);
}

/** Tracks every process a target starts, so a failure or the watchdog can kill them all. */
function tracked(target: Target): Target {
  return {
    ...target,
    start: async () => {
      const child = await target.start();
      live.add(child);
      void child.exited.then(() => live.delete(child));
      return child;
    },
  };
}

/** The servers of this run: targets to start, or results saying why one is skipped. */
function makeTargets(db: BenchDatabase, env: Record<string, string> = {}): Array<Target | TargetResult> {
  const wanted = (process.env.BENCH_TARGETS ?? 'stock,ours-node,ours-uws').split(',').map((s) => s.trim());
  const out: Array<Target | TargetResult> = [];
  if (wanted.includes('stock')) out.push(tracked(stockTarget(db, { env })));
  if (wanted.includes('ours-node')) out.push(tracked(oursTarget(db, 'node', [], { env })));
  if (wanted.includes('ours-uws')) {
    const launcher = uwsLauncher();
    if (launcher.ok) out.push(tracked(oursTarget(db, 'uws', launcher.prefix, { env })));
    else out.push({ id: 'ours-uws', label: 'ours (uws)', skipped: launcher.reason });
  }
  return out;
}

const isTarget = (t: Target | TargetResult): t is Target => 'start' in t;

/** Rotates the servers' order each round, so each runs first, in the middle and last in turn. */
function orderFor(round: number, targets: Target[]): Target[] {
  const k = (round - 1) % targets.length;
  return [...targets.slice(k), ...targets.slice(0, k)];
}

async function runTable(db: BenchDatabase, which: TableScenario[], targets: Target[]): Promise<{ values: Values; records: RoundRecord[] }> {
  const values: Values = new Map();
  const records: RoundRecord[] = [];
  for (let round = 1; round <= rounds; round += 1) {
    for (const target of orderFor(round, targets)) {
      const rec: RoundRecord = { round, id: target.id, label: target.label, busyBefore: await busyCores(1_000) };
      records.push(rec);
      let server: ServerChild | undefined;
      // The round's exit code: the first shutdown that did not exit 0, else the last one.
      const stopped = (code: number | null) => {
        if (rec.stopExitCode === undefined || rec.stopExitCode === 0) rec.stopExitCode = code;
      };
      try {
        log(`round ${round}/${rounds}: ${target.label}: starting (machine busy before: ${rec.busyBefore.toFixed(2)} cores)`);
        server = await target.start();
        if (which.includes('connections')) {
          const c = sizes.connections;
          log(`round ${round}: ${target.label}: ${c.connections} idle connections on ${c.documents} documents`);
          const r = await runConnections(target, server, c);
          rec.connections = r;
          // Refused connections are a finding, not a harness failure: the figures count the ones made.
          if (r.failed > 0) (rec.warnings ??= []).push(`${r.failed} of ${c.connections} connections refused or failed (${r.errors.join('; ')}); the figures count the ${r.connections} made`);
          record(values, 'memoryPerConnection', target.id, round, r.perConnectionBytes / 1024);
          record(values, 'acceptRate', target.id, round, r.acceptedPerSecond);
          await sleep(1_000); // the disconnects settle
          // The closed connections leave the heap full of garbage (ours: 115-125 MB used, 47 MB once
          // V8 collected it ~14 s later), and that collection landed in whatever ran next: the
          // fan-out's CPU per delivery and the stepped acknowledgements paid for the connections
          // scenario. The steady-state scenarios get a fresh process of the same server instead.
          if (which.some((scenario) => scenario !== 'connections')) {
            stopped(await server.stop());
            server = await target.start();
          }
        }
        if (which.includes('fanout')) {
          const f = sizes.fanout;
          log(`round ${round}: ${target.label}: fan-out ${f.documents} docs × ${f.clientsPerDocument - 1} readers, ${f.editsPerSecondPerClient}/s per doc`);
          const r = await runFanout(target, server, db, f);
          rec.fanout = r;
          record(values, 'fanoutCpu', target.id, round, r.serverCpuPer1000 * 1000);
          record(values, 'fanoutP99', target.id, round, r.latency.p99);
        }
        if (which.includes('ack-rate')) {
          log(`round ${round}: ${target.label}: acknowledgements at stepped rates, ${sizes.ackRate.clients} clients`);
          const r = await runAckRate(target, server, sizes.ackRate, db);
          rec.ackRate = r;
          record(values, 'durableAcks', target.id, round, r.bestUnderBound);
        }
        if (which.includes('cold-load')) {
          log(`round ${round}: ${target.label}: cold load of ${sizes.coldLoad.updates} updates`);
          const r = await runColdLoad(target, server, db, sizes.coldLoad);
          rec.coldLoad = r;
          record(values, 'coldBefore', target.id, round, r.before.loadMs.p50);
          record(values, 'coldAfter', target.id, round, r.after.loadMs.p50);
        }
        stopped(await server.stop());
      } catch (error) {
        rec.error = error instanceof Error ? error.message.split('\n')[0] : String(error);
        log(`round ${round}: ${target.label}: FAILED: ${error instanceof Error ? error.message : String(error)}`);
        if (server) log(`${target.label} output (tail):\n${server.output().slice(-2_000)}`);
        await server?.kill9();
      }
      await sleep(500);
    }
  }
  return { values, records };
}

async function runProfiles(db: BenchDatabase): Promise<Array<{ id: string; label: string; profile?: ProfileSummary; file?: string; fanout?: RoundRecord['fanout']; error?: string; skipped?: string }>> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-cpu-prof-'));
  const out = [];
  // One directory for every server: each file is named after its process id (and thread).
  for (const target of makeTargets(db, { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${dir}` })) {
    if (!isTarget(target)) {
      out.push({ id: target.id, label: target.label, skipped: target.skipped });
      continue;
    }
    let server: ServerChild | undefined;
    try {
      log(`profile: ${target.label}: fan-out under --cpu-prof`);
      server = await target.start();
      const fanout = await runFanout(target, server, db, sizes.profileFanout);
      const pid = server.pid;
      await server.stop();
      // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread.
      const main = readdirSync(dir).find((f) => f.endsWith('.cpuprofile') && f.includes(`.${pid}.0.`));
      if (!main) throw new Error(`no .cpuprofile of process ${pid} written in ${dir}`);
      out.push({ id: target.id, label: target.label, profile: summarizeProfile(join(dir, main), fanout.windowMonotonicUs), file: join(dir, main), fanout });
    } catch (error) {
      log(`profile: ${target.label}: FAILED: ${error instanceof Error ? error.message : String(error)}`);
      await server?.kill9();
      out.push({ id: target.id, label: target.label, error: error instanceof Error ? error.message.split('\n')[0] : String(error) });
    } finally {
      target.cleanup();
    }
  }
  return out;
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const which = selected();
  log(`size ${size}, ${rounds} round(s), scenarios: ${[...which].join(', ')}; results: ${resultsFile}`);
  const consoleParts: string[] = [];
  let failed = false;

  const ownDb: readonly Scenario[] = ['cross-node', 'versions', ...MEDIA, ...FLEET];
  const needsDb = [...which].some((s) => !ownDb.includes(s));
  const db = needsDb ? await createBenchDatabase() : undefined;
  dropDatabase = db?.drop;
  try {
    const table = TABLE.filter((t) => which.has(t));
    if (db && table.length > 0) {
      const all = makeTargets(db);
      const targets = all.filter(isTarget);
      const { values, records } = await runTable(db, table, targets);
      targets.forEach((t) => t.cleanup());
      const facts: SizeFacts = {
        command,
        size,
        rounds,
        scenarios: table,
        sizes,
        skipped: all.filter((t): t is TargetResult => !isTarget(t)),
        ...machineFacts(startedAt, await commitSettings(db.admin)),
      };
      writeSection(resultsFile, `summary${suffix}`, renderSummary(values, records, facts));
      writeSection(resultsFile, `table${suffix}`, renderTableDetails(records, facts));
      if (records.some((r) => r.error)) failed = true;
      consoleParts.push(renderSummary(values, records, facts, true));
    }
    if (db && which.has('profile')) {
      const started = new Date();
      const profiles = await runProfiles(db);
      writeSection(resultsFile, `profile${suffix}`, renderProfiles(profiles, { command, started, size, fanout: sizes.profileFanout }));
      if (profiles.some((p) => p.error)) failed = true;
      consoleParts.push(`profiles: ${profiles.map((p) => `${p.label}: ${p.file ?? p.error ?? p.skipped}`).join('; ')}`);
    }
    if (db && which.has('collab')) {
      const targets = makeTargets(db);
      const collab = await runCollab(targets, db, COLLAB_SIZES[size], resultsFile, command);
      targets.filter(isTarget).forEach((t) => t.cleanup());
      consoleParts.push(collab.console);
      failed ||= collab.failed;
    }
  } finally {
    killLoadgens();
    for (const child of live) await child.kill9();
    await db?.drop();
  }
  if (which.has('versions')) {
    log('versions');
    consoleParts.push((await runVersions({ size, resultsFile, command })).split('\n').slice(0, 3).join('\n'));
  }
  if (which.has('cross-node')) {
    log('cross-node');
    try {
      consoleParts.push(await runCrossNode({ size, rounds: args.check ? 1 : rounds, checkOnly: args.check, resultsFile, command }));
    } catch (error) {
      failed = true;
      consoleParts.push(`cross-node FAILED: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  // The media and fleet scenarios: each with its own servers and database (render needs neither).
  const media: Array<[Scenario, () => Promise<string>]> = [
    ['render', () => runRender({ size, resultsFile, command, section: `render${suffix}` })],
    ['images', () => runImages({ size, resultsFile, command, section: `images${suffix}` })],
    ['renders', () => runRenders({ size, resultsFile, command, section: `renders${suffix}` })],
    ['roll', () => runRoll({ size, resultsFile, command, section: `roll${suffix}` })],
    ['storm', () => runStorm({ size, resultsFile, command, section: `storm${suffix}` })],
  ];
  for (const [name, run] of media) {
    if (!which.has(name)) continue;
    log(name);
    try {
      consoleParts.push(await run());
    } catch (error) {
      failed = true;
      consoleParts.push(`${name} FAILED: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  process.stdout.write(`${consoleParts.join('\n\n')}\n\nwritten: ${resultsFile} (${((Date.now() - startedAt.getTime()) / 1000).toFixed(0)} s)\n`);
  if (failed) process.exitCode = 1;
}

await runBounded(main, abort, sizes.watchdogMs);
