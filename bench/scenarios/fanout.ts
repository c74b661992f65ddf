/**
 * Scenario 2, throughput and fan-out: D documents × C clients, each client setting a new key at a
 * fixed rate whose value is the send time (`performance.now()` — every client lives in this one
 * process, so one clock). Every other client of the document records now − value when the key
 * arrives. After a warm-up, a measured window counts the edits sent in it, their deliveries, the
 * delivery latency and the CPU the server process and the PostgreSQL backends spent.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type * as Y from 'yjs';
import { connectMany, type BenchClient } from '../lib/clients.ts';
import type { ServerChild } from '../lib/child.ts';
import { backendCpu, type BenchDatabase } from '../lib/database.ts';
import { cpuSeconds, machineBusySeconds, rssBytes, threadCpu, writeSyscalls } from '../lib/procfs.ts';
import { summarize, type Summary } from '../lib/stats.ts';
import type { Target } from '../lib/targets.ts';
import { drain, MeasureWindow, tickEvery } from '../lib/window.ts';

export interface FanoutOptions {
  documents: number;
  clientsPerDocument: number;
  /** Clients of each document that edit (the first of each document); all of them when absent. */
  writersPerDocument?: number;
  editsPerSecondPerClient: number;
  warmupMs: number;
  windowMs: number;
  /** Longest wait after the window for the window's edits to arrive everywhere. */
  drainMs: number;
}

export interface FanoutResult {
  windowSeconds: number;
  sent: number;
  expectedDeliveries: number;
  delivered: number;
  deliveredPerSecond: number;
  latency: Summary;
  serverCpuSeconds: number;
  serverCpuPer1000: number;
  /** Server CPU seconds per 1,000 deliveries by thread (main, V8Worker, WorkerThread, …). */
  serverThreadsPer1000: Record<string, number>;
  /** Write system calls of the server process per 1,000 deliveries (one per socket send, unless batched). */
  serverWritesPer1000: number;
  pgCpuSeconds: number;
  pgCpuPer1000: number;
  /** PostgreSQL backends of the bench database seen in the window. */
  pgBackends: number;
  /**
   * Cores busy with anything else on the machine during the window (whole-machine busy time minus
   * the server, its PostgreSQL backends and this process): other people's work skews the numbers.
   */
  otherCores: number;
  /** CPU of this (client) process in the window, and its event-loop delay: load-generator health. */
  clientCpuSeconds: number;
  clientLoopDelayP99Ms: number;
  /** Server RSS sampled every 250 ms through the window: at its start, highest, at its end (bytes). */
  rss: { start: number; peak: number; end: number };
  /**
   * The window on the monotonic clock in microseconds (process.hrtime: CLOCK_MONOTONIC, the
   * clock V8's CPU profiler stamps its samples with), to cut a server's profile to the window.
   */
  windowMonotonicUs: { start: number; end: number };
}

const FANOUT_MAP = 'fanout';

export async function runFanout(target: Target, server: ServerChild, db: BenchDatabase, options: FanoutOptions): Promise<FanoutResult> {
  const docs = await target.newDocuments(server, options.documents);
  const names = docs.flatMap((d) => Array.from({ length: options.clientsPerDocument }, () => d));
  const clients = await connectMany(server.wsUrl, names, target.token());

  const window = new MeasureWindow();
  let sent = 0;
  const latencies: number[] = [];

  const observers: Array<() => void> = [];
  for (const client of clients) {
    const map = client.doc.getMap<number>(FANOUT_MAP);
    const observer = (event: Y.YMapEvent<number>, transaction: Y.Transaction) => {
      if (transaction.local) return;
      const now = performance.now();
      for (const key of event.keysChanged) {
        const sentAt = map.get(key);
        if (typeof sentAt === 'number' && window.has(sentAt)) latencies.push(now - sentAt);
      }
    };
    map.observe(observer);
    observers.push(() => map.unobserve(observer));
  }

  const period = 1000 / options.editsPerSecondPerClient;
  const stops: Array<() => void> = [];
  const startEditing = (client: BenchClient, index: number) => {
    let seq = 0;
    const map = client.doc.getMap<number>(FANOUT_MAP);
    stops.push(
      tickEvery(period, () => {
        const now = performance.now();
        map.set(`${index}:${seq++}`, now);
        if (window.has(now)) sent += 1;
      }),
    );
  };

  const cpu = backendCpu(db);
  const loop = monitorEventLoopDelay({ resolution: 5 });
  try {
    const writers = options.writersPerDocument ?? options.clientsPerDocument;
    clients.forEach((client, index) => {
      if (index % options.clientsPerDocument < writers) startEditing(client, index);
    });
    await sleep(options.warmupMs);

    await cpu.start();
    const server0 = cpuSeconds(server.pid);
    const writes0 = writeSyscalls(server.pid);
    const threads0 = threadCpu(server.pid);
    const client0 = process.cpuUsage();
    const machine0 = machineBusySeconds();
    loop.enable();
    const rss = { start: rssBytes(server.pid), peak: 0, end: 0 };
    rss.peak = rss.start;
    const rssTimer = setInterval(() => (rss.peak = Math.max(rss.peak, rssBytes(server.pid))), 250);
    const monoStart = Number(process.hrtime.bigint() / 1000n);
    window.open();
    await sleep(options.windowMs);
    window.close();
    const monoEnd = Number(process.hrtime.bigint() / 1000n);
    clearInterval(rssTimer);
    rss.end = rssBytes(server.pid);
    rss.peak = Math.max(rss.peak, rss.end);
    const server1 = cpuSeconds(server.pid);
    const writes1 = writeSyscalls(server.pid);
    const threads1 = threadCpu(server.pid);
    const client1 = process.cpuUsage(client0);
    const machine1 = machineBusySeconds();
    loop.disable();
    const pg = await cpu.stop();
    for (const stop of stops) stop();

    const expectedDeliveries = sent * (options.clientsPerDocument - 1);
    await drain(() => latencies.length >= expectedDeliveries, options.drainMs);

    const windowSeconds = window.seconds;
    const delivered = latencies.length;
    const serverCpuSeconds = server1 - server0;
    const clientCpuSeconds = (client1.user + client1.system) / 1e6;
    return {
      windowSeconds,
      sent,
      expectedDeliveries,
      delivered,
      deliveredPerSecond: delivered / windowSeconds,
      latency: summarize(latencies),
      serverCpuSeconds,
      serverCpuPer1000: (serverCpuSeconds / delivered) * 1000,
      serverWritesPer1000: ((writes1 - writes0) / delivered) * 1000,
      serverThreadsPer1000: Object.fromEntries(
        [...threads1].map(([name, cpu]) => [name, ((cpu - (threads0.get(name) ?? 0)) / delivered) * 1000]),
      ),
      pgCpuSeconds: pg.seconds,
      pgCpuPer1000: (pg.seconds / delivered) * 1000,
      pgBackends: pg.backends,
      otherCores: Math.max(0, machine1 - machine0 - serverCpuSeconds - pg.seconds - clientCpuSeconds) / windowSeconds,
      clientCpuSeconds,
      clientLoopDelayP99Ms: loop.percentile(99) / 1e6,
      rss,
      windowMonotonicUs: { start: monoStart, end: monoEnd },
    };
  } finally {
    for (const stop of stops) stop();
    for (const off of observers) off();
    for (const c of clients) c.destroy();
  }
}
