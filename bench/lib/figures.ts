/**
 * The table as data: each figure measured per server and round, its median and spread
 * (min–max over the rounds), ours / stock as the ratio of the medians with the spread of the
 * same-round ratios, and each target checked against the median.
 */
import { fmt, ratio } from './stats.ts';

export type FigureId = 'fanoutCpu' | 'fanoutP99' | 'memoryPerConnection' | 'acceptRate' | 'durableAcks' | 'coldBefore' | 'coldAfter';

export interface FigureDef {
  id: FigureId;
  label: string;
  unit: string;
  digits: number;
  /** Targets, by server id: a ratio to stock (`ratio`) or an absolute value. */
  targets: Array<{ on: string[]; kind: 'ratio' | 'absolute'; op: '<=' | '>='; value: number; text: string }>;
}

export const FIGURES: FigureDef[] = [
  {
    id: 'fanoutCpu',
    label: 'server CPU per delivery, fan-out',
    unit: 'CPU ms / 1,000 deliveries',
    digits: 1,
    targets: [
      { on: ['ours-node'], kind: 'ratio', op: '<=', value: 0.8, text: '≤ 0.8× on node' },
      { on: ['ours-uws'], kind: 'ratio', op: '<=', value: 0.5, text: '≤ 0.5× on uWebSockets.js' },
    ],
  },
  {
    id: 'fanoutP99',
    label: 'delivery latency p99, same load',
    unit: 'ms',
    digits: 2,
    targets: [{ on: ['ours-node', 'ours-uws'], kind: 'ratio', op: '<=', value: 1.0, text: '≤ 1.0× on both' }],
  },
  {
    id: 'memoryPerConnection',
    label: 'memory per idle authenticated connection',
    unit: 'kB',
    digits: 1,
    targets: [
      { on: ['ours-node'], kind: 'ratio', op: '<=', value: 0.8, text: '≤ 0.8× on node' },
      { on: ['ours-uws'], kind: 'ratio', op: '<=', value: 0.5, text: '≤ 0.5× on uWebSockets.js' },
    ],
  },
  {
    id: 'acceptRate',
    label: 'connections authenticated + synced per second',
    unit: 'connections / s',
    digits: 0,
    targets: [{ on: ['ours-node', 'ours-uws'], kind: 'ratio', op: '>=', value: 1.0, text: '≥ 1.0× on both' }],
  },
  {
    id: 'durableAcks',
    label: 'durable acknowledgements per node at p99 < 25 ms',
    unit: 'edits / s',
    digits: 0,
    targets: [{ on: ['ours-node', 'ours-uws'], kind: 'absolute', op: '>=', value: 5_000, text: '≥ 5,000 edits/s' }],
  },
  { id: 'coldBefore', label: 'cold load, log not compacted', unit: 'ms', digits: 1, targets: [] },
  { id: 'coldAfter', label: 'cold load, after compaction', unit: 'ms', digits: 1, targets: [] },
];

/** values[figure][server] = one number per round (NaN where that round failed). */
export type Values = Map<FigureId, Map<string, number[]>>;

export function record(values: Values, figure: FigureId, server: string, round: number, value: number): void {
  let byServer = values.get(figure);
  if (!byServer) values.set(figure, (byServer = new Map()));
  let rounds = byServer.get(server);
  if (!rounds) byServer.set(server, (rounds = []));
  rounds[round - 1] = value;
}

export function median(xs: readonly number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

export function spread(xs: readonly number[]): { min: number; max: number; n: number } {
  const v = xs.filter((x) => Number.isFinite(x));
  return { min: v.length ? Math.min(...v) : Number.NaN, max: v.length ? Math.max(...v) : Number.NaN, n: v.length };
}

/** "12.3 (11.9–13.0)" — the median, then min–max over the rounds. */
export function withSpread(xs: readonly number[] | undefined, digits: number, suffix = ''): string {
  if (!xs) return '—';
  const m = median(xs);
  if (!Number.isFinite(m)) return '—';
  const s = spread(xs);
  return s.n > 1 ? `${fmt(m, digits)}${suffix} (${fmt(s.min, digits)}–${fmt(s.max, digits)})` : `${fmt(m, digits)}${suffix}`;
}

/** Ours / stock: ratio of the medians, and the per-round ratios (same round, same order of servers). */
export function ratios(ours: readonly number[] | undefined, stock: readonly number[] | undefined): { ofMedians: number; perRound: number[] } {
  if (!ours || !stock) return { ofMedians: Number.NaN, perRound: [] };
  const perRound = ours.map((x, i) => ratio(x, stock[i]));
  return { ofMedians: ratio(median(ours), median(stock)), perRound };
}

export function ratioText(r: { ofMedians: number; perRound: number[] }): string {
  if (!Number.isFinite(r.ofMedians)) return '—';
  const s = spread(r.perRound);
  return s.n > 1 ? `${r.ofMedians.toFixed(2)}× (${s.min.toFixed(2)}–${s.max.toFixed(2)}×)` : `${r.ofMedians.toFixed(2)}×`;
}

export type Verdict = { server: string; text: string; met: boolean | undefined; value: number };

/** Each target of a figure checked on the median (ratio of medians, or the absolute median). */
export function verdicts(def: FigureDef, values: Values): Verdict[] {
  const byServer = values.get(def.id);
  const out: Verdict[] = [];
  for (const t of def.targets) {
    for (const server of t.on) {
      const mine = byServer?.get(server);
      const value = t.kind === 'ratio' ? ratios(mine, byServer?.get('stock')).ofMedians : median(mine ?? []);
      const met = Number.isFinite(value) ? (t.op === '<=' ? value <= t.value : value >= t.value) : undefined;
      out.push({ server, text: t.text, met, value });
    }
  }
  return out;
}
