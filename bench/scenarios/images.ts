/**
 * Image scenarios: closed-loop HTTP load on one URL (C requests in flight, each client sending
 * the next as soon as its answer is read), sequential ingests, and an event-loop probe (a
 * `/healthz` request every 50 ms) that shows whether image work stalls the server's loop.
 */
import { Agent, request } from 'node:http';
import { percentile, summarize, type Summary } from '../lib/stats.ts';

/**
 * One GET over a keep-alive agent with node:http (lighter per request than fetch: the load
 * generator shares the machine's two cores with the server, so its own cost shows in the result).
 */
function get(agent: Agent, url: URL, headers: Record<string, string>): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers }, (res) => {
      let bytes = 0;
      res.on('data', (chunk: Buffer) => (bytes += chunk.length));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

export interface LoadResult {
  requests: number;
  seconds: number;
  perSecond: number;
  latency: Summary & { p95: number };
  statuses: Record<number, number>;
  bytes: number;
}

export function withP95(samples: readonly number[]): Summary & { p95: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  return { ...summarize(sorted), p95: percentile(sorted, 95) };
}

/**
 * `concurrency` loops requesting `url(loop)` for `warmupMs` (discarded) then `windowMs`
 * (measured). A function gives each loop its own URL (e.g. its own image, so no two requests in
 * flight can share one resize).
 */
export async function closedLoop(
  url: string | ((loop: number) => string),
  headers: Record<string, string>,
  options: { concurrency: number; warmupMs: number; windowMs: number },
): Promise<LoadResult> {
  const latencies: number[] = [];
  const statuses: Record<number, number> = {};
  let bytes = 0;
  let measuring = false;
  let stop = false;
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  const loop = async (_: unknown, index: number) => {
    const target = new URL(typeof url === 'string' ? url : url(index));
    while (!stop) {
      const t0 = performance.now();
      const res = await get(agent, target, headers);
      const ms = performance.now() - t0;
      if (!measuring || stop) continue;
      latencies.push(ms);
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      bytes += res.bytes;
    }
  };
  const loops = Array.from({ length: options.concurrency }, loop);
  await new Promise((resolve) => setTimeout(resolve, options.warmupMs));
  measuring = true;
  const t0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, options.windowMs));
  const seconds = (performance.now() - t0) / 1000;
  stop = true;
  await Promise.all(loops);
  agent.destroy();
  return { requests: latencies.length, seconds, perSecond: latencies.length / seconds, latency: withP95(latencies), statuses, bytes };
}

/** Pings `/healthz` every `everyMs` until stopped; the latencies say how responsive the loop stayed. */
export function loopProbe(baseUrl: string, everyMs = 50): { stop(): Promise<Summary & { p95: number }> } {
  const samples: number[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const t0 = performance.now();
      await (await fetch(`${baseUrl}/healthz`)).arrayBuffer();
      samples.push(performance.now() - t0);
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return withP95(samples);
    },
  };
}
