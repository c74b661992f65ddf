-- scripts/db-roles.sql: the seed design's database roles (section 7, "Database Users and
-- Permissions") as an optional deployment step. Not run by the migrations, not needed for `npm start`
-- or the tests: the server works as the tables' owner. Run it when the server should connect as a
-- role that is bound by the row-level policies of migrations/001_seed_schema.sql.
--
-- Run it with psql (it uses psql variables and meta-commands), as a role that may create roles,
-- after the migrations, on the application's database:
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 \
--     -v app_password="$IMAGEFLOW_APP_PASSWORD" \
--     -v readonly_password="$IMAGEFLOW_READONLY_PASSWORD" \
--     -f scripts/db-roles.sql
--
-- Passwords come only from those variables; none is kept in the repository. (The seed's
-- 'secure_password' / 'readonly_password' literals are gone.) psql quotes them (:'var'), so any
-- characters are safe. The server stores them hashed (password_encryption, scram-sha-256 by default),
-- but the statement text carries the clear password: keep log_statement off for this run, or pass a
-- pre-computed SCRAM verifier ('SCRAM-SHA-256$4096:...') as the variable instead.
--
-- Idempotent: an existing role gets its password reset, grants are re-applied. GRANT ... ON ALL
-- TABLES covers only the tables that exist now, so run it again after every migration that adds one.
--
-- The application role then sets the acting user per transaction, which the policies read through
-- current_user_id():   BEGIN; SET LOCAL app.current_user_id = '<users.user_id>'; ...; COMMIT;

\set ON_ERROR_STOP on

\if :{?app_password}
\else
  \echo 'scripts/db-roles.sql: missing -v app_password=... (see the header of this file)'
  DO $$ BEGIN RAISE EXCEPTION 'psql variable app_password is not set'; END $$;
\endif
\if :{?readonly_password}
\else
  \echo 'scripts/db-roles.sql: missing -v readonly_password=... (see the header of this file)'
  DO $$ BEGIN RAISE EXCEPTION 'psql variable readonly_password is not set'; END $$;
\endif

BEGIN;

SELECT
  NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'imageflow_app') AS app_role_missing,
  NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'imageflow_readonly') AS readonly_role_missing
\gset

-- Application user with limited permissions: not a superuser, not the tables' owner, so row-level
-- security applies to it.
\if :app_role_missing
  CREATE USER imageflow_app WITH PASSWORD :'app_password';
\else
  ALTER USER imageflow_app WITH LOGIN PASSWORD :'app_password';
\endif

-- Read-only user for analytics.
\if :readonly_role_missing
  CREATE USER imageflow_readonly WITH PASSWORD :'readonly_password';
\else
  ALTER USER imageflow_readonly WITH LOGIN PASSWORD :'readonly_password';
\endif

GRANT CONNECT ON DATABASE :"DBNAME" TO imageflow_app, imageflow_readonly;
GRANT USAGE ON SCHEMA public TO imageflow_app, imageflow_readonly;

-- ---- imageflow_app -------------------------------------------------------------------------
-- The seed's grants.
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO imageflow_app;
GRANT DELETE ON user_sessions, notifications TO imageflow_app;

-- Additions the seed's features need:
-- search_index.index_id is SERIAL: inserting (update_search_index, run as the writing role) needs
-- the sequence.
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO imageflow_app;
-- Compaction replaces log rows below a snapshot and drops the log of ended sessions.
GRANT DELETE ON document_updates, document_states TO imageflow_app;
-- The search triggers remove rows of soft- and hard-deleted images as the writing role.
GRANT DELETE ON search_index TO imageflow_app;
-- Removing a participant (DELETE /api/sessions/:id/participants/:userId), unfollowing, unliking
-- and untagging are deletes of link rows.
GRANT DELETE ON session_participants, follows, likes, image_tags TO imageflow_app;
-- The migration history belongs to the migration role.
REVOKE INSERT, UPDATE ON pgmigrations FROM imageflow_app;
-- Users and images are soft-deleted (is_active, is_deleted): no DELETE on them, as in the seed.
-- refresh_user_stats() is SECURITY DEFINER, so the app role may call it without owning user_stats.

-- ---- imageflow_readonly --------------------------------------------------------------------
GRANT SELECT ON ALL TABLES IN SCHEMA public TO imageflow_readonly;
-- Analytics has no use for credential hashes: every column of users and user_sessions except
-- those. (Column privileges, generated from the current columns so new ones are included.)
REVOKE SELECT ON users, user_sessions FROM imageflow_readonly;
SELECT format(
  'GRANT SELECT (%s) ON %I TO imageflow_readonly',
  string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position),
  table_name
)
FROM information_schema.columns
WHERE table_schema = 'public'
  AND table_name IN ('users', 'user_sessions')
  AND column_name NOT IN ('password_hash', 'refresh_token_hash')
GROUP BY table_name
\gexec
-- Row-level security applies to this role too: with no app.current_user_id it sees public images
-- only. If analytics must see every image, ALTER ROLE imageflow_readonly BYPASSRLS (superuser only).

COMMIT;
