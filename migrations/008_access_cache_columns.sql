-- 008: every column the access cache holds is announced when it changes.
--
-- Each node caches the rows it reads to authenticate (server/auth/access-cache.ts): a user's
-- is_active, display_name and username; a participant row (permissions, cursor_color); a session's
-- is_active, expires_at and owner_id; a login session's expires_at. A cached row is dropped when the
-- access feed (migration 005's NOTIFY on `imageflow_access`) names it, so every column it holds must
-- notify. 005 notified is_active for users and permissions for participants; this adds the user's
-- display_name and username (shown to others as the awareness name) and the participant's
-- cursor_color. Presence bookkeeping (is_online, last_active_at, joined_at, left_at, last_login_at,
-- …) stays silent. The payloads are 005's: a renamed user is a `user` change.

-- Up Migration

DROP TRIGGER users_access_update ON users;
CREATE TRIGGER users_access_update
  AFTER UPDATE ON users
  FOR EACH ROW
  WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active
        OR OLD.display_name IS DISTINCT FROM NEW.display_name
        OR OLD.username IS DISTINCT FROM NEW.username
        OR OLD.user_id IS DISTINCT FROM NEW.user_id)
  EXECUTE FUNCTION notify_user_access();

DROP TRIGGER session_participants_access_update ON session_participants;
CREATE TRIGGER session_participants_access_update
  AFTER UPDATE ON session_participants
  FOR EACH ROW
  WHEN (OLD.permissions IS DISTINCT FROM NEW.permissions
        OR OLD.cursor_color IS DISTINCT FROM NEW.cursor_color
        OR OLD.session_id IS DISTINCT FROM NEW.session_id
        OR OLD.user_id IS DISTINCT FROM NEW.user_id)
  EXECUTE FUNCTION notify_participant_access();

-- Down Migration

DROP TRIGGER session_participants_access_update ON session_participants;
CREATE TRIGGER session_participants_access_update
  AFTER UPDATE ON session_participants
  FOR EACH ROW
  WHEN (OLD.permissions IS DISTINCT FROM NEW.permissions
        OR OLD.session_id IS DISTINCT FROM NEW.session_id
        OR OLD.user_id IS DISTINCT FROM NEW.user_id)
  EXECUTE FUNCTION notify_participant_access();

DROP TRIGGER users_access_update ON users;
CREATE TRIGGER users_access_update
  AFTER UPDATE ON users
  FOR EACH ROW
  WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active)
  EXECUTE FUNCTION notify_user_access();
