-- Discovery sources and the fleet inventory: SQLite edition of
-- migrations/postgres/0009_discovery.sql (same columns and constraints,
-- types translated as in 0001).
CREATE TABLE discovery_sources (
    name            TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('static', 'file', 'http', 'drones')),
    spec            TEXT NOT NULL CHECK (json_valid(spec)),
    interval_ms     INTEGER NOT NULL CHECK (interval_ms > 0),
    origin          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    next_due_at     INTEGER NOT NULL,
    lease_holder    TEXT,
    lease_until     INTEGER,
    last_refresh_at INTEGER,
    last_error      TEXT
) STRICT;

CREATE TABLE fleet_targets (
    source     TEXT NOT NULL REFERENCES discovery_sources (name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    address    TEXT,
    service    TEXT NOT NULL,
    labels     TEXT NOT NULL CHECK (json_valid(labels)),
    cpu        REAL,
    memory     REAL,
    status     TEXT NOT NULL CHECK (status IN ('healthy', 'unhealthy', 'unknown')),
    error      TEXT,
    last_seen  INTEGER,
    updated_at INTEGER NOT NULL,
    history    TEXT NOT NULL CHECK (json_valid(history)),
    PRIMARY KEY (source, name)
) STRICT;
CREATE INDEX fleet_targets_service ON fleet_targets (service);
