-- What operators look things up by: SQLite edition of
-- migrations/postgres/0005_operator.sql (same columns, constraints and
-- indexes, types translated as in 0001).

CREATE INDEX jobs_id_prefix_idx ON jobs (substr(id, 1, 8));
CREATE INDEX executions_id_prefix_idx ON executions (substr(id, 1, 8));
CREATE INDEX events_id_prefix_idx ON events (substr(id, 1, 8));

CREATE INDEX executions_drone_job_idx ON executions (drone_id, job_id);

-- SQLite adds no table constraint to an existing table; column constraints
-- may name other columns and hold the same conditions.
ALTER TABLE drones ADD COLUMN removed_at INTEGER;
ALTER TABLE drones ADD COLUMN removed_by TEXT
    CHECK ((removed_at IS NULL) = (removed_by IS NULL))
    CHECK (removed_at IS NULL OR NOT online);

ALTER TABLE rules ADD COLUMN source TEXT;
