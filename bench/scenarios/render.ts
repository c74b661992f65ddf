/**
 * Render, a scenario of bench/run.ts (`npm run bench -- --only render`): a 1920 × 1080 canvas of
 * 20 layers — every layer type, mixed blend modes, filters, two adjustment layers — over
 * in-memory JPEG originals, rendered in this process by renderCanvas, sequentially after warm-up:
 * full size to PNG/WebP/JPEG and a 320-px thumbnail, each again (the steady state of a canvas
 * rendered at one size: rasterised layers come from the layer cache) and cold (the cache off:
 * every layer decoded and rasterised); the full PNG through a one-worker RenderPool (its
 * overhead); where the CPU goes per stage. Beside it, in the same run, the peer: sharp alone
 * compositing a canvas of the same size and layer count in one `composite()` (the naive pass the
 * issue measured at ≈ 220 ms here), so a loaded machine still gives a ratio. Writes the `render`
 * section of bench/RESULTS.md.
 */
import { availableParallelism, cpus } from 'node:os';
import sharp from 'sharp';
import type { BlendMode, Canvas, Filter, Layer } from '../../shared/canvas.ts';
import type { ImageSource, RenderOptions } from '../../renderer/types.ts';
import { profileRenders, renderCanvas } from '../../renderer/index.ts';
import { DEFAULT_LAYER_CACHE_BYTES, setLayerCacheBytes } from '../../renderer/layer-cache.ts';
import { RenderPool } from '../../renderer/pool.ts';
import { gitFacts } from '../lib/machine.ts';
import { busyCores } from '../lib/procfs.ts';
import { writeSection } from '../lib/results-file.ts';
import { fmt, summarize, type Summary } from '../lib/stats.ts';

type M = [number, number, number, number, number, number];
const rot = (deg: number, x: number, y: number, s = 1): M => {
  const t = (deg * Math.PI) / 180;
  return [s * Math.cos(t), s * Math.sin(t), -s * Math.sin(t), s * Math.cos(t), x, y];
};

function base(order: string, blendMode: BlendMode, transform: M, extra: { opacity?: number; filters?: Filter[] } = {}) {
  return { name: order, order, visible: true, opacity: extra.opacity ?? 1, blendMode, locked: false, transform, filters: extra.filters ?? [] };
}

/** A photo-like JPEG: smooth gradients plus detail, so decode and resampling do real work. */
async function photo(width: number, height: number, seed: number): Promise<Buffer> {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      px[i] = (x * 255) / width;
      px[i + 1] = (y * 255) / height;
      px[i + 2] = 128 + 100 * Math.sin((x + seed * 37) / 23) * Math.cos((y - seed * 11) / 17);
    }
  }
  return sharp(px, { raw: { width, height, channels: 3 } }).jpeg({ quality: 85 }).toBuffer();
}

export async function benchSources(): Promise<{ images: ImageSource; bytes: number }> {
  const originals = new Map<string, Buffer>([
    ['img_bg', await photo(2040, 1356, 1)],
    ['img_a', await photo(400, 300, 2)],
    ['img_b', await photo(400, 300, 3)],
    ['img_c', await photo(400, 300, 4)],
  ]);
  const bytes = [...originals.values()].reduce((n, b) => n + b.length, 0);
  return { images: async (id) => originals.get(id), bytes };
}

/** The 20 layers: 6 images, 4 shapes, 3 drawings, 4 texts, 1 filtered shape, 2 adjustments. */
export function benchCanvas(): Canvas {
  const L: Record<string, Layer> = {
    bg: { type: 'image', ...base('a00', 'normal', [0.9412, 0, 0, 0.7965, 0, 0]), data: { imageId: 'img_bg' } },
    i1: { type: 'image', ...base('a01', 'normal', rot(12, 120, 80)), data: { imageId: 'img_a' } },
    i2: { type: 'image', ...base('a02', 'multiply', rot(-8, 600, 120), { opacity: 0.9 }), data: { imageId: 'img_b' } },
    i3: { type: 'image', ...base('a03', 'screen', rot(20, 1100, 60)), data: { imageId: 'img_c', flipX: true } },
    i4: { type: 'image', ...base('a04', 'luminosity', rot(-15, 1450, 500), { opacity: 0.8 }), data: { imageId: 'img_a', crop: { x: 50, y: 20, width: 300, height: 250 } } },
    i5: { type: 'image', ...base('a05', 'overlay', rot(5, 300, 600, 1.2)), data: { imageId: 'img_b' } },
    s1: { type: 'shape', ...base('a06', 'normal', [1, 0, 0, 1, 900, 650]), data: { shape: 'rectangle', width: 400, height: 250, fill: '#3366ffcc', stroke: '#000000', strokeWidth: 6, cornerRadius: 24 } },
    s2: { type: 'shape', ...base('a07', 'hue', rot(30, 1500, 150)), data: { shape: 'ellipse', width: 350, height: 200, fill: '#ff3300', stroke: null, strokeWidth: 0 } },
    s3: { type: 'shape', ...base('a08', 'soft-light', [1, 0, 0, 1, 0, 0]), data: { shape: 'polygon', width: 0, height: 0, fill: '#ffee00', stroke: '#886600', strokeWidth: 3, points: [100, 900, 500, 800, 650, 1050, 200, 1070] } },
    s4: { type: 'shape', ...base('a09', 'normal', [2, 0, 0, 2, 1650, 800]), data: { shape: 'path', width: 100, height: 100, fill: '#00aa66', stroke: '#ffffff', strokeWidth: 2, path: 'M50 0 L61 35 L98 35 L68 57 L79 91 L50 70 L21 91 L32 57 L2 35 L39 35 Z' } },
    d1: { type: 'drawing', ...base('a10', 'normal', [1, 0, 0, 1, 0, 0]), data: { strokes: [
      { tool: 'pen', color: '#111111', width: 4, points: Array.from({ length: 400 }, (_, k) => (k % 2 === 0 ? 100 + k * 4 : 400 + 120 * Math.sin(k / 20))) },
      { tool: 'eraser', color: '#000000', width: 20, points: [500, 300, 700, 500] },
    ] } },
    d2: { type: 'drawing', ...base('a11', 'multiply', [1, 0, 0, 1, 0, 0]), data: { strokes: [
      { tool: 'marker', color: '#ffcc00', width: 30, points: [800, 200, 1300, 260, 1800, 220] },
      { tool: 'marker', color: '#00ccff', width: 30, points: [820, 300, 1700, 350] },
    ] } },
    d3: { type: 'drawing', ...base('a12', 'normal', [1, 0, 0, 1, 0, 0]), data: { strokes: [
      { tool: 'brush', color: '#cc0066', width: 18, points: [1200, 900, 1400, 820, 1600, 950, 1850, 870] },
    ] } },
    t1: { type: 'text', ...base('a13', 'normal', [1, 0, 0, 1, 80, 40]), data: { text: 'ImageFlow Collab — render benchmark', fontFamily: 'Noto Sans', fontSize: 56, fontWeight: 'bold', color: '#ffffff', align: 'left' } },
    t2: { type: 'text', ...base('a14', 'normal', [1, 0, 0, 1, 80, 140]), data: { text: 'A paragraph of body text that wraps inside its box, justified, with a little letter spacing and a line height of 1.4, the way a caption would be set on a poster.', fontFamily: 'Noto Sans', fontSize: 22, color: '#f0f0f0', align: 'justify', boxWidth: 600, lineHeight: 1.4, letterSpacing: 0.3 } },
    t3: { type: 'text', ...base('a15', 'difference', rot(-10, 1000, 900)), data: { text: '你好，世界 · こんにちは · 안녕하세요', fontFamily: 'Noto Sans', fontSize: 40, color: '#ffffff', align: 'center', boxWidth: 700 } },
    t4: { type: 'text', ...base('a16', 'normal', [1, 0, 0, 1, 1400, 40]), data: { text: 'Centred italic', fontFamily: 'serif', fontSize: 36, fontStyle: 'italic', color: '#202020', align: 'center', boxWidth: 400 } },
    f1: { type: 'shape', ...base('a17', 'normal', [1, 0, 0, 1, 1500, 600], { filters: [{ type: 'drop-shadow', offsetX: 8, offsetY: 8, blur: 12, color: '#00000099' }, { type: 'saturate', amount: 1.5 }] }), data: { shape: 'rectangle', width: 250, height: 160, fill: '#ff8844', stroke: null, strokeWidth: 0, cornerRadius: 12 } },
    a1: { type: 'adjustment', ...base('a18', 'normal', [1, 0, 0, 1, 0, 0], { opacity: 0.8 }), data: { adjustment: 'hue-saturation', hue: 15, saturation: 0.2, lightness: 0 } },
    a2: { type: 'adjustment', ...base('a19', 'normal', [1, 0, 0, 1, 0, 0]), data: { adjustment: 'curves', channel: 'rgb', points: [[0, 10], [128, 120], [255, 250]] } },
  };
  return { meta: { width: 1920, height: 1080, background: '#ffffff', imageId: 'img_bg', baseVersionId: null }, layers: L };
}

export interface RenderRun {
  label: string;
  options: RenderOptions;
  /** Wall time per render, ms. */
  summary: Summary;
  /** Process CPU time per render (this thread + libvips threads), ms. */
  cpu: Summary;
  bytes: number;
  /** With a peer: its wall and CPU samples, each run right after one of ours, and ours ÷ peer per pair. */
  paired?: { wall: number[]; cpu: number[]; wallRatios: number[]; cpuRatios: number[] };
}

async function timedCpu<T>(fn: () => Promise<T>): Promise<{ wall: number; cpu: number; value: T }> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const value = await fn();
  const c = process.cpuUsage(c0);
  return { wall: performance.now() - t0, cpu: (c.user + c.system) / 1000, value };
}

/**
 * Renders `runs` times after `warmup` renders, sequentially; wall and CPU time per render in ms.
 * With `peer`, each render is followed by one run of the peer, so the two see the same minutes
 * of a machine whose load changes (the ratio is taken per pair).
 */
export async function measureRender(
  label: string,
  canvasOf: Canvas | ((run: number) => Canvas),
  images: ImageSource,
  options: RenderOptions,
  runs: number,
  warmup: number,
  render: typeof renderCanvas = renderCanvas,
  peer?: () => Promise<unknown>,
): Promise<RenderRun> {
  let bytes = 0;
  const canvas = (i: number) => (typeof canvasOf === 'function' ? canvasOf(i) : canvasOf);
  for (let i = 0; i < warmup; i++) {
    await render(canvas(-1 - i), images, options);
    await peer?.();
  }
  const samples: number[] = [];
  const cpu: number[] = [];
  const paired = { wall: [] as number[], cpu: [] as number[], wallRatios: [] as number[], cpuRatios: [] as number[] };
  for (let i = 0; i < runs; i++) {
    const r = await timedCpu(() => render(canvas(i), images, options));
    samples.push(r.wall);
    cpu.push(r.cpu);
    bytes = r.value.data.length;
    if (!peer) continue;
    const p = await timedCpu(peer);
    paired.wall.push(p.wall);
    paired.cpu.push(p.cpu);
    paired.wallRatios.push(r.wall / p.wall);
    paired.cpuRatios.push(r.cpu / p.cpu);
  }
  return { label, options, summary: summarize(samples), cpu: summarize(cpu), bytes, ...(peer ? { paired } : {}) };
}

/**
 * The peer: what sharp alone does with a canvas of this size and layer count in one pass — the
 * background decoded and scaled to 1920 × 1080, 19 of the 400 × 300 originals decoded, rotated
 * and composited with libvips' native blend modes (wrong for translucent pixels, libvips#4614,
 * and no hue/saturation/color/luminosity, text, vectors, filters or adjustments: the floor a
 * renderer built on sharp starts from, not the same output), encoded with the renderer's PNG
 * settings.
 */
export async function sharpPeer(images: ImageSource): Promise<Buffer> {
  const bytes = async (id: string) => {
    const got = await images(id);
    if (!(got instanceof Uint8Array)) throw new Error(`the peer reads ${id} from memory`);
    return got;
  };
  const bg = await bytes('img_bg');
  const smalls = await Promise.all(['img_a', 'img_b', 'img_c'].map(bytes));
  const modes = ['over', 'multiply', 'screen', 'overlay', 'darken', 'lighten', 'soft-light', 'difference', 'exclusion', 'hard-light'] as const;
  const layers = await Promise.all(
    Array.from({ length: 19 }, async (_, i) => ({
      input: await sharp(smalls[i % 3]).rotate(((i * 37) % 60) - 30, { background: '#00000000' }).png({ compressionLevel: 0 }).toBuffer(),
      left: 40 + ((i * 97) % 1300),
      top: 30 + ((i * 53) % 560),
      blend: modes[i % modes.length],
    })),
  );
  return sharp(bg).resize(1920, 1080, { fit: 'fill' }).composite(layers).png({ compressionLevel: 1, adaptiveFiltering: false }).toBuffer();
}

/** The sizes of one run. */
export const RENDER_SIZES = {
  full: { runs: 30, warmup: 3, profileRuns: 5 },
  quick: { runs: 10, warmup: 2, profileRuns: 3 },
  tiny: { runs: 2, warmup: 1, profileRuns: 1 },
} as const;

export interface RenderRunOptions {
  size: keyof typeof RENDER_SIZES;
  resultsFile: string;
  command: string;
  section: string;
}

const TARGETS: Record<string, number> = {
  'full, PNG': 150,
  'full, PNG, one layer changed': 150,
  'full, PNG, cold': 150,
  'thumbnail 320 px, WebP': 40,
  'thumbnail 320 px, WebP, one layer changed': 40,
  'thumbnail 320 px, WebP, cold': 40,
};

/** Runs the scenario, writes its section and resolves with its first lines. */
export async function runRender({ size, resultsFile, command, section }: RenderRunOptions): Promise<string> {
  const { runs: RUNS, warmup: WARMUP, profileRuns: PROFILE_RUNS } = RENDER_SIZES[size];
  const started = new Date();
  const busyBefore = await busyCores(1_000);
  const { images, bytes } = await benchSources();
  const canvas = benchCanvas();
  const results: RenderRun[] = [];
  const cold = async <T>(fn: () => Promise<T>): Promise<T> => {
    setLayerCacheBytes(0);
    try {
      return await fn();
    } finally {
      setLayerCacheBytes(DEFAULT_LAYER_CACHE_BYTES);
    }
  };
  const full = { format: 'png' } as const;
  const thumb = { width: 320, format: 'webp' } as const;
  const peer = () => sharpPeer(images);
  results.push(await measureRender('full, PNG', canvas, images, full, RUNS, WARMUP, renderCanvas, peer));
  results.push(await cold(() => measureRender('full, PNG, cold', canvas, images, full, RUNS, WARMUP, renderCanvas, peer)));
  // A session's next version: one layer (the rounded rectangle) moved, the other 19 unchanged.
  const moved = (run: number): Canvas => {
    const s1 = canvas.layers.s1!;
    return { ...canvas, layers: { ...canvas.layers, s1: { ...s1, transform: [1, 0, 0, 1, 900 + (run % 50), 650] } } };
  };
  results.push(await measureRender('full, PNG, one layer changed', moved, images, full, RUNS, WARMUP));
  results.push(await measureRender('full, WebP q82', canvas, images, { format: 'webp' }, RUNS, WARMUP));
  results.push(await measureRender('full, JPEG q85', canvas, images, { format: 'jpeg' }, RUNS, WARMUP));
  results.push(await measureRender('thumbnail 320 px, WebP', canvas, images, thumb, RUNS, WARMUP));
  results.push(await measureRender('thumbnail 320 px, WebP, one layer changed', moved, images, thumb, RUNS, WARMUP));
  results.push(await cold(() => measureRender('thumbnail 320 px, WebP, cold', canvas, images, thumb, RUNS, WARMUP)));
  results.push(await measureRender('thumbnail 320 px, PNG', canvas, images, { width: 320, format: 'png' }, RUNS, WARMUP));
  const pool = new RenderPool({ size: 1 });
  try {
    results.push(await measureRender('full, PNG, through RenderPool (1 worker)', canvas, images, full, RUNS, WARMUP, (c, i, o) => pool.render(c, i, o)));
  } finally {
    await pool.close();
  }
  // Where the CPU goes, cold (every stage runs): stage totals over PROFILE_RUNS sequential renders.
  const stages: Array<[string, Record<string, number>, number]> = [];
  for (const [label, options] of [['full, PNG, cold', full], ['thumbnail 320 px, WebP, cold', thumb]] as const) {
    const totals: Record<string, number> = {};
    await cold(async () => {
      profileRenders(totals);
      const c0 = process.cpuUsage();
      for (let i = 0; i < PROFILE_RUNS; i++) await renderCanvas(canvas, images, options);
      const c = process.cpuUsage(c0);
      profileRenders(undefined);
      stages.push([label, totals, (c.user + c.system) / 1000 / PROFILE_RUNS]);
    });
  }
  const busyAfter = await busyCores(1_000);
  const stageNames = [...new Set(stages.flatMap(([, t]) => Object.keys(t)))].sort();
  const stageRows = stageNames.map((name) => `| ${name} | ${stages.map(([, t]) => fmt((t[name] ?? 0) / PROFILE_RUNS, 1)).join(' | ')} |`);
  const coldFull = results.find((r) => r.label === 'full, PNG, cold')!;
  const warmFull = results[0]!;
  const peerWall = summarize([...warmFull.paired!.wall, ...coldFull.paired!.wall]);
  const peerCpu = summarize([...warmFull.paired!.cpu, ...coldFull.paired!.cpu]);
  const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
  const ratioOf = (xs: readonly number[]) => `${fmt(median(xs))}× (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`;
  const rows = results.map((r) => {
    const target = TARGETS[r.label];
    const verdict = target === undefined ? '' : r.summary.p50 <= target ? `≤ ${target} ✓` : `≤ ${target} ✗`;
    return `| ${r.label} | ${fmt(r.summary.p50, 1)} | ${fmt(r.summary.p99, 1)} | ${fmt(r.cpu.p50, 1)} | ${(r.bytes / 1024).toFixed(0)} KiB | ${verdict} |`;
  });
  const body = `## Renderer: 1920 × 1080, 20 layers

- Command: \`${command}\` (scenario render of bench/run.ts; ${RUNS} renders of each after ${WARMUP} warm-up, sequential, in-process unless noted)
- Date: ${started.toISOString()} (took ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s); code: ${gitFacts()}
- Machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}, sharp ${sharp.versions.sharp} / libvips ${sharp.versions.vips}, \`sharp.concurrency()\` = ${sharp.concurrency()}
- **Machine load**: other processes kept ${busyBefore.toFixed(2)} cores busy just before and ${busyAfter.toFixed(2)} just after${busyBefore + busyAfter > 0.5 ? ' — the machine is shared and loaded: wall times are inflated and noisy; the CPU column and the ratio to the peer (same process, same minutes) are the steadier figures' : ''}.
- Canvas (\`bench/scenarios/render.ts\`): a 2040 × 1356 JPEG background scaled to fit, five rotated 400 × 300 JPEG layers (normal, multiply, screen, luminosity, overlay), four shapes (rounded rectangle with stroke, rotated ellipse in hue, polygon in soft-light, a star path scaled 2×), three drawings (a 200-point pen stroke with an eraser, markers in multiply, a brush), four texts (bold title, justified wrapped paragraph, CJK in difference rotated, serif italic centred), a rounded rectangle with drop-shadow + saturate, and hue-saturation and curves adjustments over everything. Originals: ${(bytes / 1024).toFixed(0)} KiB of JPEG.
- Three states of the layer cache (renderer/layer-cache.ts): a plain row renders the same canvas again (every raster from the cache: re-rendering a live canvas nobody changed, or another format); "one layer changed" moves the rounded rectangle by a pixel before each render (one layer rasterised, 19 from the cache: a session's next version, the live canvas after an edit); "cold" turns the cache off (\`RENDER_LAYER_CACHE_BYTES=0\`): every layer decoded and rasterised, as the first render of a canvas.

| render | wall p50 ms | wall p99 ms | CPU p50 ms (process) | output | target (wall p50) |
|---|---:|---:|---:|---:|---|
${rows.join('\n')}
| peer: sharp alone, one \`composite()\` of 20 layers (see below), PNG | ${fmt(peerWall.p50, 1)} | ${fmt(peerWall.p99, 1)} | ${fmt(peerCpu.p50, 1)} | | |

**Ours ÷ the peer, same run** (each of our renders followed by one of the peer's; median (min–max) of the ${RUNS} pairs): full PNG cold ${ratioOf(coldFull.paired!.wallRatios)} the peer's wall time, ${ratioOf(coldFull.paired!.cpuRatios)} its CPU; full PNG repeated ${ratioOf(warmFull.paired!.wallRatios)} wall, ${ratioOf(warmFull.paired!.cpuRatios)} CPU. The peer (\`sharpPeer\`): the background decoded and scaled to 1920 × 1080 and 19 of the 400 × 300 originals decoded, rotated and composited with libvips' native blends in one \`composite()\`, PNG at the renderer's settings — no text, vectors, filters, adjustments or non-native modes, and libvips' blends are off for translucent pixels (libvips#4614): the floor a sharp-based renderer starts from, not the same picture.

CPU time is the process's (this thread and libvips' worker threads); with other work on the cores
it is the steadier figure. The renderer rasterises up to eight layers ahead while it composites
(as many as 128 MiB holds at the frame's size, at least three), so on an idle machine a cold
render's wall time can be below its CPU time; on a loaded one the two are about equal.

Where the CPU goes, cold (ms per render, \`profileRenders\` in renderer/index.ts, ${PROFILE_RUNS} renders each, sequential — no look-ahead while profiling; stages are named after what they do):

| stage | ${stages.map(([l]) => l).join(' | ')} |
|---|${stages.map(() => '---:').join('|')}|
${stageRows.join('\n')}
| **all (process CPU)** | ${stages.map(([, , total]) => `**${fmt(total, 1)}**`).join(' | ')} |
`;
  writeSection(resultsFile, section, body);
  return body.split('\n').slice(0, 3).join('\n');
}
