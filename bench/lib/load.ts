/**
 * Load loops shared by the scenarios: sequential timed runs, closed loops (C loops, each starting
 * its next step as soon as the last is done) over any async step or over one HTTP GET, and an
 * event-loop probe (`/healthz` every 50 ms) that shows whether a server's loop stalls.
 */
import { Agent, request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { percentile, summarize, type Summary } from './stats.ts';

/** The body of `response` (parsed JSON, or the bytes), or an error naming `what` when it is not 2xx. */
export async function okBody(response: Response, what: string): Promise<unknown> {
  const body = response.headers.get('content-type')?.includes('json') ? await response.json() : await response.arrayBuffer();
  if (!response.ok) throw new Error(`${what}: ${response.status} ${body instanceof ArrayBuffer ? `${body.byteLength} bytes` : JSON.stringify(body)}`);
  return body;
}

export type SummaryP95 = Summary & { p95: number };

export function withP95(samples: readonly number[]): SummaryP95 {
  const sorted = [...samples].sort((a, b) => a - b);
  return { ...summarize(sorted), p95: percentile(sorted, 95) };
}

/** Runs `fn` once, resolving with its value and its wall time in ms. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await fn();
  return { ms: performance.now() - started, value };
}

/** `warmup` untimed then `runs` timed calls of `fn`, one after another; the wall times in ms. */
export async function sequential(runs: number, fn: (i: number) => Promise<unknown>, warmup = 0): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn(i);
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) ms.push((await timed(() => fn(i))).ms);
  return ms;
}

export interface LoopStats {
  done: number;
  failed: number;
  latency: SummaryP95;
  /** Every measured step's wall time, ms. */
  samples: number[];
  lastError: string;
  seconds: number;
  perSecond: number;
}

/**
 * `concurrency` loops calling `step(loop, n)` until stopped; each step's wall time is recorded
 * while `measuring` (from `measure()` on, or from the start). A failing step is counted and its
 * loop pauses 50 ms (so a refusing server is not hammered).
 */
export function closedLoop(concurrency: number, step: (loop: number, n: number) => Promise<void>, options: { measureFromStart?: boolean } = {}) {
  const latencies: number[] = [];
  let failed = 0;
  let stop = false;
  let measuring = options.measureFromStart ?? true;
  let n = 0;
  let lastError = '';
  let t0 = performance.now();
  const loops = Array.from({ length: concurrency }, async (_, loop) => {
    while (!stop) {
      const started = performance.now();
      try {
        await step(loop, n++);
        if (measuring && !stop) latencies.push(performance.now() - started);
      } catch (error) {
        if (measuring) failed += 1;
        lastError = String(error);
        await sleep(50);
      }
    }
  });
  return {
    /** Starts counting (the steps before were warm-up). */
    measure(): void {
      measuring = true;
      latencies.length = 0;
      failed = 0;
      t0 = performance.now();
    },
    async stop(): Promise<LoopStats> {
      const seconds = (performance.now() - t0) / 1000;
      stop = true;
      await Promise.all(loops);
      return { done: latencies.length, failed, latency: withP95(latencies), samples: latencies, lastError, seconds, perSecond: latencies.length / seconds };
    },
  };
}

/**
 * One GET over a keep-alive agent with node:http (lighter per request than fetch: the load
 * generator shares the machine's cores with the server, so its own cost shows in the result).
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

export interface HttpLoadResult {
  requests: number;
  seconds: number;
  perSecond: number;
  latency: SummaryP95;
  /** Every measured request's wall time, ms. */
  samples: number[];
  statuses: Record<number, number>;
  bytes: number;
}

/**
 * `concurrency` loops requesting `url(loop)` for `warmupMs` (discarded) then `windowMs`
 * (measured), on the closed loop above. A function gives each loop its own URL (e.g. its own
 * image, so no two requests in flight can share one resize).
 */
export async function httpClosedLoop(
  url: string | ((loop: number) => string),
  headers: Record<string, string>,
  options: { concurrency: number; warmupMs: number; windowMs: number },
): Promise<HttpLoadResult> {
  const statuses: Record<number, number> = {};
  let bytes = 0;
  let counting = false;
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  const targets = Array.from({ length: options.concurrency }, (_, i) => new URL(typeof url === 'string' ? url : url(i)));
  const load = closedLoop(
    options.concurrency,
    async (loop) => {
      const res = await get(agent, targets[loop]!, headers);
      if (!counting) return;
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      bytes += res.bytes;
    },
    { measureFromStart: false },
  );
  await sleep(options.warmupMs);
  counting = true;
  load.measure();
  await sleep(options.windowMs);
  counting = false; // the answers still in flight count neither here nor in the latencies
  const r = await load.stop();
  agent.destroy();
  return { requests: r.done, seconds: r.seconds, perSecond: r.perSecond, latency: r.latency, samples: r.samples, statuses, bytes };
}

/** Pings `/healthz` every `everyMs` until stopped; the latencies say how responsive the loop stayed. */
export function loopProbe(baseUrl: string, everyMs = 50): { stop(): Promise<SummaryP95> } {
  const samples: number[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const t0 = performance.now();
      await (await fetch(`${baseUrl}/healthz`)).arrayBuffer();
      samples.push(performance.now() - t0);
      await sleep(everyMs);
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
