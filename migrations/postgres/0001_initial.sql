-- Ultron8 hive state, initial schema.
--
-- Identifiers are TEXT chosen by the hive (uuid v7 strings for jobs,
-- executions and audit records). Ids that are compared with `<` (audit
-- paging) use the "C" collation so they sort bytewise, which for lowercase
-- uuid v7 strings is creation order, whatever the database's locale.

CREATE TABLE join_tokens (
    id            TEXT PRIMARY KEY,
    -- Only the SHA-256 of the secret is stored: a database dump must not be
    -- enough to enroll a drone.
    secret_sha256 BYTEA NOT NULL CHECK (octet_length(secret_sha256) = 32),
    labels        JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
    created_by    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    used_at       TIMESTAMPTZ,
    used_by       TEXT,
    CHECK ((used_at IS NULL) = (used_by IS NULL))
);

CREATE TABLE drones (
    id                      TEXT PRIMARY KEY,
    -- NULL until the drone first registers.
    facts                   JSONB,
    -- Labels granted by the join token of the latest enrollment.
    token_labels            JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(token_labels) = 'object'),
    -- NULL until the first heartbeat.
    stats                   JSONB,
    online                  BOOLEAN NOT NULL DEFAULT false,
    enrolled_at             TIMESTAMPTZ NOT NULL,
    registered_at           TIMESTAMPTZ,
    last_seen_at            TIMESTAMPTZ,
    certificate_fingerprint TEXT NOT NULL,
    certificate_not_after   TIMESTAMPTZ NOT NULL,
    -- Not a foreign key: tokens are housekeeping and may be pruned, the
    -- drone must outlive them.
    token_id                TEXT NOT NULL,
    -- An online drone has been seen; the offline sweep relies on it.
    CHECK (NOT online OR last_seen_at IS NOT NULL)
);

-- The offline sweep only looks at drones that are still online.
CREATE INDEX drones_online_last_seen_idx ON drones (last_seen_at) WHERE online;

CREATE TABLE jobs (
    id         TEXT PRIMARY KEY,
    target     TEXT NOT NULL,
    requester  TEXT NOT NULL,
    command    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

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
    exit_code        INTEGER,
    stdout           BYTEA NOT NULL DEFAULT ''::bytea,
    stderr           BYTEA NOT NULL DEFAULT ''::bytea,
    stdout_truncated BOOLEAN NOT NULL DEFAULT false,
    stderr_truncated BOOLEAN NOT NULL DEFAULT false,
    duration_ms      BIGINT NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    dispatched_at    TIMESTAMPTZ,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    -- One execution per drone and job; also serves "executions of a job,
    -- ordered by drone".
    UNIQUE (job_id, drone_id)
);

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
    byte_offset  BIGINT NOT NULL CHECK (byte_offset >= 0),
    data         BYTEA NOT NULL,
    PRIMARY KEY (execution_id, stream, byte_offset)
);

CREATE TABLE audit_log (
    id           TEXT COLLATE "C" PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
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
    detail       JSONB NOT NULL DEFAULT '{}'::jsonb
);

-- Listing is newest first by id; each filter gets an index that yields rows
-- in that order so a page is a short index scan.
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_job_idx ON audit_log (job_id, id) WHERE job_id IS NOT NULL;
CREATE INDEX audit_log_execution_idx ON audit_log (execution_id, id) WHERE execution_id IS NOT NULL;
CREATE INDEX audit_log_drone_idx ON audit_log (drone_id, id) WHERE drone_id IS NOT NULL;

-- The store has no method that changes an audit record, but the audit trail
-- must also hold against anyone with SQL access (a buggy migration, a manual
-- "fix"), so the database itself refuses.
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit records can only be inserted';
END;
$$;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();

-- Row triggers do not fire on TRUNCATE.
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
