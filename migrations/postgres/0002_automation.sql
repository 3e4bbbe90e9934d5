-- Automation: packs of actions and rules, the events rules react to, and
-- what the policies of rule firings need to be decided across replicas.
--
-- Names and references that are listed in order (packs, actions, rules) or
-- compared with `<` (event paging) use the "C" collation, as audit_log.id
-- does, so every database orders them bytewise, as SQLite does.

-- --- jobs: why a job exists ------------------------------------------------
--
-- All NULL for an ad-hoc command. No foreign keys: a job's history must
-- survive the removal of its pack, rule or event.
ALTER TABLE jobs
    ADD COLUMN action_ref TEXT,
    ADD COLUMN rule       TEXT,
    ADD COLUMN event_id   TEXT,
    -- The rendered parameters, secrets already masked by the hive.
    ADD COLUMN parameters JSONB;

-- A rule's policy counts its unfinished jobs and the hosts its recent jobs
-- acted on.
CREATE INDEX jobs_rule_idx ON jobs (rule) WHERE rule IS NOT NULL;

-- --- audit_log: the chain from event to rule to action ------------------------
--
-- Adding columns rewrites no row and fires no row trigger; the append-only
-- triggers of 0001 keep refusing UPDATE, DELETE and TRUNCATE.
ALTER TABLE audit_log
    ADD COLUMN event_id   TEXT,
    ADD COLUMN rule       TEXT,
    ADD COLUMN action_ref TEXT;

-- As for the other filters: rows in listing order (newest id first).
CREATE INDEX audit_log_event_idx ON audit_log (event_id, id) WHERE event_id IS NOT NULL;
CREATE INDEX audit_log_rule_idx ON audit_log (rule, id) WHERE rule IS NOT NULL;
CREATE INDEX audit_log_action_ref_idx ON audit_log (action_ref, id) WHERE action_ref IS NOT NULL;

-- --- packs -------------------------------------------------------------------

-- The installed version of each pack.
CREATE TABLE packs (
    name         TEXT COLLATE "C" PRIMARY KEY,
    version      TEXT NOT NULL,
    description  TEXT NOT NULL,
    content      JSONB NOT NULL,
    installed_at TIMESTAMPTZ NOT NULL,
    installed_by TEXT NOT NULL
);

-- Every version that was installed and then replaced or removed, so what
-- ran on the fleet can always be looked up.
CREATE TABLE pack_history (
    -- Order of replacement: installs of one pack are serialised, so for a
    -- given name this is the order the versions were live in, whatever the
    -- replicas' clocks said.
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL,
    version       TEXT NOT NULL,
    description   TEXT NOT NULL,
    content       JSONB NOT NULL,
    installed_at  TIMESTAMPTZ NOT NULL,
    installed_by  TEXT NOT NULL,
    -- When the next version was installed, or the pack removed.
    superseded_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX pack_history_name_idx ON pack_history (name, seq);

-- Actions and rules belong to the installed version of their pack and are
-- replaced with it. A reference is `<pack>.<name>`; the CHECK keeps one pack
-- from writing into another's namespace.
CREATE TABLE actions (
    reference  TEXT COLLATE "C" PRIMARY KEY,
    pack       TEXT COLLATE "C" NOT NULL REFERENCES packs (name),
    definition JSONB NOT NULL,
    CHECK (starts_with(reference, pack || '.'))
);

CREATE INDEX actions_pack_idx ON actions (pack, reference);

CREATE TABLE rules (
    reference  TEXT COLLATE "C" PRIMARY KEY,
    pack       TEXT COLLATE "C" NOT NULL REFERENCES packs (name),
    trigger    TEXT NOT NULL,
    enabled    BOOLEAN NOT NULL,
    definition JSONB NOT NULL,
    CHECK (starts_with(reference, pack || '.'))
);

CREATE INDEX rules_pack_idx ON rules (pack);
-- The rules engine loads the rules of an event's trigger.
CREATE INDEX rules_trigger_idx ON rules (trigger, reference);

-- Scripts are content-addressed and never removed: a job that ran one can
-- always show what it ran, whatever became of its pack. The database checks
-- the address, so a script can never be stored under another's hash.
CREATE TABLE scripts (
    sha256  TEXT PRIMARY KEY CHECK (sha256 = encode(sha256(content), 'hex')),
    content BYTEA NOT NULL
);

-- --- events ------------------------------------------------------------------

CREATE TABLE events (
    -- uuid v7: bytewise order is arrival order.
    id            TEXT COLLATE "C" PRIMARY KEY,
    trigger       TEXT NOT NULL,
    payload       JSONB NOT NULL,
    source        TEXT NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'processed', 'failed')),
    -- The replica processing the event and until when; another may claim
    -- it once the lease has run out (its processor died).
    claimed_by    TEXT,
    claimed_until TIMESTAMPTZ,
    processed_at  TIMESTAMPTZ,
    error         TEXT,
    CHECK ((claimed_by IS NULL) = (claimed_until IS NULL)),
    CHECK ((state = 'pending') = (processed_at IS NULL)),
    CHECK ((state = 'failed') = (error IS NOT NULL))
);

-- Claiming: pending events, oldest first. Finished events leave the index,
-- so it stays as small as the backlog.
CREATE INDEX events_pending_idx ON events (id) WHERE state = 'pending';
CREATE INDEX events_trigger_idx ON events (trigger, id);
CREATE INDEX events_received_at_idx ON events (received_at);

-- --- rule firings ------------------------------------------------------------

-- When a rule last fired per rendered cooldown key. No foreign key to rules:
-- a cooldown must outlive a pack upgrade, which replaces the rule's row.
CREATE TABLE rule_cooldowns (
    rule          TEXT NOT NULL,
    key           TEXT NOT NULL,
    last_fired_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (rule, key)
);

-- A timer tick is fired by whichever replica inserts its row first.
CREATE TABLE timer_ticks (
    rule TEXT NOT NULL,
    tick TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (rule, tick)
);
