-- Credentials the hive issued and took back: join tokens bound to a drone
-- name, revoked certificates, and the operator certificates the hive issued.

-- --- join tokens bound to a name ---------------------------------------------------
--
-- A token may name the one drone that can join with it (`drone token create
-- --name`). Only a token made to replace a drone (`--replace`, which also
-- binds the name) lets a host take over a name that is in the fleet: any
-- other token joining as an enrolled drone is refused, so one leaked token
-- cannot impersonate the fleet.
ALTER TABLE join_tokens
    ADD COLUMN drone_id TEXT,
    ADD COLUMN replaces BOOLEAN NOT NULL DEFAULT false,
    ADD CONSTRAINT join_tokens_replaces_check CHECK (NOT replaces OR drone_id IS NOT NULL);

-- --- revoked certificates -----------------------------------------------------------
--
-- Certificates the hive refuses although its CA signed them and they have
-- not expired: a removed drone's, a replaced drone's previous one, a revoked
-- operator's. Refused at the TLS handshake and on every call of a
-- connection opened before. Rows are kept until the certificate expires
-- (`not_after`); after that TLS refuses it anyway.
CREATE TABLE revoked_certificates (
    fingerprint TEXT PRIMARY KEY,
    -- `drone:web-1`, `operator:alice`: whose it was, for listings.
    subject     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_at  TIMESTAMPTZ NOT NULL,
    revoked_by  TEXT NOT NULL,
    not_after   TIMESTAMPTZ
);
-- Replicas poll for what was revoked since their last look.
CREATE INDEX revoked_certificates_revoked_at_idx ON revoked_certificates (revoked_at);

-- --- operator certificates ------------------------------------------------------------
--
-- Every operator certificate the hive issued (`ultronctl operator create`)
-- or saw presented (those `ultron8-hive init` and `ultron8-hive operator
-- create` wrote offline), for `ultronctl operator list` and `revoke`.
CREATE TABLE operator_certificates (
    fingerprint  TEXT PRIMARY KEY CHECK (length(fingerprint) = 64),
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    not_after    TIMESTAMPTZ NOT NULL,
    -- NULL for a certificate issued offline and first seen by the hive.
    issued_by    TEXT,
    recorded_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX operator_certificates_name_idx ON operator_certificates (name);
