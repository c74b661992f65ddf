/**
 * Stock Hocuspocus, as its documentation sets it up: `Server` + `@hocuspocus/extension-database`
 * storing the whole document (`Y.encodeStateAsUpdate`) in one PostgreSQL row per document, with
 * the default store debounce (2 s, at most 10 s). No authentication: any token is accepted.
 *
 * The benchmark's baseline, run as its own process. Environment: DATABASE_URL (required).
 * Prints one JSON line `{"msg":"listening","port":N}` on stdout once it accepts connections.
 */
import { Database } from '@hocuspocus/extension-database';
import { Server } from '@hocuspocus/server';
import pg from 'pg';

const url = process.env.DATABASE_URL;
if (!url) {
  process.stderr.write('stock-server: DATABASE_URL is required\n');
  process.exit(1);
}

const pool = new pg.Pool({ connectionString: url, max: 10 });
pool.on('error', (error) => process.stderr.write(`stock-server: idle pg client error: ${error.message}\n`));

// A bench-only table in the bench's throw-away database (the app's schema lives in migrations/).
await pool.query('CREATE TABLE IF NOT EXISTS stock_documents (name text PRIMARY KEY, data bytea NOT NULL)');

const server = new Server({
  port: 0,
  address: '127.0.0.1',
  quiet: true,
  extensions: [
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
process.stdout.write(`${JSON.stringify({ msg: 'listening', port: server.address.port, pid: process.pid })}\n`);
