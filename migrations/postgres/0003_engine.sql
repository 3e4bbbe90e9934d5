-- The rules engine at scale: what an event's processing costs must not grow
-- with the rules that did not match nor with stored history.

-- --- one decision per (event, rule) --------------------------------------------
--
-- A rule fires (or is held) at most once per event. The row is written in
-- the firing's transaction and its primary key is the guarantee: a replica
-- that reclaims an event whose first processor died after firing finds the
-- row and skips the rule. (The audit trail used to be read for this; it is a
-- record of what happened, not control state.)
CREATE TABLE rule_decisions (
    event_id   TEXT COLLATE "C" NOT NULL,
    rule       TEXT COLLATE "C" NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('fired', 'held')),
    -- The job a firing created; NULL when held.
    job_id     TEXT,
    decided_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (event_id, rule),
    CHECK ((outcome = 'fired') = (job_id IS NOT NULL))
);

-- --- what a policy decision reads ------------------------------------------------
--
-- `max_concurrent` counts a rule's unfinished jobs. Driving that count from
-- the unfinished executions (a set as small as the work in flight) instead
-- of the rule's jobs (which grow forever) keeps it cheap whatever the
-- history holds.
CREATE INDEX executions_unfinished_job_idx ON executions (job_id)
    WHERE status IN ('requested', 'dispatched', 'running');
-- The blast-radius window reads a rule's jobs created since the window's
-- start: an index range, not the rule's whole history.
CREATE INDEX jobs_rule_created_idx ON jobs (rule, created_at) WHERE rule IS NOT NULL;
DROP INDEX jobs_rule_idx;

-- --- events ------------------------------------------------------------------------
--
-- The one record of an event's evaluation: the rules that matched it (a JSON
-- array of references). Misses write nothing; `ultronctl event get --explain`
-- evaluates the rules again to say why they missed.
ALTER TABLE events ADD COLUMN matched_rules JSONB;

-- --- the rule catalog's version ----------------------------------------------------
--
-- Each replica keeps the rules compiled in memory and reloads them when this
-- number moves. Every change to packs, actions or rules bumps it in the
-- same transaction, so a replica never runs a rule set older than the last
-- committed change once it has looked.
CREATE TABLE catalog_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO catalog_version (id, version) VALUES (1, 0);
