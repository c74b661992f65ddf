/**
 * The bench harness cannot rot: `bench/run.ts --tiny` runs every scenario against stock
 * Hocuspocus and ours on the node transport (the media ones against ours and their in-process
 * peers), at a size that only proves each step works, and writes its sections to a temporary
 * results file. Speed is not checked here — only that every figure was measured and each section
 * was written. bench/RESULTS.md is not touched.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FIGURES } from '../bench/lib/figures.ts';
import { nodeBin, repoRoot } from './support/uws-runtime.ts';

const dir = mkdtempSync(join(tmpdir(), 'bench-quick-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the harness; resolves with its exit code and output once it exits (it bounds itself with a watchdog). */
function bench(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(nodeBin, [join(repoRoot, 'bench/run.ts'), ...args], {
      cwd: repoRoot,
      env: { ...process.env, BENCH_TARGETS: 'stock,ours-node', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, output }));
  });
}

function section(file: string, name: string): string {
  const text = readFileSync(file, 'utf8');
  const start = text.indexOf(`<!-- bench:${name}:start -->`);
  const end = text.indexOf(`<!-- bench:${name}:end -->`);
  expect(start, `section ${name} written`).toBeGreaterThanOrEqual(0);
  return text.slice(start, end);
}

/** The cells of the table row whose first cell is `label`. */
function row(markdown: string, label: string): string[] {
  const line = markdown.split('\n').find((l) => l.startsWith(`| ${label} |`));
  expect(line, `row ${label}`).toBeDefined();
  return line!.split('|').slice(1, -1).map((c) => c.trim());
}

describe('bench harness at a tiny size', () => {
  it('measures every figure of the table for stock and ours, with ratios, and the CPU profiles', { timeout: 120_000 }, async () => {
    const file = join(dir, 'table.md');
    const { code, output } = await bench(['--tiny', '--rounds', '1', '--only', 'table,profile', '--results', file]);
    expect(code, output.slice(-3_000)).toBe(0);
    const summary = section(file, 'summary-tiny');
    const head = row(summary, 'figure');
    expect(head).toEqual(expect.arrayContaining(['stock Hocuspocus', 'ours (node)', 'ours (node) / stock', 'met?']));
    for (const def of FIGURES) {
      const cells = row(summary, def.label);
      const stock = cells[head.indexOf('stock Hocuspocus')]!;
      const ours = cells[head.indexOf('ours (node)')]!;
      const ratio = cells[head.indexOf('ours (node) / stock')]!;
      // At this size a few connections' memory is inside the heap's own swings: the RSS
      // difference can come out negative (seen once under the full suite's load), still a figure.
      const sign = def.id === 'memoryPerConnection' ? '-?' : '';
      expect(stock, `${def.label}: stock`).toMatch(new RegExp(`^${sign}[\\d,.]+`));
      expect(ours, `${def.label}: ours`).toMatch(new RegExp(`^${sign}[\\d,.]+`));
      if (def.id !== 'durableAcks') expect(ratio, `${def.label}: ratio`).toMatch(new RegExp(`^${sign}[\\d.]+×`));
      if (def.targets.length > 0) expect(cells[head.indexOf('met?')], def.label).toMatch(/node [^:]*: \*\*(met|not met)\*\*/);
    }
    const details = section(file, 'table-tiny');
    for (const server of ['stock Hocuspocus', 'ours (node)']) {
      const connected = row(details.slice(details.indexOf('### Idle')), `1 | ${server}`);
      expect(connected[2], `${server}: every connection made`).toBe('20');
    }
    const profile = section(file, 'profile-tiny');
    expect(profile).toMatch(/\| stock Hocuspocus \| window \|/);
    expect(profile).toMatch(/\| ours \(node\) \| window \|/);
    expect(profile).toContain('### Top functions by self time');
  });

  // Ours only (stock's side of these is the same stock-server the test above runs): keeps it short.
  it('runs the collab suite, versions and cross-node scenarios', { timeout: 120_000 }, async () => {
    const file = join(dir, 'rest.md');
    const { code, output } = await bench(['--tiny', '--rounds', '1', '--only', 'collab,versions,cross-node', '--results', file], {
      BENCH_TARGETS: 'ours-node',
      BENCH_CROSS_TARGETS: 'ours',
    });
    expect(code, output.slice(-3_000)).toBe(0);
    expect(row(section(file, 'collab'), 'ours (node)').length).toBeGreaterThan(3);
    expect(section(file, 'versions')).toContain('### 2. Version tree of 40 versions');
    expect(row(section(file, 'cross-node'), 'ours (node)')[1]).toMatch(/^[\d.]+$/);
  });

  // Ours only (stock has no drain); about 20 s. The storm (`--tiny --only storm`, another 15 s) is left out to keep this file short.
  it('runs the rolling restart: every node drained and back, nothing acknowledged lost, no refusal, no ghost cursor', { timeout: 180_000 }, async () => {
    const file = join(dir, 'fleet.md');
    const { code, output } = await bench(['--tiny', '--only', 'roll', '--results', file]);
    expect(code, output.slice(-3_000)).toBe(0);
    const roll = section(file, 'roll-tiny');
    const during = roll.split('\n').find((l) => l.startsWith('| during the roll'))?.split('|').map((c) => c.trim());
    expect(during?.[5], 'delivery p99 during the roll').toMatch(/^[\d,.]+$/);
    for (const node of ['node-0', 'node-1', 'node-2']) expect(row(roll, node).slice(1, 3), `${node}: exit 0, seen draining`).toEqual(['0', 'yes']);
    expect(roll).toMatch(/Acknowledged edits lost: \*\*0\*\* missing from the PostgreSQL log, \*\*0\*\* missing/);
    expect(roll).toContain('Ghost cursors (a leaver\'s cursor still shown by a live editor, at convergence): **0**');
    expect(roll).toContain('Refusals seen by clients: **none**');
  });

  it('runs the media scenarios: render beside sharp alone, images beside sharp in-process, renders beside editing', { timeout: 300_000 }, async () => {
    const file = join(dir, 'media.md');
    const { code, output } = await bench(['--tiny', '--only', 'render,images,renders', '--results', file], { BENCH_TARGETS: 'ours-node' });
    expect(code, output.slice(-3_000)).toBe(0);
    const render = section(file, 'render-tiny');
    for (const label of ['full, PNG', 'full, PNG, one layer changed', 'full, PNG, cold', 'thumbnail 320 px, WebP', 'thumbnail 320 px, WebP, one layer changed', 'thumbnail 320 px, WebP, cold']) expect(row(render, label)[1], label).toMatch(/^[\d,.]+$/);
    expect(render).toMatch(/full PNG cold [\d.]+× \([\d.]+–[\d.]+\) the peer's wall time/);
    const images = section(file, 'images-tiny');
    for (const label of ['4 in flight', '2 in flight']) {
      const cells = row(images, label);
      expect(cells[1], `${label}: ours`).toMatch(/^[\d,.]+ \(/);
      expect(cells[7], `${label}: peer`).toMatch(/^[\d,.]+ \(/);
      expect(cells[8], `${label}: ratio`).toMatch(/^\*\*[\d,.]+ \([\d,.]+–[\d,.]+\) %\*\*$/);
    }
    expect(row(images, 'stored variant, 4 in flight')[6]).toMatch(/^200×\d+$/);
    expect(section(file, 'renders-tiny')).toMatch(/Delivery p99 with the render load: [\d.]+× the p99 alone/);
  });
});
