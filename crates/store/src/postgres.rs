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
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
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
        insert_job(&mut tx, job, executions).await?;
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
            .build_query_as::<AuditRow>()
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(AuditRecord::try_from)
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
        let mut tx = self.pool.begin().await?;
        lock_pack(&mut tx, &pack.name).await?;
        let previous = retire_pack(&mut tx, &pack.name, pack.installed_at).await?;
        sqlx::query(&format!(
            "INSERT INTO packs ({PACK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET \
                 version = EXCLUDED.version, \
                 description = EXCLUDED.description, \
                 content = EXCLUDED.content, \
                 installed_at = EXCLUDED.installed_at, \
                 installed_by = EXCLUDED.installed_by"
        ))
        .bind(&pack.name)
        .bind(&pack.version)
        .bind(&pack.description)
        .bind(&pack.content)
        .bind(pack.installed_at)
        .bind(&pack.installed_by)
        .execute(&mut *tx)
        .await?;
        delete_pack_members(&mut tx, &pack.name).await?;

        // The members are bound under the installed pack's name, not their
        // own `pack` field: they belong to this pack by being installed with
        // it, and the schema's reference CHECK refuses one that names
        // another pack.
        let (references, definitions): (Vec<&str>, Vec<&JsonValue>) = actions
            .iter()
            .map(|action| (action.reference.as_str(), &action.definition))
            .unzip();
        sqlx::query(
            "INSERT INTO actions (reference, pack, definition) \
             SELECT reference, $3, definition FROM UNNEST($1::text[], $2::jsonb[]) \
                 AS member (reference, definition)",
        )
        .bind(&references)
        .bind(&definitions)
        .bind(&pack.name)
        .execute(&mut *tx)
        .await?;

        let mut references = Vec::with_capacity(rules.len());
        let mut triggers = Vec::with_capacity(rules.len());
        let mut enabled = Vec::with_capacity(rules.len());
        let mut definitions = Vec::with_capacity(rules.len());
        for rule in rules {
            references.push(rule.reference.as_str());
            triggers.push(rule.trigger.as_str());
            enabled.push(rule.enabled);
            definitions.push(&rule.definition);
        }
        sqlx::query(
            "INSERT INTO rules (reference, pack, trigger, enabled, definition) \
             SELECT reference, $5, trigger, enabled, definition \
             FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::jsonb[]) \
                 AS member (reference, trigger, enabled, definition)",
        )
        .bind(&references)
        .bind(&triggers)
        .bind(&enabled)
        .bind(&definitions)
        .bind(&pack.name)
        .execute(&mut *tx)
        .await?;

        // A script already stored is the same bytes (the schema checks the
        // hash), so keeping the stored copy loses nothing.
        let (hashes, contents): (Vec<&str>, Vec<&[u8]>) = scripts
            .iter()
            .map(|script| (script.sha256.as_str(), script.content.as_slice()))
            .unzip();
        sqlx::query(
            "INSERT INTO scripts (sha256, content) \
             SELECT * FROM UNNEST($1::text[], $2::bytea[]) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&hashes)
        .bind(&contents)
        .execute(&mut *tx)
        .await?;

        // Replicas holding compiled rules reload them when this moves.
        sqlx::query(BUMP_CATALOG_VERSION).execute(&mut *tx).await?;
        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(previous)
    }

    async fn remove_pack(&self, name: &str, audit: &NewAuditRecord) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        lock_pack(&mut tx, name).await?;
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
        Ok(sqlx::query_as::<_, PackRow>(&format!(
            "SELECT {PACK_COLUMNS} FROM packs WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .map(PackRecord::from))
    }

    async fn list_packs(&self) -> Result<Vec<PackRecord>> {
        Ok(
            sqlx::query_as::<_, PackRow>(&format!(
                "SELECT {PACK_COLUMNS} FROM packs ORDER BY name"
            ))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(PackRecord::from)
            .collect(),
        )
    }

    async fn pack_history(&self, name: &str) -> Result<Vec<PackRecord>> {
        Ok(sqlx::query_as::<_, PackRow>(&format!(
            "SELECT {PACK_COLUMNS} FROM pack_history WHERE name = $1 ORDER BY seq DESC"
        ))
        .bind(name)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(PackRecord::from)
        .collect())
    }

    async fn get_action(&self, reference: &str) -> Result<Option<ActionRecord>> {
        Ok(sqlx::query_as::<_, ActionRow>(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE reference = $1"
        ))
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?
        .map(ActionRecord::from))
    }

    async fn list_actions(&self, pack: Option<&str>) -> Result<Vec<ActionRecord>> {
        Ok(sqlx::query_as::<_, ActionRow>(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions \
             WHERE $1::text IS NULL OR pack = $1 ORDER BY reference"
        ))
        .bind(pack)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(ActionRecord::from)
        .collect())
    }

    async fn get_rule(&self, reference: &str) -> Result<Option<RuleRecord>> {
        Ok(sqlx::query_as::<_, RuleRow>(&format!(
            "SELECT {RULE_COLUMNS} FROM rules WHERE reference = $1"
        ))
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?
        .map(RuleRecord::from))
    }

    async fn list_rules(&self, trigger: Option<&str>) -> Result<Vec<RuleRecord>> {
        Ok(sqlx::query_as::<_, RuleRow>(&format!(
            "SELECT {RULE_COLUMNS} FROM rules \
             WHERE $1::text IS NULL OR trigger = $1 ORDER BY reference"
        ))
        .bind(trigger)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(RuleRecord::from)
        .collect())
    }

    async fn set_rule_enabled(
        &self,
        reference: &str,
        enabled: bool,
        audit: &NewAuditRecord,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
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
                .fetch_optional(&self.pool)
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
        .bind(&event.payload)
        .bind(&event.source)
        .bind(event.received_at)
        .execute(&self.pool)
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
        // SKIP LOCKED: concurrent claimers each take different events instead
        // of queueing behind each other's row locks. A row another claimer
        // committed meanwhile is re-checked against the WHERE clause before
        // it is locked, so its fresh lease keeps it out.
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "UPDATE events SET claimed_by = $1, claimed_until = $2 \
             WHERE id IN (SELECT id FROM events \
                          WHERE state = 'pending' \
                            AND (claimed_until IS NULL OR claimed_until < $3) \
                          ORDER BY id LIMIT $4 \
                          FOR UPDATE SKIP LOCKED) \
             RETURNING {EVENT_COLUMNS}"
        ))
        .bind(claimer)
        .bind(lease_end(now, lease))
        .bind(now)
        .bind(effective_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut events = rows
            .into_iter()
            .map(EventRecord::try_from)
            .collect::<Result<Vec<_>>>()?;
        // RETURNING has no ORDER BY.
        events.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(events)
    }

    async fn finish_events(&self, outcomes: &[EventOutcome], now: DateTime<Utc>) -> Result<u64> {
        let mut ids = Vec::with_capacity(outcomes.len());
        let mut states = Vec::with_capacity(outcomes.len());
        let mut errors = Vec::with_capacity(outcomes.len());
        let mut matched = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            ids.push(outcome.id.as_str());
            states.push(event_state_name(finished_state(outcome)));
            errors.push(outcome.error.as_deref());
            matched.push(matched_rules_json(outcome));
        }
        // Only a pending event is finished: if its lease ran out and a
        // second processor got to it too, the first outcome recorded stays.
        Ok(sqlx::query(
            "UPDATE events SET state = o.state, error = o.error, processed_at = $5, \
                               matched_rules = o.matched_rules \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[]) \
                 AS o (id, state, error, matched_rules) \
             WHERE events.id = o.id AND events.state = 'pending'",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&errors)
        .bind(&matched)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn get_event(&self, id: &str) -> Result<Option<EventRecord>> {
        sqlx::query_as::<_, EventRow>(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(EventRecord::try_from)
            .transpose()
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>> {
        let mut query =
            QueryBuilder::<Postgres>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE true"));
        if let Some(trigger) = &filter.trigger {
            query.push(" AND trigger = ").push_bind(trigger);
        }
        if let Some(since) = filter.since {
            query.push(" AND received_at >= ").push_bind(since);
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
            .build_query_as::<EventRow>()
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(EventRecord::try_from)
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
        let mut tx = self.pool.begin().await?;
        // Serialises firings of each rule across replicas until commit.
        // Every statement after it reads a fresh snapshot (READ COMMITTED),
        // so the counts below include whatever the previous holder wrote:
        // two firings can never both see room for one more job. An advisory
        // lock rather than a row lock, as the rule need not have a row (a
        // pack upgrade replaces it meanwhile). All of the batch's locks are
        // taken first, in key order, so two replicas' batches can never wait
        // for each other in a cycle.
        let mut keys: Vec<i32> = firings.iter().map(|f| lock_key(&f.rule)).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(RULE_LOCK_SPACE)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
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
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn claim_timer_tick(&self, rule: &str, tick: DateTime<Utc>) -> Result<bool> {
        // The primary key decides: of concurrent inserts one commits, the
        // others wait for it and then do nothing.
        let inserted = sqlx::query(
            "INSERT INTO timer_ticks (rule, tick) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(rule)
        .bind(tick)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}

/// Advisory lock spaces: the first key of `pg_advisory_xact_lock(int, int)`,
/// so that a pack and a rule of the same name do not share a lock. (The
/// one-key form, which the migrator uses, is a separate space.)
const PACK_LOCK_SPACE: i32 = 0x5538_0001;
const RULE_LOCK_SPACE: i32 = 0x5538_0002;

/// The second key for `name`: 32-bit FNV-1a, computed here rather than with
/// Postgres's undocumented `hashtext` so it cannot change under an upgrade.
/// Two names sharing a key only serialise needlessly.
fn lock_key(name: &str) -> i32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// Decides one firing inside the batch's transaction, its rule's lock held.
async fn fire_one(
    conn: &mut PgConnection,
    firing: &RuleFiring,
    now: DateTime<Utc>,
) -> Result<FiringOutcome> {
    // Under the rule's lock no other firing of this rule runs, so this read
    // cannot race; the primary key is the backstop.
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
    let last_fired_for_key: Option<DateTime<Utc>> = match &firing.cooldown_key {
        Some(key) => {
            sqlx::query_scalar(
                "SELECT last_fired_at FROM rule_cooldowns WHERE rule = $1 AND key = $2",
            )
            .bind(&firing.rule)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?
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
                .bind(start)
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
                // GREATEST: a replica whose clock lags must not move a
                // cooldown back and so shorten it.
                sqlx::query(
                    "INSERT INTO rule_cooldowns (rule, key, last_fired_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (rule, key) DO UPDATE SET \
                         last_fired_at = GREATEST(rule_cooldowns.last_fired_at, \
                                                  EXCLUDED.last_fired_at)",
                )
                .bind(&firing.rule)
                .bind(key)
                .bind(now)
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
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(outcome)
}

/// Serialises installs and removals of one pack until the transaction ends,
/// including a pack's first install, which has no row to lock yet.
async fn lock_pack(conn: &mut PgConnection, name: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(PACK_LOCK_SPACE)
        .bind(lock_key(name))
        .execute(conn)
        .await?;
    Ok(())
}

/// Copies the installed version of the pack to its history, superseded at
/// `at`; returns its version, or None if the pack is not installed.
async fn retire_pack(
    conn: &mut PgConnection,
    name: &str,
    at: DateTime<Utc>,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO pack_history (name, version, description, content, installed_at, \
                                   installed_by, superseded_at) \
         SELECT name, version, description, content, installed_at, installed_by, $2 \
         FROM packs WHERE name = $1 \
         RETURNING version",
    )
    .bind(name)
    .bind(at)
    .fetch_optional(conn)
    .await?)
}

async fn delete_pack_members(conn: &mut PgConnection, name: &str) -> Result<()> {
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
    conn: &mut PgConnection,
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
    .bind(job.created_at)
    .bind(&job.origin.action_ref)
    .bind(&job.origin.rule)
    .bind(&job.origin.event_id)
    .bind(&job.origin.parameters)
    .execute(&mut *conn)
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
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_audit<'e>(executor: impl PgExecutor<'e>, record: &NewAuditRecord) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO audit_log ({AUDIT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
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
    .bind(&record.event_id)
    .bind(&record.rule)
    .bind(&record.action_ref)
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
    let mut event_ids = Vec::with_capacity(records.len());
    let mut rules = Vec::with_capacity(records.len());
    let mut action_refs = Vec::with_capacity(records.len());
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
        event_ids.push(record.event_id.as_deref());
        rules.push(record.rule.as_deref());
        action_refs.push(record.action_ref.as_deref());
    }
    sqlx::query(&format!(
        "INSERT INTO audit_log ({AUDIT_COLUMNS}) \
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::text[], $8::text[], $9::jsonb[], $10::text[], \
                              $11::text[], $12::text[])"
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
    .bind(&event_ids)
    .bind(&rules)
    .bind(&action_refs)
    .execute(executor)
    .await?;
    Ok(())
}
