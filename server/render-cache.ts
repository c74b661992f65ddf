/**
 * The render cache's bound: cached renders (`renders/`, server/renders.ts) and variants resized by
 * URL (`variants/`, GET /api/images/:id/file) are evicted least recently used first once their
 * total passes RENDER_CACHE_MAX_BYTES.
 *
 * The design, the simplest that stays correct with several nodes on one bucket:
 * - **Accounting in PostgreSQL, bytes in blob storage.** One `render_cache` row per cached blob
 *   (migration 009): its size, when it was stored, when it was last served. A store writes the row
 *   after the blob; a hit bumps `last_used_at` only when this node has not bumped that key for a
 *   minute (`touchAfterMs`; remembered in memory, and the statement itself re-checks the age), so a
 *   hot image costs no write per request. A blob cached before migration 009 has no row: its first
 *   hit adopts it.
 * - **The blob store is the truth, the row only accounting.** Readers never consult a row: they look
 *   the blob up (`head`/`get`) and a missing one is a miss that renders or resizes again (and stores
 *   and records it again). So a blob that vanishes under a reader — evicted by another node between
 *   its `head` and `get`, deleted by hand — costs a render, never an error, and a row left without
 *   its blob only overcounts until it is evicted in turn (deleting an absent blob is no error).
 * - **Eviction order: claim the rows, delete the blobs, commit.** A sweep claims a batch of the
 *   least recently used rows with one `DELETE … RETURNING` (persistence/repositories/render-cache.ts
 *   `claim`: the running total is computed in the same statement, so the batch stops at the target)
 *   inside a transaction, deletes their blobs, then commits. Each row is claimed by exactly one
 *   sweeper: a second node sweeping at once waits on the locked rows and finds them gone, so no
 *   entry is counted twice and the total never drops below the target to make up for rows another
 *   node took. A crash or a store failure mid-batch rolls the rows back: the blobs already deleted
 *   are rows without blobs (above), none is a blob without a row that nothing would ever evict.
 * - **Hysteresis**: a sweep starts when the total passes `maxBytes` and evicts down to
 *   `targetRatio` (90 %) of it, so one more store does not start another sweep at once.
 * - **Off the request path**: recording and sweeping run after the answer; a store starts a sweep
 *   at most once at a time per process (one arriving meanwhile asks for one more round after it).
 *   Failures are logged, never surfaced to a reader (the worst case is an unbounded cache until
 *   the database answers again).
 * - **Never evicted**: anything outside `renders/` and `variants/` (the table's CHECK refuses such a
 *   row, and `track` ignores one), a version's thumbnail (`image_versions.thumbnail_path`: the worker
 *   drops its row when it sets the path, `record` refuses a row for it, and a claimed row that is one
 *   keeps its blob), and the standard thumbnails ingest stores (`images.thumbnail_paths`; the
 *   `/file` route never tracks those).
 * - **The total is read, not summed per store.** The total is a `SUM` over the whole table; a store
 *   reads it only when this node's estimate — the total it last read plus what it has recorded
 *   since — passes `maxBytes`, or when that reading is older than `totalsMaxAgeMs` (10 s). So a
 *   busy node with millions of entries does not scan them after every store; what other nodes
 *   store meanwhile can carry the total past the bound for at most that long before a sweep
 *   notices (it then evicts down to the target as always). An explicit `sweep()` always reads.
 * - `maxBytes = 0`: unbounded; rows are still kept, so a bound set later applies to what is there.
 */
import type { Logger } from 'pino';
import type { Database } from '../persistence/db.ts';
import {
  cacheTotals,
  claimLeastRecentlyUsed,
  recordCached,
  touchCached,
  type RenderCacheTotals,
} from '../persistence/repositories/render-cache.ts';
import { blobKey, isBlobKey, type BlobStore } from '../storage/blob-store.ts';

/** The key prefixes of the render cache; nothing else is ever tracked or evicted. */
export const CACHE_PREFIXES = ['renders/', 'variants/'] as const;

export const isCacheKey = (key: string): boolean => isBlobKey(key) && CACHE_PREFIXES.some((p) => key.startsWith(p));

export interface RenderCacheOptions {
  db: Database;
  blobs: BlobStore;
  /** RENDER_CACHE_MAX_BYTES; 0 = unbounded. */
  maxBytes: number;
  /** A sweep evicts down to this share of `maxBytes`. */
  targetRatio?: number;
  /** A hit bumps `last_used_at` only when the last bump is older than this (ms). */
  touchAfterMs?: number;
  /** Rows claimed per statement (and blobs deleted per transaction). */
  batchSize?: number;
  /** How long a total read from the table is trusted (with this node's stores added to it), ms. */
  totalsMaxAgeMs?: number;
  logger?: Logger;
  onEvicted?: (entries: number, bytes: number) => void;
}

export interface SweepResult {
  /** Entries whose blobs this sweep deleted. */
  evicted: string[];
  bytes: number;
}

/** Keys this node bumped recently, forgotten wholesale when it grows past this many. */
const TOUCHED_LIMIT = 10_000;

export class RenderCache {
  readonly #o: Required<Omit<RenderCacheOptions, 'logger' | 'onEvicted'>> & Pick<RenderCacheOptions, 'logger' | 'onEvicted'>;
  readonly #touched = new Map<string, number>();
  readonly #pending = new Set<Promise<unknown>>();
  #sweeping: Promise<void> | undefined;
  #again = false;
  /** The total as last read from the table (and when), plus the bytes this node recorded since. */
  #known: { bytes: number; at: number } | null = null;
  #addedSince = 0;
  /** Times the total was read from the table (tests: a store must not scan it every time). */
  totalsRead = 0;

  constructor(options: RenderCacheOptions) {
    // Defaults per field: an option passed as `undefined` takes its default (a spread would not).
    this.#o = {
      ...options,
      targetRatio: options.targetRatio ?? 0.9,
      touchAfterMs: options.touchAfterMs ?? 60_000,
      batchSize: options.batchSize ?? 100,
      totalsMaxAgeMs: options.totalsMaxAgeMs ?? 10_000,
    };
  }

  get maxBytes(): number {
    return this.#o.maxBytes;
  }

  get targetBytes(): number {
    return Math.floor(this.#o.maxBytes * this.#o.targetRatio);
  }

  /** A cache blob was stored: record it, then sweep if the bound is passed. Returns at once. */
  stored(key: string, size: number): void {
    if (!isCacheKey(key)) return;
    this.#remember(key, Date.now());
    this.#background(
      recordCached(this.#o.db, key, size).then(() => this.#requestSweep(size)),
      'could not record a cached render',
      key,
    );
  }

  /**
   * A cache hit of `size` bytes: bumps its last use, at most once per `touchAfterMs` per key on this
   * node (a blob cached before migration 009 is adopted). Returns at once.
   */
  hit(key: string, size: number): void {
    if (!isCacheKey(key)) return;
    const now = Date.now();
    const last = this.#touched.get(key);
    if (last !== undefined && now - last < this.#o.touchAfterMs) return;
    this.#remember(key, now);
    this.#background(
      touchCached(this.#o.db, key, size, this.#o.touchAfterMs).then((adopted) => {
        if (adopted) this.#requestSweep(size);
      }),
      'could not bump a cached render',
      key,
    );
  }

  /** What the table tracks now (every node's entries); also this node's estimate from now on. */
  async totals(): Promise<RenderCacheTotals> {
    const at = Date.now();
    const addedBefore = this.#addedSince;
    this.totalsRead += 1;
    const totals = await cacheTotals(this.#o.db);
    // What was recorded while the SUM ran may or may not be in it: counted again (an overestimate).
    this.#addedSince -= addedBefore;
    this.#known = { bytes: totals.bytes, at };
    return totals;
  }

  /**
   * Evicts least recently used entries until the total is at most `targetBytes`, if it is above
   * `maxBytes` (or, with `force`, above the target). Safe to run on several nodes at once.
   */
  async sweep(options: { force?: boolean } = {}): Promise<SweepResult> {
    const result: SweepResult = { evicted: [], bytes: 0 };
    if (this.#o.maxBytes === 0) return result;
    const { bytes } = await this.totals();
    if (bytes <= (options.force ? this.targetBytes : this.#o.maxBytes)) return result;
    for (;;) {
      const batch = await this.#o.db.transaction(async (tx) => {
        const claimed = await claimLeastRecentlyUsed(tx, this.targetBytes, this.#o.batchSize);
        for (const entry of claimed) {
          // The CHECK of migration 009 already refuses other keys; a second look costs nothing.
          if (!entry.pinned && isCacheKey(entry.blob_key)) await this.#o.blobs.delete(blobKey(entry.blob_key));
        }
        return claimed;
      });
      for (const entry of batch) {
        this.#touched.delete(entry.blob_key);
        if (entry.pinned) continue;
        result.evicted.push(entry.blob_key);
        result.bytes += entry.size_bytes;
      }
      if (batch.length < this.#o.batchSize) break;
    }
    if (this.#known) this.#known.bytes -= result.bytes;
    if (result.evicted.length > 0) {
      this.#o.onEvicted?.(result.evicted.length, result.bytes);
      this.#o.logger?.info({ entries: result.evicted.length, bytes: result.bytes }, 'render cache: evicted least recently used entries');
    }
    return result;
  }

  /** Resolves once the recording, bumping and sweeping started so far is done (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.#pending.size > 0 || this.#sweeping) {
      await Promise.allSettled([...this.#pending, this.#sweeping]);
    }
  }

  /**
   * `added` bytes were recorded: sweeps if the estimate passed the bound or is too old to trust
   * (see the header). One sweep at a time in this process; a request meanwhile runs one more
   * round after it.
   */
  #requestSweep(added: number): void {
    if (this.#o.maxBytes === 0) return;
    this.#addedSince += added;
    const known = this.#known;
    if (known && Date.now() - known.at < this.#o.totalsMaxAgeMs && known.bytes + this.#addedSince <= this.#o.maxBytes) return;
    if (this.#sweeping) {
      this.#again = true;
      return;
    }
    this.#sweeping = (async () => {
      do {
        this.#again = false;
        try {
          await this.sweep();
        } catch (error) {
          this.#o.logger?.warn({ err: error }, 'render cache: sweep failed; the next store tries again');
        }
      } while (this.#again);
    })().finally(() => {
      this.#sweeping = undefined;
    });
  }

  /** `key` was bumped (or stored) at `at`; the memory of it is bounded (`TOUCHED_LIMIT`). */
  #remember(key: string, at: number): void {
    if (this.#touched.size >= TOUCHED_LIMIT) this.#touched.clear();
    this.#touched.set(key, at);
  }

  #background(work: Promise<unknown>, message: string, key: string): void {
    const tracked = work.catch((error: unknown) => this.#o.logger?.warn({ err: error, key }, message)).finally(() => this.#pending.delete(tracked));
    this.#pending.add(tracked);
  }
}
