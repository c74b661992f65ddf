/**
 * Images, a scenario of bench/run.ts (`npm run bench -- --only images`). Against a fresh
 * PostgreSQL database and our server as a child process (node transport, local blob store in its
 * own DATA_DIR), it measures:
 *
 * 1. Resize by URL, cache miss — imgproxy's published task: a ~2K JPEG (2040×1356) → fit inside
 *    512×512, JPEG q80, over HTTP (`GET /api/images/:id/file`, Bearer token, access checked), with
 *    the variant cache off (`IMAGE_CACHE_VARIANTS=false`) so every request decodes, resizes and
 *    encodes. Closed loop, each loop on its own image (identical concurrent misses would be
 *    coalesced into one resize), 4 and 2 in flight. The peer: sharp alone in this process on the
 *    same bytes at the same concurrency — the ceiling on this machine. Ours and the peer take
 *    turns in short windows (the order alternating each round), so a machine whose load changes
 *    by the minute still gives a ratio per round; reported as the median and range of those.
 * 2. Cached: the same URL on a server with the variant cache on — a stored variant (`200`), and
 *    `If-None-Match` answered `304`.
 * 3. Ingest of a 12 MP JPEG (4000×3000, EXIF with GPS): `POST /api/images`, sequential — sniff,
 *    header checks, EXIF, one decode, three variants, palette, original and variants stored, row +
 *    activity inserted. Client-side wall time and the server's own imageflow_image_ingest_seconds.
 * 4. While 1 and 3 run, a probe requests `/healthz` every 50 ms: its latency shows whether image
 *    work stalls the event loop that also serves WebSockets.
 *
 * The load generator runs on the same machine as the server: the numbers are indicative, the
 * ratio to the in-process peer is the steadier figure. Writes its section of bench/RESULTS.md.
 */
import { availableParallelism, cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import sharp from 'sharp';
import { photoJpeg } from '../../test/support/images.ts';
import type { ServerChild } from '../lib/child.ts';
import { createBenchDatabase } from '../lib/database.ts';
import { httpClosedLoop, loopProbe, sequential, withP95, type HttpLoadResult, type SummaryP95 } from '../lib/load.ts';
import { gitFacts } from '../lib/machine.ts';
import { busyCores } from '../lib/procfs.ts';
import { writeSection } from '../lib/results-file.ts';
import { fmt } from '../lib/stats.ts';
import { benchUser, oursTarget, type Target } from '../lib/targets.ts';

const RESIZE = 'width=512&height=512&fit=inside&format=jpeg&quality=80';

/** The sizes of one run; `full` is the published one. */
export const IMAGES_SIZES = {
  full: { miss: { concurrencies: [4, 2], rounds: 5, warmupMs: 1_000, windowMs: 4_000 }, cached: { concurrency: 16, warmupMs: 2_000, windowMs: 10_000 }, ingests: 12 },
  quick: { miss: { concurrencies: [4, 2], rounds: 3, warmupMs: 500, windowMs: 2_000 }, cached: { concurrency: 16, warmupMs: 1_000, windowMs: 3_000 }, ingests: 4 },
  tiny: { miss: { concurrencies: [4, 2], rounds: 1, warmupMs: 200, windowMs: 500 }, cached: { concurrency: 4, warmupMs: 200, windowMs: 500 }, ingests: 1 },
} as const;

export interface ImagesRun {
  size: keyof typeof IMAGES_SIZES;
  resultsFile: string;
  command: string;
  section: string;
}

async function upload(server: ServerChild, token: string, bytes: Buffer): Promise<{ imageId: string; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(`${server.httpUrl}/api/images?privacyLevel=public`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
    body: new Uint8Array(bytes),
  });
  const json = (await res.json()) as { image?: { imageId: string }; error?: unknown };
  if (res.status !== 201 || !json.image) throw new Error(`upload: ${res.status} ${JSON.stringify(json)}`);
  return { imageId: json.image.imageId, ms: performance.now() - t0 };
}

async function metricSum(server: ServerChild, name: string): Promise<{ sum: number; count: number }> {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  const read = (suffix: string) => Number(text.split('\n').find((l) => l.startsWith(`${name}_${suffix}`))?.split(' ').pop() ?? Number.NaN);
  return { sum: read('sum'), count: read('count') };
}

/** The peer: sharp alone in this process, the same resize on the same bytes, `concurrency` in flight for `ms`. */
async function inProcess(bytes: Buffer, concurrency: number, warmupMs: number, ms: number): Promise<{ perSecond: number; samples: number[] }> {
  const samples: number[] = [];
  let measuring = false;
  let end = Number.POSITIVE_INFINITY;
  const loop = async () => {
    while (performance.now() < end) {
      const started = performance.now();
      await sharp(bytes).resize(512, 512, { fit: 'inside' }).jpeg({ quality: 80 }).toBuffer();
      if (measuring && performance.now() < end) samples.push(performance.now() - started);
    }
  };
  const loops = Promise.all(Array.from({ length: concurrency }, loop));
  await sleep(warmupMs);
  measuring = true;
  const t0 = performance.now();
  end = t0 + ms;
  await loops;
  return { perSecond: samples.length / ((performance.now() - t0) / 1000), samples };
}

interface MissRounds {
  concurrency: number;
  ours: number[];
  peer: number[];
  ratios: number[];
  latency: SummaryP95;
  peerLatency: SummaryP95;
  requests: number;
  statuses: Record<number, number>;
}

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const spread = (xs: readonly number[], digits = 1) => `${fmt(median(xs), digits)} (${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)})`;

const missRow = (label: string, r: MissRounds, target: string) =>
  `| ${label} | ${spread(r.ours)} | ${fmt(r.latency.p50)} | ${fmt(r.latency.p95)} | ${fmt(r.latency.p99)} | ${r.requests} | ${Object.entries(r.statuses).map(([s, n]) => `${s}×${n}`).join(' ')} | ${spread(r.peer)} (p95 ${fmt(r.peerLatency.p95)} ms) | **${spread(r.ratios.map((x) => x * 100), 0)} %** | ${target} |`;

const loadRow = (label: string, r: HttpLoadResult, target: string) =>
  `| ${label} | ${fmt(r.perSecond, 1)} | ${fmt(r.latency.p50)} | ${fmt(r.latency.p95)} | ${fmt(r.latency.p99)} | ${r.requests} | ${Object.entries(r.statuses).map(([s, n]) => `${s}×${n}`).join(' ')} | ${target} |`;

/** Runs the scenario, writes its section and resolves with its first lines. */
export async function runImages({ size, resultsFile, command, section }: ImagesRun): Promise<string> {
  const sizes = IMAGES_SIZES[size];
  const startedAt = new Date();
  const database = await createBenchDatabase();
  const targets: Target[] = [];
  const started: ServerChild[] = [];
  const start = async (env: Record<string, string>, label: string) => {
    const target = oursTarget(database, 'node', [], { label, env });
    targets.push(target);
    const server = await target.start();
    started.push(server);
    return server;
  };
  try {
    // The first server migrates the database; the user comes after.
    const missServer = await start({ IMAGE_CACHE_VARIANTS: 'false' }, 'ours (node, variant cache off)');
    const { token } = await benchUser(database);
    const auth = { authorization: `Bearer ${token}` };
    const twoK = await photoJpeg(2040, 1356, { quality: 90 });
    const twelve = await photoJpeg(4000, 3000, { quality: 90, gps: true, orientation: 1 });
    const idleBefore = await busyCores(2_000);

    // ---- 1. resize by URL, cache miss: ours at 4 and 2 in flight, the peer at the same --------
    // One image per loop (same size, different noise): the server coalesces identical concurrent
    // misses, which would measure fewer resizes than requests.
    const missImages: string[] = [];
    for (let i = 0; i < Math.max(...sizes.miss.concurrencies); i++) missImages.push((await upload(missServer, token, await photoJpeg(2040, 1356, { quality: 90 }))).imageId);
    const missUrl = (loop: number) => `${missServer.httpUrl}/api/images/${missImages[loop]}/file?${RESIZE}`;
    const probeMiss = loopProbe(missServer.httpUrl);
    const misses: MissRounds[] = [];
    for (const concurrency of sizes.miss.concurrencies) {
      const r: MissRounds = { concurrency, ours: [], peer: [], ratios: [], latency: withP95([]), peerLatency: withP95([]), requests: 0, statuses: {} };
      const samples: number[] = [];
      const peerSamples: number[] = [];
      for (let round = 0; round < sizes.miss.rounds; round++) {
        const window = { concurrency, warmupMs: sizes.miss.warmupMs, windowMs: sizes.miss.windowMs };
        const runOurs = async () => {
          const o = await httpClosedLoop(missUrl, auth, window);
          samples.push(...o.samples);
          r.requests += o.requests;
          for (const [status, n] of Object.entries(o.statuses)) r.statuses[Number(status)] = (r.statuses[Number(status)] ?? 0) + n;
          return o.perSecond;
        };
        const runPeer = async () => {
          const p = await inProcess(twoK, concurrency, sizes.miss.warmupMs, sizes.miss.windowMs);
          peerSamples.push(...p.samples);
          return p.perSecond;
        };
        let ours: number, peer: number;
        if (round % 2 === 0) {
          ours = await runOurs();
          peer = await runPeer();
        } else {
          peer = await runPeer();
          ours = await runOurs();
        }
        r.ours.push(ours);
        r.peer.push(peer);
        r.ratios.push(ours / peer);
      }
      r.latency = withP95(samples);
      r.peerLatency = withP95(peerSamples);
      misses.push(r);
    }
    const missLoop = await probeMiss.stop();
    const resizeServer = await metricSum(missServer, 'imageflow_image_resize_seconds');

    // ---- 3. ingest of a 12 MP JPEG (on the same server) ----------------------------------------
    await upload(missServer, token, twelve); // warm-up (the same bytes again below: content-addressed, stored once)
    const before = await metricSum(missServer, 'imageflow_image_ingest_seconds');
    const probeIngest = loopProbe(missServer.httpUrl);
    const ingestMs = await sequential(sizes.ingests, () => upload(missServer, token, twelve));
    const ingestLoop = await probeIngest.stop();
    const after = await metricSum(missServer, 'imageflow_image_ingest_seconds');
    const ingestServerMean = ((after.sum - before.sum) / (after.count - before.count)) * 1000;
    await missServer.stop();

    // ---- 2. cached: blob-store hit and 304 -----------------------------------------------------
    const cacheServer = await start({}, 'ours (node)');
    const cached = await upload(cacheServer, token, twoK);
    const cachedUrl = `${cacheServer.httpUrl}/api/images/${cached.imageId}/file?${RESIZE}`;
    const first = await fetch(cachedUrl, { headers: auth });
    const etag = first.headers.get('etag') ?? '';
    await first.arrayBuffer();
    // The variant is stored just after the first answer: wait until a request is a cache hit.
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const text = await (await fetch(`${cacheServer.httpUrl}/metrics`)).text();
      if (/imageflow_image_file_requests_total\{[^}]*outcome="cached"/.test(text)) break;
      await (await fetch(cachedUrl, { headers: auth })).arrayBuffer();
    }
    const hit = await httpClosedLoop(cachedUrl, auth, sizes.cached);
    const notModified = await httpClosedLoop(cachedUrl, { ...auth, 'if-none-match': etag }, sizes.cached);
    await cacheServer.stop();

    const idleAfter = await busyCores(2_000);
    const ingest = withP95(ingestMs);

    const body = [
      '## Images: resize by URL, cached variants, ingest',
      '',
      `- Command: \`${command}\` (scenario images of bench/run.ts; fresh PostgreSQL database; our server as a child process, node transport, local blob store; the load generator and the peer in the bench process)`,
      `- Date: ${startedAt.toISOString()} (took ${((Date.now() - startedAt.getTime()) / 1000).toFixed(0)} s); code: ${gitFacts()}`,
      `- Machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}, sharp ${sharp.versions.sharp} / libvips ${sharp.versions.vips}`,
      `- **Machine load**: other processes kept ${fmt(idleBefore)} cores busy before and ${fmt(idleAfter)} after${idleBefore + idleAfter > 0.5 ? ' — shared and loaded: absolute figures are low and noisy; the share of the peer measured in the same run is the steadier figure' : ''}; the client shares the cores with the server.`,
      '',
      `Resize by URL on a cache miss (\`IMAGE_CACHE_VARIANTS=false\`): ${sizes.miss.rounds} rounds per concurrency, ours and the peer taking turns in ${sizes.miss.windowMs / 1000}-s windows (after ${sizes.miss.warmupMs / 1000} s of warm-up each), the order alternating; rates as median (min–max) over the rounds, latencies over all rounds' requests. The peer is sharp alone in the bench process, the same resize of the same bytes at the same concurrency; ours is over HTTP with the token, the access check and the blob read.`,
      '',
      '| resize miss: 2040×1356 JPEG → fit 512×512 JPEG q80 | ours req/s | p50 ms | p95 ms | p99 ms | requests | statuses | peer: sharp in-process req/s | ours ÷ peer | target |',
      '|---|---|---|---|---|---|---|---|---|---|',
      ...misses.map((r) => missRow(`${r.concurrency} in flight`, r, '≥ 100 req/s, p95 ≤ 35 ms')),
      '',
      `imgproxy publishes 79.6 req/s, p95 33 ms on 2 vCPU for this task. With C requests in flight the mean latency is C ÷ rate (Little's law): at 4 in flight, p95 ≤ 35 ms needs well over 114 req/s.`,
      '',
      '| cached | req/s | p50 ms | p95 ms | p99 ms | requests | statuses | target |',
      '|---|---|---|---|---|---|---|---|',
      loadRow(`stored variant, ${sizes.cached.concurrency} in flight`, hit, '≥ 2,000 req/s'),
      loadRow(`If-None-Match → 304, ${sizes.cached.concurrency} in flight`, notModified, '≥ 2,000 req/s'),
      '',
      `Server-side resize time (read the original, decode + resize + encode, imageflow_image_resize_seconds): mean ${fmt((resizeServer.sum / resizeServer.count) * 1000)} ms over ${resizeServer.count} resizes (warm-up included).`,
      '',
      `Ingest of a 12 MP JPEG (4000×3000, ${(twelve.length / 1e6).toFixed(1)} MB, EXIF + GPS; three variants, palette, stored, row + activity), ${sizes.ingests} sequential over HTTP: p50 ${fmt(ingest.p50)} ms, mean ${fmt(ingest.mean)} ms, max ${fmt(ingest.max)} ms; server-side (imageflow_image_ingest_seconds, excludes the upload transfer) mean ${fmt(ingestServerMean)} ms. Target ≤ 400 ms.`,
      '',
      `Event loop while images are processed (\`/healthz\` every 50 ms): during the resize load p50 ${fmt(missLoop.p50)} ms, p95 ${fmt(missLoop.p95)} ms, max ${fmt(missLoop.max)} ms; during ingests p50 ${fmt(ingestLoop.p50)} ms, p95 ${fmt(ingestLoop.p95)} ms, max ${fmt(ingestLoop.max)} ms.`,
    ].join('\n');
    writeSection(resultsFile, section, body);
    return body.split('\n').slice(0, 3).join('\n');
  } finally {
    for (const server of started) await server.kill9().catch(() => {});
    for (const target of targets) target.cleanup();
    await database.drop().catch(() => {});
  }
}
