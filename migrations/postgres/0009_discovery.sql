-- Discovery sources and the fleet inventory they feed (`ultronctl source`,
-- `ultronctl target list`, `ultronctl fleet ...`).
--
-- A source is refreshed by one replica at a time: the replica that claims
-- it takes a lease (`lease_holder`, `lease_until`) with a conditional
-- UPDATE, which only one of several concurrent claims can win, and gives it
-- back when it has stored the refresh. A replica that dies holding a lease
-- loses it when `lease_until` passes. `next_due_at` is when the source is
-- next refreshed.
CREATE TABLE discovery_sources (
    name            TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('static', 'file', 'http', 'drones')),
    -- core::discovery::SourceSpec as JSON (its `kind` is the column's).
    spec            JSONB NOT NULL,
    interval_ms     BIGINT NOT NULL CHECK (interval_ms > 0),
    -- `operator` for `ultronctl source add`, `pack:<name>` for a pack's.
    origin          TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    created_by      TEXT NOT NULL,
    next_due_at     TIMESTAMPTZ NOT NULL,
    lease_holder    TEXT,
    lease_until     TIMESTAMPTZ,
    last_refresh_at TIMESTAMPTZ,
    -- Why the last refresh failed as a whole (the source could not be
    -- listed); NULL after one that succeeded. Failures of single instances
    -- are on the instances.
    last_error      TEXT
);

-- The inventory: one row per instance a source listed at its last refresh.
CREATE TABLE fleet_targets (
    source     TEXT NOT NULL REFERENCES discovery_sources (name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    address    TEXT,
    service    TEXT NOT NULL,
    labels     JSONB NOT NULL,
    cpu        DOUBLE PRECISION,
    memory     DOUBLE PRECISION,
    status     TEXT NOT NULL CHECK (status IN ('healthy', 'unhealthy', 'unknown')),
    error      TEXT,
    last_seen  TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL,
    -- The last samples, oldest first: [[unix_ms, cpu, memory], ...].
    history    JSONB NOT NULL,
    PRIMARY KEY (source, name)
);
CREATE INDEX fleet_targets_service ON fleet_targets (service);
