/**
 * A reconnect storm, a scenario of bench/run.ts: `npm run bench -- --only storm` (`--quick`, `--tiny`;
 * `BENCH_STORM_TARGET=stock` for stock Hocuspocus + extension-redis; `BENCH_FLEET_TRANSPORT=uws`
 * for ours on uWebSockets.js).
 *
 * Two of our nodes (child processes on one bench database and the real Redis, bench/lib/fleet.ts)
 * behind the /readyz-polling balancer (test/support/balancer.ts). The first holds C connections
 * ("moved" clients, D documents), opened through the balancer while it is the only node behind
 * it, by 2–4 load-generator processes (bench/lib/loadgen-worker.ts: plain HocuspocusProviders that
 * reconnect with the provider's defaults), each editing its document every few seconds. The second
 * node then joins the balancer and serves a small set of "unmoved" clients (in the bench process,
 * connected to it directly, their own documents) editing at a steady rate, their delivery latency
 * measured at each other (send time inside the edit, one clock).
 *
 * After a window "before", the first node is killed with -9: its clients' sockets drop, the
 * balancer finds it gone (refused connection or failed /readyz) and sends every reconnect to the
 * survivor. The storm window runs from the kill until every moved client is synced again.
 *
 * Reported: kill → synced again per moved client (p50/p99/max, and how many never made it),
 * reconnect attempts that failed (closes after the first) and every refusal seen (not_ready,
 * authentication failures, close reasons, stateless errors) and whether those clients synced in
 * the end; the unmoved clients' delivery p50/p99/max before and during the storm; acknowledged
 * edits (moved and unmoved) missing from the PostgreSQL log afterwards (must be 0).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type * as Y from 'yjs';
import { createBenchDatabase } from '../lib/database.ts';
import { EDITS_MAP, epochNow, formatCounts, loggedDocument, mergeCounts, staleClaims, startFleet, stockStoredDocument, until, watchedClient, type WatchedClient } from '../lib/fleet.ts';
import { split, startLoadgens, type Loadgen } from '../lib/loadgen.ts';
import type { StormClientReport } from '../lib/loadgen-worker.ts';
import { gitFacts } from '../lib/machine.ts';
import { busyCores } from '../lib/procfs.ts';
import { writeSection } from '../lib/results-file.ts';
import { fmt, summarize, type Summary } from '../lib/stats.ts';
import { MeasureWindow, tickEvery } from '../lib/window.ts';

export interface StormOptions {
  /** Connections on the node that is killed. */
  connections: number;
  documents: number;
  loadgens: number;
  /** Each moved client edits its document this often. */
  movedEditEveryMs: number;
  unmovedDocuments: number;
  unmovedPerDocument: number;
  unmovedEditsPerSecond: number;
  warmupMs: number;
  beforeMs: number;
  /** Longest wait for every moved client to be synced again. */
  resyncMs: number;
}

export const STORM_SIZES: Record<'full' | 'quick' | 'tiny', StormOptions> = {
  full: { connections: 2_000, documents: 100, loadgens: 4, movedEditEveryMs: 10_000, unmovedDocuments: 10, unmovedPerDocument: 4, unmovedEditsPerSecond: 4, warmupMs: 3_000, beforeMs: 10_000, resyncMs: 180_000 },
  quick: { connections: 500, documents: 25, loadgens: 2, movedEditEveryMs: 5_000, unmovedDocuments: 5, unmovedPerDocument: 4, unmovedEditsPerSecond: 4, warmupMs: 2_000, beforeMs: 5_000, resyncMs: 120_000 },
  tiny: { connections: 50, documents: 5, loadgens: 2, movedEditEveryMs: 2_000, unmovedDocuments: 2, unmovedPerDocument: 3, unmovedEditsPerSecond: 4, warmupMs: 500, beforeMs: 1_000, resyncMs: 60_000 },
};

/** Stock's extension-database stores at most 10 s (maxDebounce) after a change: its rows are final after this. */
export const STOCK_STORE_WAIT_MS = 12_000;

export interface StormRun {
  size: keyof typeof STORM_SIZES;
  resultsFile: string;
  command: string;
  section: string;
}

interface StormResult {
  system: 'ours' | 'stock';
  /** Edits acknowledged just before the kill, those of them not in the database right after it, and how long after it that was read. */
  ackedAtKill: number;
  notDurableAtKill: number;
  checkedMs: number;
  connected: number;
  resync: Summary;
  neverResynced: number;
  notDisconnected: number;
  failedAttempts: number;
  clientsWithFailedAttempts: number;
  refusals: Map<string, number>;
  clientsRefused: number;
  clientsRefusedResynced: number;
  before: { latency: Summary; sent: number };
  storm: { latency: Summary; sent: number; seconds: number };
  movedAcked: number;
  movedWritten: number;
  lostMovedAcked: number;
  unmovedAcked: number;
  lostUnmovedAcked: number;
  /** Awareness claims in Redis still naming a node that is not alive, once every moved client reported. */
  staleClaims: number;
  claimsInUse: number;
  balancerFailures: number;
  balancerDropped: number;
  busyBefore: number;
}

function log(message: string): void {
  process.stderr.write(`[storm] ${message}\n`);
}

async function measureStorm(options: StormOptions, system: 'ours' | 'stock'): Promise<StormResult> {
  const db = await createBenchDatabase();
  const fleet = await startFleet(db, 2, {}, system);
  const storedDoc = (name: string) => (system === 'stock' ? stockStoredDocument(db, name) : loggedDocument(db, name));
  const loadgens: Loadgen[] = [];
  const unmoved: WatchedClient[] = [];
  const stops: Array<() => void> = [];
  try {
    // Only the victim behind the balancer while the moved clients connect.
    await Promise.all([fleet.start(0, true), fleet.start(1, false)]);
    await fleet.healthy(0);
    const [victim, survivor] = fleet.nodes as [(typeof fleet.nodes)[0], (typeof fleet.nodes)[0]];
    const docs = await victim.target.newDocuments(victim.child!, options.documents);
    const token = victim.target.token();
    const unmovedDocs = await victim.target.newDocuments(survivor.child!, options.unmovedDocuments);
    const names = Array.from({ length: options.connections }, (_, i) => docs[i % docs.length]!);
    loadgens.push(...startLoadgens(options.loadgens));
    log(`${options.connections} connections to ${victim.name} through the balancer from ${options.loadgens} load generators`);
    const t0 = performance.now();
    const connected = await Promise.all(
      split(names, loadgens.length).map((part, i) =>
        loadgens[i]!.request({ op: 'connect', url: fleet.balancer.wsUrl, names: part, token, concurrency: 25, timeoutMs: 60_000, reconnect: true }, 'connected', 600_000),
      ),
    );
    const made = connected.reduce((n, r) => n + r.connected, 0);
    log(`${made} connected in ${fmt((performance.now() - t0) / 1000, 1)} s${made < options.connections ? `; failures: ${connected.flatMap((r) => r.errors).slice(0, 3).join('; ')}` : ''}`);
    if (made < options.connections) throw new Error(`only ${made} of ${options.connections} connections made: ${connected.flatMap((r) => r.errors).slice(0, 3).join('; ')}`);

    fleet.balancer.set(survivor.name, survivor.child!.port);
    await fleet.healthy(1);
    // The unmoved clients: on the survivor directly, their own documents.
    for (let d = 0; d < options.unmovedDocuments; d += 1) {
      for (let k = 0; k < options.unmovedPerDocument; k += 1) unmoved.push(watchedClient(survivor.child!.wsUrl, unmovedDocs[d]!, token, 'plain'));
    }
    await until(() => unmoved.every((c) => c.provider.isSynced), 30_000, 'the unmoved clients synced');

    const before = new MeasureWindow();
    const storm = new MeasureWindow();
    const latBefore: number[] = [];
    const latStorm: number[] = [];
    let sentBefore = 0;
    let sentStorm = 0;
    unmoved.forEach((c, i) => {
      const map = c.doc.getMap<number>(EDITS_MAP);
      const observer = (event: Y.YMapEvent<number>, transaction: Y.Transaction) => {
        if (transaction.local) return;
        const now = performance.now();
        for (const key of event.keysChanged) {
          const sentAt = map.get(key);
          if (typeof sentAt !== 'number') continue;
          if (before.has(sentAt)) latBefore.push(now - sentAt);
          else if (storm.has(sentAt)) latStorm.push(now - sentAt);
        }
      };
      map.observe(observer);
      stops.push(() => map.unobserve(observer));
      let seq = 0;
      stops.push(
        tickEvery(1000 / options.unmovedEditsPerSecond, () => {
          const now = performance.now();
          c.edit(`u${i}:${seq++}`, now);
          if (before.has(now)) sentBefore += 1;
          else if (storm.has(now)) sentStorm += 1;
        }),
      );
    });
    await Promise.all(loadgens.map((l, i) => l.request({ op: 'storm-watch', editEveryMs: options.movedEditEveryMs, tag: `m${i}` }, 'storm-watching')));
    await sleep(options.warmupMs);
    const busyBefore = await busyCores(500);
    before.open();
    await sleep(options.beforeMs);
    before.close();

    // What was acknowledged just before the kill, and whether the database held it right after
    // (before any reconnect: the provider waits 1 s, so the survivor has stored nothing of these yet).
    const ackedBeforeKill = (await Promise.all(loadgens.map((l) => l.request({ op: 'storm-acked' }, 'storm-acked')))).flatMap((r) => r.clients);
    const killedAt = epochNow();
    storm.open();
    log(`kill -9 ${victim.name}`);
    await victim.child!.kill9();
    victim.child = undefined;
    const atKill = new Map<string, Y.Map<unknown>>();
    for (const d of docs) atKill.set(d, (await storedDoc(d)).getMap(EDITS_MAP));
    const checkedMs = epochNow() - killedAt;
    let notDurableAtKill = 0;
    let ackedAtKill = 0;
    for (const c of ackedBeforeKill) {
      for (let n = 0; n <= c.acked; n += 1) {
        ackedAtKill += 1;
        if (!atKill.get(c.name)!.has(`${c.key}:${n}`)) notDurableAtKill += 1;
      }
    }
    log(`${notDurableAtKill} of ${ackedAtKill} edits acknowledged before the kill not in the database ${fmt(checkedMs, 0)} ms after it`);
    let lastLog = 0;
    await until(
      async () => {
        const status = await Promise.all(loadgens.map((l) => l.request({ op: 'storm-status', since: killedAt }, 'storm-status')));
        const resynced = status.reduce((n, s) => n + s.resynced, 0);
        if (performance.now() - lastLog > 5_000) {
          lastLog = performance.now();
          log(`${resynced} of ${made} synced again ${fmt((epochNow() - killedAt) / 1000, 1)} s after the kill`);
        }
        return resynced >= made;
      },
      options.resyncMs,
      'every moved client synced again',
    ).catch((error: unknown) => log(String(error)));
    storm.close();
    log(`storm over after ${fmt(storm.seconds, 1)} s`);
    for (const stop of stops) stop();
    stops.length = 0;

    const reports: StormClientReport[] = (await Promise.all(loadgens.map((l) => l.request({ op: 'storm-report', since: killedAt, drainMs: 30_000 }, 'storm-reported', 120_000)))).flatMap((r) => r.clients);
    await until(() => unmoved.every((c) => c.provider.isSynced && !c.provider.hasUnsyncedChanges), 30_000, 'the unmoved clients acknowledged').catch(() => undefined);

    // The killed node's claims: re-claimed by the survivor as its clients come back, or released by a sweep.
    const { stale: staleAfter, inUse: claimsInUse } = await staleClaims(fleet, docs);

    const resyncs: number[] = [];
    let neverResynced = 0;
    let notDisconnected = 0;
    let failedAttempts = 0;
    let clientsWithFailedAttempts = 0;
    let clientsRefused = 0;
    let clientsRefusedResynced = 0;
    const refusals = new Map<string, number>();
    for (const r of reports) {
      if (!r.outage) notDisconnected += 1;
      else if (r.outage[1] > 0) resyncs.push(r.outage[1] - killedAt);
      else neverResynced += 1;
      if (r.closesAfter > 1) {
        failedAttempts += r.closesAfter - 1;
        clientsWithFailedAttempts += 1;
      }
      if (Object.keys(r.refusals).length > 0) {
        clientsRefused += 1;
        if (r.outage && r.outage[1] > 0) clientsRefusedResynced += 1;
        mergeCounts(refusals, Object.entries(r.refusals));
      }
    }
    for (const c of unmoved) mergeCounts(refusals, c.watch.refusals);

    // Stock stores a document 2 s after its last change (at most 10 s): its rows are read after that.
    if (system === 'stock') await sleep(STOCK_STORE_WAIT_MS);
    // Acknowledged edits in the log: the moved clients' and the unmoved ones'.
    let movedAcked = 0;
    let movedWritten = 0;
    let lostMovedAcked = 0;
    const stored = new Map<string, Y.Map<unknown>>();
    const storedMap = async (sessionId: string) => {
      let m = stored.get(sessionId);
      if (!m) stored.set(sessionId, (m = (await storedDoc(sessionId)).getMap(EDITS_MAP)));
      return m;
    };
    for (const r of reports) {
      const map = await storedMap(r.name);
      movedWritten += r.written + 1;
      for (let n = 0; n <= r.acked; n += 1) {
        movedAcked += 1;
        if (!map.has(`${r.key}:${n}`)) lostMovedAcked += 1;
      }
    }
    let unmovedAcked = 0;
    let lostUnmovedAcked = 0;
    for (const [i, c] of unmoved.entries()) {
      const map = await storedMap(unmovedDocs[Math.floor(i / options.unmovedPerDocument)]!);
      for (let n = 0; n <= c.watch.acked; n += 1) {
        unmovedAcked += 1;
        if (!map.has(`u${i}:${n}`)) lostUnmovedAcked += 1;
      }
    }
    if (system === 'stock') refusals.delete('close Reset Connection');
    return {
      system,
      ackedAtKill,
      notDurableAtKill,
      checkedMs,
      connected: made,
      resync: summarize(resyncs),
      neverResynced,
      notDisconnected,
      failedAttempts,
      clientsWithFailedAttempts,
      refusals,
      clientsRefused,
      clientsRefusedResynced,
      before: { latency: summarize(latBefore), sent: sentBefore },
      storm: { latency: summarize(latStorm), sent: sentStorm, seconds: storm.seconds },
      movedAcked,
      movedWritten,
      lostMovedAcked,
      unmovedAcked,
      lostUnmovedAcked,
      staleClaims: staleAfter,
      claimsInUse,
      balancerFailures: fleet.balancer.connectFailures,
      balancerDropped: fleet.balancer.dropped,
      busyBefore,
    };
  } finally {
    for (const stop of stops) stop();
    for (const c of unmoved) c.destroy();
    await Promise.all(loadgens.map((l) => l.close()));
    await fleet.close();
    await db.drop();
  }
}

const ms = (x: number) => fmt(x, 1);

function renderStorm(r: StormResult, o: StormOptions, run: StormRun, startedAt: Date): string {
  const lines: string[] = [];
  const stock = r.system === 'stock';
  lines.push(`## Reconnect storm: a ${stock ? 'stock Hocuspocus + extension-redis' : ''} node holding ${r.connected} connections killed with -9 — loaded machine`.replace('a  node', 'a node'));
  lines.push(`- Command: \`${run.command}\`${stock ? ' with `BENCH_STORM_TARGET=stock`' : ''}; ${startedAt.toISOString()}; ${gitFacts()}; machine busy before the window: ${fmt(r.busyBefore, 2)} cores (other agents' work shares these 2 cores: loaded-machine figures)`);
  lines.push(
    `- Two ${stock ? 'stock (`bench/stock-server.ts`: extension-database, one row of the whole document per document, + extension-redis; the balancer checks `/`)' : 'of our (node transport)'} nodes (one PostgreSQL, one Redis) behind the polling balancer. Node 0 holds ${r.connected} plain HocuspocusProvider connections (${o.documents} documents, from ${o.loadgens} load-generator processes, opened through the balancer, each client editing every ${o.movedEditEveryMs / 1000} s; the provider's reconnect defaults: 1 s doubling with jitter). Node 1 serves ${o.unmovedDocuments * o.unmovedPerDocument} unmoved clients (${o.unmovedDocuments} documents × ${o.unmovedPerDocument}, ${o.unmovedEditsPerSecond} edits/s each, in the bench process). Node 0 is killed with -9; the storm window runs until every moved client is synced again.`,
  );
  lines.push('');
  lines.push('| moved clients | synced again | never synced again | kill → synced again p50 ms | p99 ms | max ms | failed reconnect attempts (clients) | refusals seen (clients; of them synced in the end) |');
  lines.push('|---|---|---|---|---|---|---|---|');
  lines.push(
    `| ${r.connected} | ${r.resync.n} | ${r.neverResynced}${r.notDisconnected ? ` (+${r.notDisconnected} never disconnected)` : ''} | ${fmt(r.resync.p50, 0)} | ${fmt(r.resync.p99, 0)} | ${fmt(r.resync.max, 0)} | ${r.failedAttempts} (${r.clientsWithFailedAttempts}) | ${formatCounts(r.refusals)} (${r.clientsRefused}; ${r.clientsRefusedResynced}) |`,
  );
  lines.push('');
  lines.push('| unmoved clients\' deliveries | edits sent | p50 ms | p99 ms | max (peak) ms |');
  lines.push('|---|---|---|---|---|');
  lines.push(`| before the kill (${fmt(o.beforeMs / 1000, 0)} s) | ${r.before.sent} | ${ms(r.before.latency.p50)} | ${ms(r.before.latency.p99)} | ${ms(r.before.latency.max)} |`);
  lines.push(`| during the storm (${fmt(r.storm.seconds, 1)} s) | ${r.storm.sent} | ${ms(r.storm.latency.p50)} | ${ms(r.storm.latency.p99)} | ${ms(r.storm.latency.max)} |`);
  lines.push('');
  lines.push(`- Acknowledged before the kill but not in the database ${fmt(r.checkedMs, 0)} ms after it (read before any client reconnected; what a client that is gone too would lose for good): **${r.notDurableAtKill}** of ${r.ackedAtKill}.`);
  lines.push(`- Acknowledged edits missing from the PostgreSQL log after the storm${stock ? ` (read ${STOCK_STORE_WAIT_MS / 1000} s later: stock stores at most 10 s after a change)` : ''} (the moved clients' include those acknowledged by the killed node just before the kill, and those made while reconnecting): moved clients **${r.lostMovedAcked}** of ${r.movedAcked} (${r.movedWritten} written), unmoved **${r.lostUnmovedAcked}** of ${r.unmovedAcked}.`);
  lines.push(`- Awareness claims in Redis naming a node that is not alive, once every moved client had synced and reported: **${r.staleClaims}** of ${r.claimsInUse} naming a node.`);
  lines.push(`- Balancer: ${r.balancerFailures} backend connections refused (the dead node, each retried on the survivor), ${r.balancerDropped} client connections dropped.`);
  return lines.join('\n');
}

export async function runStorm(run: StormRun): Promise<string> {
  const startedAt = new Date();
  const options = STORM_SIZES[run.size];
  const system = process.env.BENCH_STORM_TARGET === 'stock' ? 'stock' : 'ours';
  if (process.env.BENCH_STORM_TARGET && !['ours', 'stock'].includes(process.env.BENCH_STORM_TARGET)) {
    throw new Error(`BENCH_STORM_TARGET must be ours or stock, not ${JSON.stringify(process.env.BENCH_STORM_TARGET)}`);
  }
  const r = await measureStorm(options, system);
  writeSection(run.resultsFile, system === 'stock' ? run.section.replace(/^storm/, 'storm-stock') : run.section, renderStorm(r, options, run, startedAt));
  const summary = `storm (${system}): ${r.connected} moved, not durable at the kill ${r.notDurableAtKill} of ${r.ackedAtKill}, synced again p50/p99/max ${fmt(r.resync.p50, 0)}/${fmt(r.resync.p99, 0)}/${fmt(r.resync.max, 0)} ms, never ${r.neverResynced}; unmoved delivery p99 before ${ms(r.before.latency.p99)} ms, storm ${ms(r.storm.latency.p99)} ms (peak ${ms(r.storm.latency.max)}); refusals ${formatCounts(r.refusals)}; lost acked ${r.lostMovedAcked}/${r.lostUnmovedAcked}`;
  const problems = [
    r.notDurableAtKill > 0 ? `${r.notDurableAtKill} acknowledged edits not in the database at the kill` : '',
    r.lostMovedAcked + r.lostUnmovedAcked > 0 ? 'acknowledged edits lost' : '',
    r.movedAcked === 0 ? 'no moved client had an acknowledged edit: nothing checked' : '',
    r.neverResynced + r.notDisconnected > 0 ? `${r.neverResynced + r.notDisconnected} moved clients not synced again` : '',
    r.staleClaims > 0 ? `${r.staleClaims} claims of the killed node left` : '',
    r.clientsRefused > r.clientsRefusedResynced ? 'refused clients that never synced again' : '',
  ].filter(Boolean);
  // Stock's losses are what the comparison measures, not a failure of the run.
  if (problems.length > 0 && system === 'ours') throw new Error(`${summary}\nstorm: ${problems.join('; ')}`);
  if (problems.length > 0) return `${summary}\nstock: ${problems.join('; ')}`;
  return summary;
}
