/**
 * Scenario 1, acknowledgement latency: one client makes sequential small edits, each timed from
 * `map.set` until the provider's unacknowledged-change count returns to zero (the
 * `unsyncedChanges` event, not polling). The client stays connected for the durability scenario.
 */
import type { HocuspocusProvider } from '@hocuspocus/provider';
import { connectSynced, withTimeout, type BenchClient } from '../lib/clients.ts';
import type { ServerChild } from '../lib/child.ts';
import { backendCpu, type BenchDatabase } from '../lib/database.ts';
import { commitDelta, scrapeCommitMetrics } from '../lib/metrics.ts';
import { cpuSeconds, machineBusySeconds } from '../lib/procfs.ts';
import { summarize, type Summary } from '../lib/stats.ts';
import type { Target } from '../lib/targets.ts';

export const ACK_MAP = 'ack';
export const ackKey = (i: number) => `k${i}`;

export interface AckResult {
  latency: Summary;
  /** Server process CPU milliseconds per acknowledged edit. */
  serverCpuMsPerEdit: number;
  /** CPU milliseconds of the bench database's PostgreSQL backends per acknowledged edit. */
  pgCpuMsPerEdit: number;
  /** Cores busy with other work on the machine meanwhile (see FanoutResult.otherCores). */
  otherCores: number;
  /** What the server's own /metrics say about the measured edits (ours only). */
  serverReported?: { commitMeanMs: number; batches: number; ackWaitMeanMs: number } | undefined;
  /** The document and its still-connected client, handed to the durability scenario. */
  documentName: string;
  client: BenchClient;
}

/** Resolves with `performance.now()` at the moment the count of unacknowledged changes hits 0. */
function nextAck(provider: HocuspocusProvider): Promise<number> {
  return new Promise((resolve) => {
    const listener = ({ number }: { number: number }) => {
      if (number !== 0) return;
      provider.off('unsyncedChanges', listener);
      resolve(performance.now());
    };
    provider.on('unsyncedChanges', listener);
  });
}

async function edit(client: BenchClient, map: string, key: string, value: number): Promise<number> {
  const acked = nextAck(client.provider);
  const t0 = performance.now();
  client.doc.getMap(map).set(key, value);
  const t1 = await withTimeout(acked, 10_000, `acknowledgement of ${map}.${key}`);
  return t1 - t0;
}

export async function runAck(
  target: Target,
  server: ServerChild,
  db: BenchDatabase,
  options: { edits: number; warmup: number },
): Promise<AckResult> {
  const [documentName] = await target.newDocuments(server, 1);
  if (!documentName) throw new Error('no document');
  const client = await connectSynced(server.wsUrl, documentName, target.token());
  try {
    for (let i = 0; i < options.warmup; i += 1) await edit(client, 'warmup', `w${i}`, i);
    const samples: number[] = [];
    const metrics0 = await scrapeCommitMetrics(server.httpUrl);
    const pg = backendCpu(db);
    await pg.start();
    const t0 = performance.now();
    const cpu0 = cpuSeconds(server.pid);
    const client0 = process.cpuUsage();
    const machine0 = machineBusySeconds();
    for (let i = 0; i < options.edits; i += 1) samples.push(await edit(client, ACK_MAP, ackKey(i), i));
    const machine1 = machineBusySeconds();
    const client1 = process.cpuUsage(client0);
    const cpu1 = cpuSeconds(server.pid);
    const seconds = (performance.now() - t0) / 1000;
    const pgCpu = await pg.stop();
    const serverReported = commitDelta(metrics0, await scrapeCommitMetrics(server.httpUrl));
    const clientCpu = (client1.user + client1.system) / 1e6;
    return {
      latency: summarize(samples),
      serverCpuMsPerEdit: ((cpu1 - cpu0) * 1000) / options.edits,
      pgCpuMsPerEdit: (pgCpu.seconds * 1000) / options.edits,
      otherCores: Math.max(0, machine1 - machine0 - (cpu1 - cpu0) - pgCpu.seconds - clientCpu) / seconds,
      serverReported,
      documentName,
      client,
    };
  } catch (error) {
    client.destroy();
    throw error;
  }
}
