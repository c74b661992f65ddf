/**
 * media/thread-priority.ts: media threads lowered to a nice value and, under policy `idle`, to
 * Linux's SCHED_IDLE. Run in a child process of its own, so the test runner's threads keep their
 * priority.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ownThreadId } from '../media/thread-priority.ts';

const run = promisify(execFile);
const moduleUrl = new URL('../media/thread-priority.ts', import.meta.url).href;

/** In a fresh process: lowers its own thread and the libuv pool under `policy`, reports both. */
async function lowered(policy: 'nice' | 'idle'): Promise<{ own: { policy: string | null; nice: number }; pool: Array<string | null> }> {
  const script = `
    import { readdirSync, readFileSync } from 'node:fs';
    import { getPriority } from 'node:os';
    import { keepMediaThreadsLow, lowerOwnThread, ownThreadId, threadPolicy } from ${JSON.stringify(moduleUrl)};
    const stop = await keepMediaThreadsLow(10, ${JSON.stringify(policy)});
    const pool = () => readdirSync('/proc/self/task').filter((t) => readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim() === 'libuv-worker').map(Number);
    // chrt runs as child processes for the pool's threads: wait for them, with a deadline.
    const deadline = Date.now() + 10000;
    const want = ${JSON.stringify(policy === 'idle' ? 'SCHED_IDLE' : 'SCHED_OTHER')};
    while (Date.now() < deadline && !pool().every((t) => threadPolicy(t) === want)) await new Promise((r) => setTimeout(r, 50));
    lowerOwnThread(10, ${JSON.stringify(policy)});
    const tid = ownThreadId();
    console.log(JSON.stringify({ own: { policy: threadPolicy(tid), nice: getPriority(tid) }, pool: pool().map(threadPolicy) }));
    stop();
  `;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 });
  return JSON.parse(stdout.trim().split('\n').at(-1)!);
}

describe.skipIf(ownThreadId() === null)('media thread priority', () => {
  it('policy idle: the thread and the libuv pool run under SCHED_IDLE at the nice value', async () => {
    const r = await lowered('idle');
    expect(r.own).toEqual({ policy: 'SCHED_IDLE', nice: 10 });
    expect(r.pool.length).toBeGreaterThan(0);
    expect(r.pool.every((p) => p === 'SCHED_IDLE')).toBe(true);
  });

  it('policy nice: the nice value only, the policy unchanged', async () => {
    const r = await lowered('nice');
    expect(r.own).toEqual({ policy: 'SCHED_OTHER', nice: 10 });
    expect(r.pool.every((p) => p === 'SCHED_OTHER')).toBe(true);
  });
});
