/**
 * Versions, a scenario of bench/run.ts: `npm run bench -- --only versions`
 *
 * Against a fresh PostgreSQL database (created on BENCH_DATABASE_URL, default
 * postgres://root@127.0.0.1:5432/test, dropped at the end) and our server as a child process
 * (node transport, autosave timer off), it measures:
 *
 * 1. Snapshot of a 200-layer canvas (every layer type, realistic data sizes): the wall time of
 *    `POST /api/sessions/:id/versions` — read the canvas, validate it, one transaction writing
 *    the version and 200 canvas_layers rows. Twice: with the document open on the server (a
 *    client connected) and with no client (the canvas is read from the update log).
 * 2. Loading a version tree of 1,000 versions (a main line and branches started from random
 *    earlier versions, seeded): `GET /api/images/:id/versions`, and the recursive query alone.
 *
 * Writes its section of bench/RESULTS.md (between `<!-- bench:versions:start/end -->`).
 */
import { availableParallelism, cpus } from 'node:os';
import { readCanvas } from '../../shared/canvas.ts';
import { addLayer, type NewLayer } from '../../shared/layers.ts';
import { versionTree } from '../../persistence/repositories/versions.ts';
import { allAcknowledged, connect, withTimeout } from '../lib/clients.ts';
import { createBenchDatabase, createOwnerWithImage } from '../lib/database.ts';
import { sequential, timed } from '../lib/load.ts';
import { gitFacts } from '../lib/machine.ts';
import { writeSection } from '../lib/results-file.ts';
import { summarize, fmt, type Summary } from '../lib/stats.ts';
import { benchToken, oursTarget } from '../lib/targets.ts';
/** The sizes of one run; `full` is the published one (the harness's `--quick` and `--tiny` shrink it). */
export const VERSIONS_SIZES = {
  full: { layers: 200, snapshotRuns: 40, treeVersions: 1_000, treeBranches: 40, treeRuns: 30 },
  quick: { layers: 200, snapshotRuns: 10, treeVersions: 300, treeBranches: 10, treeRuns: 10 },
  tiny: { layers: 20, snapshotRuns: 3, treeVersions: 40, treeBranches: 4, treeRuns: 3 },
} as const;
let LAYERS = 200;
let SNAPSHOT_RUNS = 40;
let TREE_VERSIONS = 1_000;
let TREE_BRANCHES = 40;
let TREE_RUNS = 30;
const seed = Number(process.env.BENCH_SEED ?? Date.now() % 1_000_000);

/** mulberry32: a small seeded PRNG, so the tree's shape can be reproduced from the seed. */
function rng(s: number): () => number {
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Layer `i` of the 200: the five types in turn, each with data of a realistic size. */
function benchLayer(i: number, imageId: string, random: () => number): NewLayer {
  const common = {
    name: `Layer ${i}`,
    opacity: Math.round(random() * 100) / 100,
    transform: [1, 0, 0, 1, Math.round(random() * 600), Math.round(random() * 400)] as [number, number, number, number, number, number],
    filters: i % 3 === 0 ? [{ type: 'blur' as const, radius: 2 }, { type: 'grayscale' as const, amount: 0.5 }] : [],
  };
  switch (i % 5) {
    case 0:
      return { ...common, type: 'image', data: { imageId, crop: { x: 0, y: 0, width: 320, height: 240 } } };
    case 1: {
      const points = Array.from({ length: 400 }, () => Math.round(random() * 6400) / 10); // 200 x,y pairs
      return { ...common, type: 'drawing', data: { strokes: [{ tool: 'brush', color: '#336699', width: 4, points }] } };
    }
    case 2:
      return {
        ...common,
        type: 'text',
        data: { text: `Caption number ${i}: the quick brown fox jumps over the lazy dog.`, fontFamily: 'Inter', fontSize: 24, color: '#111111', align: 'left' },
      };
    case 3:
      return { ...common, type: 'shape', data: { shape: 'rectangle', width: 120, height: 80, fill: '#ffcc00', stroke: '#000000', strokeWidth: 2, cornerRadius: 8 } };
    default:
      return { ...common, type: 'adjustment', data: { adjustment: 'hue-saturation', hue: 10, saturation: 0.1, lightness: 0 } };
  }
}

async function post(url: string, token: string, body: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

const row = (label: string, s: Summary, extra = '') => `| ${label} | ${s.n} | ${fmt(s.p50)} | ${fmt(s.mean)} | ${fmt(s.p99)} | ${fmt(s.max)} |${extra}`;

export interface VersionsRun {
  size: keyof typeof VERSIONS_SIZES;
  resultsFile: string;
  command: string;
}

/** Runs the scenario, writes its section and resolves with it. */
export async function runVersions(run: VersionsRun): Promise<string> {
  const size = VERSIONS_SIZES[run.size];
  LAYERS = size.layers;
  SNAPSHOT_RUNS = size.snapshotRuns;
  TREE_VERSIONS = size.treeVersions;
  TREE_BRANCHES = size.treeBranches;
  TREE_RUNS = size.treeRuns;
  return versions(run);
}

async function versions({ resultsFile, command }: VersionsRun): Promise<string> {
  const started = Date.now();
  const random = rng(seed);
  process.stderr.write(`[bench] versions: seed ${seed}\n`);
  const database = await createBenchDatabase();
  const target = oursTarget(database, 'node', [], {
    env: {
      AUTOSAVE_QUIET_MS: '0',
      // The bench saves hundreds of versions as one user: measure saving, not the per-user limit.
      RATE_LIMIT_VERSION_SAVES: '1000000',
    },
  });
  const server = await target.start();
  try {
    const { userId, imageId } = await createOwnerWithImage(database.pool);
    const token = await benchToken(userId);
    const newSession = async (extra: Record<string, unknown> = {}) => {
      const res = await post(`${server.httpUrl}/api/sessions`, token, { imageId, ...extra });
      if (res.status !== 201) throw new Error(`session: ${res.status} ${JSON.stringify(res.json)}`);
      return (res.json as { session: { sessionId: string } }).session.sessionId;
    };
    const saveVersion = async (sessionId: string) => {
      const res = await post(`${server.httpUrl}/api/sessions/${sessionId}/versions`, token, {});
      if (res.status !== 201) throw new Error(`save: ${res.status} ${JSON.stringify(res.json)}`);
      return (res.json as { version: { versionId: string } }).version.versionId;
    };

    // ---- 1. snapshot of a 200-layer canvas --------------------------------------------------
    const sessionId = await newSession();
    const client = connect(server.wsUrl, sessionId, token);
    await withTimeout(new Promise<void>((resolve) => client.provider.on('synced', () => resolve())), 10_000, 'sync');
    for (let i = 0; i < LAYERS - 1; i++) addLayer(client.doc, benchLayer(i, imageId, random)); // + the original = 200
    await withTimeout(allAcknowledged(client.provider), 30_000, 'acknowledgement of 200 layers');
    const canvasBytes = Buffer.byteLength(JSON.stringify(readCanvas(client.doc)));
    const loaded = await sequential(SNAPSHOT_RUNS, () => saveVersion(sessionId), 3);
    client.destroy();
    // No client: the document unloads once its last connection is gone; the next save reads the log.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const fromLog = await sequential(SNAPSHOT_RUNS, () => saveVersion(sessionId));
    const { rows: written } = await database.pool.query<{ versions: number; layers: number }>(
      `SELECT count(DISTINCT v.version_id)::int AS versions, count(*)::int AS layers
       FROM image_versions v JOIN canvas_layers l USING (version_id) WHERE v.session_id = $1`,
      [sessionId],
    );

    // ---- 2. a version tree of 1,000 versions ------------------------------------------------
    const tree = await createOwnerWithImage(database.pool);
    const treeToken = await benchToken(tree.userId);
    const treePost = (path: string, body: unknown) => post(`${server.httpUrl}${path}`, treeToken, body);
    const created: string[] = [];
    const buildStarted = performance.now();
    const mainSession = (await treePost('/api/sessions', { imageId: tree.imageId })).json as { session: { sessionId: string } };
    const perBranch = Math.floor((TREE_VERSIONS / 2) / TREE_BRANCHES);
    const mainCount = TREE_VERSIONS - perBranch * TREE_BRANCHES;
    const saveIn = async (sid: string) => {
      const res = await treePost(`/api/sessions/${sid}/versions`, {});
      if (res.status !== 201) throw new Error(`tree save: ${res.status} ${JSON.stringify(res.json)}`);
      created.push((res.json as { version: { versionId: string } }).version.versionId);
    };
    for (let i = 0; i < mainCount / 2; i++) await saveIn(mainSession.session.sessionId);
    for (let b = 0; b < TREE_BRANCHES; b++) {
      const from = created[Math.floor(random() * created.length)]!;
      const res = await treePost('/api/sessions', { imageId: tree.imageId, fromVersionId: from });
      const sid = (res.json as { session: { sessionId: string } }).session.sessionId;
      for (let i = 0; i < perBranch; i++) await saveIn(sid);
      if (b === TREE_BRANCHES / 2) for (let i = 0; i < mainCount / 2; i++) await saveIn(mainSession.session.sessionId);
    }
    const buildMs = performance.now() - buildStarted;
    let depth = 0;
    let count = 0;
    const readTree = async () => {
      const http: number[] = [];
      const query: number[] = [];
      for (let i = 0; i < TREE_RUNS + 3; i++) {
        const { ms, value } = await timed(async () => {
          const res = await fetch(`${server.httpUrl}/api/images/${tree.imageId}/versions`, { headers: { authorization: `Bearer ${treeToken}` } });
          return (await res.json()) as { versions: Array<{ depth: number }> };
        });
        if (i >= 3) http.push(ms);
        count = value.versions.length;
        depth = Math.max(...value.versions.map((v) => v.depth));
      }
      query.push(...(await sequential(TREE_RUNS, () => versionTree(database.pool, tree.imageId), 3)));
      return { http: summarize(http), query: summarize(query) };
    };
    // Right after the bulk insert the table has no planner statistics yet (autovacuum analyzes
    // it within a minute or so); then again with statistics, the steady state.
    const fresh = await readTree();
    await database.pool.query('ANALYZE image_versions');
    const analyzed = await readTree();
    if (count !== TREE_VERSIONS) throw new Error(`tree has ${count} versions, expected ${TREE_VERSIONS}`);

    // ---- report -----------------------------------------------------------------------------
    const { rows: settings } = await database.pool.query<{ v: string }>(`SELECT current_setting('server_version') AS v`);
    const body = [
      '## Versions: snapshot a 200-layer canvas, load a 1,000-version tree',
      '',
      `- Command: \`${command}\` (scenario versions of bench/run.ts; fresh PostgreSQL database; our server as a child process, node transport, \`AUTOSAVE_QUIET_MS=0\`)`,
      `- Date: ${new Date().toISOString()} (took ${Math.round((Date.now() - started) / 1000)} s); seed ${seed} (\`BENCH_SEED=${seed}\` repeats the tree's shape)`,
      `- Machine: \`nproc\` = ${availableParallelism()} (${cpus()[0]?.model ?? '?'}), Node ${process.version}, PostgreSQL ${settings[0]?.v ?? '?'} on loopback; server, client and PostgreSQL share these cores`,
      `- Code: ${gitFacts()}`,
      '- Wall time seen by the HTTP client, in ms: request → response, including the server reading and validating the canvas and committing the transaction.',
      '',
      `### 1. Snapshot of a ${LAYERS}-layer canvas (${(canvasBytes / 1024).toFixed(0)} KiB of canvas JSON; all five layer types)`,
      '',
      '`POST /api/sessions/:id/versions`: one transaction with one image_versions row and 200 canvas_layers rows (one multi-row INSERT), after 3 warm-up saves.',
      '',
      '| document | saves | p50 ms | mean ms | p99 ms | max ms |',
      '|---|---:|---:|---:|---:|---:|',
      row('open on the server (a client connected)', summarize(loaded)),
      row('not open (read from the update log)', summarize(fromLog)),
      '',
      `Written: ${written[0]?.versions ?? '?'} versions with ${written[0]?.layers ?? '?'} canvas_layers rows.`,
      '',
      `### 2. Version tree of ${TREE_VERSIONS.toLocaleString('en-US')} versions`,
      '',
      `A main line of ${mainCount} and ${TREE_BRANCHES} branches of ${perBranch}, each started from a random earlier version (deepest version at depth ${depth}); built with ${TREE_VERSIONS} HTTP saves in ${(buildMs / 1000).toFixed(1)} s. After 3 warm-up reads:`,
      '',
      '| read | runs | p50 ms | mean ms | p99 ms | max ms |',
      '|---|---:|---:|---:|---:|---:|',
      row('`GET /api/images/:id/versions` (HTTP, JSON of 1,000 nodes), with planner statistics', analyzed.http),
      row('the recursive CTE alone (`versionTree`, from the bench process), with planner statistics', analyzed.query),
      row('`GET /api/images/:id/versions`, right after the inserts (no statistics yet)', fresh.http),
      row('the recursive CTE alone, right after the inserts (no statistics yet)', fresh.query),
      '',
      'Measured twice: first right after the 1,000 inserts, before PostgreSQL has planner statistics for the table (the worst case: the plan rescans image_versions at every level of the recursion, hundreds of levels deep here); then after `ANALYZE image_versions`, which autovacuum does on its own shortly after bulk changes (the steady state: the image\'s versions are hashed once for the whole walk).',
    ].join('\n');
    writeSection(resultsFile, 'versions', body);
    return body;
  } finally {
    await server.stop();
    target.cleanup();
    await database.drop();
  }
}

