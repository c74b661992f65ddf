/**
 * A rolling restart under a steady editing load, a scenario of bench/run.ts:
 * `npm run bench -- --only roll` (`--quick`, `--tiny`; `BENCH_ROLL_CLIENTS=typed` for our typed
 * client instead of plain HocuspocusProviders; `BENCH_ROLL_TARGET=stock` for three stock
 * Hocuspocus + extension-redis nodes; `BENCH_FLEET_TRANSPORT=uws` for ours on uWebSockets.js).
 *
 * Three of our nodes (child processes on one bench database and the real Redis, bench/lib/fleet.ts)
 * behind the /readyz-polling balancer (test/support/balancer.ts); N clients connected through it
 * (round-robin, so spread over the nodes), D documents of N/D editors each plus one "leaver" per
 * document that only shows a cursor. Every editor sets a new key of one map at a steady rate whose
 * value is its send time (one process, one clock); every other client of the document records the
 * delivery latency when the key arrives — however it arrives: a live update, or the sync after a
 * reconnect (so an edit that waited out a move counts with its whole wait). Each client shows a
 * cursor, set once and never moved.
 *
 * After a warm-up and a window "before", each node in turn gets SIGTERM (it drains: /readyz 503,
 * sockets closed with 1012, exits 0), the leavers of a third of the documents leave at that moment
 * (their cursors must vanish everywhere), and the node is started again (same NODE_ID, a new
 * port) and must pass the balancer's /readyz check before the next one goes. The "during" window
 * is from the first SIGTERM until the last node is back. Then the editing stops and the run waits
 * for convergence.
 *
 * Reported: delivery p50/p99/max before and during the roll; per node, the drain time, clients
 * moved and their time until synced again; acknowledged edits missing from the final documents
 * and from the PostgreSQL log (must be 0); written edits missing after convergence; time until
 * every client converged after the last restart; ghost cursors (a leaver's cursor still shown)
 * and missing ones (a live client's cursor not shown); every refusal the clients saw
 * (invalid_update, not_ready, authentication failures, close reasons other than a drain) and the
 * balancer's failed backend connections.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type * as Y from 'yjs';
import { createBenchDatabase } from '../lib/database.ts';
import { content, EDITS_MAP, formatCounts, loggedDocument, mergeCounts, staleClaims, stockStoredDocument, startFleet, until, watchedClient, type WatchedClient } from '../lib/fleet.ts';
import { gitFacts } from '../lib/machine.ts';
import { busyCores } from '../lib/procfs.ts';
import { writeSection } from '../lib/results-file.ts';
import { fmt, summarize, type Summary } from '../lib/stats.ts';
import { MeasureWindow, tickEvery } from '../lib/window.ts';
import { STOCK_STORE_WAIT_MS } from './storm.ts';

export interface RollOptions {
  /** Editing clients in all. */
  clients: number;
  editorsPerDocument: number;
  editsPerSecondPerClient: number;
  warmupMs: number;
  beforeMs: number;
  /** Longest wait for convergence after the last restart. */
  convergeMs: number;
}

export const ROLL_SIZES: Record<'full' | 'quick' | 'tiny', RollOptions> = {
  full: { clients: 300, editorsPerDocument: 6, editsPerSecondPerClient: 2, warmupMs: 3_000, beforeMs: 10_000, convergeMs: 60_000 },
  quick: { clients: 60, editorsPerDocument: 6, editsPerSecondPerClient: 2, warmupMs: 2_000, beforeMs: 5_000, convergeMs: 30_000 },
  tiny: { clients: 12, editorsPerDocument: 6, editsPerSecondPerClient: 2, warmupMs: 500, beforeMs: 1_000, convergeMs: 20_000 },
};

const NODES = 3;
/** Longest wait for every live cursor after convergence: past a plain provider's 15 s awareness renewal. */
const CURSORS_BACK_MS = 20_000;
/** The typed client re-announces at once: its cursors must be back within this. */
const TYPED_CURSORS_MS = 5_000;

export interface RollRun {
  size: keyof typeof ROLL_SIZES;
  resultsFile: string;
  command: string;
  section: string;
}

interface Step {
  node: string;
  exitCode: number | null;
  sawDraining: boolean;
  drainMs: number;
  restartReadyMs: number;
  moved: number;
  /** SIGTERM → synced again, per moved client. */
  resync: Summary;
}

export interface RollResult {
  system: 'ours' | 'stock';
  kind: 'plain' | 'typed';
  documents: number;
  editors: number;
  before: { sent: number; expected: number; delivered: number; latency: Summary };
  during: { sent: number; expected: number; delivered: number; latency: Summary; seconds: number };
  steps: Step[];
  acked: number;
  written: number;
  lostAckedLog: number;
  lostAckedDocs: number;
  lostWritten: number;
  convergedMs: number;
  converged: boolean;
  ghosts: number;
  /** Live cursors not shown by some live editor at convergence, how long until all were, and how many never were within CURSORS_BACK_MS. */
  missingAtConvergence: number;
  cursorsBackMs: number;
  missingCursors: number;
  /** Awareness claims in Redis naming a node that is not alive, after convergence. */
  staleClaims: number;
  claimsInUse: number;
  refusals: Map<string, number>;
  closes: Map<string, number>;
  balancerFailures: number;
  balancerDropped: number;
  busyBefore: number;
}

function log(message: string): void {
  process.stderr.write(`[roll] ${message}\n`);
}

async function connectAll(url: string, names: string[], token: string, kind: 'plain' | 'typed'): Promise<WatchedClient[]> {
  const out: WatchedClient[] = [];
  for (let i = 0; i < names.length; i += 20) {
    const batch = names.slice(i, i + 20).map((name) => watchedClient(url, name, token, kind, () => performance.now()));
    out.push(...batch);
    await until(() => batch.every((c) => c.provider.isSynced), 30_000, `${batch.length} clients synced`);
  }
  return out;
}

export async function measureRoll(options: RollOptions, kind: 'plain' | 'typed', system: 'ours' | 'stock' = 'ours'): Promise<RollResult> {
  const db = await createBenchDatabase();
  const fleet = await startFleet(db, NODES, {}, system);
  const stops: Array<() => void> = [];
  const clients: WatchedClient[] = [];
  try {
    await Promise.all(fleet.nodes.map((_, i) => fleet.start(i)));
    await Promise.all(fleet.nodes.map((_, i) => fleet.healthy(i)));
    const first = fleet.nodes[0]!;
    const documents = Math.max(1, Math.round(options.clients / options.editorsPerDocument));
    const docs = await first.target.newDocuments(first.child!, documents);
    const token = first.target.token();
    const editors = documents * options.editorsPerDocument;
    log(`${system}: ${editors} ${kind} editors and ${documents} leavers on ${documents} documents, through the balancer to ${NODES} nodes`);
    // Editor i edits document i % D; leaver d sits on document d.
    const editorClients = await connectAll(fleet.balancer.wsUrl, Array.from({ length: editors }, (_, i) => docs[i % documents]!), token, kind);
    const leavers = await connectAll(fleet.balancer.wsUrl, docs, token, kind);
    clients.push(...editorClients, ...leavers);
    const docOf = (c: WatchedClient) => (editorClients.includes(c) ? editorClients.indexOf(c) % documents : leavers.indexOf(c));
    editorClients.forEach((c, i) => c.setCursor(i, 0));
    leavers.forEach((c, d) => c.setCursor(-1 - d, 0));
    const left = new Set<WatchedClient>();
    /** Cursor states a live editor shows that it should not (a leaver's, once gone) and live mates' cursors it misses. */
    const cursorCheck = () => {
      let ghosts = 0;
      let missing = 0;
      for (const [i, c] of editorClients.entries()) {
        const states = c.provider.awareness!.getStates();
        const d = i % documents;
        for (const other of clients) {
          if (other === c || docOf(other) !== d) continue;
          const shown = (states.get(other.doc.clientID) as { cursor?: unknown } | undefined)?.cursor !== undefined;
          if (left.has(other) && shown) ghosts += 1;
          if (!left.has(other) && !shown) missing += 1;
        }
      }
      return { ghosts, missing };
    };
    await until(() => cursorCheck().missing === 0, 30_000, 'every cursor shown before the roll');

    // Deliveries: at every live editor, each key of another editor of its document, when it arrives.
    const before = new MeasureWindow();
    const during = new MeasureWindow();
    const latBefore: number[] = [];
    const latDuring: number[] = [];
    let sentBefore = 0;
    let sentDuring = 0;
    for (const c of editorClients) {
      const map = c.doc.getMap<number>(EDITS_MAP);
      const observer = (event: Y.YMapEvent<number>, transaction: Y.Transaction) => {
        if (transaction.local) return;
        const now = performance.now();
        for (const key of event.keysChanged) {
          const sentAt = map.get(key);
          if (typeof sentAt !== 'number') continue;
          if (before.has(sentAt)) latBefore.push(now - sentAt);
          else if (during.has(sentAt)) latDuring.push(now - sentAt);
        }
      };
      map.observe(observer);
      stops.push(() => map.unobserve(observer));
    }
    const period = 1000 / options.editsPerSecondPerClient;
    const editing: Array<() => void> = [];
    editorClients.forEach((c, i) => {
      let seq = 0;
      editing.push(
        tickEvery(period, () => {
          const now = performance.now();
          c.edit(`${i}:${seq++}`, now);
          if (before.has(now)) sentBefore += 1;
          else if (during.has(now)) sentDuring += 1;
        }),
      );
    });
    stops.push(...editing);
    await sleep(options.warmupMs);
    const busyBefore = await busyCores(500);
    before.open();
    await sleep(options.beforeMs);
    before.close();
    during.open();

    const steps: Step[] = [];
    for (const [k, node] of fleet.nodes.entries()) {
      const t0 = performance.now();
      log(`SIGTERM ${node.name}`);
      const exit = node.child!.stop(30_000);
      // A third of the leavers go while this node drains: their cursors must vanish everywhere.
      for (const [d, leaver] of leavers.entries()) {
        if (d % NODES !== k) continue;
        leaver.destroy();
        left.add(leaver);
      }
      const exitCode = await exit;
      const drainMs = performance.now() - t0;
      const sawDraining = fleet.balancer.sawDraining(node.name);
      await fleet.start(k);
      await fleet.healthy(k);
      const restartReadyMs = performance.now() - t0;
      const moved = editorClients.filter((c) => c.watch.outages.some(([closed]) => closed >= t0));
      log(`${node.name}: exit ${exitCode}, drained in ${fmt(drainMs, 0)} ms, ready again ${fmt(restartReadyMs, 0)} ms after the signal; ${moved.length} editors moved`);
      steps.push({ node: node.name, exitCode, sawDraining, drainMs, restartReadyMs, moved: moved.length, resync: summarize([]) });
      // The resync times of this step are read once the moved clients are back (below).
      const step = steps.at(-1)!;
      const stepStart = t0;
      const resyncs = () => moved.map((c) => c.watch.outages.find(([closed]) => closed >= stepStart)).map((o) => (o && o[1] > 0 ? o[1] - stepStart : Number.NaN));
      void until(() => resyncs().every((x) => !Number.isNaN(x)), 60_000, 'moved clients synced')
        .then(() => (step.resync = summarize(resyncs())))
        .catch(() => (step.resync = summarize(resyncs().filter((x) => !Number.isNaN(x)))));
    }
    during.close();
    const rollEnd = performance.now();
    for (const stop of editing) stop();

    // Convergence: every editor synced, nothing unacknowledged, one content per document.
    let converged = true;
    const convergedMs = await until(
      () =>
        editorClients.every((c) => c.provider.isSynced && !c.provider.hasUnsyncedChanges) &&
        docs.every((_, d) => new Set(editorClients.filter((_, i) => i % documents === d).map((c) => content(c.doc))).size === 1),
      options.convergeMs,
      'convergence after the last restart',
    ).catch(() => {
      converged = false;
      return performance.now() - rollEnd;
    });
    // Let the resync bookkeeping of the last step finish (bounded).
    await until(() => steps.every((s) => s.moved === 0 || s.resync.n > 0), 10_000, 'resync times').catch(() => undefined);
    // Ghosts are read at convergence (the leavers left long before); then the wait for every live
    // cursor (a plain provider's come back only at its 15 s awareness renewal, y-websocket#122).
    const { ghosts } = cursorCheck();
    const missingAtConvergence = cursorCheck().missing;
    const cursorsBackMs = await until(() => cursorCheck().missing === 0, CURSORS_BACK_MS, 'every cursor shown again').catch(() => Number.NaN);
    const missing = cursorCheck().missing;
    const { stale: stale, inUse: claimsInUse } = await staleClaims(fleet, docs);
    // Stock stores a document 2 s after its last change (at most 10 s): its rows are read after that.
    if (system === 'stock') await sleep(STOCK_STORE_WAIT_MS);
    // Nothing acknowledged is missing: not in any client's document, not in the log.
    let lostAckedLog = 0;
    let lostAckedDocs = 0;
    let lostWritten = 0;
    let acked = 0;
    let written = 0;
    for (const [d, sessionId] of docs.entries()) {
      const stored = (await (system === 'stock' ? stockStoredDocument(db, sessionId) : loggedDocument(db, sessionId))).getMap<number>(EDITS_MAP);
      const group = editorClients.filter((_, i) => i % documents === d);
      for (const [i, c] of editorClients.entries()) {
        if (i % documents !== d) continue;
        for (let n = 0; n <= c.watch.written; n += 1) {
          const key = `${i}:${n}`;
          const isAcked = n <= c.watch.acked;
          written += 1;
          if (isAcked) acked += 1;
          if (!stored.has(key)) {
            if (isAcked) lostAckedLog += 1;
            else lostWritten += 1;
          }
          if (isAcked && group.some((g) => !g.doc.getMap(EDITS_MAP).has(key))) lostAckedDocs += 1;
        }
      }
    }
    const refusals = new Map<string, number>();
    const closes = new Map<string, number>();
    for (const c of clients) {
      mergeCounts(refusals, c.watch.refusals);
      mergeCounts(closes, c.watch.closes);
    }
    // Stock closes every connection with reason "Reset Connection" when it stops: its drain, not a refusal.
    if (system === 'stock') refusals.delete('close Reset Connection');
    const mates = options.editorsPerDocument - 1;
    return {
      system,
      kind,
      documents,
      editors,
      before: { sent: sentBefore, expected: sentBefore * mates, delivered: latBefore.length, latency: summarize(latBefore) },
      during: { sent: sentDuring, expected: sentDuring * mates, delivered: latDuring.length, latency: summarize(latDuring), seconds: during.seconds },
      steps,
      acked,
      written,
      lostAckedLog,
      lostAckedDocs,
      lostWritten,
      convergedMs,
      converged,
      ghosts,
      missingAtConvergence,
      cursorsBackMs,
      missingCursors: missing,
      staleClaims: stale,
      claimsInUse,
      refusals,
      closes,
      balancerFailures: fleet.balancer.connectFailures,
      balancerDropped: fleet.balancer.dropped,
      busyBefore,
    };
  } finally {
    for (const stop of stops) stop();
    for (const c of clients) c.destroy();
    await fleet.close();
    await db.drop();
  }
}

const ms = (x: number) => fmt(x, 1);

export function renderRoll(r: RollResult, options: RollOptions, run: RollRun, startedAt: Date): string {
  const lines: string[] = [];
  const stock = r.system === 'stock';
  lines.push(`## Rolling restart of ${NODES} ${stock ? 'stock Hocuspocus + extension-redis' : 'of our'} nodes under load (${r.kind === 'typed' ? 'typed clients' : 'plain HocuspocusProvider clients'}) — loaded machine`);
  lines.push(
    `- Command: \`${run.command}\`${r.kind === 'typed' ? ' with `BENCH_ROLL_CLIENTS=typed`' : ''}${stock ? ' with `BENCH_ROLL_TARGET=stock`' : ''}; ${startedAt.toISOString()}; ${gitFacts()}; machine busy before the window: ${fmt(r.busyBefore, 2)} cores (other agents' work shares these 2 cores: absolute latencies are loaded-machine figures)`,
  );
  lines.push(
    `- ${r.editors} editing clients on ${r.documents} documents (${options.editorsPerDocument} each, ${options.editsPerSecondPerClient} edits/s each) plus one cursor-only leaver per document, all in the bench process, connected through the /readyz-polling balancer to ${NODES} ${stock ? 'stock' : 'of our'} nodes (${stock ? '' : 'node transport, '}one PostgreSQL, one Redis). Each node in turn: SIGTERM (drain), the leavers of a third of the documents leave, the node starts again and passes /readyz before the next. Delivery = an edit's arrival at each other editor of its document, timed from the send time inside the edit.`,
  );
  lines.push('');
  lines.push('| window | edits sent | deliveries / expected | p50 ms | p99 ms | max ms |');
  lines.push('|---|---|---|---|---|---|');
  lines.push(`| before the roll (${fmt(options.beforeMs / 1000, 0)} s) | ${r.before.sent} | ${r.before.delivered} / ${r.before.expected} | ${ms(r.before.latency.p50)} | ${ms(r.before.latency.p99)} | ${ms(r.before.latency.max)} |`);
  lines.push(`| during the roll (${fmt(r.during.seconds, 1)} s) | ${r.during.sent} | ${r.during.delivered} / ${r.during.expected} | ${ms(r.during.latency.p50)} | ${ms(r.during.latency.p99)} | ${ms(r.during.latency.max)} |`);
  lines.push('');
  lines.push('| node | exit code | balancer saw /readyz draining | SIGTERM → exited ms | SIGTERM → ready again ms | editors moved | SIGTERM → moved editor synced again p50 / p99 / max ms |');
  lines.push('|---|---|---|---|---|---|---|');
  for (const s of r.steps) {
    lines.push(`| ${s.node} | ${s.exitCode} | ${s.sawDraining ? 'yes' : '**no**'} | ${fmt(s.drainMs, 0)} | ${fmt(s.restartReadyMs, 0)} | ${s.moved} | ${fmt(s.resync.p50, 0)} / ${fmt(s.resync.p99, 0)} / ${fmt(s.resync.max, 0)} |`);
  }
  lines.push('');
  lines.push(`- Acknowledged edits lost: **${r.lostAckedLog}** missing from the PostgreSQL log, **${r.lostAckedDocs}** missing from a client's final document (of ${r.acked} acknowledged; ${r.written} written, ${r.lostWritten} written but unacknowledged edits missing from the log after convergence).`);
  lines.push(`- Convergence after the last restart (editing stopped; every editor synced, acknowledged, the same content per document): ${r.converged ? `${fmt(r.convergedMs, 0)} ms` : `**not within ${options.convergeMs / 1000} s**`}.`);
  lines.push(
    `- Ghost cursors (a leaver's cursor still shown by a live editor, at convergence): **${r.ghosts}**. Live cursors not shown (editor × mate pairs, of ${r.editors * (options.editorsPerDocument)}): ${r.missingAtConvergence} at convergence, all shown again ${Number.isFinite(r.cursorsBackMs) ? `${fmt(r.cursorsBackMs, 0)} ms later` : `**not within ${CURSORS_BACK_MS / 1000} s (${r.missingCursors} still missing)**`}${r.kind === 'plain' ? ' (plain providers: y-protocols ignores a re-sent state at the clock of its removal until the 15 s awareness renewal, y-websocket#122 — README "Limits"; the typed client re-announces at once)' : ''}.`,
  );
  lines.push(`- Awareness claims in Redis naming a node that is not alive (after convergence): **${r.staleClaims}** of ${r.claimsInUse} naming a node.`);
  lines.push(`- Refusals seen by clients: **${formatCounts(r.refusals)}**. Closes seen: ${formatCounts(r.closes)}. Balancer: ${r.balancerFailures} backend connections refused (each retried on another node), ${r.balancerDropped} client connections dropped.`);
  if (stock) {
    lines.push(
      `- Stock = \`bench/stock-server.ts\` (\`Server\` + extension-database, one row of the whole document per document, + extension-redis), the balancer checking \`/\` (stock has no /readyz). On SIGTERM stock's \`Server\` closes its listener, closes every connection with reason "Reset Connection" (not counted as a refusal above), flushes its pending stores and exits 0; it acknowledges an edit once applied in memory, before any store. "Missing from the PostgreSQL log" reads its stored rows ${STOCK_STORE_WAIT_MS / 1000} s after convergence (it stores at most 10 s after a change).`,
    );
  } else {
    lines.push(`- Stock Hocuspocus + extension-redis doing the same roll: \`BENCH_ROLL_TARGET=stock\` (section \`roll-stock\`).`);
  }
  return lines.join('\n');
}

export async function runRoll(run: RollRun): Promise<string> {
  const startedAt = new Date();
  const kind = process.env.BENCH_ROLL_CLIENTS === 'typed' ? 'typed' : 'plain';
  if (process.env.BENCH_ROLL_CLIENTS && !['typed', 'plain'].includes(process.env.BENCH_ROLL_CLIENTS)) {
    throw new Error(`BENCH_ROLL_CLIENTS must be plain or typed, not ${JSON.stringify(process.env.BENCH_ROLL_CLIENTS)}`);
  }
  const system = process.env.BENCH_ROLL_TARGET === 'stock' ? 'stock' : 'ours';
  if (process.env.BENCH_ROLL_TARGET && !['ours', 'stock'].includes(process.env.BENCH_ROLL_TARGET)) {
    throw new Error(`BENCH_ROLL_TARGET must be ours or stock, not ${JSON.stringify(process.env.BENCH_ROLL_TARGET)}`);
  }
  if (system === 'stock' && kind === 'typed') throw new Error('BENCH_ROLL_TARGET=stock runs plain providers only (the typed client needs our server)');
  const options = ROLL_SIZES[run.size];
  const r = await measureRoll(options, kind, system);
  const section = system === 'stock' ? 'roll-stock' : kind === 'typed' ? 'roll-typed' : 'roll';
  writeSection(run.resultsFile, run.section.replace(/^roll/, section), renderRoll(r, options, run, startedAt));
  const problems = [
    r.lostAckedLog + r.lostAckedDocs > 0 ? `${r.lostAckedLog + r.lostAckedDocs} acknowledged edits lost` : '',
    !r.converged ? 'no convergence' : '',
    r.ghosts > 0 ? `${r.ghosts} ghost cursors` : '',
    r.missingCursors > 0 ? `${r.missingCursors} cursors missing after ${CURSORS_BACK_MS / 1000} s` : '',
    r.kind === 'typed' && !(r.cursorsBackMs <= TYPED_CURSORS_MS) ? `typed clients' cursors not all back within ${TYPED_CURSORS_MS / 1000} s` : '',
    r.staleClaims > 0 ? `${r.staleClaims} claims of dead nodes left` : '',
    r.refusals.size > 0 ? `refusals: ${formatCounts(r.refusals)}` : '',
    r.steps.some((s) => s.exitCode !== 0) ? 'a drain did not exit 0' : '',
  ].filter(Boolean);
  const summary = `roll (${system}, ${kind}): delivery p99 before ${ms(r.before.latency.p99)} ms, during ${ms(r.during.latency.p99)} ms; lost acked ${r.lostAckedLog}/${r.lostAckedDocs}; converged ${fmt(r.convergedMs, 0)} ms; ghosts ${r.ghosts}; cursors back ${fmt(r.cursorsBackMs, 0)} ms; refusals ${formatCounts(r.refusals)}`;
  // Stock's losses and refusals are what the comparison measures, not a failure of the run.
  if (problems.length > 0 && system === 'ours') throw new Error(`${summary}\nroll: ${problems.join('; ')}`);
  if (problems.length > 0) return `${summary}\nstock: ${problems.join('; ')}`;
  return summary;
}
