-- 010: who may see an image is announced when it changes, so nodes may cache it.
--
-- `GET /api/images/:id/file` decides who may read an image (server/http/images.ts) from the
-- image's row and, for 'followers' images, the viewer's follows; each node keeps the answers it
-- read (server/auth/access-cache.ts) — positive answers only, so a row that appears (an insert, a
-- new follow) has nothing to drop and announces nothing. Every way of losing sight of an image is
-- a change of an existing row, announced on the access channel of migration 005:
--   {"k":"image","i":<image_id>}        images: delete, and updates of the columns the file route
--                                       reads (owner, privacy, deletion, type, storage path,
--                                       variants, metadata)
--   {"k":"follow","u":<follower_id>}    follows: delete, or a change of either id
-- Bookkeeping updates (last_edited_at on every version saved, view_count, title, …) stay silent.

-- Up Migration

-- One function for both tables: TG_ARGV = the change's kind, its payload key, and the column of
-- the old row that names what changed.
CREATE FUNCTION notify_old_row_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('imageflow_access', json_build_object('k', TG_ARGV[0], TG_ARGV[1], to_jsonb(OLD) ->> TG_ARGV[2])::text);
  RETURN NULL;
END $$;

CREATE TRIGGER images_access_delete
  AFTER DELETE ON images
  FOR EACH ROW EXECUTE FUNCTION notify_old_row_access('image', 'i', 'image_id');
CREATE TRIGGER images_access_update
  AFTER UPDATE ON images
  FOR EACH ROW
  WHEN (OLD.image_id IS DISTINCT FROM NEW.image_id
        OR OLD.user_id IS DISTINCT FROM NEW.user_id
        OR OLD.privacy_level IS DISTINCT FROM NEW.privacy_level
        OR OLD.is_deleted IS DISTINCT FROM NEW.is_deleted
        OR OLD.mime_type IS DISTINCT FROM NEW.mime_type
        OR OLD.storage_path IS DISTINCT FROM NEW.storage_path
        OR OLD.thumbnail_paths IS DISTINCT FROM NEW.thumbnail_paths
        OR OLD.metadata IS DISTINCT FROM NEW.metadata)
  EXECUTE FUNCTION notify_old_row_access('image', 'i', 'image_id');

CREATE TRIGGER follows_access_delete
  AFTER DELETE ON follows
  FOR EACH ROW EXECUTE FUNCTION notify_old_row_access('follow', 'u', 'follower_id');
CREATE TRIGGER follows_access_update
  AFTER UPDATE ON follows
  FOR EACH ROW
  WHEN (OLD.follower_id IS DISTINCT FROM NEW.follower_id
        OR OLD.following_id IS DISTINCT FROM NEW.following_id)
  EXECUTE FUNCTION notify_old_row_access('follow', 'u', 'follower_id');

-- Down Migration

DROP TRIGGER follows_access_update ON follows;
DROP TRIGGER follows_access_delete ON follows;
DROP TRIGGER images_access_update ON images;
DROP TRIGGER images_access_delete ON images;
DROP FUNCTION notify_old_row_access();
