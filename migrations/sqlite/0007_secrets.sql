-- The hive's named secrets: SQLite edition of
-- migrations/postgres/0007_secrets.sql (same columns and constraints, types
-- translated as in 0001).
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    ciphertext BLOB NOT NULL,
    nonce      BLOB NOT NULL CHECK (length(nonce) = 24),
    key_id     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
) STRICT;
