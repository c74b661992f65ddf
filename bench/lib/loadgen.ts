/**
 * Load-generator processes (bench/lib/loadgen-worker.ts), each holding its share of the clients:
 * the sockets and the client-side CPU of thousands of connections stay out of the server's
 * process (whose CPU and RSS are read from /proc) and out of the bench process. Every process
 * started is tracked, so the harness's watchdog can kill them.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { nodeBin, repoRoot } from '../../test/support/uws-runtime.ts';
import type { LoadgenReply, LoadgenRequest } from './loadgen-worker.ts';

const live = new Set<ChildProcess>();

/** Kills every load-generator process still running (watchdog, signals). */
export function killLoadgens(): void {
  for (const child of live) child.kill('SIGKILL');
}

export interface Loadgen {
  readonly pid: number;
  request<T extends LoadgenReply['op']>(message: LoadgenRequest, expect: T, timeoutMs?: number): Promise<Extract<LoadgenReply, { op: T }>>;
  close(): Promise<void>;
}

export function startLoadgen(): Loadgen {
  const child = fork(join(repoRoot, 'bench/lib/loadgen-worker.ts'), [], { execPath: nodeBin, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  live.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => live.delete(child));
  const request = <T extends LoadgenReply['op']>(message: LoadgenRequest, expect: T, timeoutMs = 120_000) =>
    new Promise<Extract<LoadgenReply, { op: T }>>((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`load generator: no answer to ${message.op} within ${timeoutMs} ms`)), timeoutMs);
      const onMessage = (m: LoadgenReply) => {
        if (m.op === 'error') done(new Error(`load generator: ${m.message}`));
        else if (m.op === expect) done(undefined, m as Extract<LoadgenReply, { op: T }>);
      };
      const onExit = () => done(new Error(`load generator exited during ${message.op}`));
      function done(error?: Error, value?: Extract<LoadgenReply, { op: T }>) {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        if (error) reject(error);
        else resolve(value!);
      }
      child.on('message', onMessage);
      child.once('exit', onExit);
      child.send(message);
    });
  return {
    pid: child.pid!,
    request,
    close: async () => {
      if (child.exitCode === null && child.connected) {
        await request({ op: 'close' }, 'closed', 30_000).catch(() => child.kill('SIGKILL'));
      }
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** `count` load generators; closes them all if any fails to start. */
export function startLoadgens(count: number): Loadgen[] {
  return Array.from({ length: count }, () => startLoadgen());
}

/** Splits `items` round-robin into `parts` lists. */
export function split<T>(items: readonly T[], parts: number): T[][] {
  const out: T[][] = Array.from({ length: parts }, () => []);
  items.forEach((item, i) => out[i % parts]!.push(item));
  return out;
}
