/**
 * The harness's sections of bench/RESULTS.md: `summary` (the issue's table — each figure ours,
 * stock and the ratio with the spread over the rounds, and whether each target is met),
 * `table` (every round of every table scenario), `profile` (CPU profiles side by side).
 */
import type { AckRateOptions, AckRateResult } from '../scenarios/ack-rate.ts';
import type { ColdLoadOptions, ColdLoadResult } from '../scenarios/cold-load.ts';
import type { ConnectionsOptions, ConnectionsResult } from '../scenarios/connections.ts';
import type { FanoutOptions, FanoutResult } from '../scenarios/fanout.ts';
import type { ProfileSummary } from './cpuprofile.ts';
import { FIGURES, median, ratios, ratioText, spread, verdicts, withSpread, type Values } from './figures.ts';
import type { MachineFacts } from './machine.ts';
import type { TargetResult } from './report.ts';
import { fmt } from './stats.ts';

export interface RoundRecord {
  round: number;
  id: string;
  label: string;
  /** Cores the whole machine was busy over the second before this server started. */
  busyBefore: number;
  connections?: ConnectionsResult;
  fanout?: FanoutResult;
  ackRate?: AckRateResult;
  coldLoad?: ColdLoadResult;
  error?: string;
  /** Measured, but with something to say (e.g. connections the server refused). */
  warnings?: string[];
  stopExitCode?: number | null;
}

export interface SizeFacts extends MachineFacts {
  command: string;
  size: string;
  rounds: number;
  scenarios: readonly string[];
  sizes: { connections: ConnectionsOptions; fanout: FanoutOptions; ackRate: AckRateOptions; coldLoad: ColdLoadOptions };
  skipped: TargetResult[];
}

const MB = 1024 * 1024;

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function servers(records: RoundRecord[]): Array<{ id: string; label: string }> {
  const seen = new Map<string, string>();
  for (const r of records) if (!seen.has(r.id)) seen.set(r.id, r.label);
  const order = ['stock', 'ours-node', 'ours-uws'];
  return [...seen].map(([id, label]) => ({ id, label })).sort((a, b) => order.indexOf(a.id) - order.indexOf(b.id));
}

function header(facts: SizeFacts, title: string): string {
  return [
    `## ${title}`,
    '',
    `- Command: \`${facts.command}\` (size **${facts.size}**, ${facts.rounds} round(s); each round starts every server afresh, and again after the connections scenario for the steady-state ones, the servers' order rotating between rounds)`,
    `- Date: ${facts.startedAt.toISOString()} (took ${facts.durationSeconds.toFixed(0)} s)`,
    `- Machine: \`nproc\` = ${facts.nproc} (${facts.cpuModel}), Node ${facts.node}; PostgreSQL ${facts.postgres.server_version ?? '?'} on loopback (synchronous_commit=${facts.postgres.synchronous_commit ?? '?'}, fsync=${facts.postgres.fsync ?? '?'})`,
    `- Code: ${facts.git}`,
    '- stock = `bench/stock-server.ts`: Hocuspocus 4.7 `Server` on its default transport (ws) + `@hocuspocus/extension-database` on the same PostgreSQL; ours = `server/main.ts` on the node and the uWebSockets.js transports. Every server is its own process on port 0; the clients run in load-generator processes (connections, ack-rate) or the bench process (fan-out, cold load), never in the server; server CPU and RSS are read from the server process (/proc).',
  ].join('\n');
}

function busyNote(records: RoundRecord[], cores: number): string {
  const before = records.map((r) => r.busyBefore);
  const windows = records.flatMap((r) => (r.fanout ? [r.fanout.otherCores] : []));
  const b = spread(before);
  const w = spread(windows);
  const busy = b.max > 0.3 || w.max > 0.25;
  return `${busy ? '**The machine was shared and busy during this run**' : 'The machine was quiet during this run'}: whole-machine busy cores in the second before each server started: median ${fmt(median(before), 2)} (${fmt(b.min, 2)}–${fmt(b.max, 2)}) of ${cores}; other work during the fan-out windows (machine busy time minus server, PostgreSQL backends and the bench process): median ${fmt(median(windows), 2)} (${fmt(w.min, 2)}–${fmt(w.max, 2)}) cores.${busy ? ' Absolute numbers are disturbed by other work; ratios (same run, servers alternating) are fairer, but rerun on a quiet machine before trusting a difference inside the spread.' : ''}`;
}

export function renderSummary(values: Values, records: RoundRecord[], facts: SizeFacts, plain = false): string {
  const list = servers(records);
  const ours = list.filter((s) => s.id !== 'stock');
  const rows: string[][] = [];
  for (const def of FIGURES) {
    const byServer = values.get(def.id);
    if (!byServer) continue;
    const vs = verdicts(def, values);
    const verdictText = def.targets.length === 0
      ? 'no target'
      : vs.map((v) => `${v.server.replace('ours-', '')} ${v.text.replace(/ on (node|uWebSockets\.js|both)$/, '')}: ${v.met === undefined ? 'not measured' : v.met ? '**met**' : '**not met**'}`).join('; ');
    rows.push([
      def.label,
      def.unit,
      ...list.map((s) => withSpread(byServer.get(s.id), def.digits)),
      ...ours.map((s) => ratioText(ratios(byServer.get(s.id), byServer.get('stock')))),
      def.targets.map((t) => t.text).join(', ') || '—',
      verdictText,
    ]);
  }
  const head = ['figure', 'unit', ...list.map((s) => s.label), ...ours.map((s) => `${s.label} / stock`), 'target', 'met?'];
  if (plain) {
    return rows.map((r) => r.map((c, i) => `${head[i]}: ${c.replace(/\*\*/g, '')}`).join(' | ')).join('\n');
  }
  const s = facts.sizes;
  const parts = [
    header(facts, 'Summary: the efficiency table, ours vs stock Hocuspocus (same machine, same run)'),
    busyNote(records, facts.nproc),
    `Each cell: the median over the rounds (min–max in brackets). Ratio = ours / stock: the ratio of the medians, in brackets the min–max of the same-round ratios. A target is judged on the ratio of the medians (on the median for absolute targets).${facts.skipped.length ? ` Skipped: ${facts.skipped.map((t) => `${t.label} (${t.skipped})`).join('; ')}.` : ''}`,
    table(head, rows),
    [
      'What each figure is (details per round in the next section):',
      `- **server CPU per delivery**: ${s.fanout.documents} documents × ${s.fanout.clientsPerDocument - (s.fanout.writersPerDocument ?? 0)} readers, ${s.fanout.writersPerDocument ?? s.fanout.clientsPerDocument} writer(s) per document at ${s.fanout.editsPerSecondPerClient * (s.fanout.writersPerDocument ?? s.fanout.clientsPerDocument)} updates/s per document; server process CPU (/proc utime+stime) in a ${s.fanout.windowMs / 1000} s window after ${s.fanout.warmupMs / 1000} s warm-up, per 1,000 deliveries of the window's edits. **delivery latency p99**: same window, send → arrival at each reader.`,
      `- **memory per idle authenticated connection**: ${s.connections.connections.toLocaleString('en-US')} connections on ${s.connections.documents} documents from ${s.connections.loadgens} load-generator processes into a freshly started server whose documents one connection each has loaded first: (RSS with all connected − RSS just before) / connections (a document's memory is not a connection's; both servers' documents hold the same initial canvas, stock's seeded as its stock_documents rows, so each connection is sent the same document). **accept rate**: the same connections, ${s.connections.concurrency} in flight per load generator: connections authenticated and synced / wall time from the first connect to the last synced (ours checks a JWT; stock accepts any token).`,
      `- **durable acknowledgements**: ${s.ackRate.clients} clients on ${s.ackRate.clients} documents (one node) edit at a stepped offered rate (${s.ackRate.rates.map((r) => r.toLocaleString('en-US')).join(', ')} edits/s, ${s.ackRate.windowMs / 1000} s windows, after one unmeasured step at the lowest rate); the highest acknowledged rate whose p99 (edit → acknowledgement) stayed under ${s.ackRate.p99BoundMs} ms with ≥ 95 % of the window's edits acknowledged. Ours acknowledges after the PostgreSQL commit; stock acknowledges before it stores anything, so its figure measures a weaker promise.`,
      `- **cold load**: the first client opening a session whose log holds ${s.coldLoad.updates.toLocaleString('en-US')} updates (connect → synced, median of ${s.coldLoad.loads} per round), before and after \`UpdateLog.compact\` merged them into one snapshot row; stock stores only the merged document (one row), so its two figures are the same kind of load.`,
    ].join('\n'),
  ];
  const failures = records.filter((r) => r.error);
  if (failures.length) parts.push(`Failures (that server's later scenarios in that round were not run):\n\n${failures.map((r) => `- round ${r.round}, ${r.label}: ${r.error}`).join('\n')}`);
  const warned = records.filter((r) => r.warnings?.length);
  if (warned.length) parts.push(`Notes:\n\n${warned.map((r) => `- round ${r.round}, ${r.label}: ${r.warnings!.join('; ')}`).join('\n')}`);
  return parts.join('\n\n');
}

export function renderTableDetails(records: RoundRecord[], facts: SizeFacts): string {
  const parts = ['## The table\'s scenarios, round by round'];
  const by = (f: (r: RoundRecord) => string[] | undefined) => records.flatMap((r) => {
    const cells = f(r);
    return cells ? [[`${r.round}`, r.label, ...cells]] : r.error ? [[`${r.round}`, r.label, `failed: ${r.error}`]] : [];
  });
  if (facts.scenarios.includes('connections')) {
    parts.push(`### Idle authenticated connections (${facts.sizes.connections.connections.toLocaleString('en-US')} on ${facts.sizes.connections.documents} documents)`);
    parts.push(
      table(
        ['round', 'server', 'connected', 'failed', 'seconds', 'accepted / s', 'connect → synced p50 / p99 ms', 'RSS before MB', 'RSS after MB', 'kB per connection', 'server CPU s / 1,000 connections', 'write syscalls / connection'],
        by((r) => {
          const c = r.connections;
          return c && [fmt(c.connections, 0), fmt(c.failed, 0), fmt(c.seconds, 2), fmt(c.acceptedPerSecond, 0), `${fmt(c.connectMs.p50)} / ${fmt(c.connectMs.p99)}`, fmt(c.baselineBytes / MB, 1), fmt(c.loadedBytes / MB, 1), fmt(c.perConnectionBytes / 1024, 1), fmt(c.serverCpuPer1000, 3), c.serverWritesPerConnection === undefined ? '—' : fmt(c.serverWritesPerConnection, 1)];
        }),
      ),
    );
  }
  if (facts.scenarios.includes('fanout')) {
    parts.push('### Fan-out');
    parts.push('Server CPU by thread (`/proc/<pid>/task`): `main` = the JavaScript event loop, `V8Worker` = V8\'s garbage-collector and compiler helpers, `WorkerThread` = worker_threads (our update guard), other = the rest (libuv pool, uWS has none of its own).');
    parts.push(
      table(
        ['round', 'server', 'delivered / expected', 'deliveries / s', 'p50 ms', 'p99 ms', 'server CPU ms / 1,000', 'of it by thread: main / V8Worker / WorkerThread / other', 'PostgreSQL CPU ms / 1,000', 'write syscalls / 1,000', 'RSS start / peak MB', 'client CPU s', 'client loop p99 ms', 'other load, cores'],
        by((r) => {
          const f = r.fanout;
          return f && [`${fmt(f.delivered, 0)} / ${fmt(f.expectedDeliveries, 0)}`, fmt(f.deliveredPerSecond, 0), fmt(f.latency.p50), fmt(f.latency.p99), fmt(f.serverCpuPer1000 * 1000, 1), byThread(f.serverThreadsPer1000), fmt(f.pgCpuPer1000 * 1000, 1), fmt(f.serverWritesPer1000, 0), `${fmt(f.rss.start / MB, 1)} / ${fmt(f.rss.peak / MB, 1)}`, fmt(f.clientCpuSeconds, 2), fmt(f.clientLoopDelayP99Ms), fmt(f.otherCores, 2)];
        }),
      ),
    );
  }
  if (facts.scenarios.includes('ack-rate')) {
    parts.push(`### Acknowledgements at stepped rates (${facts.sizes.ackRate.clients} clients; steps until p99 ≥ ${facts.sizes.ackRate.p99BoundMs} ms or < 95 % acknowledged)`);
    parts.push(
      table(
        ['round', 'server', 'steps: offered → acknowledged/s, p99 ms (server cores, load-generator cores; PostgreSQL WAL bytes per acknowledged edit, and our update log group commits per second)', `best under ${facts.sizes.ackRate.p99BoundMs} ms, edits / s`],
        by((r) => {
          const a = r.ackRate;
          return a && [
            a.steps
              .map(
                (s) =>
                  `${fmt(s.offered, 0)} → ${fmt(s.acknowledgedPerSecond, 0)}, ${fmt(s.latency.p99, 1)} (${fmt(s.serverCpuCores, 2)}, ${fmt(s.clientCpuCores, 2)}${s.pg ? `; ${fmt(s.pg.walBytesPerEdit, 0)} B WAL / edit${s.pg.commitsPerSecond === null ? '' : `, ${fmt(s.pg.commitsPerSecond, 0)} commits/s`}` : ''})`,
              )
              .join('; '),
            `${fmt(a.bestUnderBound, 0)}${a.neverCrossed ? ' (the last step stayed under: a lower bound)' : ''}`,
          ];
        }),
      ),
    );
  }
  if (facts.scenarios.includes('cold-load')) {
    parts.push(`### Cold load (${facts.sizes.coldLoad.updates.toLocaleString('en-US')} updates)`);
    parts.push(
      table(
        ['round', 'server', 'rows before', 'load ms before', 'server CPU ms before', 'rows after compaction', 'load ms after', 'server CPU ms after', 'second client (loaded document) ms', 'update bytes / merged state bytes'],
        by((r) => {
          const c = r.coldLoad;
          return c && [fmt(c.before.rows, 0), fmt(c.before.loadMs.p50, 1), fmt(c.before.serverCpuMs.p50, 0), fmt(c.after.rows, 0), fmt(c.after.loadMs.p50, 1), fmt(c.after.serverCpuMs.p50, 0), fmt(c.after.warmConnectMs.p50, 1), `${fmt(c.updateBytes, 0)} / ${fmt(c.stateBytes, 0)}`];
        }),
      ),
    );
  }
  const stops = records.filter((r) => r.stopExitCode !== undefined && r.stopExitCode !== 0);
  if (stops.length) parts.push(`SIGTERM exit codes other than 0: ${stops.map((r) => `round ${r.round} ${r.label}: ${String(r.stopExitCode)}`).join('; ')}.`);
  return parts.join('\n\n');
}

export interface ProfileEntry {
  id: string;
  label: string;
  profile?: ProfileSummary;
  file?: string;
  fanout?: FanoutResult | undefined;
  error?: string;
  skipped?: string;
}

export function renderProfiles(profiles: ProfileEntry[], meta: { command: string; started: Date; size: string; fanout: FanoutOptions }): string {
  const ok = profiles.filter((p) => p.profile);
  const parts = [
    '## CPU profiles of the fan-out, ours beside stock',
    `- Command: \`${meta.command}\` (size ${meta.size}); ${meta.started.toISOString()}. Each server started with \`NODE_OPTIONS=--cpu-prof\` (V8 sampling profiler, 1 ms interval; written at the SIGTERM exit), the fan-out of the summary (${meta.fanout.documents} documents × ${meta.fanout.clientsPerDocument - (meta.fanout.writersPerDocument ?? 0)} readers, ${meta.fanout.windowMs / 1000} s window). Main thread only (ours also runs the update guard in a worker thread, not shown). Self time excludes \`(idle)\`; shares are of the sampled non-idle time of the whole process life (start-up included). The profiler adds overhead: compare the columns, not these CPU figures with the summary's.`,
    `- Files (not kept in the repository): ${profiles.map((p) => `${p.label}: ${p.file ? `\`${p.file}\`` : p.skipped ? `skipped (${p.skipped})` : `failed (${p.error})`}`).join('; ')}. Open one in Chrome DevTools (Performance → load) or speedscope for a flame graph.`,
  ];
  parts.push(
    table(
      ['server', 'samples counted', 'non-idle sampled s', 'window deliveries', 'server CPU ms / 1,000 deliveries (profiled)', 'RSS start / peak / end of window MB'],
      ok.map((p) => [p.label, p.profile!.windowed ? 'window' : '*whole life* (no sample matched the window)', fmt(p.profile!.totalUs / 1e6, 2), fmt(p.fanout?.delivered, 0), fmt((p.fanout?.serverCpuPer1000 ?? Number.NaN) * 1000, 1), p.fanout ? `${fmt(p.fanout.rss.start / MB, 1)} / ${fmt(p.fanout.rss.peak / MB, 1)} / ${fmt(p.fanout.rss.end / MB, 1)}` : '—']),
    ),
  );
  const side = (pick: (p: ProfileSummary) => Array<{ name: string; share: number }>, title: string) => {
    const n = Math.max(0, ...ok.map((p) => pick(p.profile!).length));
    const rows: string[][] = [];
    for (let i = 0; i < n; i += 1) {
      rows.push([`${i + 1}`, ...ok.flatMap((p) => {
        const e = pick(p.profile!)[i];
        return e ? [`\`${e.name.replace(/\|/g, '\\|')}\``, `${(e.share * 100).toFixed(1)} %`] : ['', ''];
      })]);
    }
    return `### ${title}\n\n${table(['#', ...ok.flatMap((p) => [p.label, 'self'])], rows)}`;
  };
  if (ok.length) {
    parts.push(side((p) => p.origins, 'Self time by origin (npm package, Node internals, our files, V8)'));
    parts.push(side((p) => p.functions, 'Top functions by self time'));
  }
  return parts.join('\n\n');
}

/** ms per 1,000 deliveries by thread group: main / V8Worker / WorkerThread / the rest. */
function byThread(threads: Record<string, number> | undefined): string {
  if (!threads) return '—';
  const known = ['main', 'V8Worker', 'WorkerThread'];
  const other = Object.entries(threads).filter(([name]) => !known.includes(name)).reduce((sum, [, v]) => sum + v, 0);
  return [...known.map((name) => threads[name] ?? 0), other].map((v) => fmt(v * 1000, 1)).join(' / ');
}
