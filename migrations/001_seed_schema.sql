-- 001_seed_schema: the ImageFlow seed design (docs/seeds/000_a55dfd578cc8c3da.txt) as runnable
-- PostgreSQL. Table names, column names and column types are exactly the seed's (VARCHAR(20) ids
-- included); everything else below is either a translation of the seed's sketch-level SQL or an
-- integrity addition, and each deviation says why next to it.
--
-- Translation rules:
--   * The seed's inline MySQL-style `INDEX name (cols)` lines become `CREATE INDEX name ...` with the
--     seed's names; `UNIQUE INDEX` becomes `CREATE UNIQUE INDEX`.
--   * Index names are schema-global in PostgreSQL (in MySQL they are per table). The seed names two
--     user_sessions indexes idx_sessions_user_id / idx_sessions_expires_at and reuses
--     idx_sessions_expires_at on edit_sessions. The seed name stays on edit_sessions; the user_sessions
--     ones are idx_user_sessions_user_id and idx_user_sessions_expires_at.
--   * Constraints are named (<table>_<column>_check) so that errors can be mapped to stable codes.
--   * Must run unchanged on PostgreSQL 15 and on PGlite (PostgreSQL 18): no extensions.
--
-- Runs inside the runner's single transaction (persistence/migrate.ts), so nothing here may be
-- CONCURRENTLY.

-- Up Migration

-- ---------------------------------------------------------------------------------------------
-- users
-- ---------------------------------------------------------------------------------------------
CREATE TABLE users (
  user_id VARCHAR(20) PRIMARY KEY,
  username VARCHAR(50) UNIQUE NOT NULL,
  email VARCHAR(255) UNIQUE NOT NULL,
  password_hash VARCHAR(255) NOT NULL,
  display_name VARCHAR(100) NOT NULL,
  bio TEXT,
  avatar_url VARCHAR(500),
  email_verified BOOLEAN DEFAULT FALSE,
  is_active BOOLEAN DEFAULT TRUE,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  last_login_at TIMESTAMP WITH TIME ZONE,
  settings JSONB DEFAULT '{}',

  CONSTRAINT users_username_check CHECK (btrim(username) <> '')
);

-- idx_users_username / idx_users_email duplicate the indexes behind the UNIQUE constraints; they are
-- kept because the seed names them (and tooling may look for them). They cost one extra btree each.
CREATE INDEX idx_users_username ON users (username);
CREATE INDEX idx_users_email ON users (email);
CREATE INDEX idx_users_created_at ON users (created_at);

-- ---------------------------------------------------------------------------------------------
-- images
-- ---------------------------------------------------------------------------------------------
CREATE TABLE images (
  image_id VARCHAR(20) PRIMARY KEY,
  user_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  title VARCHAR(255) NOT NULL,
  description TEXT,
  filename VARCHAR(255) NOT NULL,
  mime_type VARCHAR(50) NOT NULL,
  file_size INTEGER NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  storage_path VARCHAR(500) NOT NULL,
  thumbnail_paths JSONB NOT NULL,
  privacy_level VARCHAR(20) DEFAULT 'public',
  is_deleted BOOLEAN DEFAULT FALSE,
  uploaded_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  last_edited_at TIMESTAMP WITH TIME ZONE,
  metadata JSONB DEFAULT '{}',
  color_palette JSONB,
  ai_analysis JSONB,
  view_count INTEGER DEFAULT 0,

  -- 'followers' = the owner and the owner's followers; 'private' = the owner only (see
  -- images_view_policy below).
  CONSTRAINT images_privacy_level_check CHECK (privacy_level IN ('public', 'followers', 'private')),
  CONSTRAINT images_width_check CHECK (width > 0),
  CONSTRAINT images_height_check CHECK (height > 0),
  CONSTRAINT images_file_size_check CHECK (file_size >= 0),
  CONSTRAINT images_view_count_check CHECK (view_count >= 0)
);

CREATE INDEX idx_images_user_id ON images (user_id);
CREATE INDEX idx_images_uploaded_at ON images (uploaded_at);
CREATE INDEX idx_images_privacy_level ON images (privacy_level);
-- The seed's `FULLTEXT INDEX idx_images_fulltext (title, description)` is MySQL. In PostgreSQL it is a
-- GIN index over a tsvector; an expression index keeps the images columns exactly the seed's. A
-- query uses it only when it repeats the expression verbatim:
--   WHERE to_tsvector('english', title || ' ' || coalesce(description, '')) @@ plainto_tsquery('english', $1)
-- (Most search goes through search_index below, which also covers other document types.)
CREATE INDEX idx_images_fulltext ON images
  USING GIN (to_tsvector('english', title || ' ' || coalesce(description, '')));

-- ---------------------------------------------------------------------------------------------
-- image_versions: the branching version tree (parent_version_id)
-- ---------------------------------------------------------------------------------------------
CREATE TABLE image_versions (
  version_id VARCHAR(20) PRIMARY KEY,
  image_id VARCHAR(20) NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
  parent_version_id VARCHAR(20) REFERENCES image_versions(version_id),
  version_number INTEGER NOT NULL,
  branch_name VARCHAR(100),
  created_by VARCHAR(20) NOT NULL REFERENCES users(user_id),
  created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  description TEXT,
  canvas_state JSONB NOT NULL,
  thumbnail_path VARCHAR(500),
  file_size INTEGER NOT NULL,
  is_current BOOLEAN DEFAULT FALSE,

  CONSTRAINT image_versions_version_number_check CHECK (version_number >= 1),
  CONSTRAINT image_versions_file_size_check CHECK (file_size >= 0),
  CONSTRAINT image_versions_parent_check CHECK (parent_version_id IS DISTINCT FROM version_id)
);

CREATE INDEX idx_versions_image_id ON image_versions (image_id);
CREATE INDEX idx_versions_parent ON image_versions (parent_version_id);
CREATE INDEX idx_versions_created_at ON image_versions (created_at);
CREATE UNIQUE INDEX idx_versions_image_number ON image_versions (image_id, version_number);
-- At most one current version per image (the "exactly one" is the writer's job: it clears the old
-- flag and sets the new one in the same transaction, clearing first). Rows with is_current FALSE or
-- NULL are not in the index.
CREATE UNIQUE INDEX idx_versions_one_current ON image_versions (image_id) WHERE is_current;

-- ---------------------------------------------------------------------------------------------
-- canvas_layers
-- ---------------------------------------------------------------------------------------------
CREATE TABLE canvas_layers (
  layer_id VARCHAR(20) PRIMARY KEY,
  version_id VARCHAR(20) NOT NULL REFERENCES image_versions(version_id) ON DELETE CASCADE,
  layer_order INTEGER NOT NULL,
  layer_type VARCHAR(50) NOT NULL,
  name VARCHAR(100) NOT NULL,
  visible BOOLEAN DEFAULT TRUE,
  opacity DECIMAL(3,2) DEFAULT 1.0,
  blend_mode VARCHAR(50) DEFAULT 'normal',
  locked BOOLEAN DEFAULT FALSE,
  layer_data JSONB NOT NULL,
  transform_matrix JSONB,
  filters JSONB,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

  -- The same layer types as the Yjs canvas document (shared/ canvas schema, docs/CONTRACT.md).
  CONSTRAINT canvas_layers_layer_type_check
    CHECK (layer_type IN ('image', 'drawing', 'text', 'shape', 'adjustment')),
  CONSTRAINT canvas_layers_opacity_check CHECK (opacity BETWEEN 0 AND 1),
  CONSTRAINT canvas_layers_layer_order_check CHECK (layer_order >= 0)
);

CREATE INDEX idx_layers_version_id ON canvas_layers (version_id);
CREATE INDEX idx_layers_order ON canvas_layers (version_id, layer_order);

-- ---------------------------------------------------------------------------------------------
-- follows (social graph)
-- ---------------------------------------------------------------------------------------------
CREATE TABLE follows (
  follower_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  following_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  followed_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  notifications_enabled BOOLEAN DEFAULT TRUE,

  PRIMARY KEY (follower_id, following_id),
  CONSTRAINT follows_no_self_follow_check CHECK (follower_id <> following_id)
);

CREATE INDEX idx_follows_following_id ON follows (following_id);
CREATE INDEX idx_follows_followed_at ON follows (followed_at);

-- ---------------------------------------------------------------------------------------------
-- activities
-- ---------------------------------------------------------------------------------------------
CREATE TABLE activities (
  activity_id VARCHAR(20) PRIMARY KEY,
  actor_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  activity_type VARCHAR(50) NOT NULL,
  target_type VARCHAR(50) NOT NULL,
  target_id VARCHAR(20) NOT NULL,
  metadata JSONB DEFAULT '{}',
  created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

  -- Polymorphic (type, id) pairs cannot have foreign keys; at least refuse blanks, which no reader
  -- can resolve.
  CONSTRAINT activities_activity_type_check CHECK (btrim(activity_type) <> ''),
  CONSTRAINT activities_target_type_check CHECK (btrim(target_type) <> ''),
  CONSTRAINT activities_target_id_check CHECK (btrim(target_id) <> '')
);

CREATE INDEX idx_activities_actor_id ON activities (actor_id);
CREATE INDEX idx_activities_created_at ON activities (created_at);
CREATE INDEX idx_activities_target ON activities (target_type, target_id);
CREATE INDEX idx_activities_type ON activities (activity_type);

-- ---------------------------------------------------------------------------------------------
-- comments (optionally pinned to canvas coordinates)
-- ---------------------------------------------------------------------------------------------
CREATE TABLE comments (
  comment_id VARCHAR(20) PRIMARY KEY,
  image_id VARCHAR(20) NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
  user_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  parent_comment_id VARCHAR(20) REFERENCES comments(comment_id) ON DELETE CASCADE,
  content TEXT NOT NULL,
  coordinates JSONB,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  edited_at TIMESTAMP WITH TIME ZONE,
  is_deleted BOOLEAN DEFAULT FALSE,

  CONSTRAINT comments_parent_check CHECK (parent_comment_id IS DISTINCT FROM comment_id)
);

CREATE INDEX idx_comments_image_id ON comments (image_id);
CREATE INDEX idx_comments_user_id ON comments (user_id);
CREATE INDEX idx_comments_created_at ON comments (created_at);

-- ---------------------------------------------------------------------------------------------
-- likes (polymorphic target)
-- ---------------------------------------------------------------------------------------------
CREATE TABLE likes (
  user_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  target_type VARCHAR(50) NOT NULL,
  target_id VARCHAR(20) NOT NULL,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

  PRIMARY KEY (user_id, target_type, target_id),
  CONSTRAINT likes_target_type_check CHECK (btrim(target_type) <> ''),
  CONSTRAINT likes_target_id_check CHECK (btrim(target_id) <> '')
);

CREATE INDEX idx_likes_target ON likes (target_type, target_id);
CREATE INDEX idx_likes_created_at ON likes (created_at);

-- ---------------------------------------------------------------------------------------------
-- edit_sessions (one Yjs document each; see 002_collaboration for what collaboration adds)
-- ---------------------------------------------------------------------------------------------
CREATE TABLE edit_sessions (
  session_id VARCHAR(20) PRIMARY KEY,
  image_id VARCHAR(20) NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
  owner_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
  is_active BOOLEAN DEFAULT TRUE,
  session_type VARCHAR(50) DEFAULT 'solo',
  settings JSONB DEFAULT '{}',

  CONSTRAINT edit_sessions_session_type_check CHECK (session_type IN ('solo', 'collaborative')),
  CONSTRAINT edit_sessions_expires_at_check CHECK (expires_at > created_at)
);

CREATE INDEX idx_sessions_image_id ON edit_sessions (image_id);
CREATE INDEX idx_sessions_owner_id ON edit_sessions (owner_id);
CREATE INDEX idx_sessions_expires_at ON edit_sessions (expires_at);

-- ---------------------------------------------------------------------------------------------
-- session_participants
-- ---------------------------------------------------------------------------------------------
CREATE TABLE session_participants (
  session_id VARCHAR(20) NOT NULL REFERENCES edit_sessions(session_id) ON DELETE CASCADE,
  user_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  joined_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  last_active_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  permissions JSONB DEFAULT '{"canEdit": true, "canComment": true}',
  cursor_color VARCHAR(7),

  PRIMARY KEY (session_id, user_id),
  -- Awareness sends this colour to every client as CSS; only '#rrggbb' is accepted.
  CONSTRAINT session_participants_cursor_color_check CHECK (cursor_color ~ '^#[0-9a-fA-F]{6}$'),
  CONSTRAINT session_participants_permissions_check CHECK (jsonb_typeof(permissions) = 'object')
);

CREATE INDEX idx_participants_user_id ON session_participants (user_id);

-- ---------------------------------------------------------------------------------------------
-- tags / image_tags
-- ---------------------------------------------------------------------------------------------
CREATE TABLE tags (
  tag_id VARCHAR(20) PRIMARY KEY,
  tag_name VARCHAR(50) UNIQUE NOT NULL,
  tag_slug VARCHAR(50) UNIQUE NOT NULL,
  usage_count INTEGER DEFAULT 0,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

  CONSTRAINT tags_usage_count_check CHECK (usage_count >= 0),
  CONSTRAINT tags_tag_name_check CHECK (btrim(tag_name) <> ''),
  CONSTRAINT tags_tag_slug_check CHECK (btrim(tag_slug) <> '')
);

-- idx_tags_name duplicates the UNIQUE constraint's index; kept for the seed's name.
CREATE INDEX idx_tags_name ON tags (tag_name);
CREATE INDEX idx_tags_usage ON tags (usage_count DESC);

CREATE TABLE image_tags (
  image_id VARCHAR(20) NOT NULL REFERENCES images(image_id) ON DELETE CASCADE,
  tag_id VARCHAR(20) NOT NULL REFERENCES tags(tag_id) ON DELETE CASCADE,
  added_by VARCHAR(20) NOT NULL REFERENCES users(user_id),
  added_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  source VARCHAR(20) DEFAULT 'user',
  confidence DECIMAL(3,2),

  PRIMARY KEY (image_id, tag_id),
  CONSTRAINT image_tags_source_check CHECK (source IN ('user', 'ai')),
  CONSTRAINT image_tags_confidence_check CHECK (confidence BETWEEN 0 AND 1)
);

CREATE INDEX idx_image_tags_tag_id ON image_tags (tag_id);
CREATE INDEX idx_image_tags_added_at ON image_tags (added_at);

-- ---------------------------------------------------------------------------------------------
-- notifications
-- ---------------------------------------------------------------------------------------------
CREATE TABLE notifications (
  notification_id VARCHAR(20) PRIMARY KEY,
  user_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  type VARCHAR(50) NOT NULL,
  actor_id VARCHAR(20) REFERENCES users(user_id),
  target_type VARCHAR(50),
  target_id VARCHAR(20),
  message TEXT NOT NULL,
  data JSONB DEFAULT '{}',
  read_at TIMESTAMP WITH TIME ZONE,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

  CONSTRAINT notifications_type_check CHECK (btrim(type) <> ''),
  -- A target is a (type, id) pair: both or neither.
  CONSTRAINT notifications_target_check CHECK ((target_type IS NULL) = (target_id IS NULL))
);

CREATE INDEX idx_notifications_user_id ON notifications (user_id);
CREATE INDEX idx_notifications_unread ON notifications (user_id, read_at);
CREATE INDEX idx_notifications_created_at ON notifications (created_at);

-- ---------------------------------------------------------------------------------------------
-- search_index: the custom full-text index, fed by triggers (see update_search_index below).
-- It holds titles and descriptions of every non-deleted image, private ones included, and has no
-- row-level security: a search must join back to images (where images_view_policy applies) before
-- it shows anything to a user.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE search_index (
  index_id SERIAL PRIMARY KEY,
  document_type VARCHAR(50) NOT NULL,
  document_id VARCHAR(20) NOT NULL,
  content TEXT NOT NULL,
  metadata JSONB DEFAULT '{}',
  tsv_content TSVECTOR,
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP
);

-- Also the arbiter of update_search_index's ON CONFLICT (document_type, document_id).
CREATE UNIQUE INDEX idx_search_document ON search_index (document_type, document_id);
CREATE INDEX idx_search_tsv ON search_index USING GIN (tsv_content);

-- ---------------------------------------------------------------------------------------------
-- user_sessions (login sessions; the `sid` of an access token)
-- ---------------------------------------------------------------------------------------------
CREATE TABLE user_sessions (
  session_id VARCHAR(20) PRIMARY KEY,
  user_id VARCHAR(20) NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
  refresh_token_hash VARCHAR(255) UNIQUE NOT NULL,
  device_info JSONB,
  ip_address INET,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  last_active_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
  expires_at TIMESTAMP WITH TIME ZONE NOT NULL,

  CONSTRAINT user_sessions_expires_at_check CHECK (expires_at > created_at)
);

-- Seed names idx_sessions_user_id / idx_sessions_expires_at; renamed because index names are
-- schema-global and idx_sessions_expires_at already belongs to edit_sessions (see the header).
CREATE INDEX idx_user_sessions_user_id ON user_sessions (user_id);
CREATE INDEX idx_user_sessions_expires_at ON user_sessions (expires_at);

-- ---------------------------------------------------------------------------------------------
-- Section 6 of the seed: composite and partial indexes for the hot queries
-- ---------------------------------------------------------------------------------------------
-- Gallery: a user's live images, newest first.
CREATE INDEX idx_images_gallery ON images (user_id, uploaded_at DESC) WHERE is_deleted = FALSE;
-- Activity feed: one actor's activities, newest first.
CREATE INDEX idx_activities_feed ON activities (actor_id, created_at DESC);
-- Tag search. (Same columns as the image_tags primary key reversed; idx_image_tags_tag_id is a
-- prefix of it and could go, but the seed names both.)
CREATE INDEX idx_image_tags_search ON image_tags (tag_id, image_id);
-- Active edit sessions by expiry (the session reaper).
CREATE INDEX idx_active_sessions ON edit_sessions (expires_at) WHERE is_active = TRUE;
-- A user's unread notifications, newest first.
CREATE INDEX idx_unread_notifications ON notifications (user_id, created_at DESC) WHERE read_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- users.updated_at maintenance
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION set_updated_at() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := CURRENT_TIMESTAMP;
  RETURN NEW;
END;
$$;

CREATE TRIGGER trigger_users_updated_at
  BEFORE UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Search index maintenance
-- ---------------------------------------------------------------------------------------------
-- The seed's function, plus one branch: a soft-deleted image (is_deleted) leaves the index instead of
-- being upserted, so search never returns images the gallery hides.
CREATE FUNCTION update_search_index() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.is_deleted THEN
    DELETE FROM search_index WHERE document_type = 'image' AND document_id = NEW.image_id;
    RETURN NEW;
  END IF;
  INSERT INTO search_index (document_type, document_id, content, tsv_content)
  VALUES (
    'image',
    NEW.image_id,
    NEW.title || ' ' || COALESCE(NEW.description, ''),
    to_tsvector('english', NEW.title || ' ' || COALESCE(NEW.description, ''))
  )
  ON CONFLICT (document_type, document_id) DO UPDATE
  SET content = EXCLUDED.content,
      tsv_content = EXCLUDED.tsv_content,
      updated_at = CURRENT_TIMESTAMP;
  RETURN NEW;
END;
$$;

-- The seed defines update_search_index() but never attaches it. UPDATE OF limits it to the columns
-- that change the indexed text (and is_deleted, for the branch above), so view_count bumps do not
-- rewrite the index row.
CREATE TRIGGER trigger_update_search_index
  AFTER INSERT OR UPDATE OF title, description, is_deleted ON images
  FOR EACH ROW EXECUTE FUNCTION update_search_index();

-- search_index.document_id is polymorphic, so no foreign key can cascade a hard delete (user
-- deletion cascades to images, for instance); this trigger removes the image's row instead.
CREATE FUNCTION delete_search_index() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM search_index WHERE document_type = 'image' AND document_id = OLD.image_id;
  RETURN OLD;
END;
$$;

CREATE TRIGGER trigger_delete_search_index
  AFTER DELETE ON images
  FOR EACH ROW EXECUTE FUNCTION delete_search_index();

-- ---------------------------------------------------------------------------------------------
-- Views
-- ---------------------------------------------------------------------------------------------
CREATE VIEW activity_feed AS
SELECT
  a.*,
  u.username AS actor_username,
  u.display_name AS actor_display_name,
  u.avatar_url AS actor_avatar
FROM activities a
JOIN users u ON a.actor_id = u.user_id;

-- user_stats: the seed's columns, two corrections.
--   * The seed joins images, followers and followings in one GROUP BY. COUNT(DISTINCT) survives that
--     fan-out but SUM(i.view_count) does not (it is multiplied by follower_count * following_count),
--     so each count is aggregated in its own subquery first.
--   * Soft-deleted images (is_deleted) are not counted: they are gone for the user.
-- Counts are 0 (not NULL) for a user with no images or follows; last_upload stays NULL then.
CREATE MATERIALIZED VIEW user_stats AS
SELECT
  u.user_id,
  COALESCE(img.image_count, 0) AS image_count,
  COALESCE(fr.follower_count, 0) AS follower_count,
  COALESCE(fg.following_count, 0) AS following_count,
  COALESCE(img.total_views, 0) AS total_views,
  img.last_upload
FROM users u
LEFT JOIN (
  SELECT user_id, COUNT(*) AS image_count, SUM(view_count) AS total_views, MAX(uploaded_at) AS last_upload
  FROM images
  WHERE is_deleted IS NOT TRUE
  GROUP BY user_id
) img ON img.user_id = u.user_id
LEFT JOIN (
  SELECT following_id AS user_id, COUNT(*) AS follower_count FROM follows GROUP BY following_id
) fr ON fr.user_id = u.user_id
LEFT JOIN (
  SELECT follower_id AS user_id, COUNT(*) AS following_count FROM follows GROUP BY follower_id
) fg ON fg.user_id = u.user_id;

-- UNIQUE (the seed has a plain index): REFRESH ... CONCURRENTLY requires a unique index on the view.
CREATE UNIQUE INDEX idx_user_stats_user_id ON user_stats (user_id);

-- ---------------------------------------------------------------------------------------------
-- Keeping user_stats fresh
-- ---------------------------------------------------------------------------------------------
-- The seed refreshes the view from a row trigger on images. That cannot work: REFRESH MATERIALIZED
-- VIEW has no WHERE clause (it always recomputes the whole view), and a full refresh inside every
-- image write would make each write cost a scan of images and follows and would serialize all of
-- them on the view's lock. Instead:
--
--   1. Writes only leave a mark. trigger_update_stats (statement-level, on images, follows and users)
--      runs update_user_stats(), which inserts one row per writing transaction into
--      user_stats_refresh (keyed by the transaction id; a second statement in the same transaction
--      hits ON CONFLICT DO NOTHING). Writers never touch each other's rows, so marking takes no lock
--      another writer waits for. (A one-row "stale" flag would: every writing transaction would hold
--      the row lock on that flag until it commits.)
--   2. A periodic job (the server) calls refresh_user_stats(). It deletes the marks it can see, and
--      if there were any, runs REFRESH MATERIALIZED VIEW CONCURRENTLY (readers of user_stats are not
--      blocked while it runs).
--
-- No change is lost: the DELETE sees exactly the marks of transactions committed before it started,
-- and the REFRESH, a later statement, sees at least those transactions' writes. A mark from a
-- transaction still open during the DELETE is invisible to it and survives for the next call. If the
-- refresh fails, its transaction rolls back and the marks come back with it.
--
-- user_stats therefore lags writes by up to one job interval; readers should treat a missing row
-- (a user created since the last refresh) as all zeros.
CREATE TABLE user_stats_refresh (
  txid BIGINT PRIMARY KEY,
  stale_since TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Name and role (trigger function for trigger_update_stats) kept from the seed; body replaced.
CREATE FUNCTION update_user_stats() RETURNS TRIGGER
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO user_stats_refresh (txid) VALUES (txid_current()) ON CONFLICT (txid) DO NOTHING;
  RETURN NULL;
END;
$$;

-- Statement-level: one mark per statement however many rows it touched. Only the images columns
-- the view reads mark it stale. Trigger names are per table, so all three keep the seed's name.
CREATE TRIGGER trigger_update_stats
  AFTER INSERT OR DELETE OR UPDATE OF user_id, view_count, uploaded_at, is_deleted OR TRUNCATE ON images
  FOR EACH STATEMENT EXECUTE FUNCTION update_user_stats();

CREATE TRIGGER trigger_update_stats
  AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ON follows
  FOR EACH STATEMENT EXECUTE FUNCTION update_user_stats();

-- New and deleted users add and remove rows of the view.
CREATE TRIGGER trigger_update_stats
  AFTER INSERT OR DELETE OR TRUNCATE ON users
  FOR EACH STATEMENT EXECUTE FUNCTION update_user_stats();

-- Returns true when it refreshed, false when nothing had changed. Safe to call from several nodes at
-- once: a second caller waits on the first one's row locks, then finds no marks left.
-- SECURITY DEFINER because REFRESH MATERIALIZED VIEW needs ownership of the view, which the
-- application role (scripts/db-roles.sql) does not have; the body is fixed and the search_path is
-- pinned to the one the migration ran with, so callers cannot redirect it.
CREATE FUNCTION refresh_user_stats() RETURNS BOOLEAN
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
  marks BIGINT;
BEGIN
  DELETE FROM user_stats_refresh;
  GET DIAGNOSTICS marks = ROW_COUNT;
  IF marks = 0 THEN
    RETURN FALSE;
  END IF;
  REFRESH MATERIALIZED VIEW CONCURRENTLY user_stats;
  RETURN TRUE;
END;
$$;

-- ---------------------------------------------------------------------------------------------
-- Row-level security
-- ---------------------------------------------------------------------------------------------
-- Who the policies bind: the application connects either as the tables' owner or as a superuser,
-- and both bypass RLS (FORCE ROW LEVEL SECURITY is deliberately not used: it would subject the owner
-- too and break the server, its migrations and the user_stats refresh). The policies bind the roles
-- of scripts/db-roles.sql, i.e. imageflow_app, which sets the acting user per transaction:
--   SET LOCAL app.current_user_id = '<users.user_id>'   (or set_config(..., true))
-- With no user set, current_user_id() is NULL, every "= current_user_id()" is unknown, and only
-- public data is visible.

-- The acting user, or NULL when none is set. current_setting(..., true) returns NULL instead of
-- failing when the setting was never defined in this session; NULLIF maps "defined but reset" ('')
-- to NULL too. STABLE: constant within a statement, so the planner evaluates it once.
CREATE FUNCTION current_user_id() RETURNS TEXT
LANGUAGE sql STABLE
AS $$ SELECT NULLIF(current_setting('app.current_user_id', true), '') $$;

ALTER TABLE users ENABLE ROW LEVEL SECURITY;

-- Seed policy: users can only update their own profile. (USING serves as WITH CHECK too, so a user
-- cannot hand their row to another id either.)
CREATE POLICY users_update_own ON users FOR UPDATE
  USING (user_id = current_user_id());

-- Enabling RLS denies every command that has no policy. With only the seed's UPDATE policy, a
-- non-owner role could not even read profiles (or its own row for the UPDATE), nor sign a user up.
-- Profiles are public in the seed's design (activity_feed shows actor names and avatars), and sign-up
-- happens before there is an acting user, so:
CREATE POLICY users_select_all ON users FOR SELECT
  USING (TRUE);
CREATE POLICY users_insert ON users FOR INSERT
  WITH CHECK (TRUE);
-- No DELETE policy: the seed grants the application no DELETE on users.

ALTER TABLE images ENABLE ROW LEVEL SECURITY;

-- Seed policy, with one correction: the seed lets every follower see every image, which would make
-- 'private' mean the same as 'followers'. Followers see 'followers' images; 'private' is owner-only.
CREATE POLICY images_view_policy ON images FOR SELECT
  USING (
    privacy_level = 'public'
    OR user_id = current_user_id()
    OR (
      privacy_level = 'followers'
      AND EXISTS (
        SELECT 1 FROM follows
        WHERE follower_id = current_user_id()
          AND following_id = images.user_id
      )
    )
  );

-- Someone invited into an edit session of an image (or who owns the session) must be able to see
-- that image whatever its privacy, for as long as the session is live: the canvas shows it anyway.
CREATE POLICY images_view_session_participant ON images FOR SELECT
  USING (
    EXISTS (
      SELECT 1
      FROM edit_sessions s
      WHERE s.image_id = images.image_id
        AND s.is_active
        AND s.expires_at > now()
        AND (
          s.owner_id = current_user_id()
          OR EXISTS (
            SELECT 1 FROM session_participants p
            WHERE p.session_id = s.session_id AND p.user_id = current_user_id()
          )
        )
    )
  );

-- Writes: the owner only. Uploading as someone else, or moving an image to another owner, fails the
-- WITH CHECK. (Collaborators save versions into image_versions, which has no RLS; a collaborator's
-- change to the images row itself, e.g. last_edited_at, needs the owner's role or a policy of its own.)
CREATE POLICY images_insert_own ON images FOR INSERT
  WITH CHECK (user_id = current_user_id());
CREATE POLICY images_update_own ON images FOR UPDATE
  USING (user_id = current_user_id());
CREATE POLICY images_delete_own ON images FOR DELETE
  USING (user_id = current_user_id());

-- Down Migration

DROP POLICY IF EXISTS images_delete_own ON images;
DROP POLICY IF EXISTS images_update_own ON images;
DROP POLICY IF EXISTS images_insert_own ON images;
DROP POLICY IF EXISTS images_view_session_participant ON images;
DROP POLICY IF EXISTS images_view_policy ON images;
DROP POLICY IF EXISTS users_insert ON users;
DROP POLICY IF EXISTS users_select_all ON users;
DROP POLICY IF EXISTS users_update_own ON users;
DROP FUNCTION IF EXISTS current_user_id();
DROP FUNCTION IF EXISTS refresh_user_stats();
DROP TABLE IF EXISTS user_stats_refresh;
DROP MATERIALIZED VIEW IF EXISTS user_stats;
DROP VIEW IF EXISTS activity_feed;
DROP TABLE IF EXISTS user_sessions;
DROP TABLE IF EXISTS search_index;
DROP TABLE IF EXISTS notifications;
DROP TABLE IF EXISTS image_tags;
DROP TABLE IF EXISTS tags;
DROP TABLE IF EXISTS session_participants;
DROP TABLE IF EXISTS edit_sessions;
DROP TABLE IF EXISTS likes;
DROP TABLE IF EXISTS comments;
DROP TABLE IF EXISTS activities;
DROP TABLE IF EXISTS follows;
DROP TABLE IF EXISTS canvas_layers;
DROP TABLE IF EXISTS image_versions;
DROP TABLE IF EXISTS images;
DROP TABLE IF EXISTS users;
DROP FUNCTION IF EXISTS update_user_stats();
DROP FUNCTION IF EXISTS delete_search_index();
DROP FUNCTION IF EXISTS update_search_index();
DROP FUNCTION IF EXISTS set_updated_at();
