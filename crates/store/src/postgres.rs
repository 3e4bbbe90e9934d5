//! The production [`Store`]: PostgreSQL through sqlx.
//!
//! Queries are checked at run time (`sqlx::query`), not compile time: there
//! is no database at build time. The conformance suite in
//! `tests/conformance.rs` is what keeps them honest.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::{Json, JsonValue};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use ultron8_core::{DroneFacts, ExecutionStatus, HostStats};

use crate::common::{
    AUDIT_COLUMNS, AuditRow, DRONE_COLUMNS, DroneRow, EXECUTION_COLUMNS, ExecutionRow, JOB_COLUMNS,
    JobRow, PendingRow, TransitionWrite, counts_for_every_status, effective_limit, expiry_audit,
    from_json, not_found, output_chunk, output_offset, parse_status, status_counts_by_job,
    stream_name,
};
use crate::{
    AuditFilter, AuditRecord, DroneEnrollment, DroneRecord, ExecutionRecord, ExecutionUpdate,
    JobRecord, JobSummary, JoinTokenGrant, NewAuditRecord, NewExecution, NewJob, NewJoinToken,
    OutputChunkRecord, PendingDispatch, Result, Store, StoreError, TransitionOutcome,
};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Enough for the hive's concurrent request handlers and sweepers without
/// letting several hives exhaust a default Postgres (100 connections).
const MAX_CONNECTIONS: u32 = 16;
/// A request waiting longer than this for a connection is better failed than
/// queued: the database is down or the pool is saturated.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Recycling connections lets a failover or a changed DNS record take effect.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// [`Store`] on PostgreSQL. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and brings the schema up to date.
    ///
    /// Several hives may start at once against the same database: the
    /// migrator holds a Postgres advisory lock while it works, so exactly
    /// one applies each migration and the others wait, then find nothing to
    /// do.
    pub async fn connect(database_url: &str) -> Result<PgStore> {
        let options = PgConnectOptions::from_str(database_url)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(IDLE_TIMEOUT)
            .max_lifetime(MAX_LIFETIME)
            .connect_with(options)
            .await?;
        let store = PgStore::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Wraps an existing pool. The schema is assumed to be current; call
    /// [`PgStore::migrate`] if it may not be.
    pub fn from_pool(pool: PgPool) -> PgStore {
        PgStore { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations; safe to run concurrently (see
    /// [`PgStore::connect`]).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
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
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
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
        // One conditional UPDATE: of two concurrent consumers the second
        // blocks on the row lock, re-evaluates `used_at IS NULL` against the
        // committed row and matches nothing. All reasons for refusal are
        // reported alike so a caller cannot probe which token ids exist.
        let labels: Option<JsonValue> = sqlx::query_scalar(
            "UPDATE join_tokens SET used_at = $4, used_by = $3 \
             WHERE id = $1 AND secret_sha256 = $2 AND used_at IS NULL AND expires_at > $4 \
             RETURNING labels",
        )
        .bind(token_id)
        .bind(secret_sha256)
        .bind(drone_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let labels = labels.ok_or(StoreError::JoinTokenInvalid)?;
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
                 token_labels = EXCLUDED.token_labels, \
                 enrolled_at = EXCLUDED.enrolled_at, \
                 certificate_fingerprint = EXCLUDED.certificate_fingerprint, \
                 certificate_not_after = EXCLUDED.certificate_not_after, \
                 token_id = EXCLUDED.token_id",
        )
        .bind(&enrollment.drone_id)
        .bind(Json(&enrollment.labels))
        .bind(enrollment.enrolled_at)
        .bind(&enrollment.certificate_fingerprint)
        .bind(enrollment.certificate_not_after)
        .bind(&enrollment.token_id)
        .execute(&self.pool)
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
        .bind(now)
        .execute(&self.pool)
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
        .bind(now)
        .execute(&self.pool)
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
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        // RETURNING has no ORDER BY; sort so callers log a stable list.
        ids.sort_unstable();
        Ok(ids)
    }

    async fn list_drones(&self) -> Result<Vec<DroneRecord>> {
        sqlx::query_as::<_, DroneRow>(&format!("SELECT {DRONE_COLUMNS} FROM drones ORDER BY id"))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(DroneRecord::try_from)
            .collect()
    }

    async fn get_drone(&self, drone_id: &str) -> Result<Option<DroneRecord>> {
        sqlx::query_as::<_, DroneRow>(&format!("SELECT {DRONE_COLUMNS} FROM drones WHERE id = $1"))
            .bind(drone_id)
            .fetch_optional(&self.pool)
            .await?
            .map(DroneRecord::try_from)
            .transpose()
    }

    async fn create_job(
        &self,
        job: &NewJob,
        executions: &[NewExecution],
        audit: &NewAuditRecord,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, target, requester, command, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&job.id)
        .bind(&job.target)
        .bind(&job.requester)
        .bind(Json(&job.command))
        .bind(job.created_at)
        .execute(&mut *tx)
        .await?;

        // One round trip however many drones the job targets.
        let mut ids = Vec::with_capacity(executions.len());
        let mut job_ids = Vec::with_capacity(executions.len());
        let mut drone_ids = Vec::with_capacity(executions.len());
        let mut created = Vec::with_capacity(executions.len());
        let mut expires = Vec::with_capacity(executions.len());
        for execution in executions {
            ids.push(execution.id.as_str());
            job_ids.push(execution.job_id.as_str());
            drone_ids.push(execution.drone_id.as_str());
            created.push(execution.created_at);
            expires.push(execution.expires_at);
        }
        sqlx::query(
            "INSERT INTO executions (id, job_id, drone_id, created_at, expires_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])",
        )
        .bind(&ids)
        .bind(&job_ids)
        .bind(&drone_ids)
        .bind(&created)
        .bind(&expires)
        .execute(&mut *tx)
        .await?;

        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let Some(job) =
            sqlx::query_as::<_, JobRow>(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        // No transaction needed: executions are committed with their job and
        // never deleted, so once the job is visible all of them are.
        let executions = sqlx::query_as::<_, ExecutionRow>(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE job_id = $1 ORDER BY drone_id, id"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(ExecutionRecord::try_from)
        .collect::<Result<Vec<_>>>()?;
        job.into_record(executions).map(Some)
    }

    async fn list_jobs(&self, limit: u32) -> Result<Vec<JobSummary>> {
        let jobs = sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(effective_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        let job_ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
        let counts: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT job_id, status, count(*) FROM executions WHERE job_id = ANY($1) GROUP BY job_id, status",
        )
        .bind(&job_ids)
        .fetch_all(&self.pool)
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
        sqlx::query_as::<_, ExecutionRow>(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"
        ))
        .bind(execution_id)
        .fetch_optional(&self.pool)
        .await?
        .map(ExecutionRecord::try_from)
        .transpose()
    }

    async fn transition_execution(
        &self,
        execution_id: &str,
        update: &ExecutionUpdate,
        audit: Option<&NewAuditRecord>,
    ) -> Result<TransitionOutcome> {
        let mut tx = self.pool.begin().await?;
        // The row lock serialises concurrent reports for one execution: each
        // sees the status the previous one committed, so at most one
        // terminal report can ever apply.
        let current: Option<String> =
            sqlx::query_scalar("SELECT status FROM executions WHERE id = $1 FOR UPDATE")
                .bind(execution_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            tx.rollback().await?;
            return Ok(TransitionOutcome::NotFound);
        };
        let current = parse_status(&current, execution_id)?;
        if !current.can_transition_to(update.status) {
            // Explicitly, rather than on drop: the row lock must not linger
            // until the pooled connection happens to be used again.
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
        .bind(write.dispatched_at)
        .bind(write.started_at)
        .bind(write.finished_at)
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
        // FOR SHARE makes the status check hold until commit: a concurrent
        // terminal transition (which takes FOR UPDATE) either commits first,
        // and the re-checked row no longer matches, or waits for this chunk.
        // So no chunk is ever added to a finished execution.
        let inserted = sqlx::query(
            "INSERT INTO execution_output (execution_id, stream, byte_offset, data) \
             SELECT id, $2, $3, $4 FROM executions \
             WHERE id = $1 AND status IN ('requested', 'dispatched', 'running') \
             FOR SHARE \
             ON CONFLICT (execution_id, stream, byte_offset) DO NOTHING",
        )
        .bind(&chunk.execution_id)
        .bind(stream_name(chunk.stream))
        .bind(offset)
        .bind(&chunk.data)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Ignored (finished execution or duplicate chunk) unless the
            // execution does not exist at all, which is the sender's bug.
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM executions WHERE id = $1)")
                    .bind(&chunk.execution_id)
                    .fetch_one(&self.pool)
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
        .fetch_all(&self.pool)
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
        let rows: Vec<PendingRow> = sqlx::query_as(
            "SELECT e.id AS execution_id, e.job_id, e.drone_id, j.requester, j.command, \
                    e.created_at, e.expires_at \
             FROM executions e JOIN jobs j ON j.id = e.job_id \
             WHERE e.status = 'requested' AND e.created_at < $1 AND e.expires_at >= $2 \
             ORDER BY e.created_at, e.id \
             LIMIT $3",
        )
        .bind(created_before)
        .bind(now)
        .bind(effective_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(PendingDispatch::try_from).collect()
    }

    async fn expire_overdue_executions(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<ExecutionRecord>> {
        let mut tx = self.pool.begin().await?;
        // Locking the due rows in id order keeps two hives sweeping at once
        // from deadlocking; the second waits, re-checks the status and skips
        // what the first expired, so each execution gets one audit record.
        let rows: Vec<ExecutionRow> = sqlx::query_as(&format!(
            "UPDATE executions SET status = 'expired', finished_at = $1 \
             WHERE id IN (SELECT id FROM executions \
                          WHERE status IN ('requested', 'dispatched') AND expires_at < $1 \
                          ORDER BY id FOR UPDATE) \
             RETURNING {EXECUTION_COLUMNS}"
        ))
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await?;
        let mut expired = rows
            .into_iter()
            .map(ExecutionRecord::try_from)
            .collect::<Result<Vec<_>>>()?;
        expired.sort_by(|a, b| a.id.cmp(&b.id));
        if expired.is_empty() {
            tx.commit().await?;
            return Ok(expired);
        }

        let audits: Vec<NewAuditRecord> = expired
            .iter()
            .map(|execution| expiry_audit(execution, cutoff))
            .collect();
        insert_audits(&mut *tx, &audits).await?;
        tx.commit().await?;
        Ok(expired)
    }

    async fn count_executions_by_status(&self) -> Result<Vec<(ExecutionStatus, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM executions GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        counts_for_every_status(rows)
    }

    async fn count_jobs(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn append_audit(&self, record: &NewAuditRecord) -> Result<()> {
        insert_audit(&self.pool, record).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        // Only the filters given become predicates, so each query can use the
        // matching index rather than one plan full of `$n IS NULL OR ...`.
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE true"
        ));
        if let Some(since) = filter.since {
            query.push(" AND at >= ").push_bind(since);
        }
        if let Some(until) = filter.until {
            query.push(" AND at < ").push_bind(until);
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
        if let Some(before_id) = &filter.before_id {
            query.push(" AND id < ").push_bind(before_id);
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(effective_limit(filter.limit));

        query
            .build_query_as::<AuditRow>()
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(AuditRecord::try_from)
            .collect()
    }
}

async fn insert_audit<'e>(executor: impl PgExecutor<'e>, record: &NewAuditRecord) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&record.id)
    .bind(record.at)
    .bind(&record.actor)
    .bind(&record.action)
    .bind(&record.job_id)
    .bind(&record.execution_id)
    .bind(&record.drone_id)
    .bind(record.status.map(ExecutionStatus::as_str))
    .bind(&record.detail)
    .execute(executor)
    .await?;
    Ok(())
}

async fn insert_audits<'e>(
    executor: impl PgExecutor<'e>,
    records: &[NewAuditRecord],
) -> Result<()> {
    let mut ids = Vec::with_capacity(records.len());
    let mut ats = Vec::with_capacity(records.len());
    let mut actors = Vec::with_capacity(records.len());
    let mut actions = Vec::with_capacity(records.len());
    let mut job_ids = Vec::with_capacity(records.len());
    let mut execution_ids = Vec::with_capacity(records.len());
    let mut drone_ids = Vec::with_capacity(records.len());
    let mut statuses = Vec::with_capacity(records.len());
    let mut details = Vec::with_capacity(records.len());
    for record in records {
        ids.push(record.id.as_str());
        ats.push(record.at);
        actors.push(record.actor.as_str());
        actions.push(record.action.as_str());
        job_ids.push(record.job_id.as_deref());
        execution_ids.push(record.execution_id.as_deref());
        drone_ids.push(record.drone_id.as_deref());
        statuses.push(record.status.map(ExecutionStatus::as_str));
        details.push(&record.detail);
    }
    sqlx::query(&format!(
        "INSERT INTO audit_log ({AUDIT_COLUMNS}) \
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::text[], $8::text[], $9::jsonb[])"
    ))
    .bind(&ids)
    .bind(&ats)
    .bind(&actors)
    .bind(&actions)
    .bind(&job_ids)
    .bind(&execution_ids)
    .bind(&drone_ids)
    .bind(&statuses)
    .bind(&details)
    .execute(executor)
    .await?;
    Ok(())
}
