/** Renders the bench's results: a markdown section for RESULTS.md and a compact stdout table. */
import type { AckResult } from '../scenarios/ack.ts';
import type { DurabilityResult } from '../scenarios/durability.ts';
import type { FanoutOptions, FanoutResult } from '../scenarios/fanout.ts';
import type { HeldCommitResult } from '../scenarios/held-commit.ts';
import type { MemoryResult } from '../scenarios/memory.ts';
import { fmt, fmtRatio, ratio, type Summary } from './stats.ts';
import type { MachineFacts } from './machine.ts';

export interface TargetResult {
  id: string;
  label: string;
  skipped?: string;
  error?: string;
  ack?: Omit<AckResult, 'client' | 'documentName'>;
  durability?: DurabilityResult;
  heldCommit?: HeldCommitResult;
  /** A `SELECT 1` round trip and a one-row INSERT commit, measured just before this server's run. */
  commitFloor?: { roundTrip: Summary; commit: Summary };
  /** Measurements run twice because other work disturbed the first run. */
  reruns?: string[];
  /** Cores the machine was busy with before this server started (after waiting for quiet). */
  quietCores?: number;
  memory?: MemoryResult;
  fanout?: FanoutResult;
  /** Exit code of the final SIGTERM shutdown. */
  stopExitCode?: number | null;
}

export interface RunFacts extends MachineFacts {
  command: string;
  ackEdits: number;
  fanout: FanoutOptions;
  memory: { connections: number; documents: number };
}

const MB = 1024 * 1024;
const ms = (x: number | undefined) => fmt(x, 2);

type Row = { label: string; cells: string[] };

function table(head: string[], rows: Row[]): string {
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
  for (const r of rows) lines.push(`| ${[r.label, ...r.cells].join(' | ')} |`);
  return lines.join('\n');
}

/**
 * Rows for each target (values where it has them; a skipped or failed target says so), then one
 * "ours / stock" ratio row per target of ours, for the columns where a ratio means something.
 */
function withRatios(
  results: TargetResult[],
  values: (r: TargetResult) => Array<number | undefined>,
  format: Array<(x: number | undefined) => string>,
  ratioOf: boolean[],
): Row[] {
  const rows: Row[] = [];
  for (const r of results) {
    const v = values(r);
    const cells = v.map((x, i) => format[i]!(x));
    if (r.skipped) cells[0] = `skipped: ${r.skipped}`;
    else if (r.error && v.every((x) => x === undefined)) cells[0] = `failed: ${r.error}`;
    rows.push({ label: r.label, cells });
  }
  const stock = results.find((r) => r.id === 'stock');
  if (stock) {
    const s = values(stock);
    for (const r of results) {
      if (r === stock || r.skipped) continue;
      const o = values(r);
      rows.push({ label: `*${r.label} / stock*`, cells: o.map((x, i) => (ratioOf[i] ? `*${fmtRatio(ratio(x, s[i]))}*` : '')) });
    }
  }
  return rows;
}

/** Cores of other work above which a window's numbers are flagged as disturbed. */
const BUSY_FLAG_CORES = 0.25;

export function notes(results: TargetResult[], facts: RunFacts): string[] {
  const out: string[] = [];
  for (const r of results) {
    if (r.error) out.push(`**${r.label} failed:** ${r.error}`);
    const h = r.heldCommit;
    if (h && r.id.startsWith('ours') && h.acknowledged) {
      out.push(
        `**${r.label}: an edit was acknowledged (${ms(h.ackMs ?? undefined)} ms) while its write to \`${h.table}\` could not commit, and ${h.survived ? 'survived only because the statement went through' : 'was gone after kill -9'}** — the acknowledgement does not wait for its own commit (scenario 3b). Scenario 1's ack latency therefore measures waiting for the *previous* edit's commit, and scenario 3's ${r.durability?.surviving ?? '?'} / ${r.durability?.acknowledged ?? '?'} holds only because that commit finished within a millisecond of the acknowledgement.`,
      );
    }
    for (const rerun of r.reruns ?? []) out.push(`${r.label}: ran ${rerun}.`);
    if (r.quietCores !== undefined && r.quietCores > 0.3) {
      out.push(`${r.label}: the machine was still busy with other work (${r.quietCores.toFixed(2)} cores) when this server started.`);
    }
    if (r.ack && r.ack.otherCores > BUSY_FLAG_CORES) {
      out.push(`${r.label}: other processes kept ${r.ack.otherCores.toFixed(2)} cores busy during scenario 1.`);
    }
    if (r.fanout) {
      const f = r.fanout;
      if (f.otherCores > BUSY_FLAG_CORES) out.push(`${r.label}: other processes kept ${f.otherCores.toFixed(2)} cores busy during the fan-out window.`);
      if (f.delivered < f.expectedDeliveries) {
        out.push(`${r.label}: ${f.expectedDeliveries - f.delivered} of ${f.expectedDeliveries} deliveries of the window's edits had not arrived ${facts.fanout.drainMs} ms after it.`);
      }
      if (f.clientLoopDelayP99Ms > 20) {
        out.push(`${r.label}: the client process's event loop lagged (p99 ${ms(f.clientLoopDelayP99Ms)} ms) during the fan-out window; delivery latencies include that.`);
      }
    }
    if (r.stopExitCode !== undefined && r.stopExitCode !== 0) out.push(`${r.label}: SIGTERM shutdown exited with ${String(r.stopExitCode)}.`);
  }
  return out;
}

export function renderMarkdown(results: TargetResult[], facts: RunFacts): string {
  const f = facts.fanout;
  const pg = facts.postgres;
  const parts: string[] = [];
  parts.push('## Collaboration server: ours vs stock Hocuspocus (same machine, same run)');
  parts.push(
    [
      `- Command: \`${facts.command}\` (= \`node bench/run.ts\` with \`node_modules/.bin\` first on PATH, i.e. Node 24 from the \`node\` devDependency)`,
      `- Date: ${facts.startedAt.toISOString()} (took ${Math.round(facts.durationSeconds)} s)`,
      `- Machine: \`nproc\` = ${facts.nproc} (${facts.cpuModel}), Node ${facts.node}; every server, the clients and PostgreSQL share these cores`,
      `- PostgreSQL ${pg.server_version} on loopback: synchronous_commit=${pg.synchronous_commit}, fsync=${pg.fsync}, wal_sync_method=${pg.wal_sync_method}, commit_delay=${pg.commit_delay}`,
      `- Code: ${facts.git}`,
      '- stock = `bench/stock-server.ts`: `Server` + `@hocuspocus/extension-database` storing `Y.encodeStateAsUpdate` in `stock_documents`, default debounce (2 s / 10 s), no auth. ours = `server/main.ts` with `DATABASE_URL`, one process each, port 0, 127.0.0.1.',
      '- Ratios are ours / stock: below 1× means ours is lower (faster, cheaper, smaller).',
    ].join('\n'),
  );

  parts.push(`### 1. Acknowledgement latency\n\nOne HocuspocusProvider client, ${facts.ackEdits} sequential \`map.set\` edits (after 20 warm-up edits), each timed until the provider's \`unsyncedChanges\` event reports 0. Ours is designed to acknowledge after the PostgreSQL commit (see 3b for whether it does); stock acknowledges after applying in memory. "Other load" is CPU used meanwhile by processes outside this comparison. ¹ From the bench process just before this server's run: a one-row INSERT committed on its own into a WAL-logged table (one WAL flush — the floor under an acknowledgement that waits for a commit), and a \`SELECT 1\` round trip; fsync latency here moves with whatever else the disk is doing. ² From our server's \`GET /metrics\` over the measured edits: \`imageflow_update_log_commit_seconds\` (one group commit) and \`imageflow_ack_wait_seconds\` (an update waiting for its commit before its acknowledgement); stock has neither.`);
  parts.push(
    table(
      ['server', 'p50 ms', 'p99 ms', 'mean ms', 'max ms', 'server CPU ms / edit', 'PostgreSQL CPU ms / edit', 'other load, cores', 'commit¹ p50 ms', 'commit¹ p99 ms', '`SELECT 1`¹ p50 ms', 'server-reported² commit mean ms', 'server-reported² ack wait mean ms'],
      withRatios(
        results,
        (r) => [
          r.ack?.latency.p50,
          r.ack?.latency.p99,
          r.ack?.latency.mean,
          r.ack?.latency.max,
          r.ack?.serverCpuMsPerEdit,
          r.ack?.pgCpuMsPerEdit,
          r.ack?.otherCores,
          r.commitFloor?.commit.p50,
          r.commitFloor?.commit.p99,
          r.commitFloor?.roundTrip.p50,
          r.ack?.serverReported?.commitMeanMs,
          r.ack?.serverReported?.ackWaitMeanMs,
        ],
        [ms, ms, ms, ms, (x) => fmt(x, 3), (x) => fmt(x, 3), ms, ms, ms, ms, ms, ms],
        [true, true, true, true, true, true, false, false, false, false, false, false],
      ),
    ),
  );

  parts.push(
    `### 2. Throughput and fan-out\n\n${f.documents} documents × ${f.clientsPerDocument} clients, each client setting a new key ${f.editsPerSecondPerClient}×/s (value = send time); every other client of the document records the delivery latency. ${f.warmupMs / 1000} s warm-up, then a ${f.windowMs / 1000} s window: deliveries of the edits sent in the window, CPU of the server process (/proc utime+stime) and of the PostgreSQL backends connected to the bench database in the window.`,
  );
  parts.push(
    table(
      ['server', 'delivered / s', 'p50 ms', 'p99 ms', 'server CPU s / 1,000 deliveries', 'PostgreSQL CPU s / 1,000', 'server + PostgreSQL CPU s / 1,000', 'delivered / expected', 'client CPU s', 'client loop p99 ms', 'other load, cores'],
      withRatios(
        results,
        (r) => [
          r.fanout?.deliveredPerSecond,
          r.fanout?.latency.p50,
          r.fanout?.latency.p99,
          r.fanout?.serverCpuPer1000,
          r.fanout?.pgCpuPer1000,
          r.fanout ? r.fanout.serverCpuPer1000 + r.fanout.pgCpuPer1000 : undefined,
          r.fanout ? r.fanout.delivered / r.fanout.expectedDeliveries : undefined,
          r.fanout?.clientCpuSeconds,
          r.fanout?.clientLoopDelayP99Ms,
          r.fanout?.otherCores,
        ],
        [
          (x) => fmt(x, 0),
          ms,
          ms,
          (x) => fmt(x, 4),
          (x) => fmt(x, 4),
          (x) => fmt(x, 4),
          (x) => (x === undefined ? '—' : `${(x * 100).toFixed(1)} %`),
          (x) => fmt(x, 2),
          ms,
          ms,
        ],
        [true, true, true, true, true, true, false, false, false, false],
      ),
    ),
  );

  const threadNames = ['main', 'V8Worker', 'WorkerThread'];
  const threadOf = (r: TargetResult, name: string | null): number | undefined => {
    const t = r.fanout?.serverThreadsPer1000;
    if (!t) return undefined;
    if (name) return t[name] ?? 0;
    return Object.entries(t).reduce((sum, [n, v]) => (threadNames.includes(n) ? sum : sum + v), 0);
  };
  parts.push(
    'Where the server CPU of the window went, by thread (`/proc/<pid>/task`): `main` = the JavaScript event loop, `V8Worker` = V8\'s garbage-collector and compiler helpers, `WorkerThread` = worker_threads; and write system calls per 1,000 deliveries (`syscw` of `/proc/<pid>/io`; one per socket send unless sends are batched).',
  );
  parts.push(
    table(
      ['server', 'main s / 1,000', 'V8Worker s / 1,000', 'WorkerThread s / 1,000', 'other threads s / 1,000', 'write syscalls / 1,000 deliveries'],
      withRatios(
        results,
        (r) => [threadOf(r, 'main'), threadOf(r, 'V8Worker'), threadOf(r, 'WorkerThread'), threadOf(r, null), r.fanout?.serverWritesPer1000],
        [(x) => fmt(x, 4), (x) => fmt(x, 4), (x) => fmt(x, 4), (x) => fmt(x, 4), (x) => fmt(x, 0)],
        [true, true, false, false, true],
      ),
    ),
  );

  parts.push(
    '### 3. Durability\n\n**3.** Right after the last acknowledgement of scenario 1 (client still connected), `kill -9` the server, start it again on the same database, and count the acknowledged edits a new client sees.\n\n**3b.** The same question with the commit held back: another connection locks the server\'s storage table (`LOCK … IN SHARE ROW EXCLUSIVE MODE`: reads go on, writes wait) and the client makes one edit. Is it acknowledged within 2 s? Then `kill -9`, the statement the server left waiting is terminated (it never commits — as if the crash came a moment earlier), the lock is released, the server restarted: is the edit there? An acknowledgement that means "committed" cannot arrive while the commit is held.',
  );
  parts.push(
    table(
      ['server', '3: acknowledged edits surviving kill -9', 'kill → listening again ms', '3b: edit acknowledged while its commit was held', '3b: that edit after kill -9'],
      results.map((r) => {
        const h = r.heldCommit;
        const held = h
          ? [h.acknowledged ? `**yes**, after ${ms(h.ackMs ?? undefined)} ms` : 'no (waited 2 s)', h.survived ? 'present' : h.acknowledged ? '**lost**' : 'absent (never acknowledged)']
          : ['—', '—'];
        return {
          label: r.label,
          cells: r.durability
            ? [`${r.durability.surviving} / ${r.durability.acknowledged}`, fmt(r.durability.restartMs, 0), ...held]
            : [r.skipped ? `skipped: ${r.skipped}` : r.error ? `failed: ${r.error}` : '—', '', ...held],
        };
      }),
    ),
  );

  parts.push(
    `### 4. Memory\n\nServer RSS (/proc VmRSS, median of 3 samples) with ${facts.memory.connections} idle clients connected and synced over ${facts.memory.documents} documents, minus the same process's RSS just before they connected (a freshly restarted process, after scenario 3b). "kB per connection" = that delta / ${facts.memory.connections}, loading the ${facts.memory.documents} documents included. The clients connect in two steps — one per document first (loading every document), then the other ${facts.memory.connections - facts.memory.documents} — and "marginal" = the second step's delta / ${facts.memory.connections - facts.memory.documents}: the cost of one more connection to an already loaded document.`,
  );
  parts.push(
    table(
      ['server', 'RSS before MB', `RSS with ${facts.memory.documents} clients (1 per document) MB`, `RSS with ${facts.memory.connections} clients MB`, 'kB per connection', 'marginal kB per connection'],
      withRatios(
        results,
        (r) => {
          const m = r.memory;
          return [m && m.baselineBytes / MB, m && m.documentsLoadedBytes / MB, m && m.loadedBytes / MB, m && m.perConnectionBytes / 1024, m && m.marginalPerConnectionBytes / 1024];
        },
        [(x) => fmt(x, 1), (x) => fmt(x, 1), (x) => fmt(x, 1), (x) => fmt(x, 1), (x) => fmt(x, 1)],
        [false, false, false, true, true],
      ),
    ),
  );

  const n = notes(results, facts);
  if (n.length > 0) parts.push(`### Flags raised by this run\n\n${n.map((x) => `- ${x}`).join('\n')}`);
  parts.push(
    '_One run, not a statistical study: rerun before trusting a difference under ~10 %. The clients run in the bench process on the same cores as the servers and PostgreSQL, so absolute latencies include client-side scheduling; ratios are fairer than absolutes._',
  );
  return parts.join('\n\n');
}

/** A compact plain-text summary for stdout. */
export function renderConsole(results: TargetResult[]): string {
  const lines: string[] = [];
  const pad = (s: string, n: number) => s.padEnd(n);
  lines.push(
    [pad('server', 16), pad('ack p50/p99 ms', 16), pad('deliv/s', 9), pad('fan p50/p99 ms', 16), pad('cpu s/1k', 9), pad('pg s/1k', 9), pad('survive', 10), pad('3b held', 15), 'kB/conn'].join(' '),
  );
  for (const r of results) {
    if (r.skipped || r.error) {
      lines.push(`${pad(r.label, 16)} ${r.skipped ? `skipped: ${r.skipped}` : `FAILED: ${r.error}`}`);
      continue;
    }
    lines.push(
      [
        pad(r.label, 16),
        pad(`${ms(r.ack?.latency.p50)}/${ms(r.ack?.latency.p99)}`, 16),
        pad(fmt(r.fanout?.deliveredPerSecond, 0), 9),
        pad(`${ms(r.fanout?.latency.p50)}/${ms(r.fanout?.latency.p99)}`, 16),
        pad(fmt(r.fanout?.serverCpuPer1000, 4), 9),
        pad(fmt(r.fanout?.pgCpuPer1000, 4), 9),
        pad(r.durability ? `${r.durability.surviving}/${r.durability.acknowledged}` : '—', 10),
        pad(r.heldCommit ? `${r.heldCommit.acknowledged ? 'acked' : 'not acked'}+${r.heldCommit.survived ? 'kept' : 'lost'}` : '—', 15),
        fmt(r.memory ? r.memory.perConnectionBytes / 1024 : undefined, 1),
      ].join(' '),
    );
  }
  const stock = results.find((r) => r.id === 'stock' && r.ack);
  if (stock) {
    for (const r of results) {
      if (r === stock || !r.ack) continue;
      lines.push(
        [
          pad(`${r.id}/stock`, 16),
          pad(`${fmtRatio(ratio(r.ack.latency.p50, stock.ack?.latency.p50))}/${fmtRatio(ratio(r.ack.latency.p99, stock.ack?.latency.p99))}`, 16),
          pad(fmtRatio(ratio(r.fanout?.deliveredPerSecond, stock.fanout?.deliveredPerSecond)), 9),
          pad(`${fmtRatio(ratio(r.fanout?.latency.p50, stock.fanout?.latency.p50))}/${fmtRatio(ratio(r.fanout?.latency.p99, stock.fanout?.latency.p99))}`, 16),
          pad(fmtRatio(ratio(r.fanout?.serverCpuPer1000, stock.fanout?.serverCpuPer1000)), 9),
          pad(fmtRatio(ratio(r.fanout?.pgCpuPer1000, stock.fanout?.pgCpuPer1000)), 9),
          pad('', 10),
          pad('', 15),
          fmtRatio(ratio(r.memory?.perConnectionBytes, stock.memory?.perConnectionBytes)),
        ].join(' '),
      );
    }
  }
  return lines.join('\n');
}
