/**
 * Renderer benchmark: `node_modules/.bin/node bench/render.ts` (BENCH_RUNS=30 by default).
 *
 * A 1920 × 1080 canvas of 20 layers (bench/scenarios/render.ts: every layer type, mixed blend
 * modes, filters, two adjustment layers) rendered in this process by renderCanvas: full size to
 * PNG/WebP/JPEG, a 320-px thumbnail, and the full render through a one-worker RenderPool (its
 * overhead: the message copy and the worker hop). Sequential, after warm-up renders. Writes the
 * `render` section of bench/RESULTS.md. The machine is shared with other work: the numbers are
 * indicative; the section records how busy the other cores were.
 */
import { availableParallelism, cpus } from 'node:os';
import sharp from 'sharp';
import { profileRenders, renderCanvas } from '../renderer/index.ts';
import { RenderPool } from '../renderer/pool.ts';
import { gitFacts } from './lib/machine.ts';
import { busyCores } from './lib/procfs.ts';
import { writeSection } from './lib/results-file.ts';
import { fmt } from './lib/stats.ts';
import { benchCanvas, benchSources, measureRender, type RenderRun } from './scenarios/render.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const WARMUP = 3;
const TARGETS: Record<string, number> = { 'full, PNG': 150, 'thumbnail 320 px, WebP': 40 };

const started = new Date();
const busyBefore = await busyCores(1_000);
const { images, bytes } = await benchSources();
const canvas = benchCanvas();
const runs: RenderRun[] = [];
runs.push(await measureRender('full, PNG', canvas, images, { format: 'png' }, RUNS, WARMUP));
runs.push(await measureRender('full, WebP q82', canvas, images, { format: 'webp' }, RUNS, WARMUP));
runs.push(await measureRender('full, JPEG q85', canvas, images, { format: 'jpeg' }, RUNS, WARMUP));
runs.push(await measureRender('thumbnail 320 px, WebP', canvas, images, { width: 320, format: 'webp' }, RUNS, WARMUP));
runs.push(await measureRender('thumbnail 320 px, PNG', canvas, images, { width: 320, format: 'png' }, RUNS, WARMUP));
const pool = new RenderPool({ size: 1 });
try {
  runs.push(await measureRender('full, PNG, through RenderPool (1 worker)', canvas, images, { format: 'png' }, RUNS, WARMUP, (c, i, o) => pool.render(c, i, o)));
} finally {
  await pool.close();
}
// Where the CPU goes: stage totals over PROFILE_RUNS sequential renders of each size.
const PROFILE_RUNS = 5;
const stages: Array<[string, Record<string, number>, number]> = [];
for (const [label, options] of [['full, PNG', { format: 'png' as const }], ['thumbnail 320 px, WebP', { width: 320, format: 'webp' as const }]] as const) {
  const totals: Record<string, number> = {};
  profileRenders(totals);
  const c0 = process.cpuUsage();
  for (let i = 0; i < PROFILE_RUNS; i++) await renderCanvas(canvas, images, options);
  const c = process.cpuUsage(c0);
  profileRenders(undefined);
  stages.push([label, totals, (c.user + c.system) / 1000 / PROFILE_RUNS]);
}
const busyAfter = await busyCores(1_000);
const stageNames = [...new Set(stages.flatMap(([, t]) => Object.keys(t)))].sort();
const stageRows = stageNames.map((name) => `| ${name} | ${stages.map(([, t]) => fmt((t[name] ?? 0) / PROFILE_RUNS, 1)).join(' | ')} |`);

const rows = runs.map((r) => {
  const target = TARGETS[r.label];
  const verdict = target === undefined ? '' : r.summary.p50 <= target ? `≤ ${target} ✓` : `≤ ${target} ✗`;
  return `| ${r.label} | ${fmt(r.summary.p50, 1)} | ${fmt(r.summary.p99, 1)} | ${fmt(r.cpu.p50, 1)} | ${(r.bytes / 1024).toFixed(0)} KiB | ${verdict} |`;
});
const body = `## Renderer: 1920 × 1080, 20 layers

- Command: \`node_modules/.bin/node bench/render.ts\` (BENCH_RUNS=${RUNS}, ${WARMUP} warm-up renders each, sequential, in-process unless noted)
- Date: ${started.toISOString()} (took ${((Date.now() - started.getTime()) / 1000).toFixed(0)} s); code: ${gitFacts()}
- Machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}, sharp ${sharp.versions.sharp} / libvips ${sharp.versions.vips}, \`sharp.concurrency()\` = ${sharp.concurrency()}
- **Indicative only**: the machine is shared with other work — other processes kept ${busyBefore.toFixed(2)} cores busy just before and ${busyAfter.toFixed(2)} just after.
- Canvas (\`bench/scenarios/render.ts\`): a 2040 × 1356 JPEG background scaled to fit, five rotated 400 × 300 JPEG layers (normal, multiply, screen, luminosity, overlay), four shapes (rounded rectangle with stroke, rotated ellipse in hue, polygon in soft-light, a star path scaled 2×), three drawings (a 200-point pen stroke with an eraser, markers in multiply, a brush), four texts (bold title, justified wrapped paragraph, CJK in difference rotated, serif italic centred), a rounded rectangle with drop-shadow + saturate, and hue-saturation and curves adjustments over everything. Originals: ${(bytes / 1024).toFixed(0)} KiB of JPEG.

| render | wall p50 ms | wall p99 ms | CPU p50 ms (process) | output | target (wall p50) |
|---|---:|---:|---:|---:|---|
${rows.join('\n')}

CPU time is the process's (this thread and libvips' worker threads); with other work on the cores
it is the steadier figure: on an idle machine a sequential render's wall time is close to it.

Where the CPU goes (ms per render, \`profileRenders\` in renderer/index.ts, ${PROFILE_RUNS} renders each; stages are named after what they do):

| stage | ${stages.map(([l]) => l).join(' | ')} |
|---|${stages.map(() => '---:').join('|')}|
${stageRows.join('\n')}
| **all (process CPU)** | ${stages.map(([, , total]) => `**${fmt(total, 1)}**`).join(' | ')} |
`;
writeSection(new URL('./RESULTS.md', import.meta.url).pathname, 'render', body);
console.log(body);
