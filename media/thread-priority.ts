/**
 * Media work (renders, resizes, ingests) yields the CPU to the event loop that delivers edits.
 *
 * sharp runs its pipelines on libuv's thread pool, which is process-wide, and the renderer's
 * JavaScript runs in the render pool's worker threads. On a machine whose cores are all busy the
 * kernel shares them evenly among runnable threads, so renders at full speed took the event loop's
 * core as often as not: editing delivery p99 rose 4.8× while renders ran (bench `renders`). Linux
 * applies a nice value per thread (`setpriority(PRIO_PROCESS, tid)`, which `os.setPriority`
 * calls), so these threads are lowered to `MEDIA_THREAD_NICE`: they still use every idle cycle, but
 * lose to the event loop when both want a core.
 *
 * Which threads: the libuv pool's (named `libuv-worker`; they also do this process's other file
 * system work, which then waits behind the event loop too) and each render worker thread (it
 * lowers itself). Threads libvips or glib start later inherit the nice value of the thread that
 * starts them. The pool's threads are created on first use, so the scan runs again every
 * `rescanMs`. Not Linux (no `/proc/thread-self`): nothing happens.
 */
import { execFile, execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { setPriority } from 'node:os';

/** This thread's kernel thread id, or null off Linux. */
export function ownThreadId(): number | null {
  try {
    // "<pid>/task/<tid>"
    return Number(readlinkSync('/proc/thread-self').split('/').at(-1));
  } catch {
    return null;
  }
}

/**
 * How media threads are lowered: `nice` only, or also Linux's `SCHED_IDLE` policy (a thread that
 * runs only when no other thread of normal policy wants its core, and is preempted at once when
 * one wakes; nice 10 still takes about a tenth of a contended core and may run out its slice).
 * Node has no call for `sched_setscheduler`, so `SCHED_IDLE` is set with util-linux's `chrt`
 * (`chrt --idle -p 0 <tid>`), which any user may do to lower their own threads; threads the
 * thread starts later inherit it. Without `chrt`, nice alone applies.
 */
export type MediaThreadPolicy = 'nice' | 'idle';

/** util-linux's `chrt` arguments that put thread `tid` under SCHED_IDLE. */
const idleArgs = (tid: number) => ['--idle', '-p', '0', String(tid)];

function idleSync(tid: number): boolean {
  try {
    execFileSync('chrt', idleArgs(tid), { stdio: 'ignore', timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

/** This kernel thread's scheduling policy (`SCHED_OTHER`, `SCHED_IDLE`, …), or null off Linux. */
export function threadPolicy(tid: number): string | null {
  try {
    // /proc/<pid>/task/<tid>/sched is not on every kernel; chrt reads it with sched_getscheduler.
    const out = execFileSync('chrt', ['-p', String(tid)], { encoding: 'utf8', timeout: 5_000 });
    return /policy: (\S+)/.exec(out)?.[1] ?? null;
  } catch {
    return null;
  }
}

/** Lowers the calling thread to `nice` (a worker thread calls it for itself), and to `SCHED_IDLE` under policy `idle`. */
export function lowerOwnThread(nice: number, policy: MediaThreadPolicy = 'nice'): boolean {
  const tid = ownThreadId();
  if (tid === null || nice <= 0) return false;
  try {
    setPriority(tid, nice);
  } catch {
    return false;
  }
  if (policy === 'idle') idleSync(tid);
  return true;
}

/** Lowers every libuv pool thread of this process not yet lowered; returns how many it lowered. */
export function lowerLibuvPool(nice: number, done: Set<number>, policy: MediaThreadPolicy = 'nice'): number {
  if (nice <= 0) return 0;
  let tasks: string[];
  try {
    tasks = readdirSync('/proc/self/task');
  } catch {
    return 0;
  }
  let lowered = 0;
  for (const task of tasks) {
    const tid = Number(task);
    if (done.has(tid)) continue;
    try {
      if (readFileSync(`/proc/self/task/${task}/comm`, 'utf8').trim() !== 'libuv-worker') continue;
      setPriority(tid, nice);
      // Off the event loop: chrt is a child process (a few ms); the thread is already at `nice`.
      if (policy === 'idle') execFile('chrt', idleArgs(tid), () => {});
      done.add(tid);
      lowered += 1;
    } catch {
      // the thread ended meanwhile
    }
  }
  return lowered;
}

/**
 * Keeps the libuv pool's threads at `nice` (see the header) until the returned stop function is
 * called. `nice` 0 disables it.
 */
export async function keepMediaThreadsLow(nice: number, policy: MediaThreadPolicy = 'nice', rescanMs = 30_000): Promise<() => void> {
  if (nice <= 0 || ownThreadId() === null) return () => {};
  // libuv starts all its pool threads on the first piece of work given to the pool.
  await stat('/');
  const done = new Set<number>();
  lowerLibuvPool(nice, done, policy);
  const timer = setInterval(() => lowerLibuvPool(nice, done, policy), rescanMs);
  timer.unref();
  return () => clearInterval(timer);
}
