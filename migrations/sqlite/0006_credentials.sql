-- Credentials the hive issued and took back: SQLite edition of
-- migrations/postgres/0006_credentials.sql (same columns, constraints and
-- indexes, types translated as in 0001).

ALTER TABLE join_tokens ADD COLUMN drone_id TEXT;
ALTER TABLE join_tokens ADD COLUMN replaces INTEGER NOT NULL DEFAULT 0
    CHECK (replaces IN (0, 1))
    CHECK (NOT replaces OR drone_id IS NOT NULL);

CREATE TABLE revoked_certificates (
    fingerprint TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_at  INTEGER NOT NULL,
    revoked_by  TEXT NOT NULL,
    not_after   INTEGER
);
CREATE INDEX revoked_certificates_revoked_at_idx ON revoked_certificates (revoked_at);

CREATE TABLE operator_certificates (
    fingerprint  TEXT PRIMARY KEY CHECK (length(fingerprint) = 64),
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    not_after    INTEGER NOT NULL,
    issued_by    TEXT,
    recorded_at  INTEGER NOT NULL
);
CREATE INDEX operator_certificates_name_idx ON operator_certificates (name);
