-- Where each drone's checks stand: SQLite edition of
-- migrations/postgres/0008_checks.sql (same columns and constraints, types
-- translated as in 0001).
CREATE TABLE drone_checks (
    drone_id    TEXT NOT NULL REFERENCES drones (id) ON DELETE CASCADE,
    check_ref   TEXT NOT NULL,
    state       TEXT NOT NULL
        CHECK (state IN ('pending', 'healthy', 'failing', 'flapping', 'error')),
    since_ms    INTEGER NOT NULL,
    last_run_ms INTEGER NOT NULL,
    last_output TEXT NOT NULL,
    reported_at INTEGER NOT NULL,
    PRIMARY KEY (drone_id, check_ref)
) STRICT;
