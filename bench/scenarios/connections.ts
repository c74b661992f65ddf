/**
 * Idle authenticated connections: N clients over D documents, opened from load-generator
 * processes (`loadgens` of them, `concurrency` in flight each) into a freshly started server.
 *
 * First one connection per document loads the D documents (and stays), so both figures are of
 * connections alone: a document's memory and load time are not a connection's (cold load is its
 * own scenario). Both servers' documents hold the same initial canvas (stock's seeded as its
 * `stock_documents` rows), so every connection is sent the same document by either.
 *
 * - Accept rate = connections authenticated and synced / the wall time from sending the first
 *   connect to the last one synced (every load generator starts at once).
 * - Memory per connection = (server RSS with every client connected − RSS just before, the
 *   documents already loaded) / N (VmRSS of the server process, median of 3 samples).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerChild } from '../lib/child.ts';
import { split, startLoadgens } from '../lib/loadgen.ts';
import { cpuSeconds, rssBytes, writeSyscalls } from '../lib/procfs.ts';
import { summarize, type Summary } from '../lib/stats.ts';
import type { Target } from '../lib/targets.ts';

export interface ConnectionsOptions {
  connections: number;
  documents: number;
  loadgens: number;
  concurrency: number;
}

export interface ConnectionsResult {
  connections: number;
  failed: number;
  errors: string[];
  seconds: number;
  acceptedPerSecond: number;
  connectMs: Summary;
  baselineBytes: number;
  loadedBytes: number;
  perConnectionBytes: number;
  /** Server CPU seconds per 1,000 connections accepted. */
  serverCpuPer1000: number;
  /** The server's write system calls per connection accepted (`syscw`: one per socket write, database writes included). */
  serverWritesPerConnection: number;
}

/** Median of three RSS samples `gapMs` apart (RSS moves with GC; one sample is noisy). */
export async function settledRss(pid: number, gapMs = 400): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < 3; i += 1) {
    if (i > 0) await sleep(gapMs);
    samples.push(rssBytes(pid));
  }
  return samples.sort((a, b) => a - b)[1]!;
}

export async function runConnections(target: Target, server: ServerChild, options: ConnectionsOptions): Promise<ConnectionsResult> {
  // The same canvas in every document on both servers: each connection is sent the same SyncStep2.
  const docs = await target.newDocuments(server, options.documents, { canvas: true });
  const names = Array.from({ length: options.connections }, (_, i) => docs[i % docs.length]!);
  const loadgens = startLoadgens(options.loadgens);
  try {
    const loaded = await loadgens[0]!.request(
      { op: 'connect', url: server.wsUrl, names: docs, token: target.token(), concurrency: options.concurrency, timeoutMs: 30_000 },
      'connected',
      300_000,
    );
    if (loaded.failed > 0) throw new Error(`connections: ${loaded.failed} of the ${docs.length} document-loading connections failed: ${loaded.errors.join('; ')}`);
    await sleep(500);
    const baselineBytes = await settledRss(server.pid);
    const cpu0 = cpuSeconds(server.pid);
    const writes0 = writeSyscalls(server.pid);
    const t0 = performance.now();
    const replies = await Promise.all(
      split(names, loadgens.length).map((part, i) =>
        loadgens[i]!.request({ op: 'connect', url: server.wsUrl, names: part, token: target.token(), concurrency: options.concurrency, timeoutMs: 30_000 }, 'connected', 300_000),
      ),
    );
    const seconds = (performance.now() - t0) / 1000;
    const cpu1 = cpuSeconds(server.pid);
    const writes1 = writeSyscalls(server.pid);
    const connected = replies.reduce((n, r) => n + r.connected, 0);
    await sleep(1_500);
    const loadedBytes = await settledRss(server.pid);
    return {
      connections: connected,
      failed: replies.reduce((n, r) => n + r.failed, 0),
      errors: replies.flatMap((r) => r.errors).slice(0, 3),
      seconds,
      acceptedPerSecond: connected / seconds,
      connectMs: summarize(replies.flatMap((r) => r.connectMs)),
      baselineBytes,
      loadedBytes,
      perConnectionBytes: (loadedBytes - baselineBytes) / Math.max(1, connected),
      serverCpuPer1000: ((cpu1 - cpu0) / Math.max(1, connected)) * 1000,
      serverWritesPerConnection: (writes1 - writes0) / Math.max(1, connected),
    };
  } finally {
    await Promise.all(loadgens.map((l) => l.close()));
  }
}
