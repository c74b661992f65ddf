/**
 * Durable acknowledgements per node: C clients (in load-generator processes) on C documents of
 * one server edit at a stepped offered rate; each edit is timed from the change to its
 * acknowledgement. Steps go up until the p99 reaches the bound (25 ms) or the server falls behind
 * (fewer than 95 % of the window's edits acknowledged); the figure is the highest acknowledged
 * rate whose p99 stayed under the bound. For ours an acknowledgement means "committed in
 * PostgreSQL"; stock Hocuspocus acknowledges before it stores anything (scenario 3b), so its
 * figure is the same measurement of a different promise.
 */
import type { ServerChild } from '../lib/child.ts';
import type { BenchDatabase } from '../lib/database.ts';
import { scrapeCommitMetrics } from '../lib/metrics.ts';
import { split, startLoadgens } from '../lib/loadgen.ts';
import { cpuSeconds } from '../lib/procfs.ts';
import { summarize, type Summary } from '../lib/stats.ts';
import type { Target } from '../lib/targets.ts';

export interface AckRateOptions {
  clients: number;
  loadgens: number;
  /** Offered edits per second for the whole server, in order. */
  rates: number[];
  p99BoundMs: number;
  warmupMs: number;
  windowMs: number;
  drainMs: number;
}

export interface AckStep {
  offered: number;
  acknowledgedPerSecond: number;
  sent: number;
  acked: number;
  latency: Summary;
  serverCpuCores: number;
  clientCpuCores: number;
  /**
   * PostgreSQL's write load in the step, per acknowledged edit: WAL bytes (`pg_current_wal_lsn`:
   * the whole cluster, exact on a quiet machine); for ours also the update log's group commits per
   * second (its own metrics; stock has none). Absent when no database was given.
   */
  pg?: { walBytesPerEdit: number; commitsPerSecond: number | null };
}

export interface AckRateResult {
  clients: number;
  steps: AckStep[];
  /** Highest acknowledged edits/s of a step with p99 under the bound (0 when none). */
  bestUnderBound: number;
  bestStep?: AckStep | undefined;
  /** True when even the last step stayed under the bound: the figure is a lower bound. */
  neverCrossed: boolean;
}

async function walBytes(db: BenchDatabase): Promise<bigint> {
  const { rows } = await db.admin.query<{ wal: string }>(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS wal`);
  return BigInt(rows[0]!.wal.split('.')[0]!);
}

export async function runAckRate(target: Target, server: ServerChild, options: AckRateOptions, db?: BenchDatabase): Promise<AckRateResult> {
  const docs = await target.newDocuments(server, options.clients);
  const loadgens = startLoadgens(options.loadgens);
  const steps: AckStep[] = [];
  try {
    const parts = split(docs, loadgens.length);
    await Promise.all(
      parts.map((names, i) =>
        loadgens[i]!.request({ op: 'connect', url: server.wsUrl, names, token: target.token(), concurrency: 20, timeoutMs: 30_000 }, 'connected').then((r) => {
          if (r.failed > 0) throw new Error(`ack-rate: ${r.failed} clients failed to connect: ${r.errors.join('; ')}`);
        }),
      ),
    );
    // One unmeasured step at the lowest rate first: a freshly started server's first edits pay
    // for JIT compilation, pool connections and the first group commits, and one such outlier
    // in the first measured step would end the stepping at 0.
    const runStep = (offered: number) =>
      Promise.all(
        loadgens.map((l) =>
          l.request({ op: 'ack-step', ratePerClient: offered / options.clients, warmupMs: options.warmupMs, windowMs: options.windowMs, drainMs: options.drainMs }, 'ack-stepped'),
        ),
      );
    await runStep(options.rates[0]!);
    for (const offered of options.rates) {
      const wal0 = db ? await walBytes(db) : null;
      const commits0 = await scrapeCommitMetrics(server.httpUrl);
      const cpu0 = cpuSeconds(server.pid);
      const t0 = performance.now();
      const replies = await runStep(offered);
      const wall = (performance.now() - t0) / 1000;
      const cpu1 = cpuSeconds(server.pid);
      const wal1 = db ? await walBytes(db) : null;
      const commits1 = await scrapeCommitMetrics(server.httpUrl);
      const sent = replies.reduce((n, r) => n + r.sent, 0);
      const acked = replies.reduce((n, r) => n + r.acked, 0);
      const windowSeconds = Math.max(...replies.map((r) => r.windowSeconds));
      const step: AckStep = {
        offered,
        acknowledgedPerSecond: acked / windowSeconds,
        sent,
        acked,
        latency: summarize(replies.flatMap((r) => r.latencies)),
        serverCpuCores: (cpu1 - cpu0) / wall,
        clientCpuCores: replies.reduce((n, r) => n + r.cpuSeconds, 0) / wall,
        ...(wal0 !== null && wal1 !== null && acked > 0
          ? {
              pg: {
                walBytesPerEdit: Number(wal1 - wal0) / acked,
                commitsPerSecond: commits0 && commits1 ? (commits1.commitCount - commits0.commitCount) / wall : null,
              },
            }
          : {}),
      };
      steps.push(step);
      if (step.latency.p99 >= options.p99BoundMs || acked < 0.95 * sent) break;
    }
  } finally {
    await Promise.all(loadgens.map((l) => l.close()));
  }
  const under = steps.filter((s) => s.latency.p99 < options.p99BoundMs && s.acked >= 0.95 * s.sent);
  const bestStep = under.sort((a, b) => b.acknowledgedPerSecond - a.acknowledgedPerSecond)[0];
  const last = steps[steps.length - 1];
  return {
    clients: options.clients,
    steps,
    bestUnderBound: bestStep?.acknowledgedPerSecond ?? 0,
    bestStep,
    neverCrossed: last !== undefined && last.offered === options.rates[options.rates.length - 1] && last.latency.p99 < options.p99BoundMs && last.acked >= 0.95 * last.sent,
  };
}
