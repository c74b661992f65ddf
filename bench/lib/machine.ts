/** What every benchmark records about the run, and how it waits for a quiet machine. */
import { execFileSync } from 'node:child_process';
import { availableParallelism, cpus } from 'node:os';
import { repoRoot } from '../../test/support/uws-runtime.ts';
import { busyCores } from './procfs.ts';

/** Facts about the machine and the code that every results section states. */
export interface MachineFacts {
  startedAt: Date;
  durationSeconds: number;
  nproc: number;
  cpuModel: string;
  node: string;
  git: string;
  postgres: Record<string, string>;
}

/** The code measured: the commit, and whether the working tree differs from it. */
export function gitFacts(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: repoRoot, encoding: 'utf8' }).split('\n').filter(Boolean).length;
    return dirty > 0 ? `commit ${sha} + ${dirty} uncommitted file(s) in the working tree` : `commit ${sha} (clean)`;
  } catch {
    return 'git unavailable';
  }
}

/** Waits (at most `maxWaitMs`) until other work uses under `quietCores`; returns the busy cores last measured. */
export async function waitForQuiet(quietCores: number, maxWaitMs: number): Promise<number> {
  const deadline = Date.now() + maxWaitMs;
  let cores = await busyCores(1_000);
  while (cores > quietCores && Date.now() < deadline) cores = await busyCores(1_000);
  return cores;
}

/** The machine facts of a run that started at `startedAt` and ends now. */
export function machineFacts(startedAt: Date, postgres: Record<string, string>): MachineFacts {
  let nproc = 0;
  try {
    nproc = Number(execFileSync('nproc', { encoding: 'utf8' }).trim());
  } catch {
    // no coreutils nproc: Node's count below
  }
  return {
    startedAt,
    durationSeconds: (Date.now() - startedAt.getTime()) / 1000,
    nproc: nproc || availableParallelism(),
    cpuModel: cpus()[0]?.model ?? 'unknown CPU',
    node: process.version,
    git: gitFacts(),
    postgres,
  };
}

/**
 * Runs a benchmark's `main` bounded: past `limitMs`, or on SIGINT/SIGTERM, `abort` kills what it
 * started and exits; `cleanup` runs after `main` either way.
 */
export async function runBounded(
  main: () => Promise<void>,
  abort: (reason: string, code: number) => Promise<never>,
  limitMs: number,
  cleanup?: () => Promise<void>,
): Promise<void> {
  const watchdog = setTimeout(() => void abort(`watchdog: the run took over ${limitMs / 1000} s`, 2), limitMs);
  watchdog.unref();
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void abort(signal, 130));
  try {
    await main();
  } finally {
    clearTimeout(watchdog);
    await cleanup?.();
  }
}
