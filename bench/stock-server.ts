/**
 * Stock Hocuspocus, as its documentation sets it up: `Server` + `@hocuspocus/extension-database`
 * storing the whole document (`Y.encodeStateAsUpdate`) in one PostgreSQL row per document, with
 * the default store debounce (2 s, at most 10 s). No authentication: any token is accepted.
 *
 * With REDIS_URL set, several of these processes form one deployment the documented way:
 * `@hocuspocus/extension-redis` with its defaults (store lock, 1 s initial-sync wait), keys and
 * channels under REDIS_PREFIX (default `hocuspocus`; the cross-node bench gives each run its own),
 * NAME as this node's name and Redis identifier.
 *
 * The benchmark's baseline, run as its own process. Environment: DATABASE_URL (required),
 * REDIS_URL, REDIS_PREFIX, NAME (all optional). Prints one JSON line `{"msg":"listening","port":N}`
 * on stdout once it accepts connections.
 */
import { randomBytes } from 'node:crypto';
import { Database } from '@hocuspocus/extension-database';
import { Server, type Extension } from '@hocuspocus/server';
import pg from 'pg';

const url = process.env.DATABASE_URL;
if (!url) {
  process.stderr.write('stock-server: DATABASE_URL is required\n');
  process.exit(1);
}
const redisUrl = process.env.REDIS_URL ? new URL(process.env.REDIS_URL) : undefined;
// The identifier filters a node's own messages out of the channel: unique per process.
const name = process.env.NAME ?? `stock-${randomBytes(4).toString('hex')}`;

const pool = new pg.Pool({ connectionString: url, max: 10 });
pool.on('error', (error) => process.stderr.write(`stock-server: idle pg client error: ${error.message}\n`));

// A bench-only table in the bench's throw-away database (the app's schema lives in migrations/).
// Several nodes starting at once race on IF NOT EXISTS (PostgreSQL then fails one with a unique
// violation on pg_type, 23505, or 42P07): the table exists either way.
await pool.query('CREATE TABLE IF NOT EXISTS stock_documents (name text PRIMARY KEY, data bytea NOT NULL)').catch((error: { code?: string }) => {
  if (error.code !== '23505' && error.code !== '42P07') throw error;
});

const extensions: Extension[] = [];
if (redisUrl) {
  // Loaded only when used, so the single-node baseline (`npm run bench`) runs exactly as before.
  const { Redis } = await import('@hocuspocus/extension-redis');
  extensions.push(
    new Redis({
      host: redisUrl.hostname,
      port: Number(redisUrl.port || 6379),
      prefix: process.env.REDIS_PREFIX ?? 'hocuspocus',
      identifier: name,
    }),
  );
}

const server = new Server({
  name,
  port: 0,
  address: '127.0.0.1',
  quiet: true,
  extensions: [
    ...extensions,
    new Database({
      fetch: async ({ documentName }) => {
        const { rows } = await pool.query<{ data: Buffer }>('SELECT data FROM stock_documents WHERE name = $1', [documentName]);
        return rows[0]?.data ?? null;
      },
      store: async ({ documentName, state }) => {
        await pool.query(
          'INSERT INTO stock_documents (name, data) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data',
          [documentName, state],
        );
      },
    }),
  ],
});

await server.listen();
process.stdout.write(`${JSON.stringify({ msg: 'listening', port: server.address.port, pid: process.pid, name, redis: Boolean(redisUrl) })}\n`);
