-- Events a sender may send again. Alertmanager retries a notification whole
-- until it is acknowledged, and repeats a firing alert's notification every
-- repeat_interval; each alert of it carries a key (the notification's group
-- key, the alert's fingerprint, its start and its status, hashed), and an
-- event whose key is stored already is not stored again. NULL for events no
-- one retries (webhooks, timers, operators): NULLs never conflict.
ALTER TABLE events ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX events_idempotency_key_idx ON events (idempotency_key);
