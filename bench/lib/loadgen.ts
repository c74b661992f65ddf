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
import type { MediaLoadReply, MediaLoadRequest } from './media-load-worker.ts';

const live = new Set<ChildProcess>();

/** Kills every load-generator process still running (watchdog, signals). */
export function killLoadgens(): void {
  for (const child of live) child.kill('SIGKILL');
}

/** A forked helper process answering typed requests over IPC, one reply message per request. */
export interface Forked<Req extends { op: string }, Reply extends { op: string }> {
  readonly pid: number;
  request<T extends Reply['op']>(message: Req, expect: T, timeoutMs?: number): Promise<Extract<Reply, { op: T }>>;
}

export interface Loadgen extends Forked<LoadgenRequest, LoadgenReply> {
  close(): Promise<void>;
}

/** Forks `module` (under the repository) and tracks it for `killLoadgens`. */
function forkTracked<Req extends { op: string }, Reply extends { op: string }>(module: string): Forked<Req, Reply> & { child: ChildProcess; exited: Promise<void> } {
  const child = fork(join(repoRoot, module), [], { execPath: nodeBin, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  live.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => live.delete(child));
  const request = <T extends Reply['op']>(message: Req, expect: T, timeoutMs = 120_000) =>
    new Promise<Extract<Reply, { op: T }>>((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`${module}: no answer to ${message.op} within ${timeoutMs} ms`)), timeoutMs);
      const onMessage = (m: Reply) => {
        if (m.op === 'error') done(new Error(`${module}: ${(m as unknown as { message: string }).message}`));
        else if (m.op === expect) done(undefined, m as Extract<Reply, { op: T }>);
      };
      const onExit = () => done(new Error(`${module} exited during ${message.op}`));
      function done(error?: Error, value?: Extract<Reply, { op: T }>) {
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
  return { pid: child.pid!, request, child, exited };
}

export function startLoadgen(): Loadgen {
  const { child, exited, ...forked } = forkTracked<LoadgenRequest, LoadgenReply>('bench/lib/loadgen-worker.ts');
  return {
    ...forked,
    close: async () => {
      if (child.exitCode === null && child.connected) {
        await forked.request({ op: 'close' }, 'closed', 30_000).catch(() => child.kill('SIGKILL'));
      }
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The renders scenario's media load in its own process (bench/lib/media-load-worker.ts); it exits after `stop`. */
export function startMediaLoad(): Forked<MediaLoadRequest, MediaLoadReply> & { kill(): void } {
  const { child, request, pid } = forkTracked<MediaLoadRequest, MediaLoadReply>('bench/lib/media-load-worker.ts');
  return { pid, request, kill: () => void child.kill('SIGKILL') };
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
