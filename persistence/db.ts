/**
 * One database interface over two engines: a real PostgreSQL reached with `pg`, or PGlite (PostgreSQL
 * compiled to WASM) served in-process over the PostgreSQL wire protocol by pglite-socket. Both are
 * then driven by the same `pg` Pool, so the migrations, repositories and the update log run unchanged
 * on either (docs/STACK-NOTES.md: PGlite behind pglite-socket keeps transactions isolated per connection).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo, Server, Socket } from 'node:net';
import pg from 'pg';
import lockfile from 'proper-lockfile';
import { keepBatchesTogether } from './pglite-batches.ts';

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

/** SQL text of the hot statements → their prepared-statement name (see `prepared`). */
const preparedNames = new Map<string, string>();

/**
 * Marks a hot statement to run as a named prepared statement on PostgreSQL: parsed and planned once
 * per pooled connection instead of at every call. The update log's append runs once per group
 * commit; named, it costs 10-25 µs less client CPU per call, and PostgreSQL skips its parse and
 * plan (measured in the README's levers table). Only through `Database.query` on a real
 * PostgreSQL: PGlite behind pglite-socket, transaction clients and plain pools run it unnamed.
 * (A transaction-pooling proxy such as PgBouncer in transaction mode needs its prepared-statement
 * support turned on for this.)
 */
export function prepared(name: string, text: string): string {
  const known = preparedNames.get(text);
  if (known !== undefined && known !== name) throw new Error(`statement already prepared as ${known}`);
  preparedNames.set(text, name);
  return text;
}

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
    const name = this.kind === 'postgres' ? preparedNames.get(text) : undefined;
    return name === undefined ? this.#pool.query<R>(text, values) : this.#pool.query<R>({ name, text, values: values ?? [] });
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

/** The embedded directory is held by another live process; the message is one line for the operator. */
export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError';
  readonly owner: LockOwner | undefined;
  constructor(dataDir: string, owner: LockOwner | undefined) {
    const who = owner ? ` (pid ${owner.pid}${owner.host === hostname() ? '' : ` on ${owner.host}`})` : '';
    super(
      `DATA_DIR ${dataDir} is in use by another ImageFlow process${who}: stop it first, or give this one its own DATA_DIR`,
    );
    this.owner = owner;
  }
}

/** What the holder of an embedded directory publishes beside its lock (mode 0600). */
interface LockOwner {
  pid: number;
  host: string;
  /** The holder's loopback URL (with its password), so CLI tools can work through the running server. */
  url?: string;
}

export interface EmbeddedOptions {
  /**
   * When another live process (a running server) holds the directory: `refuse` (the default) throws
   * `DataDirLockedError`; `attach` connects to that process's embedded database through its published
   * URL instead (the user and token commands work whether or not a server runs).
   */
  whenHeld?: 'refuse' | 'attach';
  /** Called if the lock is lost while held (its directory removed, or not refreshed within 60 s). */
  onLockLost?: (error: Error) => void;
}

/**
 * A lock not refreshed for this long is taken over, from any host. Long, because the refresh runs on
 * the event loop, which PGlite (in-process WASM) can hold during a long statement; a holder on this
 * host that died is recognised by its pid at once.
 */
const LOCK_STALE_MS = 60_000;
const LOCK_UPDATE_MS = 5_000;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'; // alive, but someone else's
  }
}

async function readOwner(file: string): Promise<LockOwner | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as LockOwner;
  } catch {
    return undefined; // missing (never written, or a crash before it was) or half written
  }
}

/**
 * Takes the directory's lock: a proper-lockfile lock directory (`DATA_DIR/lock`, refreshed every 5 s)
 * plus `DATA_DIR/lock-owner.json` naming the holder. A holder killed with -9 leaves both behind; the
 * next process takes over at once when the named pid is gone on this host, and proper-lockfile takes
 * over a lock not refreshed for 60 s in any case — a crashed holder never locks the directory forever.
 */
async function lockDataDir(
  dataDir: string,
  onLockLost: (error: Error) => void,
): Promise<{ release: () => Promise<void>; ownerFile: string } | { heldBy: LockOwner | undefined }> {
  const lockfilePath = join(dataDir, 'lock');
  const ownerFile = join(dataDir, 'lock-owner.json');
  const options = { lockfilePath, stale: LOCK_STALE_MS, update: LOCK_UPDATE_MS, realpath: false, retries: 0, onCompromised: onLockLost };
  for (let attempt = 0; ; attempt++) {
    try {
      const release = await lockfile.lock(dataDir, options);
      const owner: LockOwner = { pid: process.pid, host: hostname() };
      await writeFile(ownerFile, `${JSON.stringify(owner)}\n`, { mode: 0o600 });
      return { release, ownerFile };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw error;
      const owner = await readOwner(ownerFile);
      if (attempt === 0 && owner && owner.host === hostname() && owner.pid !== process.pid && !processAlive(owner.pid)) {
        // The holder crashed: its lock is left over. Remove it and try once more.
        await rm(lockfilePath, { recursive: true, force: true });
        continue;
      }
      return { heldBy: owner };
    }
  }
}

/** The embedded database's password: generated once into `DATA_DIR/pglite-password` (mode 0600). */
async function embeddedPassword(dataDir: string): Promise<string> {
  const file = join(dataDir, 'pglite-password');
  try {
    const existing = (await readFile(file, 'utf8')).trim();
    if (existing) return existing;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const password = randomBytes(24).toString('base64url');
  await writeFile(file, `${password}\n`, { mode: 0o600 });
  return password;
}

/** True when `dataDir` holds an embedded database (a server has run there). */
export function hasEmbeddedDatabase(dataDir: string): boolean {
  return existsSync(join(dataDir, 'pglite', 'PG_VERSION'));
}

/**
 * Opens (creating if needed) the embedded PGlite database in `dataDir/pglite`, serves it on an
 * ephemeral loopback port behind a password (`DATA_DIR/pglite-password`, in the URL), and returns a
 * pool over it. The directory is locked for the life of the returned database: PGlite has no lock
 * of its own, and two processes writing one directory lose acknowledged writes. PGlite is one WASM
 * instance: queries are serialized inside it, so a small pool is all it can use.
 */
export async function openEmbedded(dataDir: string, options: EmbeddedOptions = {}): Promise<Database> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const locked = await lockDataDir(dataDir, options.onLockLost ?? ((error) => {
    throw error;
  }));
  if ('heldBy' in locked) {
    if (options.whenHeld === 'attach' && locked.heldBy?.url) return new PoolDatabase('pglite', locked.heldBy.url, 2);
    throw new DataDirLockedError(dataDir, locked.heldBy);
  }
  const releaseLock = async () => {
    await rm(locked.ownerFile, { force: true });
    await locked.release().catch(() => {}); // already lost: nothing left to release
  };
  try {
    const [{ PGlite }, { PGLiteSocketServer }] = await Promise.all([
      import('@electric-sql/pglite'),
      import('@electric-sql/pglite-socket'),
    ]);
    const password = await embeddedPassword(dataDir);
    const dir = join(dataDir, 'pglite');
    await mkdir(dir, { recursive: true });
    const db = await PGlite.create(dir);
    // Connections are cheap here (all multiplexed onto the one PGlite instance): the app's pool (4),
    // the inline render worker's pool, LISTEN and liveness connections (4), migrations and a psql
    // or test pool alongside.
    const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 16 });
    keepBatchesTogether(server); // electric-sql/pglite#1046: see persistence/pglite-batches.ts
    await server.start();
    const net = (server as unknown as { server: Server }).server;
    requirePassword(net, password);
    const { port } = net.address() as AddressInfo;
    const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
    const owner: LockOwner = { pid: process.pid, host: hostname(), url };
    await writeFile(locked.ownerFile, `${JSON.stringify(owner)}\n`, { mode: 0o600 });
    return new PoolDatabase('pglite', url, 4, async () => {
      await server.stop();
      await db.close();
      await releaseLock();
    });
  } catch (error) {
    await releaseLock();
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Password authentication in front of pglite-socket, which itself answers every startup message
// with AuthenticationOk: without this, any local process could connect as superuser.
// ---------------------------------------------------------------------------------------------

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const PROTOCOL_3 = 196608;
const AUTH_DEADLINE_MS = 10_000;

/**
 * Puts an MD5 password exchange (the PostgreSQL protocol's AuthenticationMD5Password, which `pg` and
 * `psql` speak) in front of every connection the pglite-socket server accepts. Only after the
 * password checks out is the socket handed to pglite-socket, with the client's startup message put
 * back in front of its stream, so PGlite then answers it as before.
 */
function requirePassword(net: Server, password: string): void {
  const accept = net.listeners('connection') as Array<(socket: Socket) => void>;
  net.removeAllListeners('connection');
  net.on('connection', (socket: Socket) => {
    socket.on('error', () => socket.destroy());
    authenticate(socket, password).then(
      (startup) => {
        if (!startup) return;
        socket.pause();
        socket.unshift(startup);
        // pglite-socket attaches its 'data' listener a tick later; let the stream flow then.
        socket.on('newListener', function resumeOnData(event: string | symbol) {
          if (event !== 'data') return;
          socket.off('newListener', resumeOnData);
          setImmediate(() => socket.resume());
        });
        for (const listener of accept) listener(socket);
      },
      () => socket.destroy(),
    );
  });
}

function errorResponse(message: string): Buffer {
  const fields = Buffer.concat([
    Buffer.from('SFATAL\0VFATAL\0C28P01\0', 'utf8'),
    Buffer.from(`M${message}\0\0`, 'utf8'),
  ]);
  const head = Buffer.alloc(5);
  head.write('E', 0);
  head.writeInt32BE(fields.length + 4, 1);
  return Buffer.concat([head, fields]);
}

/** Resolves with the client's startup message once its password is right; undefined when refused. */
function authenticate(socket: Socket, password: string): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    let startup: Buffer | undefined;
    let user = '';
    const salt = randomBytes(4);
    const timer = setTimeout(() => finish(undefined, 'authentication timed out'), AUTH_DEADLINE_MS);
    const finish = (result: Buffer | undefined, refusal?: string) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (refusal !== undefined) socket.end(errorResponse(refusal));
      resolve(result);
    };
    const onClose = () => finish(undefined);
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      try {
        for (;;) {
          if (!startup) {
            if (buffer.length < 8) return;
            const length = buffer.readInt32BE(0);
            const code = buffer.readInt32BE(4);
            if (length < 8 || length > 10_000) return finish(undefined, 'invalid startup packet');
            if (buffer.length < length) return;
            const packet = buffer.subarray(0, length);
            buffer = buffer.subarray(length);
            if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
              socket.write('N'); // no TLS on loopback; the client goes on in plain text
              continue;
            }
            if (code === CANCEL_REQUEST) return finish(undefined);
            if (code !== PROTOCOL_3) return finish(undefined, 'unsupported protocol version');
            const params = packet.subarray(8).toString('utf8').split('\0');
            for (let i = 0; i + 1 < params.length; i += 2) if (params[i] === 'user') user = params[i + 1] ?? '';
            startup = Buffer.from(packet);
            const request = Buffer.alloc(13);
            request.write('R', 0);
            request.writeInt32BE(12, 1);
            request.writeInt32BE(5, 5); // AuthenticationMD5Password
            salt.copy(request, 9);
            socket.write(request);
            continue;
          }
          if (buffer.length < 5) return;
          const length = buffer.readInt32BE(1);
          if (buffer[0] !== 0x70 /* 'p' */ || length < 4 || length > 1_000) return finish(undefined, 'expected a password message');
          if (buffer.length < length + 1) return;
          const given = buffer.subarray(5, length + 1).toString('utf8').replace(/\0$/, '');
          if (buffer.length > length + 1) return finish(undefined, 'unexpected data after the password');
          const inner = createHash('md5').update(password + user).digest('hex');
          const expected = Buffer.from(`md5${createHash('md5').update(inner).update(salt).digest('hex')}`);
          const actual = Buffer.from(given);
          if (actual.length === expected.length && timingSafeEqual(actual, expected)) return finish(startup);
          return finish(undefined, `password authentication failed for user "${user}"`);
        }
      } catch (error) {
        clearTimeout(timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}
