-- 010: who may see an image is announced when it changes, so nodes may cache it.
--
-- `GET /api/images/:id/file` decides who may read an image (server/http/images.ts) from the
-- image's row and, for 'followers' images, the viewer's follows; each node keeps the answers it
-- read (server/auth/access-cache.ts, positive answers only) and drops them when these triggers
-- name them on the access channel of migration 005:
--   {"k":"image","i":<image_id>}        images: insert, delete, and updates of the columns the file
--                                       route reads (owner, privacy, deletion, type, storage path,
--                                       variants, metadata)
--   {"k":"follow","u":<follower_id>}    follows: insert, delete, or a change of either id
-- Bookkeeping updates (last_edited_at on every version saved, view_count, title, …) stay silent.

-- Up Migration

CREATE FUNCTION notify_image_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('imageflow_access', json_build_object('k', 'image', 'i', OLD.image_id)::text);
  END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.image_id IS DISTINCT FROM OLD.image_id) THEN
    PERFORM pg_notify('imageflow_access', json_build_object('k', 'image', 'i', NEW.image_id)::text);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER images_access_insert_delete
  AFTER INSERT OR DELETE ON images
  FOR EACH ROW EXECUTE FUNCTION notify_image_access();
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
  EXECUTE FUNCTION notify_image_access();

CREATE FUNCTION notify_follow_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('imageflow_access', json_build_object('k', 'follow', 'u', OLD.follower_id)::text);
  END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.follower_id IS DISTINCT FROM OLD.follower_id) THEN
    PERFORM pg_notify('imageflow_access', json_build_object('k', 'follow', 'u', NEW.follower_id)::text);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER follows_access_insert_delete
  AFTER INSERT OR DELETE ON follows
  FOR EACH ROW EXECUTE FUNCTION notify_follow_access();
CREATE TRIGGER follows_access_update
  AFTER UPDATE ON follows
  FOR EACH ROW
  WHEN (OLD.follower_id IS DISTINCT FROM NEW.follower_id
        OR OLD.following_id IS DISTINCT FROM NEW.following_id)
  EXECUTE FUNCTION notify_follow_access();

-- Down Migration

DROP TRIGGER follows_access_update ON follows;
DROP TRIGGER follows_access_insert_delete ON follows;
DROP FUNCTION notify_follow_access();
DROP TRIGGER images_access_update ON images;
DROP TRIGGER images_access_insert_delete ON images;
DROP FUNCTION notify_image_access();
