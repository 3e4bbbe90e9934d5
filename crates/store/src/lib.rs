//! Ultron8's persistent state.
//!
//! [`Store`] is the one interface the hive uses; [`postgres::PgStore`] is the
//! production implementation, and [`sqlite::SqliteStore`] keeps the same
//! state in one local file for the single-host embedded default
//! (`ultron8-hive dev`). Every implementation must pass the shared
//! conformance suite in `tests/conformance.rs`, so behaviour cannot drift
//! between them.
//!
//! The store enforces two invariants itself rather than trusting callers:
//! execution status only moves forward (see
//! [`ultron8_core::ExecutionStatus::can_transition_to`]), and audit records
//! are append-only (there is no method that updates or deletes one).

mod common;
pub mod postgres;
pub mod sqlite;
mod types;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use types::*;
use ultron8_core::{DroneFacts, HostStats};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("join token is unknown, already used or expired")]
    JoinTokenInvalid,
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip, for readiness checks.
    async fn ping(&self) -> Result<()>;

    // --- join tokens ---------------------------------------------------
    async fn create_join_token(&self, token: &NewJoinToken) -> Result<()>;
    /// Marks the token used by `drone_id` and returns its labels, atomically:
    /// of two concurrent calls with the same token at most one succeeds.
    /// Fails with [`StoreError::JoinTokenInvalid`] when the id is unknown,
    /// the hash differs, the token was used, or it expired before `now`.
    async fn consume_join_token(
        &self,
        token_id: &str,
        secret_sha256: &[u8],
        drone_id: &str,
        now: DateTime<Utc>,
    ) -> Result<JoinTokenGrant>;

    // --- drones ----------------------------------------------------------
    /// Creates the drone, or records a re-enrollment of an existing id.
    async fn record_enrollment(&self, enrollment: &DroneEnrollment) -> Result<()>;
    /// Stores the facts, marks the drone online and seen at `now`. Fails
    /// with NotFound for a drone that never enrolled.
    async fn record_registration(
        &self,
        drone_id: &str,
        facts: &DroneFacts,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Stores the stats, marks the drone online and seen at `now`.
    async fn record_heartbeat(
        &self,
        drone_id: &str,
        stats: &HostStats,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Marks online drones last seen before `cutoff` offline; returns their ids.
    async fn mark_silent_drones_offline(&self, cutoff: DateTime<Utc>) -> Result<Vec<String>>;
    /// Ordered by id.
    async fn list_drones(&self) -> Result<Vec<DroneRecord>>;
    async fn get_drone(&self, drone_id: &str) -> Result<Option<DroneRecord>>;

    // --- jobs and executions --------------------------------------------
    /// Writes the job, all its executions (status `requested`) and the audit
    /// record in one transaction.
    async fn create_job(
        &self,
        job: &NewJob,
        executions: &[NewExecution],
        audit: &NewAuditRecord,
    ) -> Result<()>;
    /// The job with its executions ordered by drone id.
    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>>;
    /// Most recent first.
    async fn list_jobs(&self, limit: u32) -> Result<Vec<JobSummary>>;
    async fn get_execution(&self, execution_id: &str) -> Result<Option<ExecutionRecord>>;
    /// Applies `update` if the state machine allows the move from the
    /// current status, and appends `audit` in the same transaction only when
    /// it applied. Never overwrites a terminal state.
    async fn transition_execution(
        &self,
        execution_id: &str,
        update: &ExecutionUpdate,
        audit: Option<&NewAuditRecord>,
    ) -> Result<TransitionOutcome>;
    /// Appends streamed output. Chunks for a terminal execution are ignored.
    async fn append_output(&self, chunk: &OutputChunkRecord) -> Result<()>;
    /// Streamed output recorded so far, ordered by stream then offset.
    async fn execution_output(&self, execution_id: &str) -> Result<Vec<OutputChunkRecord>>;
    /// Executions still `requested` that were created before `created_before`
    /// and have not expired at `now`: the hive crashed between commit and
    /// publish, or the publish failed. Oldest first.
    async fn executions_awaiting_dispatch(
        &self,
        created_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PendingDispatch>>;
    /// Moves every `requested`/`dispatched` execution whose expiry is before
    /// `cutoff` to `expired`, with one audit record each; returns them.
    async fn expire_overdue_executions(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<ExecutionRecord>>;
    /// For metrics.
    async fn count_executions_by_status(&self)
    -> Result<Vec<(ultron8_core::ExecutionStatus, i64)>>;
    async fn count_jobs(&self) -> Result<i64>;

    // --- audit -----------------------------------------------------------
    async fn append_audit(&self, record: &NewAuditRecord) -> Result<()>;
    /// Newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
}
