-- Probes: SQLite edition of migrations/postgres/0010_probes.sql (same
-- columns and constraints, types translated as in 0001).
CREATE TABLE probe_rounds (
    probe     TEXT PRIMARY KEY,
    last_tick INTEGER NOT NULL
) STRICT;

CREATE TABLE probe_states (
    probe        TEXT NOT NULL,
    target       TEXT NOT NULL,
    address      TEXT NOT NULL,
    state        TEXT NOT NULL,
    since        INTEGER,
    last_run     INTEGER NOT NULL,
    last_outcome TEXT NOT NULL,
    detail       TEXT NOT NULL,
    latency_us   INTEGER NOT NULL,
    tracker      TEXT NOT NULL CHECK (json_valid(tracker)),
    PRIMARY KEY (probe, target)
) STRICT;
