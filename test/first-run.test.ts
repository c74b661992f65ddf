/**
 * A new user's first five minutes: `npm start` from a fresh DATA_DIR with no PostgreSQL, Redis or
 * secret configured, then connect with exactly what it printed.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { acknowledged, connectClient, waitFor } from './support/clients.ts';
import { api } from './support/fixtures.ts';
import { startServerProcess, tempDir } from './support/server-process.ts';
import { nodeBin, repoRoot } from './support/uws-runtime.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

describe('first run on the embedded default', () => {
  it('creates demo data, prints a token and session that work, and reuses them on restart', async () => {
    const dataDir = join(tempDir(register), 'data');
    const server = await startServerProcess({ transport: 'node', dataDir, env: { AUTH_JWT_SECRET: '' }, register });
    const printed = await waitFor(() => {
      const out = server.output();
      const token = /Dev token:\s+(\S+)/.exec(out)?.[1];
      const session = /Session:\s+(\S+)/.exec(out)?.[1];
      return token && session ? { token, session } : null;
    }, { what: 'connection instructions on stdout' });
    expect(server.output()).toContain(`ws://127.0.0.1:${server.port}/collab`);

    expect(await api(server.url, 'GET', '/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });

    const client = connectClient(server.wsUrl, printed.session, printed.token, register);
    await client.synced;
    expect(client.doc.getMap('layers').size).toBe(1);
    expect(client.doc.getMap('meta').get('width')).toBe(1280);
    client.destroy();

    // `npm run token` mints a token the running server accepts (same generated secret).
    const minted = spawnSync(nodeBin, [join(repoRoot, 'scripts/token.ts'), 'usr_demo'], {
      env: { PATH: process.env.PATH, DATA_DIR: dataDir },
      encoding: 'utf8',
    });
    expect(minted.status).toBe(0);
    const other = connectClient(server.wsUrl, printed.session, minted.stdout.trim(), register);
    await other.synced;
    other.destroy();

    // The second demo user: their own token, a participant of the demo session who may edit.
    const guestToken = /Guest token:\s+(\S+)/.exec(server.output())?.[1];
    expect(guestToken).toBeDefined();
    const guest = connectClient(server.wsUrl, printed.session, guestToken!, register);
    await guest.synced;
    expect(guest.provider.authorizedScope).toBe('read-write');
    guest.doc.getMap('meta').set('background', '#123456');
    await acknowledged(guest);
    guest.destroy();

    // Another active session on the demo image must not replace the printed one.
    const another = await api(server.url, 'POST', '/api/sessions', { token: printed.token, body: { imageId: 'img_demo' } });
    expect(another.status).toBe(201);

    expect(await server.stop()).toBe(0);
    const again = await startServerProcess({ transport: 'node', dataDir, env: { AUTH_JWT_SECRET: '' }, register });
    const session = await waitFor(() => /Session:\s+(\S+)/.exec(again.output())?.[1], { what: 'session line after restart' });
    expect(session).toBe(printed.session);
    expect(another.body.session.sessionId).not.toBe(printed.session);
  });

  it('stops with a one-line reason and a non-zero exit on a bad setting', () => {
    const run = spawnSync(nodeBin, [join(repoRoot, 'server/main.ts')], {
      env: { PATH: process.env.PATH, PORT: 'not-a-port' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(run.status).toBe(1);
    expect(run.stderr.trim()).toMatch(/^invalid configuration: PORT .+$/);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
  });
});
