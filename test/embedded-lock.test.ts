/**
 * The embedded DATA_DIR belongs to one process at a time: a second server or `npm run migrate` on it
 * is refused in one line (exit 1) — two PGlite instances writing one directory lost acknowledged
 * writes — while the user and token commands work through the running server. A holder killed with
 * -9 does not lock the directory: the next server starts at once, with everything acknowledged.
 * The embedded database's loopback socket asks for the generated password (DATA_DIR/pglite-password,
 * mode 0600, in the logged URL) instead of letting anyone in as superuser.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { printedFields, runCommand } from './support/cli.ts';
import { waitFor } from './support/clients.ts';
import { api } from './support/fixtures.ts';
import { startServerProcess, tempDir, type ServerProcess } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

async function connectError(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code ?? (error as Error).message;
  } finally {
    await client.end().catch(() => {});
  }
}

describe('one process per embedded DATA_DIR', () => {
  let dataDir: string;
  let server: ServerProcess;
  let token: string;

  beforeAll(async () => {
    dataDir = join(tempDir(register), 'data');
    server = await startServerProcess({ transport: 'node', dataDir, env: { AUTH_JWT_SECRET: '' }, register });
    token = await waitFor(() => /Dev token:\s+(\S+)/.exec(server.output())?.[1], { what: 'dev token' });
  });

  it('refuses a second server and npm run migrate on the directory, in one line with exit 1', async () => {
    const pattern = new RegExp(
      `^DATA_DIR ${dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use by another ImageFlow process \\(pid ${server.child.pid}\\): stop it first, or give this one its own DATA_DIR$`,
    );
    for (const [script, env] of [
      ['server/main.ts', { DATA_DIR: dataDir, PORT: '0', TRANSPORT: 'node' }],
      ['scripts/migrate.ts', { DATA_DIR: dataDir }],
    ] as const) {
      const run = await runCommand(script, [], env);
      expect(run.code, `${script}: ${run.stderr}`).toBe(1);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expect(run.stderr.trim()).toMatch(pattern);
    }
    // The first server is untouched and serving.
    expect((await api(server.url, 'GET', '/readyz')).status).toBe(200);
  });

  it('lets the user and token commands work through the running server', async () => {
    const added = await runCommand('scripts/users.ts', ['add', 'dana'], { DATA_DIR: dataDir });
    expect(added.code, added.stderr).toBe(0);
    const dana = printedFields(added.stdout);
    // Written into the running server's database: the server accepts dana's token at once.
    expect(await api(server.url, 'GET', '/api/users?username=dana', { token: dana.token! })).toMatchObject({
      status: 200,
      body: { user: { userId: dana.userId } },
    });
    const minted = await runCommand('scripts/token.ts', ['dana', '120'], { DATA_DIR: dataDir });
    expect(minted.code, minted.stderr).toBe(0);
    expect((await api(server.url, 'GET', '/api/sessions', { token: minted.stdout.trim() })).status).toBe(200);
  });

  it('asks for the generated password on the loopback socket', async () => {
    const url = new URL(server.databaseUrl);
    const password = readFileSync(join(dataDir, 'pglite-password'), 'utf8').trim();
    expect(password.length).toBeGreaterThanOrEqual(24);
    expect(decodeURIComponent(url.password)).toBe(password);
    expect(statSync(join(dataDir, 'pglite-password')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dataDir, 'lock-owner.json')).mode & 0o777).toBe(0o600);

    expect(await connectError(url.toString())).toBeUndefined();
    const wrong = new URL(url);
    wrong.password = 'not-the-password';
    expect(await connectError(wrong.toString())).toBe('28P01');
    const none = new URL(url);
    none.password = '';
    expect(await connectError(none.toString())).not.toBeUndefined();
    // And the server keeps serving.
    expect((await api(server.url, 'GET', '/readyz')).status).toBe(200);
  });

  it('a holder killed with -9 does not lock the directory: the next server starts at once and keeps every 201', async () => {
    const sessions: string[] = [];
    for (let i = 0; i < 5; i++) {
      const created = await api(server.url, 'POST', '/api/sessions', { token, body: { imageId: 'img_demo' } });
      expect(created.status).toBe(201);
      sessions.push(created.body.session.sessionId as string);
    }
    await server.kill();
    // The lock directory and owner file are left behind; the dead pid is recognised (and a lock not
    // refreshed for 60 s would be taken over from any host), so the next server starts.
    const next = await startServerProcess({ transport: 'node', dataDir, env: { AUTH_JWT_SECRET: '' }, register });
    for (const sessionId of sessions) {
      expect((await api(next.url, 'GET', `/api/sessions/${sessionId}`, { token })).status, sessionId).toBe(200);
    }
    expect(await next.stop()).toBe(0);
  });
});

describe('a stop right after start', () => {
  it('a SIGTERM the moment a fresh embedded server listens (its demo data still being made) drains it and exits 0', async () => {
    // The listening line comes before the demo data and the banner; the signal handlers used to be
    // installed after them, so a SIGTERM in between killed the process by signal (exit code null).
    for (let i = 0; i < 3; i++) {
      const fresh = await startServerProcess({ transport: 'node', dataDir: tempDir(register), env: { AUTH_JWT_SECRET: '' }, register });
      const code = await fresh.stop();
      expect(code, fresh.output().slice(-2000)).toBe(0);
    }
  });
});
