/**
 * What `resolveRole` reads (server/auth/access.ts) — a token's user, its login session, a
 * session's access row for that user — from the database, or from a cache that the access feed
 * keeps true on every node.
 *
 * Also who may see an image (`visibleImage`, for `GET /api/images/:id/file`): the image's columns
 * that route reads, per (image, viewer), kept only when visible; migration 010 announces every
 * change that could hide one (the image's own columns, a follow), as `image` and `follow` changes.
 *
 * Why a cache: each authentication read two or three rows, each `/api` request one or two. When a
 * node dies its clients reconnect to the others all at once, every one of them to a handful of
 * documents, and each read waited for the pool (10 connections) behind the others' presence writes
 * until `connectionTimeoutMillis` said `not_ready`. The rows change rarely, and every change
 * already reaches every node: the triggers of migrations 005 and 008 NOTIFY each change of every
 * column cached here (`users.is_active`, `display_name`, `username`; `user_sessions.expires_at`;
 * `edit_sessions.is_active`, `expires_at`, `owner_id`; a participant row's insert, delete,
 * `permissions` and `cursor_color`), and the feed (server/auth/access-feed.ts) hands each one to
 * `invalidate` before the AccessWatch re-checks the open connections it names.
 *
 * Safe because:
 * - **A change drops what it names at once**, on every node, before anything re-reads it; and this
 *   node's own HTTP API drops what it changed right after its commit, before it answers (read your
 *   own writes without waiting for the notification).
 * - **A read in flight when a change arrives is not kept**: the change marks the read stale, and a
 *   caller arriving after the change starts a new read. A read whose snapshot predates a commit
 *   either returns before that commit's notification (then the notification drops it) or after
 *   (then it is never stored). A connection that authenticated from an answer that was true before
 *   the change is re-checked by the AccessWatch, whose epoch moved (as it always was).
 * - **Only while the feed listens.** Without it changes go unheard: nothing is read from or stored
 *   into the cache, and when the feed listens again (`onResync`) the cache is emptied before the
 *   re-check of every connection. A read started before that is not stored either.
 * - **Time-bound answers are kept as deadlines**: a session's and a login session's expiry are
 *   stored as local instants from the database's clock at the read, so an answer from the cache
 *   expires exactly as one from the database would.
 * - **A bound**: no answer is served from the cache longer than `ttlMs` (ACCESS_RECHECK_MS) after it
 *   was read, the same bound the AccessWatch keeps for open connections, so even a change that no
 *   trigger announces (triggers disabled by hand) acts within it.
 * - The AccessWatch's re-checks (a change, a resync, the periodic sweep, a `saveVersion`) read the
 *   database (`fresh`), never the cache, and store what they read: the sweep stays a real check.
 *
 * Not used on the embedded database (PGlite): there a notification reaches only the connection
 * that committed it, so a change made through the loopback URL (`npm run users -- deactivate`
 * attached to a running server, psql) would never drop a cached row; its reads are in-process
 * and a single node takes few connections at once. `createAccessSource` reads through there.
 */
import { LRUCache } from 'lru-cache';
import type { Database, Queryable } from '../../persistence/db.ts';
import type { AccessChange } from '../../persistence/repositories/access-changes.ts';
import { getVisibleImage, type ImageRecord } from '../../persistence/repositories/images.ts';
import { getSessionAccess, getSessionAccesses, type SessionAccessRow } from '../../persistence/repositories/sessions.ts';
import { getUser, getUsers, loginSessionRemainingMs, type UserRow } from '../../persistence/repositories/users.ts';

/** What a role is decided from: the session row's access columns, as one user sees them. */
export type SessionAccess = Pick<
  SessionAccessRow,
  'session_id' | 'owner_id' | 'is_active' | 'is_expired' | 'expires_in_ms' | 'permissions' | 'cursor_color' | 'is_participant'
>;

/** The reads `resolveRole` and the HTTP API's `authenticate` make. */
export interface AccessSource {
  user(userId: string): Promise<UserRow | undefined>;
  /** Milliseconds the login session `sid` of that user has left; undefined when gone or expired. */
  loginRemainingMs(sid: string, userId: string): Promise<number | undefined>;
  /** The session as `userId` sees it; `is_expired` and `expires_in_ms` as of now. */
  sessionAccess(sessionId: string, userId: string): Promise<SessionAccess | undefined>;
}

/** What `GET /api/images/:id/file` reads of an image (every column of it notifies: migration 010). */
export type VisibleImage = Pick<ImageRecord, 'image_id' | 'user_id' | 'mime_type' | 'storage_path' | 'thumbnail_paths' | 'privacy_level' | 'metadata'>;

/** Who may see an image: the image as `viewerId` may see it (images_view_policy), else undefined. */
export interface ImageSource {
  visibleImage(imageId: string, viewerId: string): Promise<VisibleImage | undefined>;
}

/** Only the columns the file route reads (and whose changes notify), not the whole row. */
function imageColumns(row: ImageRecord): VisibleImage {
  const { image_id, user_id, mime_type, storage_path, thumbnail_paths, privacy_level, metadata } = row;
  return { image_id, user_id, mime_type, storage_path, thumbnail_paths, privacy_level, metadata };
}

/**
 * The local moment a time left, as the database just answered it, runs out: counted from when the
 * answer arrived, never from when it was asked for. The database evaluated `now()` somewhere in
 * between, so the local deadline is at or after the database's own; counted from the asking (a
 * read waiting for its batch or for a pooled connection) it could come a few milliseconds early,
 * and a connection closed `session_expired` before the database says the session has expired
 * (seen once in CI: an HTTP save right after the close passed the database's check).
 */
export const deadlineFrom = (remainingMs: number, answeredAt = Date.now()): number => answeredAt + remainingMs;

/** Every read goes to the database. */
export function databaseSource(db: Queryable): AccessSource {
  return {
    user: (userId) => getUser(db, userId),
    loginRemainingMs: (sid, userId) => loginSessionRemainingMs(db, sid, userId),
    sessionAccess: (sessionId, userId) => getSessionAccess(db, sessionId, userId),
  };
}

/** Every image read goes to the database. */
export function databaseImageSource(db: Queryable): ImageSource {
  return {
    visibleImage: async (imageId, viewerId) => {
      const row = await getVisibleImage(db, imageId, viewerId);
      return row && imageColumns(row);
    },
  };
}

/** The source for connections and HTTP (`cached`) and the one for re-checks (`fresh`), plus invalidation. */
export interface AccessSources {
  cached: AccessSource;
  fresh: AccessSource;
  /** A change heard on the feed, or made by this node (after its commit). */
  invalidate(change: AccessChange): void;
  /** The feed listens again after a gap: everything may be stale. */
  clear(): void;
  /** Who may see an image, cached like the rest (positive answers only). */
  images: ImageSource;
  /** The cache, when there is one (metrics, tests). */
  cache?: AccessCache;
}

/**
 * Reads that arrive in one event-loop turn go out together: one query for every user asked for
 * meanwhile, one for every (session, user) pair. A reconnect storm or a burst of first connections
 * asks for hundreds of distinct users and pairs a second, each a database round trip of its own
 * before (two per new (user, session) connection: ~80 µs of this process's CPU and more of
 * PostgreSQL's each); batched, a turn's worth costs two. Each read is still made after it was
 * asked for, so nothing is staler than a single query would be. Login sessions (`sid`, rare) are
 * read one by one.
 */
export function batchedDatabaseSource(db: Queryable): AccessSource {
  const users = new Batcher<UserRow>(async (ids) => new Map((await getUsers(db, ids)).map((u) => [u.user_id, u])));
  const sessions = new Batcher<SessionAccessRow>((keys) => getSessionAccesses(db, keys.map((k) => k.split('\0') as [string, string])));
  return {
    user: (userId) => users.load(userId),
    loginRemainingMs: (sid, userId) => loginSessionRemainingMs(db, sid, userId),
    sessionAccess: (sessionId, userId) => sessions.load(`${sessionId}\0${userId}`),
  };
}

/** Collects the keys asked for until the next `setImmediate`, then loads them with one call. */
class Batcher<V> {
  readonly #loadMany: (keys: string[]) => Promise<Map<string, V>>;
  #pending = new Map<string, Array<{ resolve: (value: V | undefined) => void; reject: (error: unknown) => void }>>();
  #scheduled = false;

  constructor(loadMany: (keys: string[]) => Promise<Map<string, V>>) {
    this.#loadMany = loadMany;
  }

  load(key: string): Promise<V | undefined> {
    return new Promise((resolve, reject) => {
      const waiting = this.#pending.get(key);
      if (waiting) waiting.push({ resolve, reject });
      else this.#pending.set(key, [{ resolve, reject }]);
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    const batch = this.#pending;
    this.#pending = new Map();
    this.#scheduled = false;
    this.#loadMany([...batch.keys()]).then(
      (found) => {
        for (const [key, waiting] of batch) for (const w of waiting) w.resolve(found.get(key));
      },
      (error: unknown) => {
        for (const waiting of batch.values()) for (const w of waiting) w.reject(error);
      },
    );
  }
}

export function createAccessSource(db: Database, options: { ttlMs: number; listening: () => boolean; max?: number }): AccessSources {
  const fresh = db.kind === 'postgres' ? batchedDatabaseSource(db) : databaseSource(db);
  const images = databaseImageSource(db);
  if (db.kind !== 'postgres') return { cached: fresh, fresh, images, invalidate: () => {}, clear: () => {} };
  const cache = new AccessCache(fresh, { ...options, images });
  return { cached: cache, fresh: cache.fresh, images: cache, invalidate: (change) => cache.invalidate(change), clear: () => cache.clear(), cache };
}

/** A stored answer; `undefined` (no such row) is an answer too. */
interface Entry<T> {
  value: T | undefined;
}

/** A read on its way; `stale` once a change or a clear named it. */
interface Flight<T> {
  promise: Promise<T | undefined>;
  stale: boolean;
}

/** One kind of row: stored answers plus the reads in flight, by key. */
class Table<T> {
  readonly entries: LRUCache<string, Entry<T>>;
  readonly flights = new Map<string, Flight<T>>();
  /** Whether "no such row" is stored too (not for images: an image or follow inserted is not announced, migration 010). */
  readonly keepsMissing: boolean;

  constructor(max: number, ttlMs: number, keepsMissing = true) {
    this.entries = new LRUCache<string, Entry<T>>({ max, ttl: ttlMs });
    this.keepsMissing = keepsMissing;
  }

  drop(key: string): void {
    this.entries.delete(key);
    const flight = this.flights.get(key);
    if (flight) {
      flight.stale = true;
      this.flights.delete(key);
    }
  }

  dropWhere(match: (key: string) => boolean): void {
    for (const key of [...this.entries.keys()]) if (match(key)) this.entries.delete(key);
    for (const [key, flight] of [...this.flights]) {
      if (!match(key)) continue;
      flight.stale = true;
      this.flights.delete(key);
    }
  }

  clear(): void {
    this.entries.clear();
    for (const flight of this.flights.values()) flight.stale = true;
    this.flights.clear();
  }
}

/** A session's access columns stored with its expiry as a local instant. */
interface StoredSession {
  row: SessionAccess;
  expiresAt: number;
}

/** Only the columns a decision reads (and whose changes notify), not the whole row. */
function accessColumns(row: SessionAccess): SessionAccess {
  const { session_id, owner_id, is_active, is_expired, expires_in_ms, permissions, cursor_color, is_participant } = row;
  return { session_id, owner_id, is_active, is_expired, expires_in_ms, permissions, cursor_color, is_participant };
}

export class AccessCache implements AccessSource, ImageSource {
  readonly #db: AccessSource;
  readonly #imageDb: ImageSource | undefined;
  readonly #listening: () => boolean;
  readonly #users: Table<UserRow>;
  /** Key `${sid}\0${userId}` → the local instant the login session ends. */
  readonly #logins: Table<number>;
  /** Key `${sessionId}\0${userId}`. */
  readonly #sessions: Table<StoredSession>;
  /** Key `${imageId}\0${viewerId}`; only images the viewer may see are stored. */
  readonly #images: Table<VisibleImage>;
  /** Reads answered from the cache, and reads that went to the database (metrics, tests). */
  hits = 0;
  misses = 0;

  /** Reads the database and stores the answer (the AccessWatch's re-checks). */
  readonly fresh: AccessSource;

  constructor(db: AccessSource, options: { ttlMs: number; listening: () => boolean; max?: number; images?: ImageSource }) {
    this.#db = db;
    this.#imageDb = options.images;
    this.#listening = options.listening;
    const max = options.max ?? 50_000;
    this.#users = new Table(max, options.ttlMs);
    this.#logins = new Table(max, options.ttlMs);
    this.#sessions = new Table(max, options.ttlMs);
    this.#images = new Table(max, options.ttlMs, false);
    this.fresh = {
      user: (userId) => this.#read(this.#users, userId, () => this.#db.user(userId), true),
      loginRemainingMs: (sid, userId) => this.#login(sid, userId, true),
      sessionAccess: (sessionId, userId) => this.#session(sessionId, userId, true),
    };
  }

  user(userId: string): Promise<UserRow | undefined> {
    return this.#read(this.#users, userId, () => this.#db.user(userId), false);
  }

  loginRemainingMs(sid: string, userId: string): Promise<number | undefined> {
    return this.#login(sid, userId, false);
  }

  sessionAccess(sessionId: string, userId: string): Promise<SessionAccess | undefined> {
    return this.#session(sessionId, userId, false);
  }

  /**
   * The image as `viewerId` may see it. Stored only when visible: an image becoming visible (its
   * insert, a privacy change, a new follow) needs no announcement to be seen, and every way of
   * becoming invisible is announced (migration 010) and drops what it names.
   */
  visibleImage(imageId: string, viewerId: string): Promise<VisibleImage | undefined> {
    const source = this.#imageDb;
    if (!source) return Promise.reject(new Error('AccessCache: no image source'));
    return this.#read(this.#images, `${imageId}\0${viewerId}`, () => source.visibleImage(imageId, viewerId), false);
  }

  invalidate(change: AccessChange): void {
    switch (change.kind) {
      case 'participant':
        this.#sessions.drop(`${change.sessionId}\0${change.userId}`);
        return;
      case 'session': {
        const prefix = `${change.sessionId}\0`;
        this.#sessions.dropWhere((key) => key.startsWith(prefix));
        return;
      }
      case 'user':
        this.#users.drop(change.userId);
        return;
      case 'login':
        this.#logins.drop(`${change.loginSessionId}\0${change.userId}`);
        return;
      case 'image': {
        const prefix = `${change.imageId}\0`;
        this.#images.dropWhere((key) => key.startsWith(prefix));
        return;
      }
      case 'follow': {
        const suffix = `\0${change.followerId}`;
        this.#images.dropWhere((key) => key.endsWith(suffix));
        return;
      }
    }
  }

  clear(): void {
    this.#users.clear();
    this.#logins.clear();
    this.#sessions.clear();
    this.#images.clear();
  }

  /** Rows stored now (tests). */
  get size(): number {
    return this.#users.entries.size + this.#logins.entries.size + this.#sessions.entries.size + this.#images.entries.size;
  }

  async #login(sid: string, userId: string, fresh: boolean): Promise<number | undefined> {
    const endsAt = await this.#read(
      this.#logins,
      `${sid}\0${userId}`,
      async () => {
        const remaining = await this.#db.loginRemainingMs(sid, userId);
        return remaining === undefined ? undefined : deadlineFrom(remaining);
      },
      fresh,
    );
    if (endsAt === undefined) return undefined;
    const remaining = endsAt - Date.now();
    // Ran out since it was read: gone, as the database would now say.
    return remaining > 0 ? remaining : undefined;
  }

  async #session(sessionId: string, userId: string, fresh: boolean): Promise<SessionAccess | undefined> {
    const stored = await this.#read(
      this.#sessions,
      `${sessionId}\0${userId}`,
      async () => {
        const row = await this.#db.sessionAccess(sessionId, userId);
        return row && { row: accessColumns(row), expiresAt: deadlineFrom(row.expires_in_ms) };
      },
      fresh,
    );
    if (!stored) return undefined;
    const expiresInMs = stored.expiresAt - Date.now();
    return { ...stored.row, expires_in_ms: expiresInMs, is_expired: stored.row.is_expired || expiresInMs <= 0 };
  }

  /**
   * The stored answer for `key`, or one read with `load`: shared by the callers that ask while it
   * is on its way, stored once it arrives unless a change or a clear named it meanwhile. `fresh`
   * always reads (and stores). Without the feed nothing is read from or stored into the cache.
   */
  async #read<T>(table: Table<T>, key: string, load: () => Promise<T | undefined>, fresh: boolean): Promise<T | undefined> {
    if (!this.#listening()) {
      this.misses += 1;
      return load();
    }
    if (!fresh) {
      const entry = table.entries.get(key);
      if (entry) {
        this.hits += 1;
        return entry.value;
      }
      const flight = table.flights.get(key);
      if (flight) {
        this.hits += 1;
        return flight.promise;
      }
    }
    this.misses += 1;
    // A fresh read replaces a read on its way: that one may have started before the change a
    // re-check was asked for, and must not be stored after this one.
    const previous = table.flights.get(key);
    if (previous) previous.stale = true;
    // The age of an answer counts from before its query (lru-cache's clock is performance.now()).
    const start = performance.now();
    const flight: Flight<T> = { promise: load(), stale: false };
    table.flights.set(key, flight);
    try {
      const value = await flight.promise;
      if (!flight.stale && this.#listening() && (value !== undefined || table.keepsMissing)) table.entries.set(key, { value }, { start });
      return value;
    } finally {
      if (table.flights.get(key) === flight) table.flights.delete(key);
    }
  }
}
