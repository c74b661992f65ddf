/**
 * Starts the real server (`server/main.ts`) as a child process on port 0, on either transport and
 * either database, and reads its port and database URL from its first log line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SERVER_NODE_FLAGS } from '../../server/node-flags.ts';
import { nodeBin, repoRoot, uwsLauncher } from './uws-runtime.ts';

export const TEST_SECRET = 'test-secret-test-secret-test-secret-0123456789';

export interface ServerProcess {
  readonly url: string;
  readonly wsUrl: string;
  readonly port: number;
  readonly transport: string;
  /** The database the server uses (for the embedded one, its loopback URL). */
  readonly databaseUrl: string;
  readonly dataDir: string;
  readonly child: ChildProcess;
  output(): string;
  /** SIGTERM, then wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL, then wait for exit. */
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

export interface StartOptions {
  transport: 'node' | 'uws';
  /** A PostgreSQL URL, or undefined for the embedded database in `dataDir`. */
  databaseUrl?: string | undefined;
  dataDir?: string;
  env?: Record<string, string>;
  /** Where to register the teardown (afterAll / onTestFinished). */
  register: (teardown: () => Promise<void>) => void;
}

export function tempDir(register: StartOptions['register'], prefix = 'ifc-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  register(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function startServerProcess(options: StartOptions): Promise<ServerProcess> {
  let prefix: string[] = [];
  if (options.transport === 'uws') {
    const launcher = uwsLauncher();
    if (!launcher.ok) throw new Error(`cannot run the uws transport here: ${launcher.reason}`);
    prefix = launcher.prefix;
  }
  const dataDir = options.dataDir ?? tempDir(options.register);
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    TRANSPORT: options.transport,
    LOG_LEVEL: 'info',
    AUTH_JWT_SECRET: TEST_SECRET,
    ...(options.databaseUrl ? { DATABASE_URL: options.databaseUrl } : {}),
    ...options.env,
  };
  const [cmd, ...args] = [...prefix, nodeBin, ...SERVER_NODE_FLAGS, join(repoRoot, 'server/main.ts')];
  const child = spawn(cmd!, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
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

  const listening = await new Promise<{ port: number; databaseUrl?: string; transport: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start within 60 s:\n${out}`)), 60_000);
    const check = () => {
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const entry = JSON.parse(line) as { port?: number; databaseUrl?: string; transport?: string; msg?: string };
          if (entry.msg?.startsWith('listening') && entry.port) {
            clearTimeout(timer);
            child.stdout!.off('data', check);
            resolve(entry as { port: number; databaseUrl?: string; transport: string });
            return;
          }
        } catch {
          // a partial line: wait for the rest
        }
      }
    };
    child.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${out}`));
    });
  });

  const url = `http://127.0.0.1:${listening.port}`;
  return {
    url,
    wsUrl: `ws://127.0.0.1:${listening.port}/collab`,
    port: listening.port,
    transport: listening.transport,
    databaseUrl: options.databaseUrl ?? listening.databaseUrl!,
    dataDir,
    child,
    output: () => out,
    stop: async () => {
      if (alive) child.kill('SIGTERM');
      return exited;
    },
    kill,
    exited,
  };
}
