/**
 * Entry point of `npm start`: reads the environment once, starts the server, prints how to
 * connect, and on SIGTERM/SIGINT stores every document before exiting.
 */
import { ConfigError, loadConfig, type Config } from './config.ts';
import { startServer } from './app.ts';
import { ensureDemo } from './demo.ts';
import { COLLAB_PATH } from '../shared/protocol.ts';

let config: Config;
try {
  config = loadConfig(process.env);
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  }
  throw error;
}

const server = await startServer(config);
const { logger } = server;

process.on('unhandledRejection', (reason) => {
  // Hocuspocus does not await some hooks (onChange, onStateless): log, never exit.
  logger.error({ err: reason }, 'unhandled promise rejection');
});

if (server.db.kind === 'pglite') {
  const demo = await ensureDemo(server.db);
  const token = await server.tokens.sign(demo.userId, { expiresInSeconds: 7 * 24 * 3600 });
  const ws = server.url.replace(/^http/, 'ws') + COLLAB_PATH;
  process.stdout.write(
    [
      '',
      `ImageFlow Collab is running at ${server.url} (embedded database in ${config.DATA_DIR}, transport ${server.transport})`,
      `  Editor:     ${server.url}/#session=${demo.sessionId}&token=${token}`,
      `  WebSocket:  ${ws}`,
      `  Session:    ${demo.sessionId}`,
      `  Dev token:  ${token}`,
      `  Connect:    new HocuspocusProvider({ url: '${ws}', name: '${demo.sessionId}', token: '<dev token>' })`,
      `  More tokens: npm run token -- ${demo.userId}`,
      '',
    ].join('\n') + '\n',
  );
} else {
  process.stdout.write(`ImageFlow Collab is running at ${server.url} (transport ${server.transport})\n`);
}

let stopping = false;
const stop = (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down: storing every document');
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
