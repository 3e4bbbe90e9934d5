-- What operators look things up by: id prefixes, jobs by drone, removed
-- drones, and the text of each rule as its pack wrote it.

-- --- short ids ------------------------------------------------------------------
--
-- ultronctl takes any unique prefix of a job, execution or event id, and
-- shortens the ids it prints to the fewest characters (at least 8) that stay
-- unique, as git does. Both lookups compare the first 8 characters first
-- (`substr(id, 1, 8)`), which these indexes answer whatever the table's size
-- or collation; uuid v7 ids share those 8 characters only within about a
-- minute, so the rows compared further are few.
CREATE INDEX jobs_id_prefix_idx ON jobs (substr(id, 1, 8));
CREATE INDEX executions_id_prefix_idx ON executions (substr(id, 1, 8));
CREATE INDEX events_id_prefix_idx ON events (substr(id, 1, 8));

-- `ultronctl job list --drone D`: the jobs that ran on one drone.
CREATE INDEX executions_drone_job_idx ON executions (drone_id, job_id);

-- --- removed drones -------------------------------------------------------------
--
-- `ultronctl drone remove` keeps the row (executions and the audit trail name
-- the drone, and its history stays readable) but takes the drone out of the
-- fleet: listings and targets skip it, and its heartbeats and reports are
-- refused. Joining again with a fresh token clears both columns.
ALTER TABLE drones
    ADD COLUMN removed_at TIMESTAMPTZ,
    ADD COLUMN removed_by TEXT,
    ADD CONSTRAINT drones_removed_check CHECK ((removed_at IS NULL) = (removed_by IS NULL)),
    ADD CONSTRAINT drones_removed_offline_check CHECK (removed_at IS NULL OR NOT online);

-- --- rules as written ---------------------------------------------------------------
--
-- The rule's file as its pack holds it (`rules/<name>.yaml`), for
-- `ultronctl rule get`. NULL for rules installed before it was kept.
ALTER TABLE rules ADD COLUMN source TEXT;
