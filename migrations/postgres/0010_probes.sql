-- Probes of discovered targets (`sensors/*.yaml` with `kind: probe`).
--
-- A probe runs in rounds, at multiples of its interval since the epoch, so
-- every replica computes the same ticks; `probe_rounds` hands each tick to
-- one replica (one row per probe: the last tick claimed).
CREATE TABLE probe_rounds (
    probe     TEXT PRIMARY KEY,
    last_tick TIMESTAMPTZ NOT NULL
);

-- Where each probe stands on each target, with the run history its
-- thresholds judge (`tracker`, the core's health::Tracker as JSON), so the
-- counts survive a restart and a round run by another replica.
CREATE TABLE probe_states (
    probe        TEXT NOT NULL,
    target       TEXT NOT NULL,
    address      TEXT NOT NULL,
    state        TEXT NOT NULL,
    since        TIMESTAMPTZ,
    last_run     TIMESTAMPTZ NOT NULL,
    last_outcome TEXT NOT NULL,
    detail       TEXT NOT NULL,
    latency_us   BIGINT NOT NULL,
    tracker      JSONB NOT NULL,
    PRIMARY KEY (probe, target)
);
