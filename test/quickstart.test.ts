/**
 * The README's quick start on PostgreSQL, walked as an operator and two integrators would: `npm
 * start` on an empty database says how to create the first user; the users CLI creates them; the
 * owner starts a session, finds the second person by username and invites them read-only; both
 * connect with the README's own client snippets (browser and Node), a stranger is refused, and the
 * read-only participant's edit is refused while the owner's reaches everyone. The discovery routes
 * (`GET /api/sessions/:id`, `GET /api/sessions?imageId=`, `GET /api/users?username=`) answer by the
 * same access rules, and a wrong method is 405.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { printedFields, runCommand } from './support/cli.ts';
import { api } from './support/fixtures.ts';
import { createDatabase } from './support/databases.ts';
import { runSnippet } from './support/readme.ts';
import { startServerProcess, TEST_SECRET, type ServerProcess } from './support/server-process.ts';

const teardown: Array<() => Promise<void>> = [];
const register = (fn: () => Promise<void>) => void teardown.unshift(fn);
afterAll(async () => {
  for (const fn of teardown.splice(0)) await fn();
});

describe('quick start on PostgreSQL, as the README tells it', () => {
  let server: ServerProcess;
  let env: Record<string, string>;
  const users: Record<string, { userId: string; token: string; imageId?: string }> = {};

  beforeAll(async () => {
    const database = await createDatabase('quick');
    register(database.drop);
    env = { DATABASE_URL: database.url, AUTH_JWT_SECRET: TEST_SECRET };
    server = await startServerProcess({ transport: 'node', databaseUrl: database.url, register });
  });

  it('starts on an empty database and says how to create the first user and session', async () => {
    const { waitFor } = await import('./support/clients.ts');
    await waitFor(() => server.output().includes('No users yet'), { what: 'first-run instructions' });
    expect(server.output()).toContain('npm run users -- add <username> --with-image');
    expect(server.output()).toContain('/api/sessions');
    expect(server.output()).not.toContain(TEST_SECRET);
  });

  it('creates users with the CLI: id and a token printed; a duplicate or a bad name is one line and exit 1', async () => {
    for (const [name, extra] of [['alice', ['--with-image', '--width', '800', '--height', '600', '--title', 'Poster']], ['bob', []], ['carol', ['--display-name', 'Carol C']]] as const) {
      const run = await runCommand('scripts/users.ts', ['add', name, ...extra], env);
      expect(run.code, run.stderr).toBe(0);
      const fields = printedFields(run.stdout);
      expect(fields.userId).toMatch(/^usr_/);
      expect(fields.token).toMatch(/^ey/);
      users[name] = { userId: fields.userId!, token: fields.token!, ...(fields.imageId ? { imageId: fields.imageId } : {}) };
    }
    expect(users.alice!.imageId).toMatch(/^img_/);

    const duplicate = await runCommand('scripts/users.ts', ['add', 'bob'], env);
    expect(duplicate.code).toBe(1);
    expect(duplicate.stderr.trim()).toBe('a user named bob exists already');
    const bad = await runCommand('scripts/users.ts', ['add', 'no spaces'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/^invalid username/);

    const list = await runCommand('scripts/users.ts', ['list'], env);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`${users.carol!.userId}\\s+carol\\s+active\\s+Carol C`));

    // The printed token is accepted by the running server.
    expect(await api(server.url, 'GET', `/api/users?username=alice`, { token: users.alice!.token })).toMatchObject({
      status: 200,
      body: { user: { userId: users.alice!.userId, username: 'alice' } },
    });
  });

  it('owner starts a session, finds bob by username and invites him read-only; the snippets connect, a stranger is refused', async () => {
    const alice = users.alice!;
    const created = await api(server.url, 'POST', '/api/sessions', { token: alice.token, body: { imageId: alice.imageId } });
    expect(created.status).toBe(201);
    const sessionId = created.body.session.sessionId as string;

    const found = await api(server.url, 'GET', '/api/users?username=bob', { token: alice.token });
    expect(found).toMatchObject({ status: 200, body: { user: { userId: users.bob!.userId, username: 'bob', displayName: 'bob' } } });
    expect(await api(server.url, 'GET', '/api/users?username=nobody', { token: alice.token })).toMatchObject({
      status: 404,
      body: { error: { code: 'user_not_found' } },
    });
    const invited = await api(server.url, 'POST', `/api/sessions/${sessionId}/participants`, {
      token: alice.token,
      body: { userId: found.body.user.userId, permissions: { canEdit: false } },
    });
    expect(invited.status).toBe(201);

    // Discovery, by the same rules: members see the session (with their role), a stranger does not.
    expect(await api(server.url, 'GET', `/api/sessions/${sessionId}`, { token: users.bob!.token })).toMatchObject({
      status: 200,
      body: { session: { sessionId, imageId: alice.imageId, ownerId: alice.userId, role: 'viewer', isActive: true } },
    });
    expect(await api(server.url, 'GET', `/api/sessions/${sessionId}`, { token: users.carol!.token })).toMatchObject({
      status: 403,
      body: { error: { code: 'forbidden' } },
    });
    expect(await api(server.url, 'GET', `/api/sessions/ses_doesnotexist0000`, { token: alice.token })).toMatchObject({
      status: 404,
      body: { error: { code: 'session_not_found' } },
    });
    const listed = await api(server.url, 'GET', `/api/sessions?imageId=${alice.imageId}`, { token: users.bob!.token });
    expect(listed.status).toBe(200);
    expect(listed.body.sessions.map((s: { sessionId: string; role: string }) => [s.sessionId, s.role])).toEqual([[sessionId, 'viewer']]);
    const own = await api(server.url, 'GET', `/api/sessions?imageId=${alice.imageId}`, { token: alice.token });
    expect(own.body.sessions.map((s: { sessionId: string; role: string }) => [s.sessionId, s.role])).toEqual([[sessionId, 'owner']]);
    expect((await api(server.url, 'GET', '/api/sessions', { token: users.carol!.token })).body).toEqual({ sessions: [] });
    expect(await api(server.url, 'GET', '/api/sessions?imageId=not%20an%20id', { token: alice.token })).toMatchObject({
      status: 400,
      body: { error: { code: 'bad_request' } },
    });

    // A wrong method on a path that exists is 405 (documented), an unknown path 404.
    const wrong = await fetch(`${server.url}/api/sessions/${sessionId}/end`, { method: 'GET', headers: { authorization: `Bearer ${alice.token}` } });
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('POST');
    expect(((await wrong.json()) as { error: { code: string } }).error.code).toBe('method_not_allowed');
    expect((await api(server.url, 'GET', '/api/nothing-here', { token: alice.token })).status).toBe(404);

    // The README's snippets, as written: alice in the browser one (Node 24's global WebSocket), bob
    // and carol in the Node one with the global WebSocket removed, as on Node 20.
    const noGlobal = ['--no-experimental-websocket'];
    const a = runSnippet('browser', { wsUrl: server.wsUrl, sessionId, token: alice.token }, register);
    const b = runSnippet('node', { wsUrl: server.wsUrl, sessionId, token: users.bob!.token, nodeFlags: noGlobal }, register);
    const c = runSnippet('node', { wsUrl: server.wsUrl, sessionId, token: users.carol!.token, nodeFlags: noGlobal }, register);
    expect(await a.until((r) => r.outcome === 'synced', 'alice synced')).toMatchObject({ scope: 'read-write', width: 800 });
    expect(await b.until((r) => r.outcome === 'synced', 'bob synced')).toMatchObject({ scope: 'readonly', width: 800 });
    expect(await c.until((r) => r.outcome !== undefined, 'carol answered')).toMatchObject({ outcome: 'refused forbidden' });
    expect(c.output()).toContain('refused forbidden'); // the snippet's own onAuthenticationFailed line
    expect(b.output()).toContain('connected readonly'); // and its onAuthenticated line

    // Bob (read-only) edits and then moves his cursor: once alice sees the cursor, the server has
    // handled the edit — refused: never acknowledged, never reaching alice.
    const bobEdit = runSnippet('node', { wsUrl: server.wsUrl, sessionId, token: users.bob!.token, nodeFlags: noGlobal, edit: 'bob', cursor: 42 }, register);
    await bobEdit.until((r) => r.edits.includes('bob') && r.unsynced, 'bob edited locally');
    await a.until((r) => r.cursors.includes(42), 'alice sees bob\'s cursor');
    expect(a.reports().some((r) => r.edits.includes('bob'))).toBe(false);
    expect(bobEdit.reports().at(-1)!.unsynced).toBe(true);
    // Alice edits: acknowledged, and bob sees it.
    const aliceEdit = runSnippet('browser', { wsUrl: server.wsUrl, sessionId, token: alice.token, edit: 'alice', cursor: 7 }, register);
    await aliceEdit.until((r) => r.edits.includes('alice') && !r.unsynced, 'alice acknowledged');
    await b.until((r) => r.edits.includes('alice'), 'bob sees alice');
    expect(a.reports().some((r) => r.edits.includes('bob'))).toBe(false);
  });

  it('npm run token refuses unknown and deactivated users and bad lifetimes, in one line with exit 1', async () => {
    const ok = await runCommand('scripts/token.ts', ['bob', '60'], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toMatch(/^ey[\w-]+\.[\w-]+\.[\w-]+$/);

    for (const [args, message] of [
      [['nobody'], /^no user nobody: create one with npm run users -- add <username>/],
      [['bob', '-5'], /^invalid expiry "-5": give the token's lifetime as whole seconds from 1 to/],
      [['bob', '0'], /^invalid expiry "0"/],
      [['bob', '1h'], /^invalid expiry "1h"/],
      [[], /^usage: npm run token -- <userId or username>/],
    ] as const) {
      const run = await runCommand('scripts/token.ts', [...args], env);
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(1);
      expect(run.stderr.trim().split('\n'), run.stderr).toHaveLength(1);
      expect(run.stderr.trim()).toMatch(message);
      expect(run.stdout).toBe('');
    }

    const deactivated = await runCommand('scripts/users.ts', ['deactivate', 'carol'], env);
    expect(deactivated.code).toBe(0);
    const refused = await runCommand('scripts/token.ts', ['carol'], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe(`user carol (${users.carol!.userId}) is deactivated: no token is issued for them`);
    // And the token carol had is refused by the server from now on.
    expect(await api(server.url, 'GET', '/api/sessions', { token: users.carol!.token })).toMatchObject({
      status: 401,
      body: { error: { code: 'unknown_user' } },
    });
  });

  it('creates a blank image for a user with the images CLI', async () => {
    const run = await runCommand('scripts/images.ts', ['add', '--owner', 'bob', '--width', '320', '--height', '200'], env);
    expect(run.code, run.stderr).toBe(0);
    const imageId = printedFields(run.stdout).imageId!;
    expect(imageId).toMatch(/^img_/);
    const session = await api(server.url, 'POST', '/api/sessions', { token: users.bob!.token, body: { imageId } });
    expect(session.status).toBe(201);
    const bad = await runCommand('scripts/images.ts', ['add', '--owner', 'bob', '--width', '0'], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toMatch(/^invalid --width 0: give a whole number of pixels from 1 to 16384$/);
    const nobody = await runCommand('scripts/images.ts', ['add', '--owner', 'nobody'], env);
    expect(nobody.code).toBe(1);
    expect(nobody.stderr.trim()).toMatch(/^no user nobody/);
  });
});
