/**
 * Entry point of `npm run worker`: a render worker on its own, for deployments that render apart
 * from the collaboration nodes (run the servers with `RENDER_WORKER=off`, or keep their inline
 * workers: any number of workers share one queue). Reads the same configuration schema as the
 * server; needs `DATABASE_URL` (the embedded PGlite database lives inside one server process) and
 * the server's blob store (`BLOB_STORE`, `DATA_DIR` or `S3_*`).
 */
import '../server/v8-flags.ts';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { connectPostgres } from '../persistence/db.ts';
import { migrate } from '../persistence/migrate.ts';
import { keepMediaThreadsLow } from '../media/thread-priority.ts';
import { ConfigError, loadConfig, type Config } from '../server/config.ts';
import { createBlobStore } from '../storage/index.ts';
import { createRenderCache, createRenderPool, createRenderService, createRenderWorker } from './compose.ts';
import { migrateQueue } from './queue.ts';

let config: Config;
try {
  config = loadConfig(process.env);
  if (!config.DATABASE_URL) {
    throw new ConfigError('invalid configuration: DATABASE_URL is required by npm run worker (the embedded database belongs to one server process; its inline worker renders there)');
  }
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  }
  throw error;
}

const name = config.NODE_ID ?? `worker-${randomBytes(4).toString('hex')}`;
const logger = pino({ level: config.LOG_LEVEL }).child({ node: name });
process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled promise rejection'));

// As in the server: the libuv pool's threads (sharp's pipelines) yield to whatever else runs on
// the machine (a collaboration node beside this worker); the render threads lower themselves.
const stopMediaNice = await keepMediaThreadsLow(config.MEDIA_THREAD_NICE, config.MEDIA_THREAD_POLICY);
const db = connectPostgres(config.DATABASE_URL!);
// Both are idempotent and run under locks, so a worker may start before any server.
await migrate(db.url);
await migrateQueue(db);
const blobs = createBlobStore(config);
const pool = createRenderPool(config);
const cache = createRenderCache(config, db, blobs, logger);
const renders = createRenderService(db, blobs, pool, undefined, cache);
const worker = createRenderWorker(config, { db, renders, logger, name });
await worker.start();
logger.info({ concurrency: config.RENDER_CONCURRENCY, sizes: config.THUMBNAIL_SIZES }, 'render worker ready');

let stopping = false;
const stop = (signal: string) => {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'render worker stopping: letting running jobs finish');
  (async () => {
    await worker.stop();
    stopMediaNice();
    await pool.close();
    await cache.idle();
    await blobs.close();
    await db.close();
  })().then(
    () => process.exit(0),
    (error: unknown) => {
      logger.error({ err: error }, 'render worker shutdown failed');
      process.exit(1);
    },
  );
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
