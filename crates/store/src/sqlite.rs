//! The embedded [`Store`]: the hive's state in one local SQLite file, for
//! the single-host default (`ultron8-hive dev`) where running Postgres would
//! be a chore.
//!
//! It mirrors [`crate::postgres`] method for method, and the conformance
//! suite in `tests/conformance.rs` runs against both. As there, queries are
//! checked at run time (`sqlx::query`), not compile time.
//!
//! # Write serialisation
//!
//! SQLite lets one connection write to a file at a time. Letting pooled
//! connections race for that lock would work badly: SQLite's busy handler
//! waits by sleeping and polling, with no fairness, and a transaction that
//! has read before it writes cannot wait at all (`SQLITE_BUSY_SNAPSHOT`).
//! So the store keeps two pools:
//!
//! - a writer pool of exactly one connection, through which every write
//!   goes. The hive's writes queue for it in order and each runs alone.
//!   Write transactions begin with `BEGIN IMMEDIATE`, which takes SQLite's
//!   write lock at `BEGIN`. Against the store's own writer that is
//!   redundant, but if another process writes to the file (the sqlite3
//!   shell, a backup tool), the store waits for it at `BEGIN`, up to the
//!   busy timeout, instead of failing halfway through.
//! - a pool of query-only reader connections. In WAL mode readers block
//!   neither the writer nor each other, and every statement sees the latest
//!   commit.
//!
//! That takes the place of Postgres's row locks. Consuming a join token is
//! one conditional `UPDATE ... RETURNING`. A transition reads the status,
//! checks it against [`ExecutionStatus::can_transition_to`] and writes, all
//! in one IMMEDIATE transaction, so no other write can land in between.
//! Likewise, claiming events is one `UPDATE ... RETURNING` (where Postgres
//! needs `FOR UPDATE SKIP LOCKED`), and a rule firing counts what its policy
//! needs and writes its outcome in one IMMEDIATE transaction (where Postgres
//! takes a per-rule advisory lock).
//! Outcomes are the same as with Postgres; the cost is that writes to
//! different rows do not run in parallel, which a single host's hive does
//! not need.
//!
//! The file must be on a local filesystem: WAL needs memory shared between
//! connections, which network filesystems do not provide.
//!
//! # Differences from Postgres
//!
//! - Text sorts bytewise (SQLite's BINARY collation). Postgres sorts
//!   `audit_log.id` bytewise too, but every other text column by the
//!   database's collation. So orderings by other text (drones by id, a job's
//!   executions by drone id, ties between jobs created in the same
//!   microsecond) match only if the Postgres database uses the C or C.UTF-8
//!   collation, or the ids are lowercase uuids, which sort alike under any
//!   of them.
//! - Postgres checks that a script is stored under the SHA-256 of its
//!   content; SQLite has no SHA-256 function and only checks that the hash
//!   is 64 lowercase hex digits.
//! - Postgres refuses a NUL character in text (and `\u0000` in JSON) with a
//!   database error; SQLite stores it.
//! - Postgres refuses times before 4714 BC ("timestamp out of range");
//!   SQLite stores them.
//! - Database failures are [`StoreError::Database`] in both, but carry
//!   SQLite result codes instead of SQLSTATEs. A duplicate audit id is
//!   refused by the append-only trigger, not reported as a unique violation.
//! - A write that waits for the writer connection longer than the acquire
//!   timeout (10 s, the same as Postgres's wait for a pooled connection)
//!   fails. Postgres would have run it in parallel, or waited on the row
//!   lock without a limit.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::types::{Json, JsonValue};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqliteExecutor, Transaction};
use ultron8_core::{DroneFacts, ExecutionStatus, HostStats};

use ultron8_core::policy::{self, Decision};

use crate::common::{
    ACTION_COLUMNS, AUDIT_COLUMNS, ActionRow, AuditRow, BUMP_CATALOG_VERSION, DRONE_COLUMNS,
    DroneRow, EVENT_COLUMNS, EXECUTION_COLUMNS, EventRow, ExecutionRow, HOSTS_OF_RULE_SINCE,
    JOB_COLUMNS, JobRow, PACK_COLUMNS, PackRow, PendingRow, RULE_COLUMNS, RUNNING_JOBS_OF_RULE,
    RuleRow, TransitionWrite, blast_window_start, counts_for_every_status, decision_outcome,
    effective_limit, event_state_name, expiry_audit, finished_state, fired_audit, fired_job,
    from_json, held_audit, lease_end, matched_rules_json, not_found, observation, output_chunk,
    output_offset, parse_status, status_counts_by_job, stream_name,
};
use crate::{
    ActionRecord, AuditFilter, AuditRecord, DroneEnrollment, DroneRecord, EventFilter,
    EventOutcome, EventRecord, ExecutionRecord, ExecutionUpdate, FiringOutcome, JobRecord,
    JobSummary, JoinTokenGrant, NewAuditRecord, NewEvent, NewExecution, NewJob, NewJoinToken,
    OutputChunkRecord, PackRecord, PendingDispatch, Result, RuleFiring, RuleRecord, ScriptRecord,
    Store, StoreError, TransitionOutcome,
};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Readers only contend for CPU and the page cache, so a handful covers the
/// hive's concurrent request handlers.
const MAX_READERS: u32 = 8;
/// A request waiting longer than this for a connection is better failed than
/// queued: a write backlog this long means the disk cannot keep up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long a statement waits for a lock another process holds on the file
/// (the store's own connections never wait on each other for one).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a transaction that holds SQLite's write lock from the start (see
/// the module docs).
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// [`Store`] on an SQLite file. Cheap to clone: clones share the pools.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: every write goes through it.
    writer: SqlitePool,
    /// Query-only connections, for everything else.
    readers: SqlitePool,
}

/// Opens the writer pool and migrates, retrying while another process is
/// doing the same to a new file: switching a fresh database to WAL takes an
/// exclusive lock, and SQLite reports that contention as "database is
/// locked" at once instead of waiting out the busy timeout.
async fn open_writer(options: SqliteConnectOptions) -> Result<SqlitePool> {
    let mut delay = std::time::Duration::from_millis(10);
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let attempt = async {
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options.clone())
                .await?;
            SqliteStore::migrate(&writer).await?;
            Ok::<_, StoreError>(writer)
        };
        match attempt.await {
            Ok(writer) => return Ok(writer),
            Err(e) if is_locked(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_millis(250));
            }
            Err(e) => return Err(e),
        }
    }
}

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6), also when wrapped by a migration.
fn is_locked(error: &StoreError) -> bool {
    let database_error = match error {
        StoreError::Database(sqlx::Error::Database(e)) => Some(e),
        StoreError::Migration(sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(e))) => {
            Some(e)
        }
        _ => None,
    };
    match database_error.and_then(|e| e.code()) {
        // Extended codes keep the primary code in the low byte.
        Some(code) => code
            .parse::<u32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
        None => error.to_string().contains("database is locked"),
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file if it is missing,
    /// and brings the schema up to date. The directory must exist.
    ///
    /// Safe to call from several processes at once: the migration runs
    /// under SQLite's write lock, so one opener applies it and the others
    /// wait, then find nothing to do.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // NORMAL is the usual choice with WAL, but may lose the last
            // commits on power loss; FULL makes a commit as durable as it is
            // in Postgres.
            .synchronous(SqliteSynchronous::Full);

        // Recycling connections only makes sense for a server that can fail
        // over; a local file has nothing to gain from it.
        let writer_options = options
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let writer = open_writer(writer_options).await?;

        // query_only makes a write that was sent to a reader by mistake fail
        // instead of racing the writer for the lock.
        let readers = SqlitePoolOptions::new()
            .max_connections(MAX_READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(IDLE_TIMEOUT)
            .max_lifetime(None)
            .connect_with(options.pragma("query_only", "ON"))
            .await?;
        Ok(SqliteStore { writer, readers })
    }

    /// A private, empty database that lives in memory until the store and
    /// all its clones are dropped; for tests.
    ///
    /// An in-memory database belongs to the one connection that opened it,
    /// so a single connection serves both reads and writes. It is never
    /// retired: a replacement would open a different, empty database.
    pub async fn open_in_memory() -> Result<SqliteStore> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                SqliteConnectOptions::new()
                    .in_memory(true)
                    .foreign_keys(true),
            )
            .await?;
        SqliteStore::migrate(&pool).await?;
        Ok(SqliteStore {
            writer: pool.clone(),
            readers: pool,
        })
    }

    /// Closes every connection, this store's and its clones'. Once the last
    /// one is closed, SQLite writes the WAL back into the database file and
    /// removes the `-wal` and `-shm` files, leaving one self-contained file
    /// to copy or back up.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    /// Applies pending migrations.
    ///
    /// sqlx's SQLite migrator takes no lock (its Postgres one holds an
    /// advisory lock). Two processes opening a new file at once would both
    /// apply the first migration, and one of them would fail. Running the
    /// whole migration in one IMMEDIATE transaction makes checking and
    /// applying exclusive: a second opener waits at `BEGIN` (busy timeout),
    /// then finds nothing to do. Each migration therefore runs inside a
    /// transaction, so it cannot use what SQLite forbids there
    /// (`PRAGMA foreign_keys = OFF` does nothing; use
    /// `PRAGMA defer_foreign_keys = ON` for table rebuilds).
    async fn migrate(writer: &SqlitePool) -> Result<()> {
        let mut tx = writer.begin_with(BEGIN_WRITE).await?;
        // `run_direct` rather than `run`: with a borrowed connection, the
        // `Acquire` bound on `run` makes every future awaiting it non-`Send`
        // ("implementation of `Acquire` is not general enough"), and `open`
        // must work in a spawned task. sqlx keeps `run_direct` public for
        // this reason.
        MIGRATOR.run_direct(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with(BEGIN_WRITE).await?)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        // Through a reader: a readiness probe should not queue behind writes.
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn create_join_token(&self, token: &NewJoinToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO join_tokens (id, secret_sha256, labels, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.id)
        .bind(&token.secret_sha256)
        .bind(Json(&token.labels))
        .bind(&token.created_by)
        .bind(micros(token.created_at))
        .bind(micros(token.expires_at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn consume_join_token(
        &self,
        token_id: &str,
        secret_sha256: &[u8],
        drone_id: &str,
        now: DateTime<Utc>,
    ) -> Result<JoinTokenGrant> {
        // One conditional UPDATE: it runs alone on the writer, so of two
        // concurrent consumers the second finds `used_at` set and matches
        // nothing. All reasons for refusal are reported alike so a caller
        // cannot probe which token ids exist.
        //
        // fetch_all, not fetch_optional: the autocommit transaction commits
        // when the statement runs to completion, and only then would a
        // failed commit be reported rather than lost in a statement reset.
        let labels: Vec<JsonValue> = sqlx::query_scalar(
            "UPDATE join_tokens SET used_at = $4, used_by = $3 \
             WHERE id = $1 AND secret_sha256 = $2 AND used_at IS NULL AND expires_at > $4 \
             RETURNING labels",
        )
        .bind(token_id)
        .bind(secret_sha256)
        .bind(drone_id)
        .bind(micros(now))
        .fetch_all(&self.writer)
        .await?;
        let labels = labels
            .into_iter()
            .next()
            .ok_or(StoreError::JoinTokenInvalid)?;
        Ok(JoinTokenGrant {
            labels: from_json(labels, "join_tokens.labels", token_id)?,
        })
    }

    async fn record_enrollment(&self, enrollment: &DroneEnrollment) -> Result<()> {
        // A re-enrollment replaces the credentials and the token's labels
        // (the new token is the operator's current word on them) but keeps
        // what the drone reported: facts and stats stay useful until it
        // registers again.
        sqlx::query(
            "INSERT INTO drones (id, token_labels, enrolled_at, certificate_fingerprint, \
                                 certificate_not_after, token_id) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET \
                 token_labels = excluded.token_labels, \
                 enrolled_at = excluded.enrolled_at, \
                 certificate_fingerprint = excluded.certificate_fingerprint, \
                 certificate_not_after = excluded.certificate_not_after, \
                 token_id = excluded.token_id",
        )
        .bind(&enrollment.drone_id)
        .bind(Json(&enrollment.labels))
        .bind(micros(enrollment.enrolled_at))
        .bind(&enrollment.certificate_fingerprint)
        .bind(micros(enrollment.certificate_not_after))
        .bind(&enrollment.token_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn record_registration(
        &self,
        drone_id: &str,
        facts: &DroneFacts,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE drones SET facts = $2, online = true, registered_at = $3, last_seen_at = $3 \
             WHERE id = $1",
        )
        .bind(drone_id)
        .bind(Json(facts))
        .bind(micros(now))
        .execute(&self.writer)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(not_found("drone", drone_id));
        }
        Ok(())
    }

    async fn record_heartbeat(
        &self,
        drone_id: &str,
        stats: &HostStats,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE drones SET stats = $2, online = true, last_seen_at = $3 WHERE id = $1",
        )
        .bind(drone_id)
        .bind(Json(stats))
        .bind(micros(now))
        .execute(&self.writer)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(not_found("drone", drone_id));
        }
        Ok(())
    }

    async fn mark_silent_drones_offline(&self, cutoff: DateTime<Utc>) -> Result<Vec<String>> {
        let mut ids: Vec<String> = sqlx::query_scalar(
            "UPDATE drones SET online = false WHERE online AND last_seen_at < $1 RETURNING id",
        )
        .bind(micros(cutoff))
        .fetch_all(&self.writer)
        .await?;
        // RETURNING has no ORDER BY; sort so callers log a stable list.
        ids.sort_unstable();
        Ok(ids)
    }

    async fn list_drones(&self) -> Result<Vec<DroneRecord>> {
        sqlx::query(&format!("SELECT {DRONE_COLUMNS} FROM drones ORDER BY id"))
            .fetch_all(&self.readers)
            .await?
            .iter()
            .map(|row| drone_row(row).and_then(DroneRecord::try_from))
            .collect()
    }

    async fn get_drone(&self, drone_id: &str) -> Result<Option<DroneRecord>> {
        sqlx::query(&format!("SELECT {DRONE_COLUMNS} FROM drones WHERE id = $1"))
            .bind(drone_id)
            .fetch_optional(&self.readers)
            .await?
            .map(|row| drone_row(&row).and_then(DroneRecord::try_from))
            .transpose()
    }

    async fn create_job(
        &self,
        job: &NewJob,
        executions: &[NewExecution],
        audit: &NewAuditRecord,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_job(&mut tx, job, executions).await?;
        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let Some(job) = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(job_id)
            .fetch_optional(&self.readers)
            .await?
        else {
            return Ok(None);
        };
        let job = job_row(&job)?;
        // No transaction needed: executions are committed with their job and
        // never deleted, so once the job is visible all of them are.
        let executions = sqlx::query(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE job_id = $1 ORDER BY drone_id, id"
        ))
        .bind(job_id)
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(|row| execution_row(row).and_then(ExecutionRecord::try_from))
        .collect::<Result<Vec<_>>>()?;
        job.into_record(executions).map(Some)
    }

    async fn list_jobs(&self, limit: u32) -> Result<Vec<JobSummary>> {
        let jobs = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(effective_limit(limit))
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(job_row)
        .collect::<Result<Vec<_>>>()?;
        let job_ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
        // json_each stands in for Postgres's `= ANY($1)`: one statement
        // however many jobs, and clear of SQLite's cap on bound parameters.
        let counts: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT job_id, status, count(*) FROM executions \
             WHERE job_id IN (SELECT value FROM json_each($1)) GROUP BY job_id, status",
        )
        .bind(Json(&job_ids))
        .fetch_all(&self.readers)
        .await?;

        let mut counts_by_job = status_counts_by_job(counts)?;
        jobs.into_iter()
            .map(|job| {
                let counts = counts_by_job.remove(&job.id).unwrap_or_default();
                job.into_summary(counts)
            })
            .collect()
    }

    async fn get_execution(&self, execution_id: &str) -> Result<Option<ExecutionRecord>> {
        sqlx::query(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"
        ))
        .bind(execution_id)
        .fetch_optional(&self.readers)
        .await?
        .map(|row| execution_row(&row).and_then(ExecutionRecord::try_from))
        .transpose()
    }

    async fn transition_execution(
        &self,
        execution_id: &str,
        update: &ExecutionUpdate,
        audit: Option<&NewAuditRecord>,
    ) -> Result<TransitionOutcome> {
        // The write lock, held from BEGIN, serialises concurrent reports for
        // one execution: each sees the status the previous one committed, so
        // at most one terminal report can ever apply.
        let mut tx = self.begin_write().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT status FROM executions WHERE id = $1")
                .bind(execution_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            tx.rollback().await?;
            return Ok(TransitionOutcome::NotFound);
        };
        let current = parse_status(&current, execution_id)?;
        if !current.can_transition_to(update.status) {
            // Explicitly, rather than on drop, so that a failure to release
            // the write lock is reported here instead of surfacing in
            // whichever write uses the connection next.
            tx.rollback().await?;
            return Ok(TransitionOutcome::Refused { current });
        }

        let write = TransitionWrite::new(update);
        let result = write.result;
        sqlx::query(
            "UPDATE executions SET \
                 status = $2, \
                 dispatched_at = COALESCE($3, dispatched_at), \
                 started_at = COALESCE($4, started_at), \
                 finished_at = COALESCE($5, finished_at), \
                 exit_code = CASE WHEN $6 THEN $7 ELSE exit_code END, \
                 stdout = CASE WHEN $6 THEN $8 ELSE stdout END, \
                 stderr = CASE WHEN $6 THEN $9 ELSE stderr END, \
                 stdout_truncated = CASE WHEN $6 THEN $10 ELSE stdout_truncated END, \
                 stderr_truncated = CASE WHEN $6 THEN $11 ELSE stderr_truncated END, \
                 duration_ms = CASE WHEN $6 THEN $12 ELSE duration_ms END, \
                 error = CASE WHEN $6 THEN $13 ELSE error END \
             WHERE id = $1",
        )
        .bind(execution_id)
        .bind(write.status.as_str())
        .bind(write.dispatched_at.map(micros))
        .bind(write.started_at.map(micros))
        .bind(write.finished_at.map(micros))
        .bind(result.is_some())
        .bind(result.and_then(|r| r.exit_code))
        .bind(result.map(|r| r.stdout.as_slice()).unwrap_or_default())
        .bind(result.map(|r| r.stderr.as_slice()).unwrap_or_default())
        .bind(result.is_some_and(|r| r.stdout_truncated))
        .bind(result.is_some_and(|r| r.stderr_truncated))
        .bind(write.duration_ms())
        .bind(result.and_then(|r| r.error.as_deref()))
        .execute(&mut *tx)
        .await?;

        if let Some(audit) = audit {
            insert_audit(&mut *tx, audit).await?;
        }
        tx.commit().await?;
        Ok(TransitionOutcome::Applied { previous: current })
    }

    async fn append_output(&self, chunk: &OutputChunkRecord) -> Result<()> {
        let offset = output_offset(chunk)?;
        // One statement on the writer: no transition can commit between its
        // status check and its insert, so no chunk is ever added to a
        // finished execution. (The WHERE clause is also what lets SQLite
        // parse the ON CONFLICT after a SELECT.)
        let inserted = sqlx::query(
            "INSERT INTO execution_output (execution_id, stream, byte_offset, data) \
             SELECT id, $2, $3, $4 FROM executions \
             WHERE id = $1 AND status IN ('requested', 'dispatched', 'running') \
             ON CONFLICT (execution_id, stream, byte_offset) DO NOTHING",
        )
        .bind(&chunk.execution_id)
        .bind(stream_name(chunk.stream))
        .bind(offset)
        .bind(&chunk.data)
        .execute(&self.writer)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Ignored (finished execution or duplicate chunk) unless the
            // execution does not exist at all, which is the sender's bug.
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM executions WHERE id = $1)")
                    .bind(&chunk.execution_id)
                    .fetch_one(&self.readers)
                    .await?;
            if !exists {
                return Err(not_found("execution", &chunk.execution_id));
            }
        }
        Ok(())
    }

    async fn execution_output(&self, execution_id: &str) -> Result<Vec<OutputChunkRecord>> {
        // Streams in declaration (fd) order, stdout first, not by name.
        let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT stream, byte_offset, data FROM execution_output \
             WHERE execution_id = $1 \
             ORDER BY CASE stream WHEN 'stdout' THEN 1 ELSE 2 END, byte_offset",
        )
        .bind(execution_id)
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .map(|(stream, offset, data)| output_chunk(execution_id, &stream, offset, data))
            .collect()
    }

    async fn executions_awaiting_dispatch(
        &self,
        created_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PendingDispatch>> {
        // `expires_at >= now` is the exact complement of the expiry sweep's
        // `expires_at < cutoff`: an execution is re-dispatched or expired,
        // never both.
        sqlx::query(
            "SELECT e.id AS execution_id, e.job_id, e.drone_id, j.requester, j.command, \
                    e.created_at, e.expires_at \
             FROM executions e JOIN jobs j ON j.id = e.job_id \
             WHERE e.status = 'requested' AND e.created_at < $1 AND e.expires_at >= $2 \
             ORDER BY e.created_at, e.id \
             LIMIT $3",
        )
        .bind(micros(created_before))
        .bind(micros(now))
        .bind(effective_limit(limit))
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(|row| pending_row(row).and_then(PendingDispatch::try_from))
        .collect()
    }

    async fn expire_overdue_executions(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<ExecutionRecord>> {
        // The write lock, held from BEGIN, keeps any transition from landing
        // between the UPDATE and the audit records; a second sweep waits,
        // then finds nothing due, so each execution gets one audit record.
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "UPDATE executions SET status = 'expired', finished_at = $1 \
             WHERE status IN ('requested', 'dispatched') AND expires_at < $1 \
             RETURNING {EXECUTION_COLUMNS}"
        ))
        .bind(micros(cutoff))
        .fetch_all(&mut *tx)
        .await?;
        let mut expired = rows
            .iter()
            .map(|row| execution_row(row).and_then(ExecutionRecord::try_from))
            .collect::<Result<Vec<_>>>()?;
        expired.sort_by(|a, b| a.id.cmp(&b.id));

        for execution in &expired {
            insert_audit(&mut *tx, &expiry_audit(execution, cutoff)).await?;
        }
        tx.commit().await?;
        Ok(expired)
    }

    async fn count_executions_by_status(&self) -> Result<Vec<(ExecutionStatus, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM executions GROUP BY status")
                .fetch_all(&self.readers)
                .await?;
        counts_for_every_status(rows)
    }

    async fn count_jobs(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&self.readers)
            .await?)
    }

    async fn append_audit(&self, record: &NewAuditRecord) -> Result<()> {
        insert_audit(&self.writer, record).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        // Only the filters given become predicates, so each query can use the
        // matching index rather than one plan full of `? IS NULL OR ...`.
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE true"
        ));
        if let Some(since) = filter.since {
            query.push(" AND at >= ").push_bind(micros(since));
        }
        if let Some(until) = filter.until {
            query.push(" AND at < ").push_bind(micros(until));
        }
        if let Some(actor) = &filter.actor {
            query.push(" AND actor = ").push_bind(actor);
        }
        if let Some(action) = &filter.action {
            query.push(" AND action = ").push_bind(action);
        }
        if let Some(job_id) = &filter.job_id {
            query.push(" AND job_id = ").push_bind(job_id);
        }
        if let Some(execution_id) = &filter.execution_id {
            query.push(" AND execution_id = ").push_bind(execution_id);
        }
        if let Some(drone_id) = &filter.drone_id {
            query.push(" AND drone_id = ").push_bind(drone_id);
        }
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(event_id) = &filter.event_id {
            query.push(" AND event_id = ").push_bind(event_id);
        }
        if let Some(rule) = &filter.rule {
            query.push(" AND rule = ").push_bind(rule);
        }
        if let Some(action_ref) = &filter.action_ref {
            query.push(" AND action_ref = ").push_bind(action_ref);
        }
        if let Some(before_id) = &filter.before_id {
            query.push(" AND id < ").push_bind(before_id);
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(effective_limit(filter.limit));

        query
            .build()
            .fetch_all(&self.readers)
            .await?
            .iter()
            .map(|row| audit_row(row).and_then(AuditRecord::try_from))
            .collect()
    }

    async fn install_pack(
        &self,
        pack: &PackRecord,
        actions: &[ActionRecord],
        rules: &[RuleRecord],
        scripts: &[ScriptRecord],
        audit: &NewAuditRecord,
    ) -> Result<Option<String>> {
        // The write lock, held from BEGIN, makes the install one step for
        // every other writer: no one sees the pack half replaced, and two
        // installs of one pack run one after the other.
        let mut tx = self.begin_write().await?;
        let previous = retire_pack(&mut tx, &pack.name, pack.installed_at).await?;
        sqlx::query(&format!(
            "INSERT INTO packs ({PACK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET \
                 version = excluded.version, \
                 description = excluded.description, \
                 content = excluded.content, \
                 installed_at = excluded.installed_at, \
                 installed_by = excluded.installed_by"
        ))
        .bind(&pack.name)
        .bind(&pack.version)
        .bind(&pack.description)
        .bind(Json(&pack.content))
        .bind(micros(pack.installed_at))
        .bind(&pack.installed_by)
        .execute(&mut *tx)
        .await?;
        delete_pack_members(&mut tx, &pack.name).await?;

        // The members are bound under the installed pack's name, not their
        // own `pack` field: they belong to this pack by being installed with
        // it, and the schema's reference CHECK refuses one that names
        // another pack.
        for action in actions {
            sqlx::query("INSERT INTO actions (reference, pack, definition) VALUES ($1, $2, $3)")
                .bind(&action.reference)
                .bind(&pack.name)
                .bind(Json(&action.definition))
                .execute(&mut *tx)
                .await?;
        }
        for rule in rules {
            sqlx::query(
                "INSERT INTO rules (reference, pack, trigger, enabled, definition) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&rule.reference)
            .bind(&pack.name)
            .bind(&rule.trigger)
            .bind(rule.enabled)
            .bind(Json(&rule.definition))
            .execute(&mut *tx)
            .await?;
        }
        // A script already stored under this hash is kept: content-addressed,
        // it is the same script.
        for script in scripts {
            sqlx::query(
                "INSERT INTO scripts (sha256, content) VALUES ($1, $2) \
                 ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(&script.sha256)
            .bind(&script.content)
            .execute(&mut *tx)
            .await?;
        }

        // Replicas holding compiled rules reload them when this moves.
        sqlx::query(BUMP_CATALOG_VERSION).execute(&mut *tx).await?;
        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(previous)
    }

    async fn remove_pack(&self, name: &str, audit: &NewAuditRecord) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        if retire_pack(&mut tx, name, audit.at).await?.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        delete_pack_members(&mut tx, name).await?;
        sqlx::query("DELETE FROM packs WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        // Replicas holding compiled rules reload them when this moves.
        sqlx::query(BUMP_CATALOG_VERSION).execute(&mut *tx).await?;
        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_pack(&self, name: &str) -> Result<Option<PackRecord>> {
        sqlx::query(&format!("SELECT {PACK_COLUMNS} FROM packs WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.readers)
            .await?
            .map(|row| pack_row(&row).map(PackRecord::from))
            .transpose()
    }

    async fn list_packs(&self) -> Result<Vec<PackRecord>> {
        sqlx::query(&format!("SELECT {PACK_COLUMNS} FROM packs ORDER BY name"))
            .fetch_all(&self.readers)
            .await?
            .iter()
            .map(|row| pack_row(row).map(PackRecord::from))
            .collect()
    }

    async fn pack_history(&self, name: &str) -> Result<Vec<PackRecord>> {
        sqlx::query(&format!(
            "SELECT {PACK_COLUMNS} FROM pack_history WHERE name = $1 ORDER BY seq DESC"
        ))
        .bind(name)
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(|row| pack_row(row).map(PackRecord::from))
        .collect()
    }

    async fn get_action(&self, reference: &str) -> Result<Option<ActionRecord>> {
        sqlx::query(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE reference = $1"
        ))
        .bind(reference)
        .fetch_optional(&self.readers)
        .await?
        .map(|row| action_row(&row).map(ActionRecord::from))
        .transpose()
    }

    async fn list_actions(&self, pack: Option<&str>) -> Result<Vec<ActionRecord>> {
        sqlx::query(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions \
             WHERE $1 IS NULL OR pack = $1 ORDER BY reference"
        ))
        .bind(pack)
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(|row| action_row(row).map(ActionRecord::from))
        .collect()
    }

    async fn get_rule(&self, reference: &str) -> Result<Option<RuleRecord>> {
        sqlx::query(&format!(
            "SELECT {RULE_COLUMNS} FROM rules WHERE reference = $1"
        ))
        .bind(reference)
        .fetch_optional(&self.readers)
        .await?
        .map(|row| rule_row(&row).map(RuleRecord::from))
        .transpose()
    }

    async fn list_rules(&self, trigger: Option<&str>) -> Result<Vec<RuleRecord>> {
        sqlx::query(&format!(
            "SELECT {RULE_COLUMNS} FROM rules \
             WHERE $1 IS NULL OR trigger = $1 ORDER BY reference"
        ))
        .bind(trigger)
        .fetch_all(&self.readers)
        .await?
        .iter()
        .map(|row| rule_row(row).map(RuleRecord::from))
        .collect()
    }

    async fn set_rule_enabled(
        &self,
        reference: &str,
        enabled: bool,
        audit: &NewAuditRecord,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE rules SET enabled = $2 WHERE reference = $1")
            .bind(reference)
            .bind(enabled)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        // Replicas holding compiled rules reload them when this moves.
        sqlx::query(BUMP_CATALOG_VERSION).execute(&mut *tx).await?;
        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_script(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT content FROM scripts WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.readers)
                .await?,
        )
    }

    async fn record_event(&self, event: &NewEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (id, trigger, payload, source, received_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&event.id)
        .bind(&event.trigger)
        .bind(Json(&event.payload))
        .bind(&event.source)
        .bind(micros(event.received_at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn claim_pending_events(
        &self,
        claimer: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>> {
        // One statement on the writer: choosing the events and taking their
        // lease cannot be split by another claimer, which then finds them
        // leased. fetch_all so a failed commit is reported (see
        // consume_join_token).
        let rows = sqlx::query(&format!(
            "UPDATE events SET claimed_by = $1, claimed_until = $2 \
             WHERE id IN (SELECT id FROM events \
                          WHERE state = 'pending' \
                            AND (claimed_until IS NULL OR claimed_until < $3) \
                          ORDER BY id LIMIT $4) \
             RETURNING {EVENT_COLUMNS}"
        ))
        .bind(claimer)
        .bind(micros(lease_end(now, lease)))
        .bind(micros(now))
        .bind(effective_limit(limit))
        .fetch_all(&self.writer)
        .await?;
        let mut events = rows
            .iter()
            .map(|row| event_row(row).and_then(EventRecord::try_from))
            .collect::<Result<Vec<_>>>()?;
        // RETURNING has no ORDER BY.
        events.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(events)
    }

    async fn finish_events(&self, outcomes: &[EventOutcome], now: DateTime<Utc>) -> Result<u64> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        // One transaction for the batch; each statement is the writer's
        // alone, so nothing else lands in between.
        let mut tx = self.begin_write().await?;
        let mut updated = 0;
        for outcome in outcomes {
            // Only a pending event is finished: if its lease ran out and a
            // second processor got to it too, the first outcome stays.
            updated += sqlx::query(
                "UPDATE events SET state = $2, error = $3, processed_at = $4, matched_rules = $5 \
                 WHERE id = $1 AND state = 'pending'",
            )
            .bind(&outcome.id)
            .bind(event_state_name(finished_state(outcome)))
            .bind(&outcome.error)
            .bind(micros(now))
            .bind(matched_rules_json(outcome))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(updated)
    }

    async fn get_event(&self, id: &str) -> Result<Option<EventRecord>> {
        sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.readers)
            .await?
            .map(|row| event_row(&row).and_then(EventRecord::try_from))
            .transpose()
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>> {
        let mut query =
            QueryBuilder::<Sqlite>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE true"));
        if let Some(trigger) = &filter.trigger {
            query.push(" AND trigger = ").push_bind(trigger);
        }
        if let Some(since) = filter.since {
            query.push(" AND received_at >= ").push_bind(micros(since));
        }
        if let Some(state) = filter.state {
            query
                .push(" AND state = ")
                .push_bind(event_state_name(state));
        }
        if let Some(before_id) = &filter.before_id {
            query.push(" AND id < ").push_bind(before_id);
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(effective_limit(filter.limit));
        query
            .build()
            .fetch_all(&self.readers)
            .await?
            .iter()
            .map(|row| event_row(row).and_then(EventRecord::try_from))
            .collect()
    }

    async fn fire_rules(
        &self,
        firings: &[RuleFiring],
        now: DateTime<Utc>,
    ) -> Result<Vec<FiringOutcome>> {
        if firings.is_empty() {
            return Ok(Vec::new());
        }
        // The write lock, held from BEGIN, serialises every firing (of any
        // rule) until commit, so the counts each firing reads include all
        // that earlier firings wrote: two firings can never both see room
        // for one more job. Postgres needs per-rule locks for the same
        // guarantee.
        let mut tx = self.begin_write().await?;
        let mut outcomes = Vec::with_capacity(firings.len());
        for firing in firings {
            outcomes.push(fire_one(&mut tx, firing, now).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn catalog_version(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT version FROM catalog_version WHERE id = 1")
                .fetch_one(&self.readers)
                .await?,
        )
    }

    async fn claim_timer_tick(&self, rule: &str, tick: DateTime<Utc>) -> Result<bool> {
        // The primary key decides; the writer runs the inserts one at a
        // time, so exactly the first one inserts.
        let inserted = sqlx::query(
            "INSERT INTO timer_ticks (rule, tick) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(rule)
        .bind(micros(tick))
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}

/// Decides one firing inside the batch's write transaction.
async fn fire_one(
    conn: &mut SqliteConnection,
    firing: &RuleFiring,
    now: DateTime<Utc>,
) -> Result<FiringOutcome> {
    let decided: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM rule_decisions WHERE event_id = $1 AND rule = $2)",
    )
    .bind(&firing.event_id)
    .bind(&firing.rule)
    .fetch_one(&mut *conn)
    .await?;
    if decided {
        return Ok(FiringOutcome::AlreadyDecided);
    }
    let last_fired_for_key = match &firing.cooldown_key {
        Some(key) => {
            let last: Option<i64> = sqlx::query_scalar(
                "SELECT last_fired_at FROM rule_cooldowns WHERE rule = $1 AND key = $2",
            )
            .bind(&firing.rule)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
            last.map(|micros| from_micros(micros, "rule_cooldowns.last_fired_at"))
                .transpose()?
        }
        None => None,
    };
    // Counted only where the policy looks at it: a rule without a
    // concurrency limit may have thousands of jobs in flight, and counting
    // them on every firing would make a burst cost quadratic.
    let running_jobs: i64 = if firing.policy.max_concurrent.is_some() {
        sqlx::query_scalar(RUNNING_JOBS_OF_RULE)
            .bind(&firing.rule)
            .fetch_one(&mut *conn)
            .await?
    } else {
        0
    };
    let hosts_in_window: Vec<String> = match blast_window_start(firing, now) {
        Some(start) => {
            sqlx::query_scalar(HOSTS_OF_RULE_SINCE)
                .bind(&firing.rule)
                .bind(micros(start))
                .fetch_all(&mut *conn)
                .await?
        }
        None => Vec::new(),
    };

    let observation = observation(firing, last_fired_for_key, running_jobs, &hosts_in_window);
    let (outcome, job_id) = match policy::decide(&firing.policy, &observation, now) {
        Decision::Allow => {
            let job = fired_job(firing);
            insert_job(&mut *conn, &job, &firing.executions).await?;
            if let Some(key) = &firing.cooldown_key {
                // max(): a clock that lags must not move a cooldown back and
                // so shorten it.
                sqlx::query(
                    "INSERT INTO rule_cooldowns (rule, key, last_fired_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (rule, key) DO UPDATE SET \
                         last_fired_at = max(rule_cooldowns.last_fired_at, \
                                             excluded.last_fired_at)",
                )
                .bind(&firing.rule)
                .bind(key)
                .bind(micros(now))
                .execute(&mut *conn)
                .await?;
            }
            insert_audit(&mut *conn, &fired_audit(firing, &job, &observation, now)).await?;
            (FiringOutcome::Fired, Some(job.id))
        }
        Decision::Hold { reason } => {
            insert_audit(&mut *conn, &held_audit(firing, &observation, &reason, now)).await?;
            (FiringOutcome::Held { reason }, None)
        }
    };
    sqlx::query(
        "INSERT INTO rule_decisions (event_id, rule, outcome, job_id, decided_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&firing.event_id)
    .bind(&firing.rule)
    .bind(decision_outcome(job_id.as_deref()))
    .bind(job_id)
    .bind(micros(now))
    .execute(&mut *conn)
    .await?;
    Ok(outcome)
}

/// Copies the installed version of the pack to its history, superseded at
/// `at`; returns its version, or None if the pack is not installed.
async fn retire_pack(
    conn: &mut SqliteConnection,
    name: &str,
    at: DateTime<Utc>,
) -> Result<Option<String>> {
    // fetch_all: RETURNING rows come back as the statement runs, and a
    // statement left unfinished would not have done all its work.
    let versions: Vec<String> = sqlx::query_scalar(
        "INSERT INTO pack_history (name, version, description, content, installed_at, \
                                   installed_by, superseded_at) \
         SELECT name, version, description, content, installed_at, installed_by, $2 \
         FROM packs WHERE name = $1 \
         RETURNING version",
    )
    .bind(name)
    .bind(micros(at))
    .fetch_all(conn)
    .await?;
    Ok(versions.into_iter().next())
}

async fn delete_pack_members(conn: &mut SqliteConnection, name: &str) -> Result<()> {
    sqlx::query("DELETE FROM actions WHERE pack = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM rules WHERE pack = $1")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// The job and its executions (status `requested`), as `create_job` and an
/// allowed rule firing write them.
async fn insert_job(
    conn: &mut SqliteConnection,
    job: &NewJob,
    executions: &[NewExecution],
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&job.id)
    .bind(&job.target)
    .bind(&job.requester)
    .bind(Json(&job.command))
    .bind(micros(job.created_at))
    .bind(&job.origin.action_ref)
    .bind(&job.origin.rule)
    .bind(&job.origin.event_id)
    .bind(job.origin.parameters.as_ref().map(Json))
    .execute(&mut *conn)
    .await?;

    // A statement per execution: SQLite runs in-process, so batching would
    // save no network round trips, and the statement is prepared once and
    // cached.
    for execution in executions {
        sqlx::query(
            "INSERT INTO executions (id, job_id, drone_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&execution.id)
        .bind(&execution.job_id)
        .bind(&execution.drone_id)
        .bind(micros(execution.created_at))
        .bind(micros(execution.expires_at))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn insert_audit<'e>(
    executor: impl SqliteExecutor<'e>,
    record: &NewAuditRecord,
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO audit_log ({AUDIT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    ))
    .bind(&record.id)
    .bind(micros(record.at))
    .bind(&record.actor)
    .bind(&record.action)
    .bind(&record.job_id)
    .bind(&record.execution_id)
    .bind(&record.drone_id)
    .bind(record.status.map(ExecutionStatus::as_str))
    .bind(Json(&record.detail))
    .bind(&record.event_id)
    .bind(&record.rule)
    .bind(&record.action_ref)
    .execute(executor)
    .await?;
    Ok(())
}

// --- times ----------------------------------------------------------------------

/// Postgres's epoch, 2000-01-01T00:00:00Z, in microseconds since the unix
/// epoch.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// `at` as stored: microseconds since the unix epoch.
///
/// Postgres keeps microseconds, and sqlx drops the rest by truncating toward
/// Postgres's epoch, 2000-01-01. Doing the same (rather than always
/// flooring, which differs before 2000) makes both stores keep the same
/// instant for any input, so the same comparisons hold.
fn micros(at: DateTime<Utc>) -> i64 {
    // Cannot overflow: chrono's range is about ±262,000 years, i64
    // microseconds about ±292,000.
    let floored = at.timestamp() * 1_000_000 + i64::from(at.timestamp_subsec_micros());
    let dropped_nanos = !at.timestamp_subsec_nanos().is_multiple_of(1_000);
    if floored < POSTGRES_EPOCH_MICROS && dropped_nanos {
        floored + 1
    } else {
        floored
    }
}

fn from_micros(micros: i64, column: &str) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "{column}: {micros} microseconds is out of the representable range"
        ))
    })
}

fn time(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>> {
    from_micros(row.try_get(column)?, column)
}

fn optional_time(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>> {
    row.try_get::<Option<i64>, _>(column)?
        .map(|micros| from_micros(micros, column))
        .transpose()
}

// --- rows -----------------------------------------------------------------------
//
// sqlx would decode an INTEGER as unix seconds into a DateTime, so the shared
// rows are built by hand here rather than with their FromRow derive.

fn drone_row(row: &SqliteRow) -> Result<DroneRow> {
    Ok(DroneRow {
        id: row.try_get("id")?,
        facts: row.try_get("facts")?,
        token_labels: row.try_get("token_labels")?,
        stats: row.try_get("stats")?,
        online: row.try_get("online")?,
        enrolled_at: time(row, "enrolled_at")?,
        registered_at: optional_time(row, "registered_at")?,
        last_seen_at: optional_time(row, "last_seen_at")?,
        certificate_fingerprint: row.try_get("certificate_fingerprint")?,
    })
}

fn job_row(row: &SqliteRow) -> Result<JobRow> {
    Ok(JobRow {
        id: row.try_get("id")?,
        target: row.try_get("target")?,
        requester: row.try_get("requester")?,
        command: row.try_get("command")?,
        created_at: time(row, "created_at")?,
        action_ref: row.try_get("action_ref")?,
        rule: row.try_get("rule")?,
        event_id: row.try_get("event_id")?,
        parameters: row.try_get("parameters")?,
    })
}

fn execution_row(row: &SqliteRow) -> Result<ExecutionRow> {
    Ok(ExecutionRow {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        drone_id: row.try_get("drone_id")?,
        status: row.try_get("status")?,
        exit_code: row.try_get("exit_code")?,
        stdout: row.try_get("stdout")?,
        stderr: row.try_get("stderr")?,
        stdout_truncated: row.try_get("stdout_truncated")?,
        stderr_truncated: row.try_get("stderr_truncated")?,
        duration_ms: row.try_get("duration_ms")?,
        error: row.try_get("error")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
        dispatched_at: optional_time(row, "dispatched_at")?,
        started_at: optional_time(row, "started_at")?,
        finished_at: optional_time(row, "finished_at")?,
    })
}

fn pending_row(row: &SqliteRow) -> Result<PendingRow> {
    Ok(PendingRow {
        execution_id: row.try_get("execution_id")?,
        job_id: row.try_get("job_id")?,
        drone_id: row.try_get("drone_id")?,
        requester: row.try_get("requester")?,
        command: row.try_get("command")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
    })
}

fn audit_row(row: &SqliteRow) -> Result<AuditRow> {
    Ok(AuditRow {
        id: row.try_get("id")?,
        at: time(row, "at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        job_id: row.try_get("job_id")?,
        execution_id: row.try_get("execution_id")?,
        drone_id: row.try_get("drone_id")?,
        status: row.try_get("status")?,
        detail: row.try_get("detail")?,
        event_id: row.try_get("event_id")?,
        rule: row.try_get("rule")?,
        action_ref: row.try_get("action_ref")?,
    })
}

fn pack_row(row: &SqliteRow) -> Result<PackRow> {
    Ok(PackRow {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        description: row.try_get("description")?,
        content: row.try_get("content")?,
        installed_at: time(row, "installed_at")?,
        installed_by: row.try_get("installed_by")?,
    })
}

fn action_row(row: &SqliteRow) -> Result<ActionRow> {
    Ok(ActionRow {
        reference: row.try_get("reference")?,
        pack: row.try_get("pack")?,
        definition: row.try_get("definition")?,
    })
}

fn rule_row(row: &SqliteRow) -> Result<RuleRow> {
    Ok(RuleRow {
        reference: row.try_get("reference")?,
        pack: row.try_get("pack")?,
        trigger: row.try_get("trigger")?,
        enabled: row.try_get("enabled")?,
        definition: row.try_get("definition")?,
    })
}

fn event_row(row: &SqliteRow) -> Result<EventRow> {
    Ok(EventRow {
        id: row.try_get("id")?,
        trigger: row.try_get("trigger")?,
        payload: row.try_get("payload")?,
        source: row.try_get("source")?,
        received_at: time(row, "received_at")?,
        state: row.try_get("state")?,
        processed_at: optional_time(row, "processed_at")?,
        error: row.try_get("error")?,
        matched_rules: row.try_get("matched_rules")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    #[test]
    fn times_keep_microseconds_and_round_trip() {
        let time = at("2030-01-01T12:34:56.123456Z");
        assert_eq!(micros(time), 1_893_501_296_123_456);
        assert_eq!(from_micros(micros(time), "t").expect("in range"), time);
    }

    #[test]
    fn sub_microseconds_are_truncated_toward_2000_as_postgres_does() {
        // After 2000: toward the past.
        assert_eq!(
            from_micros(micros(at("2030-01-01T00:00:00.000001999Z")), "t").expect("in range"),
            at("2030-01-01T00:00:00.000001Z")
        );
        // Before 2000: toward the future, which plain flooring would miss.
        assert_eq!(
            from_micros(micros(at("1999-12-31T23:59:59.999999500Z")), "t").expect("in range"),
            at("2000-01-01T00:00:00Z")
        );
        assert_eq!(
            from_micros(micros(at("1969-12-31T23:59:59.000000500Z")), "t").expect("in range"),
            at("1969-12-31T23:59:59.000001Z")
        );
        // Whole microseconds are kept exactly on both sides.
        for whole in ["1999-12-31T23:59:59.999999Z", "1970-01-01T00:00:00Z"] {
            assert_eq!(micros(at(whole)), at(whole).timestamp_micros());
        }
    }

    #[test]
    fn the_whole_chrono_range_is_storable() {
        for extreme in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            let stored = micros(extreme);
            assert_eq!(
                from_micros(stored, "t").expect("in range").timestamp(),
                extreme.timestamp()
            );
        }
        assert!(matches!(
            from_micros(i64::MAX, "t"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
