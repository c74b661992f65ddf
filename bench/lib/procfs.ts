/**
 * Per-process measurements read from /proc (Linux only): CPU time and resident memory of any pid,
 * so a server's cost is measured from outside, without instrumenting it.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    ticksPerSecond = Number.isFinite(value) && value > 0 ? value : 100;
  }
  return ticksPerSecond;
}

/** Fields of a /proc stat file after the command name (which may contain spaces). */
function statFields(pid: number, file = `/proc/${pid}/stat`): string[] {
  const text = readFileSync(file, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/**
 * User + system CPU seconds the process has used. With `reapedChildren`, also the CPU of its
 * children that have exited and been waited for (cutime + cstime).
 */
export function cpuSeconds(pid: number, options: { reapedChildren?: boolean } = {}): number {
  const f = statFields(pid);
  // In the fields after "(comm) ", utime is index 11, stime 12, cutime 13, cstime 14 (proc(5)).
  let ticks = Number(f[11]) + Number(f[12]);
  if (options.reapedChildren) ticks += Number(f[13]) + Number(f[14]);
  return ticks / clockTicks();
}

/** Resident set size in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** CPU seconds of several pids; pids that have gone away count as absent (not zero). */
export function cpuOfPids(pids: readonly number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    try {
      out.set(pid, cpuSeconds(pid));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  return out;
}

/**
 * CPU seconds the whole machine has been busy (every core, every process: user, nice, system,
 * irq, softirq, steal from the `cpu` line of /proc/stat, in USER_HZ = CLK_TCK units).
 */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / clockTicks();
}

/** Cores the whole machine kept busy over the next `ms` milliseconds. */
export async function busyCores(ms: number): Promise<number> {
  const b0 = machineBusySeconds();
  const t0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, ms));
  return (machineBusySeconds() - b0) / ((performance.now() - t0) / 1000);
}

/** Write-type system calls the process has made (write, writev, send…: `syscw` of /proc/<pid>/io). */
export function writeSyscalls(pid: number): number {
  const match = /^syscw:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
  if (!match) throw new Error(`no syscw for pid ${pid}`);
  return Number(match[1]);
}

/**
 * CPU seconds per thread group of a Node process, by thread name: `main` (the JavaScript event
 * loop), `WorkerThread` (worker_threads), `V8Worker` (V8's GC and compiler helpers),
 * `libuv-worker` (the libuv pool), and whatever else the process runs.
 */
export function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = tid === String(pid) ? 'main' : readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const f = statFields(pid, `/proc/${pid}/task/${tid}/stat`);
      out.set(name, (out.get(name) ?? 0) + (Number(f[11]) + Number(f[12])) / clockTicks());
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error; // the thread ended meanwhile
    }
  }
  return out;
}
