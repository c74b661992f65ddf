/**
 * Start-up failures an operator can fix are one line on stderr saying what is wrong and what to
 * do, and exit code 1 — never a stack trace: the database unreachable or missing, the port in use
 * (after the embedded directory was opened and migrated: it is released again), `npm run
 * token`/`migrate` without AUTH_JWT_SECRET, a token for an embedded directory no server ran in.
 */
import { existsSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { startServer } from '../server/app.ts';
import { loadConfig } from '../server/config.ts';
import { runCommand, type CommandResult } from './support/cli.ts';
import { waitFor } from './support/clients.ts';
import { createDatabase } from './support/databases.ts';
import { tempDir, TEST_SECRET } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

const PG = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';

function expectOneLine(run: CommandResult, pattern: RegExp): void {
  expect(run.code, `${run.stderr}\n${run.stdout}`).toBe(1);
  const lines = run.stderr.trim().split('\n');
  expect(lines, run.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(run.stderr).not.toMatch(/^\s+at /m); // no stack trace
}

describe('start-up failures: one line and exit code 1', () => {
  it('the database is unreachable', async () => {
    const run = await runCommand('server/main.ts', [], { DATABASE_URL: 'postgres://root:hunter2hunter2@127.0.0.1:1/test', AUTH_JWT_SECRET: TEST_SECRET, PORT: '0' });
    expectOneLine(run, /^cannot reach the database at postgres:\/\/root@127\.0\.0\.1:1\/test \(ECONNREFUSED\): start PostgreSQL there, or fix DATABASE_URL$/);
    expect(run.stderr).not.toContain('hunter2'); // the password is never printed
  });

  it('the database does not exist', async () => {
    const url = new URL(PG);
    url.pathname = '/imageflow_no_such_database';
    const run = await runCommand('server/main.ts', [], { DATABASE_URL: url.toString(), AUTH_JWT_SECRET: TEST_SECRET, PORT: '0' });
    expectOneLine(run, /^the database at \S+\/imageflow_no_such_database does not exist \(.+\): create it \(createdb\), or fix DATABASE_URL$/);
  });

  it('the port is in use, after the embedded directory was opened and migrated: the directory is released', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    register(() => new Promise((resolve) => blocker.close(() => resolve())));
    const { port } = blocker.address() as AddressInfo;
    const dataDir = join(tempDir(register), 'data');

    const run = await runCommand('server/main.ts', [], { DATA_DIR: dataDir, PORT: String(port), TRANSPORT: 'node' });
    expectOneLine(run, new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use by another process; stop it, or set PORT \\(PORT=0 picks a free one\\)$`));
    // It had opened and migrated the directory; the lock is gone, so the next process may open it.
    expect(existsSync(join(dataDir, 'pglite', 'PG_VERSION'))).toBe(true);
    expect(existsSync(join(dataDir, 'lock'))).toBe(false);
    const migrate = await runCommand('scripts/migrate.ts', [], { DATA_DIR: dataDir });
    expect(migrate.code, migrate.stderr).toBe(0);
    expect(migrate.stdout.trim()).toBe('nothing to apply: the schema is up to date');
  });

  it('the port is in use, on PostgreSQL: startServer rejects having stopped all it started (render worker, thumbnail feed, pools)', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    register(() => new Promise((resolve) => blocker.close(() => resolve())));
    const { port } = blocker.address() as AddressInfo;
    const database = await createDatabase('startfail');
    register(database.drop);
    const config = loadConfig({
      DATABASE_URL: database.url,
      AUTH_JWT_SECRET: TEST_SECRET,
      DATA_DIR: join(tempDir(register), 'data'),
      HOST: '127.0.0.1',
      PORT: String(port),
      TRANSPORT: 'node',
    });
    await expect(startServer(config, { logger: pino({ level: 'silent' }) })).rejects.toThrow();
    // No connection of its own is left on its database (the render worker's and the thumbnail
    // feed's were once forgotten on this path).
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    register(() => admin.end());
    const others = async () =>
      (
        await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')
      ).rows[0]!.n;
    await waitFor(async () => (await others()) === 0, { timeout: 10_000, what: 'every connection of the failed start closed' }).catch(async (error: unknown) => {
      throw new Error(`${String(error)}; still open: ${await others()}`);
    });
  });

  it('npm run token and npm run migrate without AUTH_JWT_SECRET next to DATABASE_URL', async () => {
    for (const script of ['scripts/token.ts', 'scripts/migrate.ts']) {
      const run = await runCommand(script, ['usr_demo'], { DATABASE_URL: PG });
      expectOneLine(run, /^invalid configuration: AUTH_JWT_SECRET is required when DATABASE_URL is set$/);
    }
  });

  it('npm run token on an embedded directory no server has run in, and with a bad lifetime', async () => {
    const dataDir = join(tempDir(register), 'never-started');
    const run = await runCommand('scripts/token.ts', ['demo'], { DATA_DIR: dataDir });
    expectOneLine(run, /^no embedded database in DATA_DIR \S+never-started yet: start the server there once \(npm start\)/);
    expect(existsSync(dataDir)).toBe(false); // and nothing was created there
    const bad = await runCommand('scripts/token.ts', ['demo', 'soon'], { DATA_DIR: dataDir });
    expectOneLine(bad, /^invalid expiry "soon": give the token's lifetime as whole seconds from 1 to 31536000/);
  });
});
