-- 005: every change of who may do what in an edit session is announced to every node.
--
-- Several nodes share this database; a participant removed, demoted or promoted, a session ended,
-- expired early or re-owned, a user deactivated or a login session revoked must act on the open
-- connections of every node, not only the node whose HTTP API made the change. These triggers send
-- a NOTIFY on the channel `imageflow_access` for each such row change. NOTIFY is transactional (it
-- is delivered when the transaction commits, and not at all when it rolls back), and triggers see
-- every writer: the HTTP API of any node, a CLI, or a hand-written UPDATE in psql.
--
-- The payload is a small JSON object naming what changed; a node re-reads the access of exactly the
-- connections it names with the same rule as at connect (server/auth/access.ts), so the payload
-- carries no decision and a lost or duplicated notification is harmless (a node that lost its
-- listening connection re-checks all its connections when it reconnects; server/auth/access-watch.ts).
--   {"k":"participant","s":<session_id>,"u":<user_id>}   session_participants: invite, remove, permissions
--   {"k":"session","s":<session_id>}                     edit_sessions: is_active, expires_at, owner_id, delete
--   {"k":"user","u":<user_id>}                           users: is_active, delete
--   {"k":"login","l":<user_sessions.session_id>,"u":<user_id>}  user_sessions: expires_at, delete
-- Presence and version bookkeeping (is_online, last_active_at, head_version_id, …) update these
-- tables often; the WHEN clauses keep those updates silent.

-- Up Migration

CREATE FUNCTION notify_participant_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('imageflow_access', json_build_object('k', 'participant', 's', OLD.session_id, 'u', OLD.user_id)::text);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    PERFORM pg_notify('imageflow_access', json_build_object('k', 'participant', 's', NEW.session_id, 'u', NEW.user_id)::text);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER session_participants_access_insert_delete
  AFTER INSERT OR DELETE ON session_participants
  FOR EACH ROW EXECUTE FUNCTION notify_participant_access();
CREATE TRIGGER session_participants_access_update
  AFTER UPDATE ON session_participants
  FOR EACH ROW
  WHEN (OLD.permissions IS DISTINCT FROM NEW.permissions
        OR OLD.session_id IS DISTINCT FROM NEW.session_id
        OR OLD.user_id IS DISTINCT FROM NEW.user_id)
  EXECUTE FUNCTION notify_participant_access();

CREATE FUNCTION notify_session_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('imageflow_access', json_build_object('k', 'session', 's', OLD.session_id)::text);
  RETURN NULL;
END $$;

CREATE TRIGGER edit_sessions_access_delete
  AFTER DELETE ON edit_sessions
  FOR EACH ROW EXECUTE FUNCTION notify_session_access();
CREATE TRIGGER edit_sessions_access_update
  AFTER UPDATE ON edit_sessions
  FOR EACH ROW
  WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active
        OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
        OR OLD.owner_id IS DISTINCT FROM NEW.owner_id)
  EXECUTE FUNCTION notify_session_access();

CREATE FUNCTION notify_user_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('imageflow_access', json_build_object('k', 'user', 'u', OLD.user_id)::text);
  RETURN NULL;
END $$;

CREATE TRIGGER users_access_delete
  AFTER DELETE ON users
  FOR EACH ROW EXECUTE FUNCTION notify_user_access();
CREATE TRIGGER users_access_update
  AFTER UPDATE ON users
  FOR EACH ROW
  WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active)
  EXECUTE FUNCTION notify_user_access();

CREATE FUNCTION notify_login_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('imageflow_access', json_build_object('k', 'login', 'l', OLD.session_id, 'u', OLD.user_id)::text);
  RETURN NULL;
END $$;

CREATE TRIGGER user_sessions_access_delete
  AFTER DELETE ON user_sessions
  FOR EACH ROW EXECUTE FUNCTION notify_login_access();
CREATE TRIGGER user_sessions_access_update
  AFTER UPDATE ON user_sessions
  FOR EACH ROW
  WHEN (OLD.expires_at IS DISTINCT FROM NEW.expires_at
        OR OLD.user_id IS DISTINCT FROM NEW.user_id
        OR OLD.session_id IS DISTINCT FROM NEW.session_id)
  EXECUTE FUNCTION notify_login_access();

-- Down Migration

DROP TRIGGER user_sessions_access_update ON user_sessions;
DROP TRIGGER user_sessions_access_delete ON user_sessions;
DROP FUNCTION notify_login_access();
DROP TRIGGER users_access_update ON users;
DROP TRIGGER users_access_delete ON users;
DROP FUNCTION notify_user_access();
DROP TRIGGER edit_sessions_access_update ON edit_sessions;
DROP TRIGGER edit_sessions_access_delete ON edit_sessions;
DROP FUNCTION notify_session_access();
DROP TRIGGER session_participants_access_update ON session_participants;
DROP TRIGGER session_participants_access_insert_delete ON session_participants;
DROP FUNCTION notify_participant_access();
