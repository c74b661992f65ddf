-- 003: what version snapshots and the branching version tree add to the seed schema.
--
-- A version (image_versions row) is a snapshot of an edit session's canvas: canvas_state holds
-- the whole canvas JSON, and canvas_layers one row per layer. Seed tables and columns keep their
-- names and types (docs/CONTRACT.md, "additions allowed, renames not").

-- Up Migration

-- ---------------------------------------------------------------------------------------------
-- canvas_layers.layer_key: the layer's id inside the canvas
-- ---------------------------------------------------------------------------------------------
-- The seed's layer_id is the table's primary key, so it is global: the same canvas layer, saved
-- in two versions, needs two rows with two different layer_ids. layer_key is the id the layer has
-- in the canvas document (the key of canvas_state.layers, stable across versions); layer_id is a
-- fresh id per row. Diffs between versions match layers by layer_key.
-- Rows written before this migration (none are written by the server before it) get their
-- layer_id as key, so the column can be NOT NULL at once; so do rows inserted the seed's way,
-- without a layer_key (the trigger below), so the seed's INSERT shape keeps working.
ALTER TABLE canvas_layers ADD COLUMN layer_key VARCHAR(20);
UPDATE canvas_layers SET layer_key = layer_id WHERE layer_key IS NULL;

CREATE FUNCTION canvas_layers_default_key() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
  NEW.layer_key := COALESCE(NEW.layer_key, NEW.layer_id);
  RETURN NEW;
END;
$$;

CREATE TRIGGER trigger_canvas_layers_default_key
  BEFORE INSERT ON canvas_layers
  FOR EACH ROW EXECUTE FUNCTION canvas_layers_default_key();

ALTER TABLE canvas_layers
  ALTER COLUMN layer_key SET NOT NULL,
  -- A canvas holds each layer once ...
  ADD CONSTRAINT canvas_layers_version_key_unique UNIQUE (version_id, layer_key),
  -- ... and layer_order is the layer's position bottom to top (0, 1, 2, …), so it is unique too.
  ADD CONSTRAINT canvas_layers_version_order_unique UNIQUE (version_id, layer_order);

-- ---------------------------------------------------------------------------------------------
-- image_versions: where a version came from
-- ---------------------------------------------------------------------------------------------
-- session_id: the edit session that saved it (NULL for versions made otherwise, or whose session
--   was deleted: the version outlives the session).
-- kind: 'manual' (POST /api/sessions/:id/versions or the saveVersion stateless message),
--   'autosave' (after a quiet period following edits, or when the last participant left),
--   'restore' (POST /api/sessions/:id/restore: the canvas of an earlier version made live again).
-- restored_from_version_id: for kind 'restore', the version whose canvas was restored. SET NULL
--   when that version is deleted, so the check below allows NULL for any kind.
ALTER TABLE image_versions
  ADD COLUMN session_id VARCHAR(20) REFERENCES edit_sessions(session_id) ON DELETE SET NULL,
  ADD COLUMN kind VARCHAR(20) NOT NULL DEFAULT 'manual',
  ADD COLUMN restored_from_version_id VARCHAR(20) REFERENCES image_versions(version_id) ON DELETE SET NULL,
  ADD CONSTRAINT image_versions_kind_check CHECK (kind IN ('manual', 'autosave', 'restore')),
  ADD CONSTRAINT image_versions_restored_from_check CHECK (restored_from_version_id IS NULL OR kind = 'restore');

-- The sessions' versions (and the SET NULL on session delete); the restores of a version (and the
-- SET NULL on version delete). Partial: most rows have neither.
CREATE INDEX idx_versions_session_id ON image_versions (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX idx_versions_restored_from ON image_versions (restored_from_version_id)
  WHERE restored_from_version_id IS NOT NULL;

-- Down Migration

DROP INDEX IF EXISTS idx_versions_restored_from;
DROP INDEX IF EXISTS idx_versions_session_id;
ALTER TABLE image_versions
  DROP CONSTRAINT IF EXISTS image_versions_restored_from_check,
  DROP CONSTRAINT IF EXISTS image_versions_kind_check,
  DROP COLUMN IF EXISTS restored_from_version_id,
  DROP COLUMN IF EXISTS kind,
  DROP COLUMN IF EXISTS session_id;
DROP TRIGGER IF EXISTS trigger_canvas_layers_default_key ON canvas_layers;
DROP FUNCTION IF EXISTS canvas_layers_default_key();
ALTER TABLE canvas_layers
  DROP CONSTRAINT IF EXISTS canvas_layers_version_order_unique,
  DROP CONSTRAINT IF EXISTS canvas_layers_version_key_unique,
  DROP COLUMN IF EXISTS layer_key;
