-- The hive's named secrets (`ultronctl secret set`), read by `{{ secret.NAME }}`
-- in pack actions.
--
-- Values are sealed by the hive before they reach this table (XChaCha20-
-- Poly1305, the name as associated data) under a key kept outside the
-- database (`secrets.key` in the hive's data directory): a dump of the
-- database alone reveals names and dates, never a value, and a sealed value
-- moved to another name does not open. `key_id` names the key that sealed
-- it, so a hive holding another key says so instead of failing obscurely.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    ciphertext BYTEA NOT NULL,
    nonce      BYTEA NOT NULL CHECK (octet_length(nonce) = 24),
    key_id     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    updated_by TEXT NOT NULL
);
