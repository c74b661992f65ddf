/**
 * Entry point of `npm start`: reads the environment once, starts the server, prints how to
 * connect, and on SIGTERM/SIGINT drains (server/drain.ts) and exits 0. A start-up failure an
 * operator can fix (configuration, database, port, DATA_DIR in use) is one line and exit code 1.
 */
// First: before lib0 (through Yjs) binds crypto.getRandomValues at its load.
import './random-pool.ts';
import './v8-flags.ts';
import { loadConfig, type Config } from './config.ts';
import { startServer } from './app.ts';
import { ensureDemo } from './demo.ts';
import { redactUrl, runOrExplain } from './startup.ts';
import { hasUsers } from '../persistence/repositories/users.ts';
import { COLLAB_PATH } from '../shared/protocol.ts';

const config: Config = await runOrExplain(async () => loadConfig(process.env));

// The signal handlers come first: the server accepts requests (and a supervisor may send SIGTERM)
// as soon as it listens, before the demo data and the banner below are done. A SIGTERM before
// then used to hit Node's default action and kill the process without draining (exit by signal;
// seen once in CI, stopping an embedded server right after its first requests).
type Running = Awaited<ReturnType<typeof startServer>>;
const lifecycle: { stopping: string | null; running: Running | null } = { stopping: null, running: null };
const drainAndExit = (server: Running, signal: string) => {
  server.logger.info({ signal }, 'shutting down: draining');
  server.close().then(
    () => process.exit(0),
    (error: unknown) => {
      server.logger.error({ err: error }, 'shutdown failed');
      process.exit(1);
    },
  );
};
const stop = (signal: string) => {
  if (lifecycle.stopping) return;
  lifecycle.stopping = signal;
  if (lifecycle.running) drainAndExit(lifecycle.running, signal);
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));

const server = await runOrExplain(
  () => startServer(config),
  () => ({ databaseUrl: config.DATABASE_URL, host: config.HOST, port: config.PORT }),
);
lifecycle.running = server;
// A signal that came while the server was starting: drain now that there is one to drain.
if (lifecycle.stopping) drainAndExit(server, lifecycle.stopping);
const { logger } = server;

process.on('unhandledRejection', (reason) => {
  // Hocuspocus does not await some hooks (onChange, onStateless): log, never exit.
  logger.error({ err: reason }, 'unhandled promise rejection');
});

/** How to connect: the embedded demo's links and tokens, or how to begin on PostgreSQL. */
async function announce(): Promise<void> {
  const ws = server.url.replace(/^http/, 'ws') + COLLAB_PATH;
  if (server.db.kind === 'pglite') {
    const demo = await ensureDemo(server, config.DATA_DIR);
    const week = { expiresInSeconds: 7 * 24 * 3600 };
    const token = await server.tokens.sign(demo.userId, week);
    const guestToken = await server.tokens.sign(demo.guestId, week);
    process.stdout.write(
      [
        '',
        `ImageFlow Collab is running at ${server.url} (embedded database in ${config.DATA_DIR}, transport ${server.transport})`,
        `  Editor:      ${server.url}/#session=${demo.sessionId}&token=${token}`,
        `  Guest:       ${server.url}/#session=${demo.sessionId}&token=${guestToken}`,
        `               (user demo-guest's own link: a participant who may edit, to try a second person)`,
        `  WebSocket:   ${ws}`,
        `  Session:     ${demo.sessionId}`,
        `  Dev token:   ${token}`,
        `  Guest token: ${guestToken}`,
        `  Connect:     new HocuspocusProvider({ url: '${ws}', name: '${demo.sessionId}', token: '<dev token>' })`,
        `               (Node needs the ws package: README "Connecting a client")`,
        `  More users:  npm run users -- add <username>     More tokens: npm run token -- demo`,
        `  Database:    psql '${server.db.url}'`,
        '',
      ].join('\n') + '\n',
    );
  } else {
    const lines = [`ImageFlow Collab is running at ${server.url} (PostgreSQL at ${redactUrl(server.db.url)}, transport ${server.transport})`, `  WebSocket:  ${ws}`];
    if (!(await hasUsers(server.db))) {
      lines.push(
        '  No users yet. With the same DATABASE_URL and AUTH_JWT_SECRET, create the first one and a blank image:',
        '    npm run users -- add <username> --with-image        (prints userId, imageId and a token)',
        '  then start an edit session and connect to it (README "Connecting a client"):',
        `    curl -X POST ${server.url}/api/sessions -H 'authorization: Bearer <token>' -H 'content-type: application/json' -d '{"imageId":"<imageId>"}'`,
        '  A second person: npm run users -- add <username>, then POST /api/sessions/<sessionId>/participants {"userId"}.',
      );
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  }
}

try {
  await announce();
} catch (error) {
  // Stopped while the demo data was being made: the drain closed the database under it.
  if (!lifecycle.stopping) throw error;
}
