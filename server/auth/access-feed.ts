/**
 * The access-change feed: PostgreSQL LISTEN on the channel the triggers of
 * migrations/005_access_changes.sql notify, so every node hears every change of who may do what,
 * whoever made it (any node's HTTP API, a CLI, SQL by hand), once it is committed.
 *
 * - PostgreSQL: one dedicated connection (not from the pool: a pooled connection is shared and
 *   released, a LISTEN must stay). When it is lost (error, end, or a liveness ping unanswered),
 *   it is reopened with backoff; once it LISTENs again, `onResync` runs, because changes made
 *   while it was away were never delivered and are not replayed. LISTEN comes before the re-check,
 *   so every change is seen by one or the other.
 * - PGlite (embedded, one node): every connection shares the one backend, which delivers a
 *   notification on the connection whose query committed it. LISTEN is issued once (it stays for
 *   the backend), and the pool's connections are where our own changes' notifications arrive
 *   (`Database.onNotification`). Changes made by hand through another connection to the embedded
 *   database (psql on its loopback URL) are delivered to that connection, not to us: the periodic
 *   re-check (ACCESS_RECHECK_MS) bounds how long they take.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import type { Database } from '../../persistence/db.ts';
import { ACCESS_CHANNEL, accessChangeQueries, parseAccessChange, type AccessChange } from '../../persistence/repositories/access-changes.ts';

export interface AccessFeedHandlers {
  onChange(change: AccessChange): void;
  /** The feed is listening again after a gap in which changes may have been missed. */
  onResync(reason: string): void;
}

export interface AccessFeedOptions {
  db: Database;
  nodeId: string;
  logger: Logger;
  handlers: AccessFeedHandlers;
  /** How often the listening connection is pinged to notice a silent loss, in ms. */
  pingMs?: number;
}

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5_000;
const PING_TIMEOUT_MS = 2_000;

export class AccessFeed {
  readonly #opts: AccessFeedOptions;
  #client: pg.Client | null = null;
  #listening = false;
  #closed = false;
  #retryMs = RETRY_MIN_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  #disposeNotifications: (() => void) | undefined;
  /** Times the feed started listening (the first one is start-up, every later one a reconnect). */
  connects = 0;
  /** Changes delivered to `onChange`. */
  changes = 0;

  constructor(options: AccessFeedOptions) {
    this.#opts = options;
  }

  /** True while notifications are being received. */
  get listening(): boolean {
    return this.#listening;
  }

  /** Starts listening; resolves once the first LISTEN is in place (or failed and a retry is scheduled). */
  async start(): Promise<void> {
    const { db } = this.#opts;
    if (db.kind === 'pglite') {
      this.#disposeNotifications = db.onNotification((channel, payload) => this.#deliver(channel, payload));
      await db.query(accessChangeQueries.listen);
      this.#listening = true;
      this.connects += 1;
      return;
    }
    await this.#connect();
    this.#pingTimer = setInterval(() => void this.#ping(), this.#opts.pingMs ?? 5_000);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#listening = false;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#pingTimer);
    this.#disposeNotifications?.();
    const client = this.#client;
    this.#client = null;
    await client?.end().catch(() => {});
  }

  #deliver(channel: string, payload: string | undefined): void {
    if (channel !== ACCESS_CHANNEL) return;
    const change = parseAccessChange(payload);
    if (!change) {
      this.#opts.logger.warn({ payload }, 'access feed: unreadable notification ignored');
      return;
    }
    this.changes += 1;
    this.#opts.handlers.onChange(change);
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    const client = new pg.Client({
      connectionString: this.#opts.db.url,
      application_name: `imageflow-access-feed:${this.#opts.nodeId}`,
      keepAlive: true,
      connectionTimeoutMillis: 5_000,
    });
    client.on('notification', ({ channel, payload }) => this.#deliver(channel, payload));
    client.on('error', (error) => this.#lost(client, error));
    client.on('end', () => this.#lost(client));
    try {
      await client.connect();
      await client.query(accessChangeQueries.listen);
    } catch (error) {
      this.#lost(client, error);
      return;
    }
    if (this.#closed) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
    this.#listening = true;
    this.#retryMs = RETRY_MIN_MS;
    this.connects += 1;
    if (this.connects > 1) this.#opts.logger.info('access feed listening again; re-checking every connection');
    // Also after the first LISTEN: if it needed retries, connections may have opened meanwhile
    // (at start-up there are none, and re-checking none costs nothing).
    this.#opts.handlers.onResync(this.connects > 1 ? 'access feed reconnected' : 'access feed listening');
  }

  /** A connection failed or ended: drop it (once) and reconnect with backoff. */
  #lost(client: pg.Client, error?: unknown): void {
    if (client !== this.#client && this.#client !== null) return; // an older one, already replaced
    if (client === this.#client) {
      this.#client = null;
      this.#listening = false;
      this.#opts.logger.warn({ err: error }, 'access feed lost; reconnecting');
    } else {
      this.#opts.logger.debug({ err: error }, 'access feed could not listen; retrying');
    }
    client.removeAllListeners('end');
    client.on('error', () => {}); // ending a broken client may emit again
    void client.end().catch(() => {});
    if (this.#closed || this.#retryTimer) return;
    const delay = this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, RETRY_MAX_MS);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      void this.#connect();
    }, delay);
  }

  /** A connection lost without a reset (a silent network) is noticed by an unanswered ping. */
  async #ping(): Promise<void> {
    const client = this.#client;
    if (!client) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), PING_TIMEOUT_MS)));
    const ok = await Promise.race([client.query(accessChangeQueries.ping).then(() => true, () => false), timeout]);
    clearTimeout(timer);
    if (!ok) this.#lost(client, new Error('access feed ping unanswered'));
  }
}
