-- Ultron8 hive state, initial schema: SQLite edition of
-- migrations/postgres/0001_initial.sql. Same tables, columns, constraints
-- and indexes; only the types are translated.
--
-- Tables are STRICT, so a column holds only its declared type, as in
-- Postgres: without it SQLite would store a text date in a time column and
-- that row would silently sort apart from the others.
--
--   TIMESTAMPTZ -> INTEGER microseconds since 1970-01-01 UTC. Postgres keeps
--                  microseconds too, integers sort and compare as times do,
--                  and every chrono time fits in 64 bits. To read one in the
--                  sqlite3 shell: datetime(at / 1000000, 'unixepoch').
--   JSONB       -> TEXT checked with json_valid (RFC 8259 JSON).
--   BYTEA       -> BLOB.
--   BOOLEAN     -> INTEGER 0 or 1.
--
-- TEXT compares with the BINARY collation (bytewise) by default, which for
-- lowercase uuid v7 ids is creation order: what Postgres's "C" collation on
-- audit_log.id gives.

CREATE TABLE join_tokens (
    id            TEXT PRIMARY KEY,
    -- Only the SHA-256 of the secret is stored: a database dump must not be
    -- enough to enroll a drone.
    secret_sha256 BLOB NOT NULL CHECK (length(secret_sha256) = 32),
    labels        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels) AND json_type(labels) = 'object'),
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    used_by       TEXT,
    CHECK ((used_at IS NULL) = (used_by IS NULL))
) STRICT;

CREATE TABLE drones (
    id                      TEXT PRIMARY KEY,
    -- NULL until the drone first registers.
    facts                   TEXT CHECK (json_valid(facts)),
    -- Labels granted by the join token of the latest enrollment.
    token_labels            TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(token_labels) AND json_type(token_labels) = 'object'),
    -- NULL until the first heartbeat.
    stats                   TEXT CHECK (json_valid(stats)),
    online                  INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
    enrolled_at             INTEGER NOT NULL,
    registered_at           INTEGER,
    last_seen_at            INTEGER,
    certificate_fingerprint TEXT NOT NULL,
    certificate_not_after   INTEGER NOT NULL,
    -- Not a foreign key: tokens are housekeeping and may be pruned, the
    -- drone must outlive them.
    token_id                TEXT NOT NULL,
    -- An online drone has been seen; the offline sweep relies on it.
    CHECK (NOT online OR last_seen_at IS NOT NULL)
) STRICT;

-- The offline sweep only looks at drones that are still online.
CREATE INDEX drones_online_last_seen_idx ON drones (last_seen_at) WHERE online;

CREATE TABLE jobs (
    id         TEXT PRIMARY KEY,
    target     TEXT NOT NULL,
    requester  TEXT NOT NULL,
    command    TEXT NOT NULL CHECK (json_valid(command)),
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX jobs_created_at_idx ON jobs (created_at DESC, id DESC);

CREATE TABLE executions (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL REFERENCES jobs (id),
    -- Not a foreign key to drones: the history of a job must survive the
    -- removal of a drone.
    drone_id         TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'requested' CHECK (status IN (
                         'requested', 'dispatched', 'running',
                         'succeeded', 'failed', 'timed_out', 'rejected',
                         'expired', 'lost', 'canceled')),
    -- Result columns: meaningful once the status is terminal.
    -- The range of Postgres's INTEGER, which the exit code is read back as.
    exit_code        INTEGER CHECK (exit_code BETWEEN -2147483648 AND 2147483647),
    stdout           BLOB NOT NULL DEFAULT x'',
    stderr           BLOB NOT NULL DEFAULT x'',
    stdout_truncated INTEGER NOT NULL DEFAULT 0 CHECK (stdout_truncated IN (0, 1)),
    stderr_truncated INTEGER NOT NULL DEFAULT 0 CHECK (stderr_truncated IN (0, 1)),
    duration_ms      INTEGER NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
    error            TEXT,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    dispatched_at    INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    -- One execution per drone and job; also serves "executions of a job,
    -- ordered by drone".
    UNIQUE (job_id, drone_id)
) STRICT;

-- Expiry sweep (status IN (requested, dispatched) AND expires_at < cutoff)
-- and the per-status counts for metrics.
CREATE INDEX executions_status_expires_idx ON executions (status, expires_at);
-- Re-dispatch of executions stuck in `requested`, oldest first.
CREATE INDEX executions_requested_created_idx ON executions (created_at, id)
    WHERE status = 'requested';

CREATE TABLE execution_output (
    execution_id TEXT NOT NULL REFERENCES executions (id),
    stream       TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    -- Byte offset of the chunk in its stream. The key makes a redelivered
    -- chunk a no-op.
    byte_offset  INTEGER NOT NULL CHECK (byte_offset >= 0),
    data         BLOB NOT NULL,
    PRIMARY KEY (execution_id, stream, byte_offset)
) STRICT;

CREATE TABLE audit_log (
    id           TEXT PRIMARY KEY,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    -- No foreign keys: the audit trail records what happened, even about
    -- objects that were never stored or are gone.
    job_id       TEXT,
    execution_id TEXT,
    drone_id     TEXT,
    status       TEXT CHECK (status IN (
                     'requested', 'dispatched', 'running',
                     'succeeded', 'failed', 'timed_out', 'rejected',
                     'expired', 'lost', 'canceled')),
    detail       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
) STRICT;

-- Listing is newest first by id; each filter gets an index that yields rows
-- in that order so a page is a short index scan.
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_job_idx ON audit_log (job_id, id) WHERE job_id IS NOT NULL;
CREATE INDEX audit_log_execution_idx ON audit_log (execution_id, id) WHERE execution_id IS NOT NULL;
CREATE INDEX audit_log_drone_idx ON audit_log (drone_id, id) WHERE drone_id IS NOT NULL;

-- The store has no method that changes an audit record, but the audit trail
-- must also hold against anyone with SQL access (a buggy migration, a manual
-- "fix" in the sqlite3 shell), so the database itself refuses.
--
-- SQLite has no TRUNCATE: `DELETE FROM audit_log` without a WHERE clause is
-- its equivalent, and it fires these triggers too (SQLite skips its
-- truncate shortcut on a table with triggers).
CREATE TRIGGER audit_log_no_update
    BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER audit_log_no_delete
    BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE is not allowed');
END;

-- `INSERT OR REPLACE` (and `REPLACE INTO`) deletes the row it collides with
-- without firing delete triggers unless the connection enabled
-- recursive_triggers, which a sqlite3 shell does not. So an insert that
-- would collide is refused before REPLACE gets the chance; a plain duplicate
-- fails here rather than on the primary key, failing either way.
CREATE TRIGGER audit_log_no_replace
    BEFORE INSERT ON audit_log
    WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: replacing a record is not allowed');
END;
