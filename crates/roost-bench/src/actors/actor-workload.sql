-- Mirrors shared/bench/actor-workload.sql (the shared reference workload): keep the statements identical.
-- Schema of the reference actor workload (see actor-workload.md).
BEGIN;
CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, status TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX tasks_status_idx ON tasks (status, updated_at);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE TABLE messages (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, body TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX messages_session_idx ON messages (session_id, id);
CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB, updated_at INTEGER NOT NULL);
CREATE INDEX kv_updated_idx ON kv (updated_at);
CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload TEXT, ts INTEGER NOT NULL);
CREATE INDEX events_kind_ts_idx ON events (kind, ts);
COMMIT;
