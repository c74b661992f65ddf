/**
 * Reads a V8 `.cpuprofile` (what `node --cpu-prof` writes at exit) into self-time tables: per
 * function (name, file:line) and per origin (the npm package, Node's internals, our own code,
 * V8's pseudo-nodes such as (garbage collector)). Self time of a node = the sum of the sampling
 * intervals (`timeDeltas`) of the samples that landed on it.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface SelfTime {
  name: string;
  /** Microseconds. */
  selfUs: number;
  share: number;
}

export interface ProfileSummary {
  totalUs: number;
  /** True when only the samples inside the requested window were counted. */
  windowed: boolean;
  functions: SelfTime[];
  origins: SelfTime[];
}

/** Where a frame's code comes from: `yjs`, `@hocuspocus/server`, `node:internal`, `ours: server/…`, `(garbage collector)`. */
export function originOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  if (url.startsWith('node:')) return 'node internals';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm !== -1) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const m = /\/(server|persistence|shared|bench)\/([^/]+)/.exec(url);
  if (m) return `ours: ${m[1]}/${m[2]}`;
  return url.replace(/^file:\/\//, '');
}

function shortUrl(url: string): string {
  const nm = url.lastIndexOf('/node_modules/');
  if (nm !== -1) return url.slice(nm + '/node_modules/'.length);
  const m = /\/((?:server|persistence|shared|bench)\/.*)$/.exec(url);
  return m ? m[1]! : url.replace(/^file:\/\//, '');
}

/**
 * `window` (monotonic µs, the clock of the samples' timestamps) keeps only the samples taken in
 * it; when none fall inside (another clock), the whole profile is used and `windowed` says so.
 */
export function summarizeProfile(file: string, window?: { start: number; end: number }, top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const count = (inside: (t: number) => boolean) => {
    const self = new Map<number, number>();
    let t = profile.startTime;
    profile.samples.forEach((id, i) => {
      const delta = profile.timeDeltas[i] ?? 0;
      t += delta;
      if (inside(t)) self.set(id, (self.get(id) ?? 0) + delta);
    });
    return self;
  };
  let self = window ? count((t) => t >= window.start && t < window.end) : new Map<number, number>();
  const windowed = self.size > 0;
  if (!windowed) self = count(() => true);
  const functions = new Map<string, number>();
  const origins = new Map<string, number>();
  let totalUs = 0;
  for (const [id, us] of self) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    totalUs += us;
    // (idle) is the loop waiting: not work, and not part of the shares.
    if (frame.functionName === '(idle)') {
      totalUs -= us;
      continue;
    }
    const fn = frame.url ? `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}:${frame.lineNumber + 1}` : frame.functionName || '(native)';
    functions.set(fn, (functions.get(fn) ?? 0) + us);
    const origin = originOf(frame.url, frame.functionName);
    origins.set(origin, (origins.get(origin) ?? 0) + us);
  }
  const rank = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, selfUs]) => ({ name, selfUs, share: totalUs > 0 ? selfUs / totalUs : 0 }));
  return { totalUs, windowed, functions: rank(functions), origins: rank(origins) };
}
