//! The store's one implementation of [`Store`]: [`SqlStore`], written once
//! for both databases and instantiated as [`crate::postgres::PgStore`] and
//! [`crate::sqlite::SqliteStore`].
//!
//! # Why a generic struct
//!
//! Every operation is one body over `D: Dialect`, where `D` is sqlx's
//! database type itself. The compiler checks that body against both
//! databases; where they differ, the body names a [`Dialect`] item, so the
//! differences can be read off that one trait. The alternatives were
//! worse: `sqlx::Any` has no `TIMESTAMPTZ` or `JSONB`; query builders
//! such as sea-query drop `FOR UPDATE` for SQLite without a word, which
//! hides the very difference that matters; and a macro that writes the
//! whole body out once per database (as vaultwarden's `db_run!` does)
//! reports errors inside the macro and cannot be formatted.
//!
//! The price is the `where` clause, written twice: on the `impl` of the
//! helpers and on the `impl` of [`Store`]. sqlx states per Rust type what a
//! database can bind and read; Rust implies a trait's supertraits but no
//! bound on another type, and cannot yet name a set of bounds (trait
//! aliases are unstable), so each block spells them out. They list exactly
//! the Rust types the queries bind and read, and must be edited together.
//!
//! # Shape of the queries
//!
//! - One connection pool writes and one reads (`writer` and `readers`):
//!   the same pool with Postgres, a single writer and query-only readers
//!   with SQLite (see [`crate::sqlite`]). A read
//!   never runs while its caller holds the writer, as an in-memory SQLite
//!   database has one connection for both.
//! - A transaction that writes opens with [`Dialect::BEGIN_WRITE`]; reads
//!   it makes to decide what to write name the row lock they need
//!   ([`Dialect::FOR_UPDATE`] and its kin), which the single writer of
//!   SQLite makes unnecessary.
//! - A statement with `RETURNING` is read to its end (`fetch_all`): SQLite
//!   only finishes the statement's work, and reports a failed commit of an
//!   autocommit statement, once all of its rows have been read.
//! - Batches are multi-row `VALUES` (see `write_rows` below): one
//!   statement for any batch the hive makes, split only where a database's
//!   limit on bound parameters requires it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::error::BoxDynError;
use sqlx::types::JsonValue;
use sqlx::{
    Arguments, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction,
    Type,
};
use ultron8_core::audit::AuditVerb;
use ultron8_core::health::RunOutcome;
use ultron8_core::ids::{DroneId, EventId, ExecutionId, JobId};
use ultron8_core::policy::{self, Decision};
use ultron8_core::{DroneFacts, ExecutionStatus, HostStats};

use crate::common::{
    ACTION_COLUMNS, AUDIT_COLUMNS, ActionRow, AuditRow, BUMP_CATALOG_VERSION, DRONE_COLUMNS,
    DroneRow, EVENT_COLUMNS, EXECUTION_COLUMNS, EventRow, ExecutionRow, HOSTS_OF_RULE_SINCE,
    JOB_COLUMNS, JobRow, OperatorCertificateRow, PACK_COLUMNS, PackRow, PendingRow, RULE_COLUMNS,
    RUNNING_JOBS_OF_RULE, RevocationRow, RuleRow, TransitionWrite, blast_window_start,
    counts_for_every_status, decision_outcome, effective_limit, event_state_name, expiry_audit,
    finished_state, fired_audit, fired_job, from_json, held_audit, lease_end, matched_rules_json,
    not_found, observation, output_chunk, output_offset, parse_status, status_counts_by_job,
    stream_name,
};
pub use crate::dialect::{Dialect, NamedLock, RowsAffected, SqlTime};
use crate::{
    ActionRecord, Activity, AuditFilter, AuditRecord, DroneCheckRecord, DroneEnrollment,
    DroneRecord, DroneRemoval, EnrollmentClaim, EnrollmentGrant, EventFilter, EventOutcome,
    EventRecord, ExecutionRecord, ExecutionUpdate, FiringOutcome, ID_INDEXED_PREFIX, IdKind,
    JobFilter, JobRecord, JobSummary, JoinTokenGrant, NewAuditRecord, NewEvent, NewExecution,
    NewJob, NewJoinToken, OperatorCertificate, OperatorCertificateRecord, OutputChunkRecord,
    PackRecord, PendingDispatch, PendingEvents, ProbeStateRecord, Result, RevokedCertificate,
    RuleFiring, RuleRecord, ScriptRecord, SealedValue, SecretRecord, SecretWrite, Store,
    StoreError, TransitionOutcome,
};
use crate::{NewSource, SourceRecord, SourceRefresh, TargetFilter};
use ultron8_core::discovery::{Instance, InstanceStatus, Sample, SourceSpec};

/// Records a revocation; a certificate already revoked keeps its first
/// record (who revoked it first, and why).
const INSERT_REVOCATION: &str = "INSERT INTO revoked_certificates \
     (fingerprint, subject, reason, revoked_at, revoked_by, not_after) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (fingerprint) DO NOTHING";

/// The columns of `probe_states`, in [`ProbeStateRow`]'s order.
const PROBE_STATE_COLUMNS: &str = "probe, target, address, state, since, last_run, \
     last_outcome, detail, latency_us, tracker";

#[derive(sqlx::FromRow)]
struct ProbeStateRow {
    probe: String,
    target: String,
    address: String,
    state: String,
    since: Option<SqlTime>,
    last_run: SqlTime,
    last_outcome: String,
    detail: String,
    latency_us: i64,
    tracker: JsonValue,
}

impl TryFrom<ProbeStateRow> for ProbeStateRecord {
    type Error = StoreError;

    fn try_from(row: ProbeStateRow) -> Result<Self> {
        let id = format!("probe {} on {}", row.probe, row.target);
        let state = row
            .state
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("state of {id}: {e}")))?;
        let last_outcome = match row.last_outcome.as_str() {
            "healthy" => RunOutcome::Healthy,
            "unhealthy" => RunOutcome::Unhealthy,
            "error" => RunOutcome::Error,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "last_outcome of {id}: {other:?}"
                )));
            }
        };
        Ok(ProbeStateRecord {
            tracker: from_json(row.tracker, "tracker", &id)?,
            probe: row.probe,
            target: row.target,
            address: row.address,
            state,
            since: row.since.map(|t| t.0),
            last_run: row.last_run.0,
            last_outcome,
            detail: row.detail,
            latency_us: row.latency_us,
        })
    }
}

/// The columns of `secrets`, in [`SecretRow`]'s order.
const SECRET_COLUMNS: &str =
    "name, ciphertext, nonce, key_id, created_at, created_by, updated_at, updated_by";

#[derive(sqlx::FromRow)]
struct SecretRow {
    name: String,
    ciphertext: Vec<u8>,
    nonce: Vec<u8>,
    key_id: String,
    created_at: SqlTime,
    created_by: String,
    updated_at: SqlTime,
    updated_by: String,
}

impl From<SecretRow> for SecretRecord {
    fn from(row: SecretRow) -> Self {
        SecretRecord {
            name: row.name,
            sealed: SealedValue {
                ciphertext: row.ciphertext,
                nonce: row.nonce,
                key_id: row.key_id,
            },
            created_at: row.created_at.0,
            created_by: row.created_by,
            updated_at: row.updated_at.0,
            updated_by: row.updated_by,
        }
    }
}

// --- fleet: discovery sources and targets ------------------------------------

/// The columns of `discovery_sources` (as `s`), in [`SourceRow`]'s order,
/// with the number of instances the source listed.
const SOURCE_COLUMNS: &str = "s.name, s.spec, s.interval_ms, s.origin, s.created_at, \
     s.created_by, s.next_due_at, s.last_refresh_at, s.last_error, \
     (SELECT COUNT(*) FROM fleet_targets t WHERE t.source = s.name) AS instances";

#[derive(sqlx::FromRow)]
struct SourceRow {
    name: String,
    spec: JsonValue,
    interval_ms: i64,
    origin: String,
    created_at: SqlTime,
    created_by: String,
    next_due_at: SqlTime,
    last_refresh_at: Option<SqlTime>,
    last_error: Option<String>,
    instances: i64,
}

impl TryFrom<SourceRow> for SourceRecord {
    type Error = StoreError;
    fn try_from(row: SourceRow) -> Result<Self> {
        let spec: SourceSpec = from_json(row.spec, "spec", &row.name)?;
        Ok(SourceRecord {
            interval: std::time::Duration::from_millis(
                u64::try_from(row.interval_ms).map_err(|_| {
                    StoreError::Corrupt(format!("interval_ms of source {}", row.name))
                })?,
            ),
            name: row.name,
            spec,
            origin: row.origin,
            created_at: row.created_at.0,
            created_by: row.created_by,
            next_due_at: row.next_due_at.0,
            last_refresh_at: row.last_refresh_at.map(|t| t.0),
            last_error: row.last_error,
            instances: u64::try_from(row.instances).unwrap_or_default(),
        })
    }
}

/// The columns of `fleet_targets`, in [`TargetRow`]'s order.
const TARGET_COLUMNS: &str = "source, name, address, service, labels, cpu, memory, status, \
     error, last_seen, updated_at, history";

#[derive(sqlx::FromRow)]
struct TargetRow {
    source: String,
    name: String,
    address: Option<String>,
    service: String,
    labels: JsonValue,
    cpu: Option<f64>,
    memory: Option<f64>,
    status: String,
    error: Option<String>,
    last_seen: Option<SqlTime>,
    updated_at: SqlTime,
    history: JsonValue,
}

impl TryFrom<TargetRow> for Instance {
    type Error = StoreError;
    fn try_from(row: TargetRow) -> Result<Self> {
        let id = format!("{}/{}", row.source, row.name);
        let history: Vec<(i64, f64, f64)> = from_json(row.history, "history", &id)?;
        Ok(Instance {
            labels: from_json(row.labels, "labels", &id)?,
            status: row
                .status
                .parse::<InstanceStatus>()
                .map_err(|e| StoreError::Corrupt(format!("status of {id}: {e}")))?,
            source: row.source,
            name: row.name,
            address: row.address,
            service: row.service,
            cpu: row.cpu,
            memory: row.memory,
            error: row.error,
            last_seen: row.last_seen.map(|t| t.0),
            updated_at: row.updated_at.0,
            history: history
                .into_iter()
                .map(|(at_ms, cpu, memory)| Sample { at_ms, cpu, memory })
                .collect(),
        })
    }
}

/// [`Store`] on a SQL database. Cheap to clone: clones share the pools.
#[derive(Debug)]
pub struct SqlStore<D: Database> {
    /// Every write goes through this pool.
    pub(crate) writer: Pool<D>,
    /// Every read outside a write transaction goes through this pool.
    pub(crate) readers: Pool<D>,
}

impl<D: Database> SqlStore<D> {
    /// How long [`Store::ping`] may take before it reports the database
    /// unavailable: well inside a readiness probe's timeout (1 to 5 s,
    /// and the hive's own check of 2 s), where the pool's acquire timeout
    /// would not be.
    pub const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
}

// By hand: a derive would require `D: Clone`, which sqlx's database types
// are not, though pools are.
impl<D: Database> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore {
            writer: self.writer.clone(),
            readers: self.readers.clone(),
        }
    }
}

/// `value` for a JSON column. Cannot fail for the store's own types (string
/// keys, no failing `Serialize`), but is not unwrapped on that promise.
fn to_json(value: &impl Serialize) -> Result<JsonValue> {
    serde_json::to_value(value).map_err(|err| StoreError::Database(sqlx::Error::Encode(err.into())))
}

/// The table holding the ids of `kind`.
fn id_table(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Job => "jobs",
        IdKind::Execution => "executions",
        IdKind::Event => "events",
    }
}

/// The first [`ID_INDEXED_PREFIX`] characters of `text`, which the id
/// prefix indexes hold; `None` when it is shorter.
fn indexed_prefix(text: &str) -> Option<&str> {
    match text.char_indices().nth(ID_INDEXED_PREFIX) {
        Some((end, _)) => Some(&text[..end]),
        None if text.chars().count() == ID_INDEXED_PREFIX => Some(text),
        None => None,
    }
}

/// NotFound when an update of `drone_id` changed nothing: the drone never
/// enrolled, or was removed.
fn drone_updated(updated: u64, drone_id: &DroneId) -> Result<()> {
    if updated == 0 {
        return Err(not_found("drone", drone_id.as_str()));
    }
    Ok(())
}

/// A statement whose text is written as its parameters are bound: each
/// placeholder in the database's own form (`$1` or `?`), in step with its
/// value. For the statements whose shape depends on their input: listings
/// with optional filters and multi-row batches.
///
/// sqlx's `QueryBuilder` does this, but it holds text and arguments
/// together and lends them out as one borrow of itself, which must then
/// last as long as the arguments' lifetime. Only the concrete SQLite type
/// (whose arguments may borrow their values) lets the compiler shorten
/// that; over a generic `D` it cannot, and every use fails to borrow-check.
/// Kept apart, the text is simply borrowed while the statement runs.
struct Statement<'a, D: Database> {
    sql: String,
    /// Or the first value that failed to encode, reported before the
    /// statement runs.
    arguments: std::result::Result<D::Arguments<'a>, BoxDynError>,
}

impl<'a, D: Database> Statement<'a, D> {
    fn new(sql: impl Into<String>) -> Self {
        Statement {
            sql: sql.into(),
            arguments: Ok(Default::default()),
        }
    }

    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'a + Encode<'a, D> + Type<D>,
    {
        if let Ok(arguments) = &mut self.arguments {
            let bound = arguments
                .add(value)
                .and_then(|()| Ok(arguments.format_placeholder(&mut self.sql)?));
            if let Err(error) = bound {
                self.arguments = Err(error);
            }
        }
        self
    }

    /// The text and the arguments to run it with, apart: the text is
    /// borrowed for as long as the arguments live.
    fn into_parts(self) -> Result<(String, D::Arguments<'a>)> {
        let arguments = self
            .arguments
            .map_err(|error| StoreError::Database(sqlx::Error::Encode(error)))?;
        Ok((self.sql, arguments))
    }

    /// Adds ` AND <predicate><value>` when a listing's filter has a value,
    /// so the statement holds only the filters given and can use the
    /// matching index (one plan full of `$n IS NULL OR ...` could not).
    fn and_where<T>(&mut self, predicate: &str, value: Option<T>) -> &mut Self
    where
        T: 'a + Encode<'a, D> + Type<D>,
    {
        if let Some(value) = value {
            self.push(" AND ").push(predicate).push_bind(value);
        }
        self
    }
}

/// One row of a multi-row `VALUES`, bound value by value.
struct ValuesRow<'s, 'a, D: Database> {
    statement: &'s mut Statement<'a, D>,
    /// Values bound so far.
    bound: usize,
}

impl<'a, D: Database> ValuesRow<'_, 'a, D> {
    fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'a + Encode<'a, D> + Type<D>,
    {
        if self.bound > 0 {
            self.statement.push(", ");
        }
        self.statement.push_bind(value);
        self.bound += 1;
        self
    }
}

impl<D> SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    for<'q> &'q str: Encode<'q, D> + Type<D>,
    for<'q> Option<&'q str>: Encode<'q, D>,
    for<'q> String: Encode<'q, D>,
    for<'q> &'q [u8]: Encode<'q, D> + Type<D>,
    for<'q> i64: Encode<'q, D> + Type<D>,
    for<'q> Option<i32>: Encode<'q, D>,
    for<'q> bool: Encode<'q, D> + Type<D>,
    for<'q> SqlTime: Encode<'q, D> + Type<D>,
    for<'q> Option<SqlTime>: Encode<'q, D>,
    for<'q> JsonValue: Encode<'q, D> + Type<D>,
    for<'q> Option<&'q JsonValue>: Encode<'q, D>,
    for<'r> String: Decode<'r, D> + Type<D>,
    for<'r> Vec<u8>: Decode<'r, D> + Type<D>,
    for<'r> i64: Decode<'r, D>,
    for<'r> i32: Decode<'r, D> + Type<D>,
    for<'r> bool: Decode<'r, D>,
    for<'r> SqlTime: Decode<'r, D>,
    for<'r> JsonValue: Decode<'r, D>,
    for<'q> Option<f64>: Encode<'q, D> + Type<D>,
    for<'r> f64: Decode<'r, D> + Type<D>,
{
    async fn begin_write(&self) -> Result<Transaction<'static, D>> {
        Ok(self.writer.begin_with(D::BEGIN_WRITE).await?)
    }

    /// Writes `rows` as `<head> VALUES (...), (...) <tail>`, in as few
    /// statements as the database's limit on bound parameters allows (one
    /// for any batch the hive makes); returns the rows they affected. Call
    /// it in a transaction where the batch must be all or nothing.
    ///
    /// `bind_row` binds the `columns` values of one row. It may bind only
    /// what the row holds or owned values, since the statement lives
    /// shorter than anything borrowed from outside.
    ///
    /// The statements differ by their number of rows, so each size is
    /// prepared once and kept in sqlx's statement cache like any other.
    async fn write_rows<T: Sync>(
        conn: &mut D::Connection,
        head: &str,
        tail: &str,
        rows: &[T],
        columns: usize,
        bind_row: impl for<'b> Fn(&mut ValuesRow<'_, 'b, D>, &'b T) + Send + Sync,
    ) -> Result<u64> {
        let mut affected = 0;
        for chunk in rows.chunks((D::MAX_BIND_PARAMETERS / columns).max(1)) {
            let mut statement = Statement::new(head);
            statement.push("VALUES ");
            for (i, row) in chunk.iter().enumerate() {
                statement.push(if i == 0 { "(" } else { ", (" });
                let mut values = ValuesRow {
                    statement: &mut statement,
                    bound: 0,
                };
                bind_row(&mut values, row);
                // The chunk's size was computed from `columns`.
                debug_assert_eq!(values.bound, columns, "values bound for one row of {head}");
                statement.push(")");
            }
            statement.push(tail);
            let (sql, arguments) = statement.into_parts()?;
            affected += sqlx::query_with(&sql, arguments)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
        Ok(affected)
    }

    /// The job and its executions (status `requested`), as `create_job` and
    /// an allowed rule firing write them.
    async fn insert_job(
        conn: &mut D::Connection,
        job: &NewJob,
        executions: &[NewExecution],
    ) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(job.id.as_str())
        .bind(job.target.as_str())
        .bind(job.requester.as_str())
        .bind(to_json(&job.command)?)
        .bind(SqlTime(job.created_at))
        .bind(job.origin.action_ref.as_deref())
        .bind(job.origin.rule.as_deref())
        .bind(job.origin.event_id.as_ref().map(EventId::as_str))
        .bind(job.origin.parameters.as_ref())
        .execute(&mut *conn)
        .await?;
        Self::write_rows(
            conn,
            "INSERT INTO executions (id, job_id, drone_id, created_at, expires_at) ",
            "",
            executions,
            5,
            |row, execution| {
                row.bind(execution.id.as_str())
                    .bind(execution.job_id.as_str())
                    .bind(execution.drone_id.as_str())
                    .bind(SqlTime(execution.created_at))
                    .bind(SqlTime(execution.expires_at));
            },
        )
        .await?;
        Ok(())
    }

    async fn insert_audit(conn: &mut D::Connection, record: &NewAuditRecord) -> Result<()> {
        Self::insert_audits(conn, std::slice::from_ref(record)).await
    }

    async fn insert_audits(conn: &mut D::Connection, records: &[NewAuditRecord]) -> Result<()> {
        Self::write_rows(
            conn,
            &format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) "),
            "",
            records,
            12,
            |row, record| {
                row.bind(record.id.as_str())
                    .bind(SqlTime(record.at))
                    .bind(record.actor.to_string())
                    .bind(record.action.as_str())
                    .bind(record.job_id.as_ref().map(JobId::as_str))
                    .bind(record.execution_id.as_ref().map(ExecutionId::as_str))
                    .bind(record.drone_id.as_ref().map(DroneId::as_str))
                    .bind(record.status.map(ExecutionStatus::as_str))
                    .bind(&record.detail)
                    .bind(record.event_id.as_ref().map(EventId::as_str))
                    .bind(record.rule.as_deref())
                    .bind(record.action_ref.as_deref());
            },
        )
        .await?;
        Ok(())
    }

    /// Ends a transaction that changed packs, actions or rules: moves the
    /// catalog version, so that replicas holding compiled rules reload them,
    /// appends `audit`, and commits.
    async fn commit_catalog_change(
        mut tx: Transaction<'static, D>,
        audit: &NewAuditRecord,
    ) -> Result<()> {
        sqlx::query(BUMP_CATALOG_VERSION).execute(&mut *tx).await?;
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Copies the installed version of the pack to its history, superseded
    /// at `at`; returns its version, or None if the pack is not installed.
    async fn retire_pack(
        conn: &mut D::Connection,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let versions: Vec<String> = sqlx::query_scalar(
            "INSERT INTO pack_history (name, version, description, content, installed_at, \
                                       installed_by, superseded_at) \
             SELECT name, version, description, content, installed_at, installed_by, $2 \
             FROM packs WHERE name = $1 \
             RETURNING version",
        )
        .bind(name)
        .bind(SqlTime(at))
        .fetch_all(conn)
        .await?;
        Ok(versions.into_iter().next())
    }

    async fn delete_pack_members(conn: &mut D::Connection, name: &str) -> Result<()> {
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

    /// Decides one firing inside the batch's transaction, its rule locked.
    async fn fire_one(
        conn: &mut D::Connection,
        firing: &RuleFiring,
        now: DateTime<Utc>,
    ) -> Result<FiringOutcome> {
        let last_fired_for_key: Option<SqlTime> = match &firing.cooldown_key {
            Some(key) => {
                sqlx::query_scalar(
                    "SELECT last_fired_at FROM rule_cooldowns WHERE rule = $1 AND key = $2",
                )
                .bind(firing.rule.as_str())
                .bind(key.as_str())
                .fetch_optional(&mut *conn)
                .await?
            }
            None => None,
        };
        // Counted only where the policy looks at it: a rule without a
        // concurrency limit may have thousands of jobs in flight, and
        // counting them on every firing would make a burst cost quadratic.
        let running_jobs: i64 = if firing.policy.max_concurrent.is_some() {
            sqlx::query_scalar(RUNNING_JOBS_OF_RULE)
                .bind(firing.rule.as_str())
                .fetch_one(&mut *conn)
                .await?
        } else {
            0
        };
        let hosts_in_window: Vec<String> = match blast_window_start(firing, now) {
            Some(start) => {
                sqlx::query_scalar(HOSTS_OF_RULE_SINCE)
                    .bind(firing.rule.as_str())
                    .bind(SqlTime(start))
                    .fetch_all(&mut *conn)
                    .await?
            }
            None => Vec::new(),
        };

        let observation = observation(
            firing,
            last_fired_for_key.map(DateTime::from),
            running_jobs,
            &hosts_in_window,
        );
        let decision = policy::decide(&firing.policy, &observation, now);
        // What an allowed firing writes; its id goes into the decision row.
        let job = fired_job(firing);
        let job_id = matches!(decision, Decision::Allow).then_some(&job.id);
        // The decision row first, before anything else is written: its
        // primary key (event, rule) is what keeps a rule from firing twice
        // for one event (a replica that died after firing leaves the event
        // to be claimed again). Under the rule's lock no other firing of
        // this rule runs, so a conflict means an earlier claim decided.
        // `ON CONFLICT` arbitrates on the unique index itself; a separate
        // lookup would leave the choice of plan to the planner, which, on a
        // young table not yet analyzed, can scan it whole on every firing.
        let inserted = sqlx::query(
            "INSERT INTO rule_decisions (event_id, rule, outcome, job_id, decided_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id, rule) DO NOTHING",
        )
        .bind(firing.event_id.as_str())
        .bind(firing.rule.as_str())
        .bind(decision_outcome(job_id))
        .bind(job_id.map(JobId::as_str))
        .bind(SqlTime(now))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(FiringOutcome::AlreadyDecided);
        }
        let outcome = match decision {
            Decision::Allow => {
                Self::insert_job(&mut *conn, &job, &firing.executions).await?;
                if let Some(key) = &firing.cooldown_key {
                    // Only forward: a replica whose clock lags must not move
                    // a cooldown back and so shorten it.
                    sqlx::query(
                        "INSERT INTO rule_cooldowns (rule, key, last_fired_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (rule, key) DO UPDATE SET \
                             last_fired_at = excluded.last_fired_at \
                         WHERE rule_cooldowns.last_fired_at < excluded.last_fired_at",
                    )
                    .bind(firing.rule.as_str())
                    .bind(key.as_str())
                    .bind(SqlTime(now))
                    .execute(&mut *conn)
                    .await?;
                }
                let audit = fired_audit(firing, &job, &observation, now);
                Self::insert_audit(&mut *conn, &audit).await?;
                FiringOutcome::Fired
            }
            Decision::Hold { reason } => {
                let audit = held_audit(firing, &observation, &reason, now);
                Self::insert_audit(&mut *conn, &audit).await?;
                FiringOutcome::Held { reason }
            }
        };
        Ok(outcome)
    }
}

#[async_trait]
impl<D> Store for SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    for<'q> &'q str: Encode<'q, D> + Type<D>,
    for<'q> Option<&'q str>: Encode<'q, D>,
    for<'q> String: Encode<'q, D>,
    for<'q> &'q [u8]: Encode<'q, D> + Type<D>,
    for<'q> i64: Encode<'q, D> + Type<D>,
    for<'q> Option<i32>: Encode<'q, D>,
    for<'q> bool: Encode<'q, D> + Type<D>,
    for<'q> SqlTime: Encode<'q, D> + Type<D>,
    for<'q> Option<SqlTime>: Encode<'q, D>,
    for<'q> JsonValue: Encode<'q, D> + Type<D>,
    for<'q> Option<&'q JsonValue>: Encode<'q, D>,
    for<'r> String: Decode<'r, D> + Type<D>,
    for<'r> Vec<u8>: Decode<'r, D> + Type<D>,
    for<'r> i64: Decode<'r, D>,
    for<'r> i32: Decode<'r, D> + Type<D>,
    for<'r> bool: Decode<'r, D>,
    for<'r> SqlTime: Decode<'r, D>,
    for<'r> JsonValue: Decode<'r, D>,
    for<'q> Option<f64>: Encode<'q, D> + Type<D>,
    for<'r> f64: Decode<'r, D> + Type<D>,
{
    async fn ping(&self) -> Result<()> {
        // Through a reader: a readiness probe should not queue behind writes.
        // With a deadline of its own: while the database is down, the pool
        // keeps trying to connect until its acquire timeout, and a probe
        // that gets no answer before its own timeout learns nothing.
        let deadline = Self::PING_TIMEOUT;
        match tokio::time::timeout(deadline, sqlx::query("SELECT 1").execute(&self.readers)).await {
            Ok(answered) => {
                answered?;
                Ok(())
            }
            Err(_) => Err(StoreError::Unavailable(format!(
                "the database did not answer within {deadline:?}"
            ))),
        }
    }

    async fn create_join_token(&self, token: &NewJoinToken) -> Result<()> {
        sqlx::query(
            "INSERT INTO join_tokens (id, secret_sha256, labels, created_by, created_at, expires_at, \
                                      drone_id, replaces) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token.id.as_str())
        .bind(token.secret_sha256.as_slice())
        .bind(to_json(&token.labels)?)
        .bind(token.created_by.as_str())
        .bind(SqlTime(token.created_at))
        .bind(SqlTime(token.expires_at))
        .bind(token.drone_id.as_ref().map(DroneId::as_str))
        .bind(token.replaces)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn consume_join_token(
        &self,
        token_id: &str,
        secret_sha256: &[u8],
        drone_id: &DroneId,
        now: DateTime<Utc>,
    ) -> Result<JoinTokenGrant> {
        // One conditional UPDATE: of two concurrent consumers the second
        // re-evaluates `used_at IS NULL` against the first one's commit
        // (Postgres waits on the row lock, SQLite runs writes one at a time)
        // and matches nothing. All reasons for refusal are reported alike so
        // a caller cannot probe which token ids exist.
        let labels: Vec<JsonValue> = sqlx::query_scalar(
            "UPDATE join_tokens SET used_at = $4, used_by = $3 \
             WHERE id = $1 AND secret_sha256 = $2 AND used_at IS NULL AND expires_at > $4 \
               AND (drone_id IS NULL OR drone_id = $3) \
             RETURNING labels",
        )
        .bind(token_id)
        .bind(secret_sha256)
        .bind(drone_id.as_str())
        .bind(SqlTime(now))
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

    async fn enroll_drone(&self, claim: &EnrollmentClaim) -> Result<EnrollmentGrant> {
        let mut tx = self.begin_write().await?;
        // The token first, under the same conditions as consume_join_token,
        // plus the name it may be bound to. Every refusal below rolls the
        // transaction back, so a refused claim does not burn the token.
        let token: Option<(JsonValue, bool)> = sqlx::query_as(
            "UPDATE join_tokens SET used_at = $4, used_by = $3 \
             WHERE id = $1 AND secret_sha256 = $2 AND used_at IS NULL AND expires_at > $4 \
               AND (drone_id IS NULL OR drone_id = $3) \
             RETURNING labels, replaces",
        )
        .bind(claim.token_id.as_str())
        .bind(claim.secret_sha256.as_slice())
        .bind(claim.drone_id.as_str())
        .bind(SqlTime(claim.enrolled_at))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((labels, replaces)) = token else {
            tx.rollback().await?;
            return Err(StoreError::JoinTokenInvalid);
        };
        let labels = from_json(labels, "join_tokens.labels", &claim.token_id)?;
        let current: Option<(String, SqlTime, Option<SqlTime>, SqlTime)> = sqlx::query_as(
            "SELECT certificate_fingerprint, enrolled_at, removed_at, certificate_not_after \
             FROM drones WHERE id = $1",
        )
        .bind(claim.drone_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let replaced_certificate = match current {
            None => {
                // A new name. Of two joins racing for it, the second's insert
                // does nothing (the first holds the key) and is refused.
                let inserted = sqlx::query(
                    "INSERT INTO drones (id, token_labels, enrolled_at, certificate_fingerprint, \
                                         certificate_not_after, token_id) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                )
                .bind(claim.drone_id.as_str())
                .bind(to_json(&labels)?)
                .bind(SqlTime(claim.enrolled_at))
                .bind(claim.certificate_fingerprint.as_str())
                .bind(SqlTime(claim.certificate_not_after))
                .bind(claim.token_id.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::JoinTokenInvalid);
                }
                None
            }
            Some((fingerprint, enrolled_at, removed_at, not_after)) => {
                if removed_at.is_none() && !replaces {
                    tx.rollback().await?;
                    return Err(StoreError::DroneEnrolled {
                        drone_id: claim.drone_id.clone(),
                        enrolled_at: enrolled_at.0,
                        certificate_fingerprint: fingerprint,
                    });
                }
                // Compare-and-set on the certificate being replaced: of two
                // joins racing to replace it, one wins.
                let updated = sqlx::query(
                    "UPDATE drones SET token_labels = $2, enrolled_at = $3, \
                         certificate_fingerprint = $4, certificate_not_after = $5, token_id = $6, \
                         online = false, removed_at = NULL, removed_by = NULL \
                     WHERE id = $1 AND certificate_fingerprint = $7",
                )
                .bind(claim.drone_id.as_str())
                .bind(to_json(&labels)?)
                .bind(SqlTime(claim.enrolled_at))
                .bind(claim.certificate_fingerprint.as_str())
                .bind(SqlTime(claim.certificate_not_after))
                .bind(claim.token_id.as_str())
                .bind(fingerprint.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    tx.rollback().await?;
                    return Err(StoreError::JoinTokenInvalid);
                }
                // A removed drone's certificate was revoked when it was
                // removed; that first record stays.
                sqlx::query(INSERT_REVOCATION)
                    .bind(fingerprint.as_str())
                    .bind(format!("drone:{}", claim.drone_id))
                    .bind(format!(
                        "replaced by the enrollment with join token {}",
                        claim.token_id
                    ))
                    .bind(SqlTime(claim.enrolled_at))
                    .bind(format!("drone:{}", claim.drone_id))
                    .bind(Some(not_after))
                    .execute(&mut *tx)
                    .await?;
                Some(fingerprint)
            }
        };
        tx.commit().await?;
        Ok(EnrollmentGrant {
            labels,
            replaced_certificate,
        })
    }

    async fn revoke_certificates(
        &self,
        revocations: &[RevokedCertificate],
        audit: &NewAuditRecord,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for revocation in revocations {
            sqlx::query(INSERT_REVOCATION)
                .bind(revocation.fingerprint.as_str())
                .bind(revocation.subject.as_str())
                .bind(revocation.reason.as_str())
                .bind(SqlTime(revocation.revoked_at))
                .bind(revocation.revoked_by.as_str())
                .bind(revocation.not_after.map(SqlTime))
                .execute(&mut *tx)
                .await?;
        }
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_revoked_certificates(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<RevokedCertificate>> {
        let rows: Vec<RevocationRow> = sqlx::query_as(
            "SELECT fingerprint, subject, reason, revoked_at, revoked_by, not_after \
             FROM revoked_certificates WHERE not_after IS NULL OR not_after > $1 \
             ORDER BY revoked_at, fingerprint",
        )
        .bind(SqlTime(now))
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(RevokedCertificate::from).collect())
    }

    async fn record_operator_certificate(&self, certificate: &OperatorCertificate) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO operator_certificates \
                 (fingerprint, name, role, not_after, issued_by, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(certificate.fingerprint.as_str())
        .bind(certificate.name.as_str())
        .bind(certificate.role.as_str())
        .bind(SqlTime(certificate.not_after))
        .bind(certificate.issued_by.as_deref())
        .bind(SqlTime(certificate.recorded_at))
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn list_operator_certificates(&self) -> Result<Vec<OperatorCertificateRecord>> {
        let rows: Vec<OperatorCertificateRow> = sqlx::query_as(
            "SELECT o.fingerprint, o.name, o.role, o.not_after, o.issued_by, o.recorded_at, \
                    r.subject, r.reason, r.revoked_at, r.revoked_by, r.not_after AS revoked_not_after \
             FROM operator_certificates o \
             LEFT JOIN revoked_certificates r ON r.fingerprint = o.fingerprint \
             ORDER BY o.name, o.recorded_at, o.fingerprint",
        )
        .fetch_all(&self.readers)
        .await?;
        Ok(rows
            .into_iter()
            .map(OperatorCertificateRecord::from)
            .collect())
    }

    async fn record_enrollment(&self, enrollment: &DroneEnrollment) -> Result<()> {
        // A re-enrollment replaces the credentials and the token's labels
        // (the new token is the operator's current word on them) but keeps
        // what the drone reported: facts and stats stay useful until it
        // registers again. A removed drone joining again is back in the
        // fleet.
        sqlx::query(
            "INSERT INTO drones (id, token_labels, enrolled_at, certificate_fingerprint, \
                                 certificate_not_after, token_id) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET \
                 token_labels = excluded.token_labels, \
                 enrolled_at = excluded.enrolled_at, \
                 certificate_fingerprint = excluded.certificate_fingerprint, \
                 certificate_not_after = excluded.certificate_not_after, \
                 token_id = excluded.token_id, \
                 removed_at = NULL, \
                 removed_by = NULL",
        )
        .bind(enrollment.drone_id.as_str())
        .bind(to_json(&enrollment.labels)?)
        .bind(SqlTime(enrollment.enrolled_at))
        .bind(enrollment.certificate_fingerprint.as_str())
        .bind(SqlTime(enrollment.certificate_not_after))
        .bind(enrollment.token_id.as_str())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn record_registration(
        &self,
        drone_id: &DroneId,
        facts: &DroneFacts,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE drones SET facts = $2, online = true, registered_at = $3, last_seen_at = $3 \
             WHERE id = $1 AND removed_at IS NULL",
        )
        .bind(drone_id.as_str())
        .bind(to_json(facts)?)
        .bind(SqlTime(now))
        .execute(&self.writer)
        .await?
        .rows_affected();
        drone_updated(updated, drone_id)
    }

    async fn record_heartbeat(
        &self,
        drone_id: &DroneId,
        stats: &HostStats,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE drones SET stats = $2, online = true, last_seen_at = $3 \
             WHERE id = $1 AND removed_at IS NULL",
        )
        .bind(drone_id.as_str())
        .bind(to_json(stats)?)
        .bind(SqlTime(now))
        .execute(&self.writer)
        .await?
        .rows_affected();
        drone_updated(updated, drone_id)
    }

    async fn record_seen(&self, drone_id: &DroneId, now: DateTime<Utc>) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE drones SET online = true, last_seen_at = $2 \
             WHERE id = $1 AND removed_at IS NULL",
        )
        .bind(drone_id.as_str())
        .bind(SqlTime(now))
        .execute(&self.writer)
        .await?
        .rows_affected();
        drone_updated(updated, drone_id)
    }

    async fn mark_silent_drones_offline(&self, cutoff: DateTime<Utc>) -> Result<Vec<DroneId>> {
        let mut ids: Vec<String> = sqlx::query_scalar(
            "UPDATE drones SET online = false WHERE online AND last_seen_at < $1 RETURNING id",
        )
        .bind(SqlTime(cutoff))
        .fetch_all(&self.writer)
        .await?;
        // RETURNING has no ORDER BY; sort so callers log a stable list.
        ids.sort_unstable();
        Ok(ids.into_iter().map(DroneId::from).collect())
    }

    async fn list_drones(&self) -> Result<Vec<DroneRecord>> {
        sqlx::query_as::<_, DroneRow>(&format!(
            "SELECT {DRONE_COLUMNS} FROM drones WHERE removed_at IS NULL ORDER BY id"
        ))
        .fetch_all(&self.readers)
        .await?
        .into_iter()
        .map(DroneRecord::try_from)
        .collect()
    }

    async fn get_drone(&self, drone_id: &DroneId) -> Result<Option<DroneRecord>> {
        sqlx::query_as::<_, DroneRow>(&format!("SELECT {DRONE_COLUMNS} FROM drones WHERE id = $1"))
            .bind(drone_id.as_str())
            .fetch_optional(&self.readers)
            .await?
            .map(DroneRecord::try_from)
            .transpose()
    }

    async fn remove_drone(
        &self,
        drone_id: &DroneId,
        removal: &DroneRemoval,
        audit: &NewAuditRecord,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        // Offline at once: a removed drone is in no count of the fleet, and
        // the schema refuses one both removed and online.
        let removed = sqlx::query(
            "UPDATE drones SET online = false, removed_at = $2, removed_by = $3 \
             WHERE id = $1 AND removed_at IS NULL",
        )
        .bind(drone_id.as_str())
        .bind(SqlTime(removal.at))
        .bind(removal.by.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if removed == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        // Its certificate goes with it: refused at the next handshake.
        sqlx::query(
            "INSERT INTO revoked_certificates \
                 (fingerprint, subject, reason, revoked_at, revoked_by, not_after) \
             SELECT certificate_fingerprint, 'drone:' || id, 'drone removed from the fleet', $2, $3, \
                    certificate_not_after \
             FROM drones WHERE id = $1 \
             ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(drone_id.as_str())
        .bind(SqlTime(removal.at))
        .bind(removal.by.as_str())
        .execute(&mut *tx)
        .await?;
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn create_job(
        &self,
        job: &NewJob,
        executions: &[NewExecution],
        audit: &NewAuditRecord,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        Self::insert_job(&mut tx, job, executions).await?;
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_job(&self, job_id: &JobId) -> Result<Option<JobRecord>> {
        let Some(job) =
            sqlx::query_as::<_, JobRow>(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
                .bind(job_id.as_str())
                .fetch_optional(&self.readers)
                .await?
        else {
            return Ok(None);
        };
        // No transaction needed: executions are committed with their job and
        // never deleted, so once the job is visible all of them are.
        let executions = sqlx::query_as::<_, ExecutionRow>(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE job_id = $1 ORDER BY drone_id, id"
        ))
        .bind(job_id.as_str())
        .fetch_all(&self.readers)
        .await?
        .into_iter()
        .map(ExecutionRecord::try_from)
        .collect::<Result<Vec<_>>>()?;
        job.into_record(executions).map(Some)
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobSummary>> {
        let mut statement = Statement::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE true"));
        statement
            .and_where("created_at >= ", filter.since.map(SqlTime))
            .and_where("rule = ", filter.rule.as_deref())
            .and_where("action_ref = ", filter.action_ref.as_deref());
        // The execution filters hold for one execution (`--drone web-1
        // --status failed`: the jobs in which web-1 failed), as one EXISTS,
        // so a job is listed once however many of its executions match;
        // the planner may walk the newest jobs and probe each (the
        // executions' `(job_id, drone_id)` key) or start from the
        // executions (their drone and status indexes).
        if filter.drone_id.is_some() || !filter.statuses.is_empty() {
            statement.push(" AND EXISTS (SELECT 1 FROM executions e WHERE e.job_id = jobs.id");
            if let Some(drone_id) = &filter.drone_id {
                statement
                    .push(" AND e.drone_id = ")
                    .push_bind(drone_id.as_str());
            }
            if !filter.statuses.is_empty() {
                let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
                statement
                    .push(&format!(
                        " AND e.status IN (SELECT value FROM {}(",
                        D::JSON_ARRAY_ELEMENTS
                    ))
                    .push_bind(to_json(&statuses)?)
                    .push("))");
            }
            statement.push(")");
        }
        statement
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(effective_limit(filter.limit));
        let (sql, arguments) = statement.into_parts()?;
        let jobs: Vec<JobRow> = sqlx::query_as_with(&sql, arguments)
            .fetch_all(&self.readers)
            .await?;
        // The ids as one JSON array: one statement for the whole page, clear
        // of any limit on bound parameters.
        let job_ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
        let counts: Vec<(String, String, i64)> = sqlx::query_as(&format!(
            "SELECT job_id, status, count(*) FROM executions \
             WHERE job_id IN (SELECT value FROM {}($1)) GROUP BY job_id, status",
            D::JSON_ARRAY_ELEMENTS
        ))
        .bind(to_json(&job_ids)?)
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

    async fn ids_with_prefix(&self, kind: IdKind, prefix: &str, limit: u32) -> Result<Vec<String>> {
        // Compared with `substr`, not `LIKE`: a prefix is matched as it is
        // written, so `%` and `_` in it are plain characters with nothing to
        // escape, and SQLite's LIKE, which folds ASCII case, cannot make the
        // databases differ. Ordered by length first, so an id equal to the
        // prefix comes first whatever the limit.
        let mut statement = Statement::new(format!(
            "SELECT id FROM {} WHERE substr(id, 1, length(",
            id_table(kind)
        ));
        statement.push_bind(prefix).push(")) = ").push_bind(prefix);
        if let Some(indexed) = indexed_prefix(prefix) {
            // The indexed expression, spelt as the index spells it.
            statement
                .push(&format!(" AND substr(id, 1, {ID_INDEXED_PREFIX}) = "))
                .push_bind(indexed);
        }
        statement
            .push(" ORDER BY length(id), id LIMIT ")
            .push_bind(effective_limit(limit));
        let (sql, arguments) = statement.into_parts()?;
        Ok(sqlx::query_scalar_with(&sql, arguments)
            .fetch_all(&self.readers)
            .await?)
    }

    async fn ids_sharing_prefix(
        &self,
        kind: IdKind,
        ids: &[String],
        limit: u32,
    ) -> Result<Vec<String>> {
        let mut leads: Vec<&str> = ids.iter().filter_map(|id| indexed_prefix(id)).collect();
        leads.sort_unstable();
        leads.dedup();
        if leads.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar(&format!(
            "SELECT id FROM {} WHERE substr(id, 1, {ID_INDEXED_PREFIX}) IN \
                 (SELECT value FROM {}($1)) \
             ORDER BY id LIMIT $2",
            id_table(kind),
            D::JSON_ARRAY_ELEMENTS
        ))
        .bind(to_json(&leads)?)
        .bind(effective_limit(limit))
        .fetch_all(&self.readers)
        .await?)
    }

    async fn get_execution(&self, execution_id: &ExecutionId) -> Result<Option<ExecutionRecord>> {
        sqlx::query_as::<_, ExecutionRow>(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"
        ))
        .bind(execution_id.as_str())
        .fetch_optional(&self.readers)
        .await?
        .map(ExecutionRecord::try_from)
        .transpose()
    }

    async fn transition_execution(
        &self,
        execution_id: &ExecutionId,
        update: &ExecutionUpdate,
        audit: Option<&NewAuditRecord>,
    ) -> Result<TransitionOutcome> {
        let mut tx = self.begin_write().await?;
        // The row lock (Postgres) or the write lock held from BEGIN
        // (SQLite) serialises concurrent reports for one execution: each
        // sees the status the previous one committed, so at most one
        // terminal report can ever apply.
        let current: Option<String> = sqlx::query_scalar(&format!(
            "SELECT status FROM executions WHERE id = $1{}",
            D::FOR_UPDATE
        ))
        .bind(execution_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(current) = current else {
            tx.rollback().await?;
            return Ok(TransitionOutcome::NotFound);
        };
        let current = parse_status(&current, execution_id.as_str())?;
        if !current.can_transition_to(update.status) {
            // Explicitly, rather than on drop: the lock must not linger
            // until the pooled connection happens to be used again, and a
            // failure to release it is reported here rather than in
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
        .bind(execution_id.as_str())
        .bind(write.status.as_str())
        .bind(write.dispatched_at.map(SqlTime))
        .bind(write.started_at.map(SqlTime))
        .bind(write.finished_at.map(SqlTime))
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
            Self::insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(TransitionOutcome::Applied { previous: current })
    }

    async fn append_output(&self, chunk: &OutputChunkRecord) -> Result<()> {
        let offset = output_offset(chunk)?;
        // No chunk is ever added to a finished execution: the status check
        // holds until commit. With Postgres, FOR SHARE makes a concurrent
        // terminal transition (which takes FOR UPDATE) either commit first,
        // so the re-checked row no longer matches, or wait for this chunk;
        // with SQLite, no transition can commit within one statement of the
        // writer. (The WHERE clause is also what lets SQLite parse the ON
        // CONFLICT after a SELECT.)
        let inserted = sqlx::query(&format!(
            "INSERT INTO execution_output (execution_id, stream, byte_offset, data) \
             SELECT id, $2, $3, $4 FROM executions \
             WHERE id = $1 AND status IN ('requested', 'dispatched', 'running'){} \
             ON CONFLICT (execution_id, stream, byte_offset) DO NOTHING",
            D::FOR_SHARE
        ))
        .bind(chunk.execution_id.as_str())
        .bind(stream_name(chunk.stream))
        .bind(offset)
        .bind(chunk.data.as_slice())
        .execute(&self.writer)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Ignored (finished execution or duplicate chunk) unless the
            // execution does not exist at all, which is the sender's bug.
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM executions WHERE id = $1)")
                    .bind(chunk.execution_id.as_str())
                    .fetch_one(&self.readers)
                    .await?;
            if !exists {
                return Err(not_found("execution", chunk.execution_id.as_str()));
            }
        }
        Ok(())
    }

    async fn execution_output(&self, execution_id: &ExecutionId) -> Result<Vec<OutputChunkRecord>> {
        // Streams in declaration (fd) order, stdout first, not by name.
        let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT stream, byte_offset, data FROM execution_output \
             WHERE execution_id = $1 \
             ORDER BY CASE stream WHEN 'stdout' THEN 1 ELSE 2 END, byte_offset",
        )
        .bind(execution_id.as_str())
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .map(|(stream, offset, data)| output_chunk(execution_id, &stream, offset, data))
            .collect()
    }

    async fn execution_output_from(
        &self,
        execution_id: &ExecutionId,
        stdout_from: u64,
        stderr_from: u64,
    ) -> Result<Vec<OutputChunkRecord>> {
        let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT stream, byte_offset, data FROM execution_output \
             WHERE execution_id = $1 \
               AND ((stream = 'stdout' AND byte_offset >= $2) \
                 OR (stream = 'stderr' AND byte_offset >= $3)) \
             ORDER BY CASE stream WHEN 'stdout' THEN 1 ELSE 2 END, byte_offset",
        )
        .bind(execution_id.as_str())
        .bind(i64::try_from(stdout_from).unwrap_or(i64::MAX))
        .bind(i64::try_from(stderr_from).unwrap_or(i64::MAX))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .map(|(stream, offset, data)| output_chunk(execution_id, &stream, offset, data))
            .collect()
    }

    async fn running_on_silent_drones(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<ExecutionRecord>> {
        sqlx::query_as::<_, ExecutionRow>(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions \
             WHERE status = 'running' \
               AND drone_id IN (SELECT id FROM drones WHERE last_seen_at < $1) \
             ORDER BY id"
        ))
        .bind(SqlTime(cutoff))
        .fetch_all(&self.readers)
        .await?
        .into_iter()
        .map(ExecutionRecord::try_from)
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
        sqlx::query_as::<_, PendingRow>(
            "SELECT e.id AS execution_id, e.job_id, e.drone_id, j.requester, j.command, \
                    j.action_ref, e.created_at, e.expires_at \
             FROM executions e JOIN jobs j ON j.id = e.job_id \
             WHERE e.status = 'requested' AND e.created_at < $1 AND e.expires_at >= $2 \
             ORDER BY e.created_at, e.id \
             LIMIT $3",
        )
        .bind(SqlTime(created_before))
        .bind(SqlTime(now))
        .bind(effective_limit(limit))
        .fetch_all(&self.readers)
        .await?
        .into_iter()
        .map(PendingDispatch::try_from)
        .collect()
    }

    async fn expire_overdue_executions(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<ExecutionRecord>> {
        let mut tx = self.begin_write().await?;
        // Two sweeps at once give each execution one audit record: with
        // Postgres, the due rows are locked in id order (so two hives cannot
        // deadlock) and the second sweep waits, re-checks the status and
        // skips what the first expired; with SQLite, the second waits for
        // the write lock and then finds nothing due.
        let mut expired = sqlx::query_as::<_, ExecutionRow>(&format!(
            "UPDATE executions SET status = 'expired', finished_at = $1 \
             WHERE id IN (SELECT id FROM executions \
                          WHERE status IN ('requested', 'dispatched') AND expires_at < $1 \
                          ORDER BY id{}) \
             RETURNING {EXECUTION_COLUMNS}",
            D::FOR_UPDATE
        ))
        .bind(SqlTime(cutoff))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(ExecutionRecord::try_from)
        .collect::<Result<Vec<_>>>()?;
        // RETURNING has no ORDER BY.
        expired.sort_by(|a, b| a.id.cmp(&b.id));

        let audits: Vec<NewAuditRecord> = expired
            .iter()
            .map(|execution| expiry_audit(execution, cutoff))
            .collect();
        Self::insert_audits(&mut tx, &audits).await?;
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

    async fn pending_events(&self) -> Result<PendingEvents> {
        let (count, oldest): (i64, Option<SqlTime>) =
            sqlx::query_as("SELECT count(*), min(received_at) FROM events WHERE state = 'pending'")
                .fetch_one(&self.readers)
                .await?;
        Ok(PendingEvents {
            count,
            oldest_received_at: oldest.map(Into::into),
        })
    }

    async fn activity_since(&self, since: DateTime<Utc>) -> Result<Activity> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM executions WHERE finished_at >= $1 GROUP BY status",
        )
        .bind(SqlTime(since))
        .fetch_all(&self.readers)
        .await?;
        let finished_executions = rows
            .into_iter()
            .map(|(status, count)| Ok((parse_status(&status, "executions.status")?, count)))
            .collect::<Result<Vec<_>>>()?;
        let failed_events: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE state = 'failed' AND processed_at >= $1",
        )
        .bind(SqlTime(since))
        .fetch_one(&self.readers)
        .await?;
        Ok(Activity {
            finished_executions,
            failed_events,
        })
    }

    async fn append_audit(&self, record: &NewAuditRecord) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        Self::insert_audit(&mut conn, record).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let mut statement =
            Statement::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE true"));
        statement
            .and_where("at >= ", filter.since.map(SqlTime))
            .and_where("at < ", filter.until.map(SqlTime))
            .and_where("actor = ", filter.actor.as_ref().map(ToString::to_string))
            .and_where("action = ", filter.action.map(AuditVerb::as_str))
            .and_where("job_id = ", filter.job_id.as_ref().map(JobId::as_str))
            .and_where(
                "execution_id = ",
                filter.execution_id.as_ref().map(ExecutionId::as_str),
            )
            .and_where("drone_id = ", filter.drone_id.as_ref().map(DroneId::as_str))
            .and_where("status = ", filter.status.map(ExecutionStatus::as_str))
            .and_where("event_id = ", filter.event_id.as_ref().map(EventId::as_str))
            .and_where("rule = ", filter.rule.as_deref())
            .and_where("action_ref = ", filter.action_ref.as_deref())
            .and_where("id < ", filter.before_id.as_deref())
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(effective_limit(filter.limit));
        let (sql, arguments) = statement.into_parts()?;
        let rows: Vec<AuditRow> = sqlx::query_as_with(&sql, arguments)
            .fetch_all(&self.readers)
            .await?;
        rows.into_iter().map(AuditRecord::try_from).collect()
    }

    async fn install_pack(
        &self,
        pack: &PackRecord,
        actions: &[ActionRecord],
        rules: &[RuleRecord],
        scripts: &[ScriptRecord],
        audit: &NewAuditRecord,
    ) -> Result<Option<String>> {
        // Two installs of one pack run one after the other, and no one sees
        // the pack half replaced.
        // The JSON of the pack's content and its members' definitions, made
        // before the statements borrow it.
        let content = to_json(&pack.content)?;
        let actions = actions
            .iter()
            .map(|action| Ok((action, to_json(&action.definition)?)))
            .collect::<Result<Vec<_>>>()?;
        let rules = rules
            .iter()
            .map(|rule| Ok((rule, to_json(&rule.definition)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut tx = self.begin_write().await?;
        D::lock_names(&mut tx, NamedLock::Pack, &[pack.name.as_str()]).await?;
        let previous = Self::retire_pack(&mut tx, &pack.name, pack.installed_at).await?;
        sqlx::query(&format!(
            "INSERT INTO packs ({PACK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET \
                 version = excluded.version, \
                 description = excluded.description, \
                 content = excluded.content, \
                 installed_at = excluded.installed_at, \
                 installed_by = excluded.installed_by"
        ))
        .bind(pack.name.as_str())
        .bind(pack.version.as_str())
        .bind(pack.description.as_str())
        .bind(content)
        .bind(SqlTime(pack.installed_at))
        .bind(pack.installed_by.as_str())
        .execute(&mut *tx)
        .await?;
        Self::delete_pack_members(&mut tx, &pack.name).await?;

        // The members are bound under the installed pack's name, not their
        // own `pack` field: they belong to this pack by being installed with
        // it, and the schema's reference CHECK refuses one that names
        // another pack. (A copy of the name, as a row may only bind what it
        // holds.)
        Self::write_rows(
            &mut tx,
            "INSERT INTO actions (reference, pack, definition) ",
            "",
            &actions,
            3,
            |row, (action, definition)| {
                row.bind(action.reference.as_str())
                    .bind(pack.name.clone())
                    .bind(definition);
            },
        )
        .await?;
        Self::write_rows(
            &mut tx,
            "INSERT INTO rules (reference, pack, trigger, enabled, definition, source) ",
            "",
            &rules,
            6,
            |row, (rule, definition)| {
                row.bind(rule.reference.as_str())
                    .bind(pack.name.clone())
                    .bind(rule.trigger.as_str())
                    .bind(rule.enabled)
                    .bind(definition)
                    .bind(rule.source.as_deref());
            },
        )
        .await?;
        // A script already stored under this hash is kept: content-addressed,
        // it is the same script.
        Self::write_rows(
            &mut tx,
            "INSERT INTO scripts (sha256, content) ",
            " ON CONFLICT (sha256) DO NOTHING",
            scripts,
            2,
            |row, script| {
                row.bind(script.sha256.as_str())
                    .bind(script.content.as_slice());
            },
        )
        .await?;

        Self::commit_catalog_change(tx, audit).await?;
        Ok(previous)
    }

    async fn remove_pack(&self, name: &str, audit: &NewAuditRecord) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        D::lock_names(&mut tx, NamedLock::Pack, &[name]).await?;
        if Self::retire_pack(&mut tx, name, audit.at).await?.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        Self::delete_pack_members(&mut tx, name).await?;
        sqlx::query("DELETE FROM packs WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        Self::commit_catalog_change(tx, audit).await?;
        Ok(true)
    }

    async fn get_pack(&self, name: &str) -> Result<Option<PackRecord>> {
        sqlx::query_as::<_, PackRow>(&format!("SELECT {PACK_COLUMNS} FROM packs WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.readers)
            .await?
            .map(|row| row.into_record("packs.content"))
            .transpose()
    }

    async fn list_packs(&self) -> Result<Vec<PackRecord>> {
        sqlx::query_as::<_, PackRow>(&format!("SELECT {PACK_COLUMNS} FROM packs ORDER BY name"))
            .fetch_all(&self.readers)
            .await?
            .into_iter()
            .map(|row| row.into_record("packs.content"))
            .collect()
    }

    async fn pack_history(&self, name: &str) -> Result<Vec<PackRecord>> {
        sqlx::query_as::<_, PackRow>(&format!(
            "SELECT {PACK_COLUMNS} FROM pack_history WHERE name = $1 ORDER BY seq DESC"
        ))
        .bind(name)
        .fetch_all(&self.readers)
        .await?
        .into_iter()
        .map(|row| row.into_record("pack_history.content"))
        .collect()
    }

    async fn get_action(&self, reference: &str) -> Result<Option<ActionRecord>> {
        sqlx::query_as::<_, ActionRow>(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE reference = $1"
        ))
        .bind(reference)
        .fetch_optional(&self.readers)
        .await?
        .map(ActionRecord::try_from)
        .transpose()
    }

    async fn list_actions(&self, pack: Option<&str>) -> Result<Vec<ActionRecord>> {
        let mut statement =
            Statement::new(format!("SELECT {ACTION_COLUMNS} FROM actions WHERE true"));
        statement
            .and_where("pack = ", pack)
            .push(" ORDER BY reference");
        let (sql, arguments) = statement.into_parts()?;
        let rows: Vec<ActionRow> = sqlx::query_as_with(&sql, arguments)
            .fetch_all(&self.readers)
            .await?;
        rows.into_iter().map(ActionRecord::try_from).collect()
    }

    async fn get_rule(&self, reference: &str) -> Result<Option<RuleRecord>> {
        sqlx::query_as::<_, RuleRow>(&format!(
            "SELECT {RULE_COLUMNS} FROM rules WHERE reference = $1"
        ))
        .bind(reference)
        .fetch_optional(&self.readers)
        .await?
        .map(RuleRecord::try_from)
        .transpose()
    }

    async fn list_rules(&self, trigger: Option<&str>) -> Result<Vec<RuleRecord>> {
        let mut statement = Statement::new(format!("SELECT {RULE_COLUMNS} FROM rules WHERE true"));
        statement
            .and_where("trigger = ", trigger)
            .push(" ORDER BY reference");
        let (sql, arguments) = statement.into_parts()?;
        let rows: Vec<RuleRow> = sqlx::query_as_with(&sql, arguments)
            .fetch_all(&self.readers)
            .await?;
        rows.into_iter().map(RuleRecord::try_from).collect()
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
        Self::commit_catalog_change(tx, audit).await?;
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
            "INSERT INTO events (id, trigger, payload, source, received_at, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.id.as_str())
        .bind(event.trigger.as_str())
        .bind(&event.payload)
        .bind(event.source.as_str())
        .bind(SqlTime(event.received_at))
        .bind(event.idempotency_key.as_deref())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn record_events(&self, events: &[NewEvent]) -> Result<Vec<EventId>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        // A key already stored (or earlier in this batch) conflicts, and
        // that row is skipped. With Postgres, a replica storing the same key
        // at the same moment makes this statement wait for its commit, then
        // skip; so two replicas sent the same notification store it once.
        Self::write_rows(
            &mut tx,
            "INSERT INTO events (id, trigger, payload, source, received_at, idempotency_key) ",
            " ON CONFLICT (idempotency_key) DO NOTHING",
            events,
            6,
            |row, event| {
                row.bind(event.id.as_str())
                    .bind(event.trigger.as_str())
                    .bind(Some(&event.payload))
                    .bind(event.source.as_str())
                    .bind(SqlTime(event.received_at))
                    .bind(event.idempotency_key.as_deref());
            },
        )
        .await?;
        // Each key's event as stored now: this batch's or an earlier one.
        let keys: Vec<&str> = events
            .iter()
            .filter_map(|event| event.idempotency_key.as_deref())
            .collect();
        let stored: std::collections::HashMap<String, String> = if keys.is_empty() {
            Default::default()
        } else {
            sqlx::query_as::<_, (String, String)>(&format!(
                "SELECT idempotency_key, id FROM events \
                 WHERE idempotency_key IN (SELECT value FROM {}($1))",
                D::JSON_ARRAY_ELEMENTS
            ))
            .bind(to_json(&keys)?)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect()
        };
        tx.commit().await?;
        events
            .iter()
            .map(|event| match &event.idempotency_key {
                None => Ok(event.id.clone()),
                Some(key) => stored.get(key).map(|id| EventId::from(id.clone())).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "the event with idempotency key {key:?} was not found right after it was stored"
                    ))
                }),
            })
            .collect()
    }

    async fn claim_pending_events(
        &self,
        claimer: &str,
        limit: u32,
        lease: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>> {
        // Concurrent claimers never get the same event. With Postgres, SKIP
        // LOCKED makes them take different events instead of queueing behind
        // each other's row locks, and a row another claimer committed
        // meanwhile is re-checked against the WHERE clause before it is
        // locked, so its fresh lease keeps it out. With SQLite, choosing
        // the events and taking their lease is one statement of the writer,
        // which no other claimer can split.
        let mut events = sqlx::query_as::<_, EventRow>(&format!(
            "UPDATE events SET claimed_by = $1, claimed_until = $2 \
             WHERE id IN (SELECT id FROM events \
                          WHERE state = 'pending' \
                            AND (claimed_until IS NULL OR claimed_until < $3) \
                          ORDER BY id LIMIT $4{}) \
             RETURNING {EVENT_COLUMNS}",
            D::FOR_UPDATE_SKIP_LOCKED
        ))
        .bind(claimer)
        .bind(SqlTime(lease_end(now, lease)))
        .bind(SqlTime(now))
        .bind(effective_limit(limit))
        .fetch_all(&self.writer)
        .await?
        .into_iter()
        .map(EventRecord::try_from)
        .collect::<Result<Vec<_>>>()?;
        // RETURNING has no ORDER BY.
        events.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(events)
    }

    async fn finish_events(&self, outcomes: &[EventOutcome], now: DateTime<Utc>) -> Result<u64> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        // The states and matched rules are computed before the statement
        // borrows them.
        let rows: Vec<(&EventOutcome, &'static str, Option<JsonValue>)> = outcomes
            .iter()
            .map(|outcome| {
                let state = event_state_name(finished_state(outcome));
                (outcome, state, matched_rules_json(outcome))
            })
            .collect();
        let mut tx = self.begin_write().await?;
        // Only a pending event is finished: if its lease ran out and a
        // second processor got to it too, the first outcome recorded stays.
        let finished = Self::write_rows(
            &mut tx,
            "WITH outcome (id, state, error, matched_rules, processed_at) AS (",
            ") UPDATE events SET state = outcome.state, error = outcome.error, \
                                 matched_rules = outcome.matched_rules, \
                                 processed_at = outcome.processed_at \
               FROM outcome WHERE events.id = outcome.id AND events.state = 'pending'",
            &rows,
            5,
            |row, (outcome, state, matched_rules)| {
                row.bind(outcome.id.as_str())
                    .bind(*state)
                    .bind(outcome.error.as_deref())
                    .bind(matched_rules.as_ref())
                    .bind(SqlTime(now));
            },
        )
        .await?;
        tx.commit().await?;
        Ok(finished)
    }

    async fn get_event(&self, id: &EventId) -> Result<Option<EventRecord>> {
        sqlx::query_as::<_, EventRow>(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.readers)
            .await?
            .map(EventRecord::try_from)
            .transpose()
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>> {
        let mut statement =
            Statement::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE true"));
        statement
            .and_where("trigger = ", filter.trigger.as_deref())
            .and_where("received_at >= ", filter.since.map(SqlTime))
            .and_where("state = ", filter.state.map(event_state_name))
            .and_where("id < ", filter.before_id.as_ref().map(EventId::as_str))
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(effective_limit(filter.limit));
        let (sql, arguments) = statement.into_parts()?;
        let rows: Vec<EventRow> = sqlx::query_as_with(&sql, arguments)
            .fetch_all(&self.readers)
            .await?;
        rows.into_iter().map(EventRecord::try_from).collect()
    }

    async fn fire_rules(
        &self,
        firings: &[RuleFiring],
        now: DateTime<Utc>,
    ) -> Result<Vec<FiringOutcome>> {
        if firings.is_empty() {
            return Ok(Vec::new());
        }
        // Firings of each rule are serialised until commit, so the counts
        // each firing reads include all that earlier firings wrote: two
        // firings can never both see room for one more job.
        let mut tx = self.begin_write().await?;
        let rules: Vec<&str> = firings.iter().map(|firing| firing.rule.as_str()).collect();
        D::lock_names(&mut tx, NamedLock::Rule, &rules).await?;
        let mut outcomes = Vec::with_capacity(firings.len());
        for firing in firings {
            outcomes.push(Self::fire_one(&mut tx, firing, now).await?);
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
        // The primary key decides: of concurrent inserts one commits, the
        // others wait for it (Postgres) or run after it (SQLite's writer)
        // and then do nothing.
        let inserted = sqlx::query(
            "INSERT INTO timer_ticks (rule, tick) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(rule)
        .bind(SqlTime(tick))
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn put_secret(&self, secret: &SecretWrite, audit: &NewAuditRecord) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        // A row lock cannot hold a name that has no row yet.
        D::lock_names(&mut tx, NamedLock::Secret, &[secret.name.as_str()]).await?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT name FROM secrets WHERE name = $1")
                .bind(secret.name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let statement = if existing.is_some() {
            "UPDATE secrets SET ciphertext = $2, nonce = $3, key_id = $4, \
             updated_at = $5, updated_by = $6 WHERE name = $1"
        } else {
            "INSERT INTO secrets (name, ciphertext, nonce, key_id, created_at, created_by, \
             updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $5, $6)"
        };
        sqlx::query(statement)
            .bind(secret.name.as_str())
            .bind(secret.sealed.ciphertext.as_slice())
            .bind(secret.sealed.nonce.as_slice())
            .bind(secret.sealed.key_id.as_str())
            .bind(SqlTime(secret.at))
            .bind(secret.by.as_str())
            .execute(&mut *tx)
            .await?;
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(existing.is_none())
    }

    async fn list_secrets(&self) -> Result<Vec<SecretRecord>> {
        let rows: Vec<SecretRow> = sqlx::query_as(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name"
        ))
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(SecretRecord::from).collect())
    }

    async fn get_secret(&self, name: &str) -> Result<Option<SecretRecord>> {
        let row: Option<SecretRow> = sqlx::query_as(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(SecretRecord::from))
    }

    async fn delete_secret(&self, name: &str, audit: &NewAuditRecord) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM secrets WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    // --- drone checks --------------------------------------------------------

    async fn replace_drone_checks(
        &self,
        drone_id: &DroneId,
        checks: &[ultron8_core::checks::CheckStatus],
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let known: Option<String> = sqlx::query_scalar("SELECT id FROM drones WHERE id = $1")
            .bind(drone_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            tx.rollback().await?;
            return Ok(());
        }
        sqlx::query("DELETE FROM drone_checks WHERE drone_id = $1")
            .bind(drone_id.as_str())
            .execute(&mut *tx)
            .await?;
        for check in checks {
            sqlx::query(
                "INSERT INTO drone_checks (drone_id, check_ref, state, since_ms, last_run_ms, \
                 last_output, reported_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (drone_id, check_ref) DO NOTHING",
            )
            .bind(drone_id.as_str())
            .bind(check.check.as_str())
            .bind(check.state.as_str())
            .bind(check.since_ms.unwrap_or(0))
            .bind(check.last_run_ms.unwrap_or(0))
            .bind(check.last_output.as_str())
            .bind(SqlTime(at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_drone_checks(&self) -> Result<Vec<DroneCheckRecord>> {
        let rows: Vec<(String, String, String, i64, i64, String, SqlTime)> = sqlx::query_as(
            "SELECT c.drone_id, c.check_ref, c.state, c.since_ms, c.last_run_ms, c.last_output, \
             c.reported_at FROM drone_checks c JOIN drones d ON d.id = c.drone_id \
             WHERE d.removed_at IS NULL ORDER BY c.drone_id, c.check_ref",
        )
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .map(
                |(drone_id, check, state, since_ms, last_run_ms, last_output, reported_at)| {
                    let state = state.parse().map_err(|e| {
                        StoreError::Corrupt(format!("drone_checks row ({drone_id}, {check}): {e}"))
                    })?;
                    Ok(DroneCheckRecord {
                        drone_id: DroneId::from(drone_id),
                        status: ultron8_core::checks::CheckStatus {
                            check,
                            state,
                            since_ms: (since_ms != 0).then_some(since_ms),
                            last_run_ms: (last_run_ms != 0).then_some(last_run_ms),
                            last_output,
                        },
                        reported_at: reported_at.0,
                    })
                },
            )
            .collect()
    }

    // --- probes --------------------------------------------------------------

    async fn claim_probe_round(&self, probe: &str, tick: DateTime<Utc>) -> Result<bool> {
        // The row's lock decides between replicas; the WHERE makes a tick at
        // or before the last one claimed a no-op, so a replica whose clock
        // lags cannot run a round twice.
        let claimed = sqlx::query(
            "INSERT INTO probe_rounds (probe, last_tick) VALUES ($1, $2) \
             ON CONFLICT (probe) DO UPDATE SET last_tick = excluded.last_tick \
             WHERE probe_rounds.last_tick < excluded.last_tick",
        )
        .bind(probe)
        .bind(SqlTime(tick))
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    async fn probe_states(&self, probe: Option<&str>) -> Result<Vec<ProbeStateRecord>> {
        let mut statement = Statement::new(format!(
            "SELECT {PROBE_STATE_COLUMNS} FROM probe_states WHERE true"
        ));
        statement
            .and_where("probe = ", probe)
            .push(" ORDER BY probe, target");
        let (sql, arguments) = statement.into_parts()?;
        let rows: Vec<ProbeStateRow> = sqlx::query_as_with(&sql, arguments)
            .fetch_all(&self.readers)
            .await?;
        rows.into_iter().map(ProbeStateRecord::try_from).collect()
    }

    async fn save_probe_states(&self, probe: &str, states: &[ProbeStateRecord]) -> Result<()> {
        let trackers = states
            .iter()
            .map(|state| to_json(&state.tracker))
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<(&ProbeStateRecord, JsonValue)> = states.iter().zip(trackers).collect();
        let mut tx = self.begin_write().await?;
        // A round replaces the probe's rows: targets no longer selected go.
        sqlx::query("DELETE FROM probe_states WHERE probe = $1")
            .bind(probe)
            .execute(&mut *tx)
            .await?;
        Self::write_rows(
            &mut tx,
            &format!("INSERT INTO probe_states ({PROBE_STATE_COLUMNS}) "),
            "",
            &rows,
            10,
            |row, (state, tracker)| {
                row.bind(probe)
                    .bind(state.target.as_str())
                    .bind(state.address.as_str())
                    .bind(state.state.as_str())
                    .bind(state.since.map(SqlTime))
                    .bind(SqlTime(state.last_run))
                    .bind(state.last_outcome.as_str())
                    .bind(state.detail.as_str())
                    .bind(state.latency_us)
                    .bind(tracker.clone());
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retain_probes(&self, probes: &[String]) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let mut forgotten = 0;
        for table in ["probe_states", "probe_rounds"] {
            let mut statement = Statement::new(format!("DELETE FROM {table} WHERE true"));
            for probe in probes {
                statement.push(" AND probe <> ").push_bind(probe.as_str());
            }
            let (sql, arguments) = statement.into_parts()?;
            let deleted = sqlx::query_with(&sql, arguments)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if table == "probe_states" {
                forgotten = deleted;
            }
        }
        tx.commit().await?;
        Ok(forgotten)
    }
    // --- fleet: discovery sources and targets ------------------------------

    async fn create_source(&self, source: &NewSource, audit: &NewAuditRecord) -> Result<bool> {
        let interval_ms = i64::try_from(source.interval.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.begin_write().await?;
        // The primary key decides between two operators adding one name.
        let inserted = sqlx::query(
            "INSERT INTO discovery_sources (name, kind, spec, interval_ms, origin, created_at, \
             created_by, next_due_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $6) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(source.name.as_str())
        .bind(source.spec.kind().as_str())
        .bind(to_json(&source.spec)?)
        .bind(interval_ms)
        .bind(source.origin.as_str())
        .bind(SqlTime(source.created_at))
        .bind(source.created_by.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_sources(&self) -> Result<Vec<SourceRecord>> {
        let rows: Vec<SourceRow> = sqlx::query_as(&format!(
            "SELECT {SOURCE_COLUMNS} FROM discovery_sources s ORDER BY s.name"
        ))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(SourceRecord::try_from).collect()
    }

    async fn get_source(&self, name: &str) -> Result<Option<SourceRecord>> {
        sqlx::query_as::<_, SourceRow>(&format!(
            "SELECT {SOURCE_COLUMNS} FROM discovery_sources s WHERE s.name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.readers)
        .await?
        .map(SourceRecord::try_from)
        .transpose()
    }

    async fn remove_source(&self, name: &str, audit: &NewAuditRecord) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM fleet_targets WHERE source = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM discovery_sources WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_source(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool> {
        // One conditional UPDATE: of concurrent claims, Postgres lets one
        // change the row and re-checks the others' conditions against
        // what it wrote (the lease is no longer free); SQLite's single
        // writer runs them one after the other.
        let claimed = sqlx::query(
            "UPDATE discovery_sources SET lease_holder = $2, lease_until = $4 \
             WHERE name = $1 AND next_due_at <= $3 \
               AND (lease_until IS NULL OR lease_until <= $3 OR lease_holder = $2)",
        )
        .bind(name)
        .bind(holder)
        .bind(SqlTime(now))
        .bind(SqlTime(lease_until))
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    async fn finish_source_refresh(
        &self,
        name: &str,
        holder: &str,
        refresh: &SourceRefresh,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let released = sqlx::query(
            "UPDATE discovery_sources SET lease_holder = NULL, lease_until = NULL, \
             last_refresh_at = $3, last_error = $4, next_due_at = $5 \
             WHERE name = $1 AND lease_holder = $2",
        )
        .bind(name)
        .bind(holder)
        .bind(SqlTime(refresh.at))
        .bind(refresh.error.as_deref())
        .bind(SqlTime(refresh.next_due_at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if released == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if refresh.error.is_none() {
            sqlx::query("DELETE FROM fleet_targets WHERE source = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            let mut rows = Vec::with_capacity(refresh.instances.len());
            for instance in refresh.instances.iter().filter(|i| i.source == name) {
                let history: Vec<(i64, f64, f64)> = instance
                    .history
                    .iter()
                    .map(|s| (s.at_ms, s.cpu, s.memory))
                    .collect();
                rows.push((instance, to_json(&instance.labels)?, to_json(&history)?));
            }
            Self::write_rows(
                &mut tx,
                &format!("INSERT INTO fleet_targets ({TARGET_COLUMNS}) "),
                "",
                &rows,
                12,
                |row, (instance, labels, history)| {
                    row.bind(instance.source.as_str())
                        .bind(instance.name.as_str())
                        .bind(instance.address.as_deref())
                        .bind(instance.service.as_str())
                        .bind(Some(labels))
                        .bind(instance.cpu)
                        .bind(instance.memory)
                        .bind(instance.status.as_str())
                        .bind(instance.error.as_deref())
                        .bind(instance.last_seen.map(SqlTime))
                        .bind(SqlTime(instance.updated_at))
                        .bind(Some(history));
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn mark_source_due(&self, name: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE discovery_sources SET next_due_at = $2 WHERE name = $1 AND next_due_at > $2",
        )
        .bind(name)
        .bind(SqlTime(at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_targets(&self, filter: &TargetFilter) -> Result<Vec<Instance>> {
        let mut statement = Statement::new(format!(
            "SELECT {TARGET_COLUMNS} FROM fleet_targets WHERE true"
        ));
        statement
            .and_where("source = ", filter.source.as_deref())
            .and_where("service = ", filter.service.as_deref())
            .push(" ORDER BY service, name, source");
        let (sql, arguments) = statement.into_parts()?;
        let rows: Vec<TargetRow> = sqlx::query_as_with(&sql, arguments)
            .fetch_all(&self.readers)
            .await?;
        rows.into_iter().map(Instance::try_from).collect()
    }
}
