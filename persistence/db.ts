/**
 * One database interface over two engines: a real PostgreSQL reached with `pg`, or PGlite (PostgreSQL
 * compiled to WASM) served in-process over the PostgreSQL wire protocol by pglite-socket. Both are
 * then driven by the same `pg` Pool, so the migrations, repositories and the update log run unchanged
 * on either (docs/STACK-NOTES.md: PGlite behind pglite-socket keeps transactions isolated per connection).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import pg from 'pg';

/** What repositories need: run one statement. A pool and a transaction client both satisfy it. */
export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
}

export interface Database extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /** A connection string for tools that open their own connection (the migration runner). */
  readonly url: string;
  /** Runs `fn` in one transaction on one connection; rolls back if it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** True when a trivial query answers within `timeoutMs`. */
  ping(timeoutMs?: number): Promise<boolean>;
  /**
   * NOTIFY messages that arrive on the pool's own connections. On PostgreSQL these connections
   * never LISTEN, so nothing arrives (a listener opens its own connection). On PGlite every
   * connection shares one backend, which delivers a notification to the connection whose query
   * committed it: there the pool is where its own notifications land (server/auth/access-feed.ts).
   */
  onNotification(listener: (channel: string, payload: string | undefined) => void): () => void;
  close(): Promise<void>;
}

// Return BIGINT (int8) as a JS number when it fits: our int8 columns are sequence numbers and byte
// counts far below 2^53, and strings there invite `'10' > '9'` bugs.
pg.types.setTypeParser(20, (v) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new RangeError(`int8 value ${v} exceeds Number.MAX_SAFE_INTEGER`);
  return n;
});

class PoolDatabase implements Database {
  readonly kind: 'postgres' | 'pglite';
  readonly url: string;
  readonly #pool: pg.Pool;
  readonly #onClose: () => Promise<void>;
  readonly #notificationListeners = new Set<(channel: string, payload: string | undefined) => void>();

  constructor(kind: 'postgres' | 'pglite', url: string, max: number, onClose: () => Promise<void> = async () => {}) {
    this.kind = kind;
    this.url = url;
    this.#onClose = onClose;
    this.#pool = new pg.Pool({ connectionString: url, max, connectionTimeoutMillis: 5_000 });
    // An idle client that loses its server emits 'error' on the pool; without a listener that
    // would crash the process. The next query reconnects, and failures surface to the caller there.
    this.#pool.on('error', () => {});
    this.#pool.on('connect', (client) => {
      client.on('notification', ({ channel, payload }) => {
        for (const listener of this.#notificationListeners) listener(channel, payload);
      });
    });
  }

  onNotification(listener: (channel: string, payload: string | undefined) => void): () => void {
    this.#notificationListeners.add(listener);
    return () => this.#notificationListeners.delete(listener);
  }

  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    return this.#pool.query<R>(text, values);
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    let broken = false;
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      try {
        await client.query('ROLLBACK');
      } catch {
        broken = true; // the connection itself failed: do not hand it out again
      }
      throw error;
    } finally {
      client.release(broken);
    }
  }

  async ping(timeoutMs = 2_000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([this.#pool.query('SELECT 1').then(() => true, () => false), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    await this.#pool.end();
    await this.#onClose();
  }
}

/** A pool over a PostgreSQL server. */
export function connectPostgres(url: string, max = 10): Database {
  return new PoolDatabase('postgres', url, max);
}

/**
 * Opens (creating if needed) the embedded PGlite database in `dataDir/pglite`, serves it on an
 * ephemeral loopback port, and returns a pool over it. PGlite is one WASM instance: queries are
 * serialized inside it, so a small pool is all it can use.
 */
export async function openEmbedded(dataDir: string): Promise<Database> {
  const [{ PGlite }, { PGLiteSocketServer }] = await Promise.all([
    import('@electric-sql/pglite'),
    import('@electric-sql/pglite-socket'),
  ]);
  const dir = join(dataDir, 'pglite');
  await mkdir(dir, { recursive: true });
  const db = await PGlite.create(dir);
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 8 });
  await server.start();
  const { port } = (server as unknown as { server: { address(): AddressInfo } }).server.address();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  return new PoolDatabase('pglite', url, 4, async () => {
    await server.stop();
    await db.close();
  });
}
