-- 009: the render cache's accounting, so it can be bounded (server/render-cache.ts).
--
-- On-demand renders (`renders/<sha-256>.<format>`, server/renders.ts) and variants resized by URL
-- (`variants/<xx>/<sha-256>.<format>`, GET /api/images/:id/file) are cached in blob storage. One
-- row per cached blob records its size and when it was last served, so the least recently used
-- can be evicted once the total passes RENDER_CACHE_MAX_BYTES. The bytes stay in blob storage.
--
-- A row is accounting, never the truth a reader trusts: a reader looks the blob up in the store and
-- renders again when it is missing. So a row may outlive its blob (evicted under a concurrent
-- re-render, deleted by hand) and merely overcounts until it is evicted in turn.
--
-- Only cache prefixes can be tracked (the CHECK), so eviction can never reach originals, uploads or
-- anything else in the bucket. A version's thumbnail (image_versions.thumbnail_path, itself a
-- render key) is not cache: the worker removes its row when it sets the path, a new row for it is
-- refused, and eviction checks again; the index below keeps those look-ups cheap. The standard
-- thumbnails ingest stores (images.thumbnail_paths) are never tracked.

-- Up Migration

CREATE TABLE render_cache (
  blob_key     VARCHAR(512) PRIMARY KEY CHECK (blob_key LIKE 'renders/%' OR blob_key LIKE 'variants/%'),
  size_bytes   BIGINT NOT NULL CHECK (size_bytes >= 0),
  created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  -- bumped on a cache hit at most once a minute per node, so a hot entry does not write per request
  last_used_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Eviction walks the least recently used first.
CREATE INDEX idx_render_cache_lru ON render_cache (last_used_at, blob_key);
CREATE INDEX idx_image_versions_thumbnail_path ON image_versions (thumbnail_path) WHERE thumbnail_path IS NOT NULL;

-- Down Migration

DROP INDEX idx_image_versions_thumbnail_path;
DROP TABLE render_cache;
