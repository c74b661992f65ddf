/**
 * A load-generator process (spawned by bench/lib/loadgen.ts, never imported): it holds real
 * HocuspocusProvider clients and does what its parent asks over the IPC channel, so thousands of
 * sockets and their client-side CPU live outside both the server and the bench's own process.
 *
 * Requests (one at a time, each answered by one message):
 * - `connect`: open `names.length` clients, `concurrency` in flight, each authenticated and
 *   synced; answers with how many made it, the first errors and each one's connect → synced ms.
 * - `ack-step`: every connected client edits its document at `ratePerClient`/s for
 *   `warmupMs + windowMs`; each edit is timed from the change to its acknowledgement (the
 *   provider's unacknowledged-change count falls by one per SyncStatus, in order); answers with
 *   the latencies of edits sent in the window, how many were sent and acknowledged, the CPU used.
 * - `storm-watch` (the storm scenario): from now on every client is watched (closes, outages until
 *   synced again, refusals, acknowledgements: bench/lib/fleet.ts attachWatch, epoch clock), shows a
 *   cursor and edits its document every `editEveryMs` (key `<tag>-<index>:<seq>`, value its send time);
 *   `storm-status` answers how many clients are synced again after `since`; `storm-acked` each
 *   client's acknowledged edits so far (taken just before a kill); `storm-report` stops
 *   the edits, waits (at most `drainMs`) for every client to be acknowledged, and answers each
 *   client's outage and acknowledged edits.
 * - `close`: destroys every client and exits.
 */
import { connectSynced, type BenchClient } from './clients.ts';
import { attachWatch, EDITS_MAP, epochNow, newWatch, type Watch } from './fleet.ts';

/** One storm client's account (`storm-report`). */
export interface StormClientReport {
  name: string;
  key: string;
  written: number;
  acked: number;
  /** Epoch ms the outage after `since` began and ended (0: never synced again); null: not disconnected. */
  outage: [number, number] | null;
  /** Closes seen after `since` (the first is the kill; each further one a failed reconnect attempt). */
  closesAfter: number;
  refusals: Record<string, number>;
}

export type LoadgenRequest =
  | { op: 'connect'; url: string; names: string[]; token: string; concurrency: number; timeoutMs: number; reconnect?: boolean }
  | { op: 'ack-step'; ratePerClient: number; warmupMs: number; windowMs: number; drainMs: number }
  | { op: 'storm-watch'; editEveryMs: number; tag: string }
  | { op: 'storm-status'; since: number }
  | { op: 'storm-acked' }
  | { op: 'storm-report'; since: number; drainMs: number }
  | { op: 'close' };

export type LoadgenReply =
  | { op: 'connected'; connected: number; failed: number; errors: string[]; connectMs: number[] }
  | { op: 'ack-stepped'; sent: number; acked: number; latencies: number[]; windowSeconds: number; cpuSeconds: number }
  | { op: 'storm-watching' }
  | { op: 'storm-status'; resynced: number; disconnected: number; total: number }
  | { op: 'storm-reported'; clients: StormClientReport[] }
  | { op: 'storm-acked'; clients: Array<{ name: string; key: string; acked: number }> }
  | { op: 'closed' }
  | { op: 'error'; message: string };

const clients: BenchClient[] = [];

function reply(message: LoadgenReply): void {
  process.send?.(message);
}

async function connectAll(request: Extract<LoadgenRequest, { op: 'connect' }>): Promise<LoadgenReply> {
  const connectMs: number[] = [];
  const errors: string[] = [];
  let failed = 0;
  let next = 0;
  const lane = async () => {
    while (next < request.names.length) {
      const name = request.names[next++]!;
      const t0 = performance.now();
      try {
        clients.push(await connectSynced(request.url, name, request.token, request.timeoutMs, request.reconnect ?? false));
        connectMs.push(performance.now() - t0);
      } catch (error) {
        failed += 1;
        if (errors.length < 5) errors.push(error instanceof Error ? error.message : String(error));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, request.concurrency) }, lane));
  return { op: 'connected', connected: connectMs.length, failed, errors, connectMs };
}

async function ackStep(request: Extract<LoadgenRequest, { op: 'ack-step' }>): Promise<LoadgenReply> {
  const latencies: number[] = [];
  let windowStart = Number.POSITIVE_INFINITY;
  let windowEnd = Number.POSITIVE_INFINITY;
  const inWindow = (t: number) => t >= windowStart && t < windowEnd;
  let sent = 0;
  let acked = 0;
  const period = 1000 / request.ratePerClient;
  const stops: Array<() => void> = [];
  const cpu0 = process.cpuUsage();
  clients.forEach((client, index) => {
    const outstanding: number[] = [];
    let last = client.provider.unsyncedChanges;
    const onCount = ({ number }: { number: number }) => {
      // Each SyncStatus answers the oldest outstanding edit of this connection.
      for (let n = last; n > number; n -= 1) {
        const t = outstanding.shift();
        if (t === undefined) break;
        if (inWindow(t)) {
          latencies.push(performance.now() - t);
          acked += 1;
        }
      }
      last = number;
    };
    client.provider.on('unsyncedChanges', onCount);
    const map = client.doc.getMap<number>('acks');
    let seq = 0;
    let interval: NodeJS.Timeout | undefined;
    const phase = setTimeout(() => {
      interval = setInterval(() => {
        const t = performance.now();
        outstanding.push(t);
        if (inWindow(t)) sent += 1;
        map.set(`${index}:${seq++ % 64}`, seq);
      }, period);
    }, Math.random() * period);
    stops.push(() => {
      clearTimeout(phase);
      clearInterval(interval);
    });
    stops.push(() => client.provider.off('unsyncedChanges', onCount));
  });
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  try {
    await sleep(request.warmupMs);
    windowStart = performance.now();
    await sleep(request.windowMs);
    windowEnd = performance.now();
    // Stop sending; wait (bounded) for the window's edits to be acknowledged.
    for (const stop of stops.filter((_, i) => i % 2 === 0)) stop();
    const deadline = performance.now() + request.drainMs;
    while (acked < sent && performance.now() < deadline) await sleep(20);
  } finally {
    for (const stop of stops) stop();
  }
  const cpu = process.cpuUsage(cpu0);
  return { op: 'ack-stepped', sent, acked, latencies, windowSeconds: (windowEnd - windowStart) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

const watched: Array<{ client: BenchClient; watch: Watch; key: string; closes: number[] }> = [];
const stormStops: Array<() => void> = [];

function stormWatch(request: Extract<LoadgenRequest, { op: 'storm-watch' }>): LoadgenReply {
  clients.forEach((client, index) => {
    const watch = newWatch();
    attachWatch(client.provider, watch, true);
    const entry = { client, watch, key: `${request.tag}-${index}`, closes: [] as number[] };
    client.provider.on('close', () => entry.closes.push(epochNow()));
    watched.push(entry);
    // A cursor, so each client's awareness clientID is claimed in Redis by the node it is on.
    client.provider.setAwarenessField('cursor', { x: index, y: 0 });
    const map = client.doc.getMap<number>(EDITS_MAP);
    let seq = 0;
    let interval: NodeJS.Timeout | undefined;
    const edit = () => {
      watch.written += 1;
      map.set(`${entry.key}:${seq++}`, epochNow());
    };
    // The first edit at a random phase of the period, then one per period.
    const phase = setTimeout(() => {
      edit();
      interval = setInterval(edit, request.editEveryMs);
    }, Math.random() * request.editEveryMs);
    stormStops.push(() => {
      clearTimeout(phase);
      clearInterval(interval);
    });
  });
  return { op: 'storm-watching' };
}

const outageAfter = (watch: Watch, since: number) => watch.outages.find(([closed]) => closed >= since) ?? null;

function stormStatus(request: Extract<LoadgenRequest, { op: 'storm-status' }>): LoadgenReply {
  let resynced = 0;
  let disconnected = 0;
  for (const w of watched) {
    const outage = outageAfter(w.watch, request.since);
    if (!outage) continue;
    disconnected += 1;
    if (outage[1] > 0) resynced += 1;
  }
  return { op: 'storm-status', resynced, disconnected, total: watched.length };
}

async function stormReport(request: Extract<LoadgenRequest, { op: 'storm-report' }>): Promise<LoadgenReply> {
  for (const stop of stormStops.splice(0)) stop();
  const deadline = performance.now() + request.drainMs;
  while (watched.some((w) => !w.client.provider.isSynced || w.client.provider.hasUnsyncedChanges) && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    op: 'storm-reported',
    clients: watched.map((w) => ({
      name: w.client.provider.configuration.name,
      key: w.key,
      written: w.watch.written,
      acked: w.watch.acked,
      outage: outageAfter(w.watch, request.since),
      closesAfter: w.closes.filter((t) => t >= request.since).length,
      refusals: Object.fromEntries(w.watch.refusals),
    })),
  };
}

process.on('message', (message: LoadgenRequest) => {
  void (async () => {
    try {
      if (message.op === 'connect') reply(await connectAll(message));
      else if (message.op === 'ack-step') reply(await ackStep(message));
      else if (message.op === 'storm-watch') reply(stormWatch(message));
      else if (message.op === 'storm-status') reply(stormStatus(message));
      else if (message.op === 'storm-acked') reply({ op: 'storm-acked', clients: watched.map((w) => ({ name: w.client.provider.configuration.name, key: w.key, acked: w.watch.acked })) });
      else if (message.op === 'storm-report') reply(await stormReport(message));
      else {
        for (const stop of stormStops.splice(0)) stop();
        for (const c of clients.splice(0)) c.destroy();
        reply({ op: 'closed' });
        process.disconnect?.();
        setImmediate(() => process.exit(0));
      }
    } catch (error) {
      reply({ op: 'error', message: error instanceof Error ? error.message : String(error) });
    }
  })();
});
// The parent went away (killed): nothing to generate load for.
process.on('disconnect', () => process.exit(0));
