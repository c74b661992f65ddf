/**
 * Image benchmark: `node_modules/.bin/node bench/images.ts`
 *
 * Against a fresh PostgreSQL database and our server as a child process (node transport, local
 * blob store in a temporary DATA_DIR), it measures:
 *
 * 1. Resize by URL, cache miss — imgproxy's published task: a ~2K JPEG (2040×1356) → fit inside
 *    512×512, JPEG q80, over HTTP (`GET /api/images/:id/file`, Bearer token, access checked), with
 *    the variant cache off (`IMAGE_CACHE_VARIANTS=false`) so every request decodes, resizes and
 *    encodes. Closed loop, 4 in flight, each loop on its own image (identical concurrent misses
 *    would be coalesced into one resize). The same resize in-process (sharp alone, 2 in flight) is
 *    measured beside it as the ceiling on this machine.
 * 2. Cached: the same URL on a server with the variant cache on — a stored variant streamed from
 *    the blob store (`200`), and `If-None-Match` answered `304` — 16 in flight.
 * 3. Ingest of a 12 MP JPEG (4000×3000, EXIF with GPS): `POST /api/images`, sequential — sniff,
 *    header checks, EXIF, one decode, three variants, palette, original and variants stored, row +
 *    activity inserted. Client-side wall time and the server's own imageflow_image_ingest_seconds.
 * 4. While 1 and 3 run, a probe requests `/healthz` every 50 ms: its latency shows whether image
 *    work stalls the event loop that also serves WebSockets.
 *
 * The load generator runs on the same machine as the server (2 cores, shared with other work):
 * the numbers are indicative. Writes its section of bench/RESULTS.md (`bench:images`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { TokenService } from '../server/auth/tokens.ts';
import { newUserId } from '../shared/ids.ts';
import { insertUser } from '../persistence/repositories/users.ts';
import { photoJpeg } from '../test/support/images.ts';
import { spawnServer, type ServerChild } from './lib/child.ts';
import { createBenchDatabase, type BenchDatabase } from './lib/database.ts';
import { gitFacts } from './lib/machine.ts';
import { busyCores } from './lib/procfs.ts';
import { writeSection } from './lib/results-file.ts';
import { fmt } from './lib/stats.ts';
import { closedLoop, loopProbe, withP95, type LoadResult } from './scenarios/images.ts';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const SECRET = 'bench-secret-bench-secret-bench-secret-0123';
const RESIZE = 'width=512&height=512&fit=inside&format=jpeg&quality=80';
const MISS = { concurrency: 4, warmupMs: 3_000, windowMs: 15_000 };
const CACHED = { concurrency: 16, warmupMs: 2_000, windowMs: 10_000 };
const INGESTS = 12;

const children: ServerChild[] = [];
const dirs: string[] = [];

async function startServer(database: BenchDatabase, env: Record<string, string>): Promise<ServerChild> {
  const dataDir = mkdtempSync(join(tmpdir(), 'bench-images-'));
  dirs.push(dataDir);
  const child = await spawnServer({
    label: 'ours',
    command: [join(repoRoot, 'node_modules/.bin/node'), join(repoRoot, 'server/main.ts')],
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      PORT: '0',
      HOST: '127.0.0.1',
      TRANSPORT: 'node',
      DATABASE_URL: database.url,
      AUTH_JWT_SECRET: SECRET,
      DATA_DIR: dataDir,
      LOG_LEVEL: 'info',
      ...env,
      ...(process.env.BENCH_SERVER_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_SERVER_NODE_OPTIONS } : {}),
    },
    cwd: repoRoot,
    wsPath: '/collab',
  });
  children.push(child);
  return child;
}

async function upload(server: ServerChild, token: string, bytes: Buffer, query = ''): Promise<{ imageId: string; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(`${server.httpUrl}/api/images?privacyLevel=public${query}`, {
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

/** sharp alone on the same bytes: 2 in flight for `ms`. */
async function inProcess(bytes: Buffer, ms: number): Promise<{ perSecond: number; p95: number }> {
  const samples: number[] = [];
  const end = performance.now() + ms;
  const loop = async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      await sharp(bytes).resize(512, 512, { fit: 'inside' }).jpeg({ quality: 80 }).toBuffer();
      samples.push(performance.now() - t0);
    }
  };
  const t0 = performance.now();
  await Promise.all([loop(), loop()]);
  return { perSecond: samples.length / ((performance.now() - t0) / 1000), p95: withP95(samples).p95 };
}

const loadRow = (label: string, r: LoadResult, target: string) =>
  `| ${label} | ${fmt(r.perSecond, 1)} | ${fmt(r.latency.p50)} | ${fmt(r.latency.p95)} | ${fmt(r.latency.p99)} | ${r.requests} | ${Object.entries(r.statuses).map(([s, n]) => `${s}×${n}`).join(' ')} | ${target} |`;

async function main(): Promise<void> {
  const startedAt = new Date();
  const database = await createBenchDatabase();
  const tokens = new TokenService(SECRET);
  try {
    // The first server applies the migrations; the user comes after.
    const missServer = await startServer(database, { IMAGE_CACHE_VARIANTS: 'false' });
    const userId = newUserId();
    await insertUser(database.pool, { userId, username: `bench_${userId.slice(4)}`, email: `${userId}@example.invalid`, displayName: 'bench' });
    const token = await tokens.sign(userId, { expiresInSeconds: 3600 });
    const auth = { authorization: `Bearer ${token}` };
    const twoK = await photoJpeg(2040, 1356, { quality: 90 });
    const twelve = await photoJpeg(4000, 3000, { quality: 90, gps: true, orientation: 1 });
    const idleBefore = await busyCores(2_000);

    // ---- 1. resize by URL, cache miss ----------------------------------------------------------
    // One image per loop (same size, different noise): the server coalesces identical concurrent
    // misses, which would measure fewer resizes than requests.
    const missImages: string[] = [];
    for (let i = 0; i < MISS.concurrency; i++) missImages.push((await upload(missServer, token, await photoJpeg(2040, 1356, { quality: 90 }))).imageId);
    const missUrl = (loop: number) => `${missServer.httpUrl}/api/images/${missImages[loop]}/file?${RESIZE}`;
    const probeMiss = loopProbe(missServer.httpUrl);
    const miss = await closedLoop(missUrl, auth, MISS);
    const missLoop = await probeMiss.stop();
    const resizeServer = await metricSum(missServer, 'imageflow_image_resize_seconds');

    // ---- 3. ingest of a 12 MP JPEG (on the same server) ----------------------------------------
    await upload(missServer, token, twelve); // warm-up
    const before = await metricSum(missServer, 'imageflow_image_ingest_seconds');
    const probeIngest = loopProbe(missServer.httpUrl);
    const ingestMs: number[] = [];
    for (let i = 0; i < INGESTS; i++) ingestMs.push((await upload(missServer, token, twelve)).ms);
    const ingestLoop = await probeIngest.stop();
    const after = await metricSum(missServer, 'imageflow_image_ingest_seconds');
    const ingestServerMean = ((after.sum - before.sum) / (after.count - before.count)) * 1000;
    await missServer.stop();

    // ---- 2. cached: blob-store hit and 304 -----------------------------------------------------
    const cacheServer = await startServer(database, {});
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
    const hit = await closedLoop(cachedUrl, auth, CACHED);
    const notModified = await closedLoop(cachedUrl, { ...auth, 'if-none-match': etag }, CACHED);
    await cacheServer.stop();

    const local = await inProcess(twoK, 8_000);
    const idleAfter = await busyCores(2_000);
    const ingest = withP95(ingestMs);

    const body = [
      '## Images (bench/images.ts)',
      '',
      `Run ${startedAt.toISOString()}, ${gitFacts()}, Node ${process.version}, ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), sharp ${sharp.versions.sharp} / libvips ${sharp.versions.vips}.`,
      `Command: \`node_modules/.bin/node bench/images.ts\`. Server: node transport, PostgreSQL, local blob store; load generator in the same machine.`,
      `**Indicative only**: the machine is shared with other work (other cores busy before/after: ${fmt(idleBefore)} / ${fmt(idleAfter)}), and the client shares the 2 cores with the server.`,
      '',
      '| request | req/s | p50 ms | p95 ms | p99 ms | requests | statuses | target |',
      '|---|---|---|---|---|---|---|---|',
      loadRow(`resize miss: 2040×1356 JPEG → fit 512×512 JPEG q80, ${MISS.concurrency} in flight`, miss, '≥ 100 req/s, p95 ≤ 35 ms'),
      loadRow(`cached variant (blob store), ${CACHED.concurrency} in flight`, hit, '≥ 2,000 req/s'),
      loadRow(`If-None-Match → 304, ${CACHED.concurrency} in flight`, notModified, '≥ 2,000 req/s'),
      '',
      `Server-side resize time (decode + resize + encode, imageflow_image_resize_seconds): mean ${fmt((resizeServer.sum / resizeServer.count) * 1000)} ms over ${resizeServer.count} resizes (warm-up included). sharp alone in-process on the same bytes, 2 in flight: ${fmt(local.perSecond, 1)}/s, p95 ${fmt(local.p95)} ms (imgproxy publishes 79.6 req/s, p95 33 ms on 2 vCPU for this task). Over HTTP the server reached ${fmt((miss.perSecond / local.perSecond) * 100, 0)} % of sharp's in-process rate measured in this run — the comparison that survives a busy machine (on a quiet one sharp alone did 121/s here).`,
      '',
      `Ingest of a 12 MP JPEG (4000×3000, ${(twelve.length / 1e6).toFixed(1)} MB, EXIF + GPS; three variants, palette, stored, row + activity), ${INGESTS} sequential over HTTP: p50 ${fmt(ingest.p50)} ms, mean ${fmt(ingest.mean)} ms, max ${fmt(ingest.max)} ms; server-side (imageflow_image_ingest_seconds, excludes the upload transfer) mean ${fmt(ingestServerMean)} ms. Target ≤ 400 ms.`,
      '',
      `Event loop while images are processed (\`/healthz\` every 50 ms): during the resize load p50 ${fmt(missLoop.p50)} ms, p95 ${fmt(missLoop.p95)} ms, max ${fmt(missLoop.max)} ms; during ingests p50 ${fmt(ingestLoop.p50)} ms, p95 ${fmt(ingestLoop.p95)} ms, max ${fmt(ingestLoop.max)} ms.`,
    ].join('\n');
    writeSection(join(repoRoot, 'bench/RESULTS.md'), 'images', body);
    console.log(body);
  } finally {
    for (const child of children) await child.kill9().catch(() => {});
    await database.drop().catch(() => {});
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
