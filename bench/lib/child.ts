/**
 * A server under test as a child process: spawned, its port read from its first JSON log line
 * whose `msg` starts with "listening", its output kept bounded, and stopped by SIGTERM or SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface ServerChild {
  readonly label: string;
  readonly pid: number;
  readonly port: number;
  readonly wsUrl: string;
  readonly httpUrl: string;
  /** The last few kilobytes of stdout + stderr, for error messages. */
  output(): string;
  /** SIGKILL at once (no shutdown code runs), then wait for the exit. */
  kill9(): Promise<void>;
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

export interface SpawnOptions {
  label: string;
  command: readonly string[];
  env: Record<string, string>;
  cwd: string;
  /** Path of the WebSocket endpoint ('/collab' for ours, '/' for stock). */
  wsPath: string;
  startTimeoutMs?: number;
}

const KEEP_OUTPUT = 16 * 1024;

export async function spawnServer(options: SpawnOptions): Promise<ServerChild> {
  const [cmd, ...args] = options.command;
  if (!cmd) throw new Error('empty command');
  const child: ChildProcess = spawn(cmd, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  let pendingLine = '';
  const keep = (chunk: string) => {
    tail = (tail + chunk).slice(-KEEP_OUTPUT);
  };
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let alive = true;
  void exited.then(() => (alive = false));

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${options.label} did not start within ${options.startTimeoutMs ?? 60_000} ms:\n${tail}`));
    }, options.startTimeoutMs ?? 60_000);
    let found = false;
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      keep(chunk);
      if (found) return;
      pendingLine += chunk;
      const lines = pendingLine.split('\n');
      pendingLine = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.startsWith('{')) continue;
        let entry: { msg?: unknown; port?: unknown };
        try {
          entry = JSON.parse(line) as { msg?: unknown; port?: unknown };
        } catch {
          continue; // not a log line of ours
        }
        if (typeof entry.msg === 'string' && entry.msg.startsWith('listening') && typeof entry.port === 'number') {
          found = true;
          pendingLine = '';
          clearTimeout(timer);
          resolve(entry.port);
          return;
        }
      }
    });
    child.stderr!.setEncoding('utf8').on('data', keep);
    void exited.then((code) => {
      clearTimeout(timer);
      if (!found) reject(new Error(`${options.label} exited with ${code} before listening:\n${tail}`));
    });
  });

  const pid = child.pid;
  if (pid === undefined) throw new Error(`${options.label} has no pid`);
  return {
    label: options.label,
    pid,
    port,
    wsUrl: `ws://127.0.0.1:${port}${options.wsPath}`,
    httpUrl: `http://127.0.0.1:${port}`,
    output: () => tail,
    exited,
    kill9: async () => {
      if (alive) child.kill('SIGKILL');
      await exited;
    },
    stop: async (graceMs = 15_000) => {
      if (!alive) return exited;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (alive) child.kill('SIGKILL');
      }, graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
