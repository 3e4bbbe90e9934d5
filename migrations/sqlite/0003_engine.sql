-- The rules engine at scale: SQLite edition of
-- migrations/postgres/0003_engine.sql (same tables, columns, constraints and
-- indexes, types translated as in 0001).

CREATE TABLE rule_decisions (
    event_id   TEXT NOT NULL,
    rule       TEXT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('fired', 'held')),
    job_id     TEXT,
    decided_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, rule),
    CHECK ((outcome = 'fired') = (job_id IS NOT NULL))
) STRICT;

CREATE INDEX executions_unfinished_job_idx ON executions (job_id)
    WHERE status IN ('requested', 'dispatched', 'running');
CREATE INDEX jobs_rule_created_idx ON jobs (rule, created_at) WHERE rule IS NOT NULL;
DROP INDEX jobs_rule_idx;

ALTER TABLE events ADD COLUMN matched_rules TEXT CHECK (json_valid(matched_rules));

CREATE TABLE catalog_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
) STRICT;
INSERT INTO catalog_version (id, version) VALUES (1, 0);
