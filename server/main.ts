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

const server = await runOrExplain(
  () => startServer(config),
  () => ({ databaseUrl: config.DATABASE_URL, host: config.HOST, port: config.PORT }),
);
const { logger } = server;

process.on('unhandledRejection', (reason) => {
  // Hocuspocus does not await some hooks (onChange, onStateless): log, never exit.
  logger.error({ err: reason }, 'unhandled promise rejection');
});

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

let stopping = false;
const stop = (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down: draining');
  server.close().then(
    () => process.exit(0),
    (error: unknown) => {
      logger.error({ err: error }, 'shutdown failed');
      process.exit(1);
    },
  );
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
