-- Automation: SQLite edition of migrations/postgres/0002_automation.sql.
-- Same tables, columns, constraints and indexes, types translated as in
-- 0001, with one exception: Postgres checks that a script's sha256 is the
-- hash of its content; SQLite has no SHA-256 function, so here only the
-- form of the hash is checked.

-- --- jobs: why a job exists ------------------------------------------------
--
-- All NULL for an ad-hoc command. No foreign keys: a job's history must
-- survive the removal of its pack, rule or event.
ALTER TABLE jobs ADD COLUMN action_ref TEXT;
ALTER TABLE jobs ADD COLUMN rule TEXT;
ALTER TABLE jobs ADD COLUMN event_id TEXT;
-- The rendered parameters, secrets already masked by the hive.
ALTER TABLE jobs ADD COLUMN parameters TEXT CHECK (json_valid(parameters));

-- A rule's policy counts its unfinished jobs and the hosts its recent jobs
-- acted on.
CREATE INDEX jobs_rule_idx ON jobs (rule) WHERE rule IS NOT NULL;

-- --- audit_log: the chain from event to rule to action ------------------------
--
-- ADD COLUMN only changes the table's definition: no row is updated, so the
-- append-only triggers of 0001 neither fire nor need changing.
ALTER TABLE audit_log ADD COLUMN event_id TEXT;
ALTER TABLE audit_log ADD COLUMN rule TEXT;
ALTER TABLE audit_log ADD COLUMN action_ref TEXT;

CREATE INDEX audit_log_event_idx ON audit_log (event_id, id) WHERE event_id IS NOT NULL;
CREATE INDEX audit_log_rule_idx ON audit_log (rule, id) WHERE rule IS NOT NULL;
CREATE INDEX audit_log_action_ref_idx ON audit_log (action_ref, id) WHERE action_ref IS NOT NULL;

-- --- packs -------------------------------------------------------------------

-- The installed version of each pack.
CREATE TABLE packs (
    name         TEXT PRIMARY KEY,
    version      TEXT NOT NULL,
    description  TEXT NOT NULL,
    content      TEXT NOT NULL CHECK (json_valid(content)),
    installed_at INTEGER NOT NULL,
    installed_by TEXT NOT NULL
) STRICT;

-- Every version that was installed and then replaced or removed.
CREATE TABLE pack_history (
    -- Order of replacement (rows are never deleted, so rowids only grow).
    seq           INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    description   TEXT NOT NULL,
    content       TEXT NOT NULL CHECK (json_valid(content)),
    installed_at  INTEGER NOT NULL,
    installed_by  TEXT NOT NULL,
    -- When the next version was installed, or the pack removed.
    superseded_at INTEGER NOT NULL
) STRICT;

CREATE INDEX pack_history_name_idx ON pack_history (name, seq);

-- A reference is `<pack>.<name>`; the CHECK keeps one pack from writing into
-- another's namespace.
CREATE TABLE actions (
    reference  TEXT PRIMARY KEY,
    pack       TEXT NOT NULL REFERENCES packs (name),
    definition TEXT NOT NULL CHECK (json_valid(definition)),
    CHECK (substr(reference, 1, length(pack) + 1) = pack || '.')
) STRICT;

CREATE INDEX actions_pack_idx ON actions (pack, reference);

CREATE TABLE rules (
    reference  TEXT PRIMARY KEY,
    pack       TEXT NOT NULL REFERENCES packs (name),
    trigger    TEXT NOT NULL,
    enabled    INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    definition TEXT NOT NULL CHECK (json_valid(definition)),
    CHECK (substr(reference, 1, length(pack) + 1) = pack || '.')
) STRICT;

CREATE INDEX rules_pack_idx ON rules (pack);
CREATE INDEX rules_trigger_idx ON rules (trigger, reference);

-- Content-addressed and never removed. Lowercase hex, as Postgres's
-- encode(sha256(content), 'hex') gives it.
CREATE TABLE scripts (
    sha256  TEXT PRIMARY KEY CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    content BLOB NOT NULL
) STRICT;

-- --- events ------------------------------------------------------------------

CREATE TABLE events (
    id            TEXT PRIMARY KEY,
    trigger       TEXT NOT NULL,
    payload       TEXT NOT NULL CHECK (json_valid(payload)),
    source        TEXT NOT NULL,
    received_at   INTEGER NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'processed', 'failed')),
    claimed_by    TEXT,
    claimed_until INTEGER,
    processed_at  INTEGER,
    error         TEXT,
    CHECK ((claimed_by IS NULL) = (claimed_until IS NULL)),
    CHECK ((state = 'pending') = (processed_at IS NULL)),
    CHECK ((state = 'failed') = (error IS NOT NULL))
) STRICT;

CREATE INDEX events_pending_idx ON events (id) WHERE state = 'pending';
CREATE INDEX events_trigger_idx ON events (trigger, id);
CREATE INDEX events_received_at_idx ON events (received_at);

-- --- rule firings ------------------------------------------------------------

-- No foreign key to rules: a cooldown must outlive a pack upgrade.
CREATE TABLE rule_cooldowns (
    rule          TEXT NOT NULL,
    key           TEXT NOT NULL,
    last_fired_at INTEGER NOT NULL,
    PRIMARY KEY (rule, key)
) STRICT;

CREATE TABLE timer_ticks (
    rule TEXT NOT NULL,
    tick INTEGER NOT NULL,
    PRIMARY KEY (rule, tick)
) STRICT;
