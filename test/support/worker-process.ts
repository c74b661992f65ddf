/** Starts the real render worker (`worker/main.ts`, i.e. `npm run worker`) as a child process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { nodeBin, repoRoot } from './uws-runtime.ts';
import { TEST_SECRET } from './server-process.ts';

export interface LogEntry {
  msg?: string;
  versionId?: string;
  key?: string;
  [field: string]: unknown;
}

export interface WorkerProcess {
  readonly name: string;
  readonly child: ChildProcess;
  /** The JSON log lines so far. */
  entries(): LogEntry[];
  output(): string;
  kill(): Promise<void>;
  stop(): Promise<number | null>;
  exited: Promise<number | null>;
}

export async function startWorkerProcess(options: {
  name: string;
  databaseUrl: string;
  dataDir: string;
  env?: Record<string, string>;
  register: (teardown: () => Promise<void>) => void;
}): Promise<WorkerProcess> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    DATABASE_URL: options.databaseUrl,
    AUTH_JWT_SECRET: TEST_SECRET,
    DATA_DIR: options.dataDir,
    NODE_ID: options.name,
    LOG_LEVEL: 'info',
    ...options.env,
  };
  const child = spawn(nodeBin, [join(repoRoot, 'worker/main.ts')], { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let alive = true;
  void exited.then(() => (alive = false));
  const kill = async () => {
    if (alive) child.kill('SIGKILL');
    await exited;
  };
  options.register(kill);
  const entries = () =>
    out
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as LogEntry];
        } catch {
          return []; // a partial last line
        }
      });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker ${options.name} not ready within 60 s:\n${out}`)), 60_000);
    const check = () => {
      if (entries().some((e) => e.msg === 'render worker ready')) {
        clearTimeout(timer);
        child.stdout!.off('data', check);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`worker ${options.name} exited with ${code} before it was ready:\n${out}`));
    });
  });
  return {
    name: options.name,
    child,
    entries,
    output: () => out,
    kill,
    stop: async () => {
      if (alive) child.kill('SIGTERM');
      return exited;
    },
    exited,
  };
}
