/**
 * Named queries over `render_cache` (migrations/009_render_cache.sql): the accounting of the cached
 * renders and variants in blob storage, one row per blob key with its size and last use. The bytes
 * are never here. The rules live with their user, server/render-cache.ts.
 */
import type { Queryable } from '../db.ts';

export interface RenderCacheTotals {
  bytes: number;
  entries: number;
}

export interface ClaimedEntry {
  blob_key: string;
  size_bytes: number;
  /** A version's thumbnail now: its row is dropped, its blob must stay. */
  pinned: boolean;
}

export const renderCacheQueries = {
  /**
   * A stored render or variant: a new row, or the same key stored again (re-rendered after its
   * blob vanished) counted once with its new size and as just used. A version's thumbnail is not
   * cache and gets no row.
   */
  record: `
    INSERT INTO render_cache (blob_key, size_bytes)
    SELECT $1::text, $2::bigint WHERE NOT EXISTS (SELECT 1 FROM image_versions v WHERE v.thumbnail_path = $1::text)
    ON CONFLICT (blob_key) DO UPDATE SET size_bytes = EXCLUDED.size_bytes, last_used_at = now()`,
  /**
   * A cache hit: `last_used_at` bumped only when the last bump is older than `$3` ms (one write a
   * minute for a hot entry). A blob cached before this table existed has no row: the hit adopts it
   * (`inserted`), so old entries come under the bound as they are used.
   */
  touch: `
    INSERT INTO render_cache (blob_key, size_bytes)
    SELECT $1::text, $2::bigint WHERE NOT EXISTS (SELECT 1 FROM image_versions v WHERE v.thumbnail_path = $1::text)
    ON CONFLICT (blob_key) DO UPDATE SET last_used_at = now()
      WHERE render_cache.last_used_at < now() - $3::int * interval '1 millisecond'
    RETURNING (xmax = 0) AS inserted`,
  /** The key leaves the cache's accounting (it became a version's thumbnail). */
  forget: `DELETE FROM render_cache WHERE blob_key = $1`,
  totals: `SELECT COALESCE(sum(size_bytes), 0)::bigint AS bytes, count(*)::int AS entries FROM render_cache`,
  /**
   * Claims a batch of the least recently used entries by deleting their rows: an entry is taken
   * while the total before taking it is still above `$1` (the target), at most `$2` of them. The
   * total, the running sum and the batch come from one snapshot of one statement, so the batch
   * brings the total to the target and not below (less one entry's size). Two nodes sweeping at
   * once compute the same batch; the second one's DELETE waits on the first's locked rows and,
   * re-checking them after its commit, finds them gone: each row is claimed (and counted) by
   * exactly one sweeper, and nobody takes more to make up for rows another took. A row bumped
   * meanwhile (a hit, or stored again) fails the `last_used_at` re-check and stays.
   */
  claim: `
    WITH total AS (SELECT COALESCE(sum(size_bytes), 0) AS bytes FROM render_cache),
    lru AS (
      SELECT c.blob_key, c.last_used_at,
             sum(c.size_bytes) OVER (ORDER BY c.last_used_at, c.blob_key) - c.size_bytes AS freed_before
      FROM render_cache c
      ORDER BY c.last_used_at, c.blob_key
      LIMIT $2
    )
    DELETE FROM render_cache r USING lru, total
    WHERE r.blob_key = lru.blob_key AND r.last_used_at = lru.last_used_at AND total.bytes - lru.freed_before > $1
    RETURNING r.blob_key, r.size_bytes,
              EXISTS (SELECT 1 FROM image_versions v WHERE v.thumbnail_path = r.blob_key) AS pinned`,
} as const;

export async function recordCached(db: Queryable, key: string, size: number): Promise<void> {
  await db.query(renderCacheQueries.record, [key, size]);
}

/** Bumps (or adopts) a hit; true when the row is new. */
export async function touchCached(db: Queryable, key: string, size: number, olderThanMs: number): Promise<boolean> {
  const { rows } = await db.query<{ inserted: boolean }>(renderCacheQueries.touch, [key, size, olderThanMs]);
  return rows[0]?.inserted === true;
}

export async function forgetCached(db: Queryable, key: string): Promise<void> {
  await db.query(renderCacheQueries.forget, [key]);
}

export async function cacheTotals(db: Queryable): Promise<RenderCacheTotals> {
  const { rows } = await db.query<RenderCacheTotals>(renderCacheQueries.totals);
  return rows[0] ?? { bytes: 0, entries: 0 };
}

/** Claims (deletes the rows of) up to `limit` least recently used entries above `targetBytes`; see the query. */
export async function claimLeastRecentlyUsed(tx: Queryable, targetBytes: number, limit: number): Promise<ClaimedEntry[]> {
  const { rows } = await tx.query<ClaimedEntry>(renderCacheQueries.claim, [targetBytes, limit]);
  return rows;
}
