-- Where each drone's checks stand (`ultronctl check list`): the latest
-- summary each drone sends with its heartbeat, one row per (drone, check),
-- replaced whole by the next summary. Transitions are events
-- (`drone.check`), not rows here; this table holds no history.
CREATE TABLE drone_checks (
    drone_id    TEXT NOT NULL REFERENCES drones (id) ON DELETE CASCADE,
    check_ref   TEXT NOT NULL,
    state       TEXT NOT NULL
        CHECK (state IN ('pending', 'healthy', 'failing', 'flapping', 'error')),
    -- Unix ms on the drone's clock; 0 when not known yet.
    since_ms    BIGINT NOT NULL,
    last_run_ms BIGINT NOT NULL,
    last_output TEXT NOT NULL,
    reported_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (drone_id, check_ref)
);
