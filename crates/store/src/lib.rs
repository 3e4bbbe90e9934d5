//! Ultron8's persistent state.
//!
//! [`Store`] is the one interface the hive uses. It has one implementation,
//! [`sql::SqlStore`], whose queries are written once and run on two
//! databases: [`postgres::PgStore`] in production, and
//! [`sqlite::SqliteStore`], which keeps the same state in one local file for
//! the single-host embedded default (`ultron8-hive dev`). Both must pass
//! the shared conformance suite in `tests/conformance.rs`, so behaviour
//! cannot drift between them.
//!
//! The store enforces two invariants itself rather than trusting callers:
//! execution status only moves forward (see
//! [`ultron8_core::ExecutionStatus::can_transition_to`]), and audit records
//! are append-only (there is no method that updates or deletes one).
//!
//! # What differs between the databases
//!
//! Everything that can be written once is, in [`sql`]; what cannot is an
//! item of [`sql::Dialect`], implemented in [`postgres`] and [`sqlite`]:
//!
//! - **Concurrency.** Postgres serves several hive replicas and lets writes
//!   run in parallel, so a read that decides a write locks its rows
//!   (`FOR UPDATE`, `FOR SHARE`, `FOR UPDATE SKIP LOCKED` to claim events),
//!   and what has no row to lock (a pack being installed, a rule's policy
//!   decisions) takes an advisory lock on its name. SQLite lets one
//!   connection write at a time: the store writes through a single
//!   connection, every write transaction starts with `BEGIN IMMEDIATE`, and
//!   the locks are empty. Outcomes are the same; SQLite does not write in
//!   parallel, which a single host does not need.
//! - **Pools.** One pool for reads and writes with Postgres; with SQLite the
//!   one writer and a pool of query-only readers (WAL mode).
//! - **Types.** Times are `TIMESTAMPTZ` in Postgres and INTEGER microseconds
//!   since the unix epoch in SQLite ([`sql::SqlTime`] encodes both, keeping
//!   the same instant); JSON is `JSONB` in Postgres and `TEXT` checked with
//!   `json_valid` in SQLite; booleans are INTEGER 0/1 in SQLite.
//! - **Spelling.** A JSON array read as rows (`jsonb_array_elements_text`,
//!   `json_each`), and how many parameters one statement may bind (65,535,
//!   32,766), which batches are split by.
//! - **Schema.** Two migration directories, `migrations/postgres` and
//!   `migrations/sqlite`: the same tables, columns, constraints and indexes
//!   with the types translated, except that SQLite cannot check a script's
//!   SHA-256.
//!
//! What a caller can still observe (text collation, NUL characters, times
//! before 4714 BC, error codes, waiting for the writer) is listed in
//! [`sqlite`]'s "Differences from Postgres".

mod common;
mod dialect;
pub mod postgres;
pub mod sql;
pub mod sqlite;
mod types;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use types::*;
use ultron8_core::ids::{DroneId, EventId, ExecutionId, JobId};
use ultron8_core::{DroneFacts, HostStats};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("join token is unknown, already used, expired or made for another drone name")]
    JoinTokenInvalid,
    /// An enrollment claimed the name of a drone in the fleet with a token
    /// not made to replace it.
    #[error("drone {drone_id} is already in the fleet")]
    DroneEnrolled {
        drone_id: DroneId,
        enrolled_at: DateTime<Utc>,
        certificate_fingerprint: String,
    },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The database did not answer in time; says what was waited for.
    #[error("{0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The schema is not what this build needs, or the roles are not
    /// what [`postgres::PgStore::grant`] can work with; says what to do.
    #[error("{0}")]
    Schema(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            // A value the store's own decoding refused (a stored time out of
            // range) is corrupt data, not a failing database: it stays
            // `Corrupt`, with the column it was read from.
            sqlx::Error::ColumnDecode { index, source } => match source.downcast::<StoreError>() {
                Ok(refused) => match *refused {
                    StoreError::Corrupt(message) => {
                        StoreError::Corrupt(format!("column {index}: {message}"))
                    }
                    other => other,
                },
                Err(source) => StoreError::Database(sqlx::Error::ColumnDecode { index, source }),
            },
            error => StoreError::Database(error),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip, for readiness checks. Fails with
    /// [`StoreError::Unavailable`] after a short deadline of its own rather
    /// than waiting as long as other requests may.
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
        drone_id: &DroneId,
        now: DateTime<Utc>,
    ) -> Result<JoinTokenGrant>;

    /// The join path, in one transaction: consumes the token (as
    /// [`consume_join_token`](Self::consume_join_token), and only for the
    /// name it was made for, if any) and records the enrollment. A name in
    /// the fleet is taken over only with a token made to replace it; the
    /// certificate it replaces is revoked in the same transaction. Refused
    /// claims change nothing and leave the token usable: fails with
    /// [`StoreError::JoinTokenInvalid`] or [`StoreError::DroneEnrolled`].
    async fn enroll_drone(&self, claim: &EnrollmentClaim) -> Result<EnrollmentGrant>;

    // --- certificates ----------------------------------------------------
    /// Records revocations (a fingerprint already revoked keeps its first
    /// record) and their audit record, in one transaction.
    async fn revoke_certificates(
        &self,
        revocations: &[RevokedCertificate],
        audit: &NewAuditRecord,
    ) -> Result<()>;
    /// Revocations of certificates that have not expired at `now` (or whose
    /// end is unknown).
    async fn list_revoked_certificates(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<RevokedCertificate>>;
    /// Records an operator certificate; one already recorded is kept as it
    /// was. Returns whether it was new.
    async fn record_operator_certificate(&self, certificate: &OperatorCertificate) -> Result<bool>;
    /// Every recorded operator certificate with its revocation, by name then
    /// time recorded.
    async fn list_operator_certificates(&self) -> Result<Vec<OperatorCertificateRecord>>;

    // --- drones ----------------------------------------------------------
    /// Creates the drone, or records a re-enrollment of an existing id
    /// (which brings a removed drone back into the fleet), unconditionally:
    /// for drones the hive builds in. Joins go through
    /// [`enroll_drone`](Self::enroll_drone).
    async fn record_enrollment(&self, enrollment: &DroneEnrollment) -> Result<()>;
    /// Stores the facts, marks the drone online and seen at `now`. Fails
    /// with NotFound for a drone that never enrolled or was removed.
    async fn record_registration(
        &self,
        drone_id: &DroneId,
        facts: &DroneFacts,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Stores the stats, marks the drone online and seen at `now`. Fails
    /// with NotFound for a drone that never enrolled or was removed.
    async fn record_heartbeat(
        &self,
        drone_id: &DroneId,
        stats: &HostStats,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Marks the drone online and seen at `now`, keeping its facts and
    /// stats: any call a drone makes proves it alive (check transitions it
    /// spooled may arrive before its next heartbeat). NotFound for a drone
    /// that never enrolled or was removed.
    async fn record_seen(&self, drone_id: &DroneId, now: DateTime<Utc>) -> Result<()>;
    /// Marks online drones last seen before `cutoff` offline; returns their ids.
    async fn mark_silent_drones_offline(&self, cutoff: DateTime<Utc>) -> Result<Vec<DroneId>>;
    /// The fleet, ordered by id: removed drones are not in it.
    async fn list_drones(&self) -> Result<Vec<DroneRecord>>;
    /// The drone, removed or not ([`DroneRecord::removed`] says).
    async fn get_drone(&self, drone_id: &DroneId) -> Result<Option<DroneRecord>>;
    /// Takes the drone out of the fleet and appends `audit`, in one
    /// transaction: it is marked offline and removed, its certificate is
    /// revoked, and its record stays (executions and audit records name
    /// it). False, writing nothing, if
    /// no such drone is in the fleet.
    async fn remove_drone(
        &self,
        drone_id: &DroneId,
        removal: &DroneRemoval,
        audit: &NewAuditRecord,
    ) -> Result<bool>;

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
    async fn get_job(&self, job_id: &JobId) -> Result<Option<JobRecord>>;
    /// Most recent first, those the filter selects.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobSummary>>;
    /// The ids of `kind` that start with `prefix`, compared character by
    /// character (no character is a wildcard): an id equal to `prefix`
    /// first, then in id order; at most `limit` (zero means 100).
    async fn ids_with_prefix(&self, kind: IdKind, prefix: &str, limit: u32) -> Result<Vec<String>>;
    /// The stored ids of `kind` whose first [`ID_INDEXED_PREFIX`] characters
    /// are those of one of `ids` (`ids` themselves included when stored),
    /// at most `limit` (zero means 100): what decides how short each of
    /// `ids` may be printed and stay unique.
    async fn ids_sharing_prefix(
        &self,
        kind: IdKind,
        ids: &[String],
        limit: u32,
    ) -> Result<Vec<String>>;
    async fn get_execution(&self, execution_id: &ExecutionId) -> Result<Option<ExecutionRecord>>;
    /// Applies `update` if the state machine allows the move from the
    /// current status, and appends `audit` in the same transaction only when
    /// it applied. Never overwrites a terminal state.
    async fn transition_execution(
        &self,
        execution_id: &ExecutionId,
        update: &ExecutionUpdate,
        audit: Option<&NewAuditRecord>,
    ) -> Result<TransitionOutcome>;
    /// Appends streamed output. Chunks for a terminal execution are ignored.
    async fn append_output(&self, chunk: &OutputChunkRecord) -> Result<()>;
    /// Streamed output recorded so far, ordered by stream then offset.
    async fn execution_output(&self, execution_id: &ExecutionId) -> Result<Vec<OutputChunkRecord>>;
    /// The chunks of an execution's output at or after `stdout_from` and
    /// `stderr_from` (byte offsets), in order: what a follower has not seen.
    async fn execution_output_from(
        &self,
        execution_id: &ExecutionId,
        stdout_from: u64,
        stderr_from: u64,
    ) -> Result<Vec<OutputChunkRecord>>;
    /// Executions `running` on drones last seen before `cutoff`.
    async fn running_on_silent_drones(&self, cutoff: DateTime<Utc>)
    -> Result<Vec<ExecutionRecord>>;
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
    /// How many events wait for the rules engine, and when the oldest of
    /// them arrived: the engine's backlog.
    async fn pending_events(&self) -> Result<PendingEvents>;
    /// What finished since `since`: executions by final status, and events
    /// whose processing failed. For `ultronctl status`.
    async fn activity_since(&self, since: DateTime<Utc>) -> Result<Activity>;

    // --- audit -----------------------------------------------------------
    async fn append_audit(&self, record: &NewAuditRecord) -> Result<()>;
    /// Newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;

    // --- packs -------------------------------------------------------------
    /// Installs or upgrades a pack in one transaction: the previous version
    /// (if any) moves to the pack's history, the pack's actions and rules are
    /// replaced by these, scripts are added (content-addressed, kept if
    /// already present), and `audit` is appended. Returns the previous
    /// version's text. Rules take the `enabled` flag given here.
    async fn install_pack(
        &self,
        pack: &PackRecord,
        actions: &[ActionRecord],
        rules: &[RuleRecord],
        scripts: &[ScriptRecord],
        audit: &NewAuditRecord,
    ) -> Result<Option<String>>;
    /// Removes the pack, its actions and rules (history and scripts stay),
    /// and appends `audit`, in one transaction. False if not installed.
    async fn remove_pack(&self, name: &str, audit: &NewAuditRecord) -> Result<bool>;
    async fn get_pack(&self, name: &str) -> Result<Option<PackRecord>>;
    /// Ordered by name.
    async fn list_packs(&self) -> Result<Vec<PackRecord>>;
    /// Earlier installed versions of a pack, newest first.
    async fn pack_history(&self, name: &str) -> Result<Vec<PackRecord>>;
    async fn get_action(&self, reference: &str) -> Result<Option<ActionRecord>>;
    /// Ordered by reference; all packs when `pack` is None.
    async fn list_actions(&self, pack: Option<&str>) -> Result<Vec<ActionRecord>>;
    async fn get_rule(&self, reference: &str) -> Result<Option<RuleRecord>>;
    /// Ordered by reference; all triggers when `trigger` is None.
    async fn list_rules(&self, trigger: Option<&str>) -> Result<Vec<RuleRecord>>;
    /// Sets the flag and appends `audit` in one transaction; false if the
    /// rule does not exist (then nothing is written).
    async fn set_rule_enabled(
        &self,
        reference: &str,
        enabled: bool,
        audit: &NewAuditRecord,
    ) -> Result<bool>;
    async fn get_script(&self, sha256: &str) -> Result<Option<Vec<u8>>>;

    // --- events ------------------------------------------------------------
    /// Stores a new event as pending. Once this returns, the event is
    /// durable. Its idempotency key, if any, must not be stored yet.
    async fn record_event(&self, event: &NewEvent) -> Result<()>;
    /// Stores several new events as pending, in one transaction: all of
    /// them or none. An event whose idempotency key is already stored (by
    /// an earlier call, or earlier in `events`) is not stored again.
    /// Returns, for each event in order, the id it is stored under: its own
    /// if it was stored now, else that of the event stored with its key.
    /// Once this returns, they are durable.
    async fn record_events(&self, events: &[NewEvent]) -> Result<Vec<EventId>>;
    /// Claims up to `limit` pending events, oldest first, for `lease`: another
    /// replica cannot claim them until the lease runs out (so an event whose
    /// processor died is picked up again). Concurrent callers never get the
    /// same event while its lease runs.
    async fn claim_pending_events(
        &self,
        claimer: &str,
        limit: u32,
        lease: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>>;
    /// Marks a claimed event processed (`error` None) or failed. NotFound
    /// for an unknown id.
    async fn finish_event(
        &self,
        id: &EventId,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let outcome = EventOutcome {
            id: id.clone(),
            error: error.map(str::to_string),
            matched_rules: Vec::new(),
        };
        if self
            .finish_events(std::slice::from_ref(&outcome), now)
            .await?
            == 0
            && self.get_event(id).await?.is_none()
        {
            return Err(StoreError::NotFound {
                kind: "event",
                id: id.to_string(),
            });
        }
        Ok(())
    }
    /// Marks claimed events processed or failed, with the rules that
    /// matched each, in one transaction. Only pending events change: if a
    /// lease ran out and a second processor finished an event too, the
    /// first outcome stays. Unknown ids are skipped. Returns how many
    /// events changed.
    async fn finish_events(&self, outcomes: &[EventOutcome], now: DateTime<Utc>) -> Result<u64>;
    async fn get_event(&self, id: &EventId) -> Result<Option<EventRecord>>;
    /// Newest first.
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>>;

    // --- rule firings --------------------------------------------------------
    /// Decides the rule's policy and records the outcome in one transaction,
    /// serialized per rule across replicas: gathers the observation (last
    /// firing for the cooldown key, unfinished jobs of the rule when the
    /// policy limits concurrency, distinct
    /// hosts it acted on within the blast-radius window), calls
    /// `ultron8_core::policy::decide`, then either writes the job, its
    /// executions (as `create_job` does), the cooldown mark and a
    /// `rule.fired` audit record (job_id, event_id, rule, action_ref set), or
    /// only a `rule.held` audit record with the reason.
    ///
    /// A rule is decided at most once per event: if this (event, rule) was
    /// already decided, nothing is written and the outcome is
    /// [`FiringOutcome::AlreadyDecided`]. The decision is a row whose
    /// primary key is (event, rule), written in the same transaction.
    async fn fire_rule(&self, firing: &RuleFiring, now: DateTime<Utc>) -> Result<FiringOutcome> {
        let mut outcomes = self.fire_rules(std::slice::from_ref(firing), now).await?;
        outcomes.pop().ok_or_else(|| {
            StoreError::Corrupt("a firing of one rule returned no outcome".to_string())
        })
    }
    /// [`Store::fire_rule`] for several firings in one transaction, in
    /// order: each decision sees what the earlier ones wrote. One outcome
    /// per firing, in the same order. If any firing fails, nothing is
    /// written.
    async fn fire_rules(
        &self,
        firings: &[RuleFiring],
        now: DateTime<Utc>,
    ) -> Result<Vec<FiringOutcome>>;
    /// A number that changes whenever packs, actions or rules change
    /// (install, upgrade, removal, enabling or disabling a rule), so that a
    /// hive holding compiled rules knows when to reload them.
    async fn catalog_version(&self) -> Result<i64>;
    /// Timers: true for exactly one caller per (rule, tick) across replicas.
    async fn claim_timer_tick(&self, rule: &str, tick: DateTime<Utc>) -> Result<bool>;

    // --- secrets -----------------------------------------------------------
    /// Creates the secret, or replaces the sealed value of the one of that
    /// name (keeping when and by whom it was created), with `audit`, in
    /// one transaction. True when it was created.
    async fn put_secret(&self, secret: &SecretWrite, audit: &NewAuditRecord) -> Result<bool>;
    /// Every secret by name; the sealed values are read too, as they are
    /// useless without the hive's key.
    async fn list_secrets(&self) -> Result<Vec<SecretRecord>>;
    async fn get_secret(&self, name: &str) -> Result<Option<SecretRecord>>;
    /// Deletes the secret with `audit`, in one transaction; false (and no
    /// record written) when there is none of that name.
    async fn delete_secret(&self, name: &str, audit: &NewAuditRecord) -> Result<bool>;

    // --- fleet: discovery sources and targets ------------------------------
    /// Creates the source with `audit`, in one transaction; false (and
    /// nothing written) when one of that name exists. It is due at once.
    async fn create_source(&self, source: &NewSource, audit: &NewAuditRecord) -> Result<bool>;
    /// Every source by name, with how many instances each listed.
    async fn list_sources(&self) -> Result<Vec<SourceRecord>>;
    async fn get_source(&self, name: &str) -> Result<Option<SourceRecord>>;
    /// Deletes the source and its instances with `audit`, in one
    /// transaction; false (and nothing written) when there is none.
    async fn remove_source(&self, name: &str, audit: &NewAuditRecord) -> Result<bool>;
    /// Takes the lease on refreshing source `name` for `holder` until
    /// `lease_until`, if it is due (`next_due_at <= now`) and nobody else
    /// holds an unexpired lease: true for exactly one of several
    /// concurrent claimants (replicas), so a source is polled by one
    /// replica at a time.
    async fn claim_source(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool>;
    /// Stores a refresh `holder` made under its lease and gives the lease
    /// back, in one transaction: the source's instances become exactly
    /// `refresh.instances` (unless the refresh failed as a whole). False,
    /// and nothing written, when `holder` no longer holds the lease (it
    /// expired and another replica took it) or the source was removed.
    async fn finish_source_refresh(
        &self,
        name: &str,
        holder: &str,
        refresh: &SourceRefresh,
    ) -> Result<bool>;
    /// Makes source `name` due at `at` (a targets file that changed is
    /// read again at once rather than at its next interval).
    async fn mark_source_due(&self, name: &str, at: DateTime<Utc>) -> Result<()>;
    /// The inventory, by service then name then source.
    async fn list_targets(
        &self,
        filter: &TargetFilter,
    ) -> Result<Vec<ultron8_core::discovery::Instance>>;

    // --- probes --------------------------------------------------------------
    /// Claims `probe`'s round at `tick`: true for exactly one caller per
    /// tick across replicas, and never for a tick at or before one claimed
    /// already. One row per probe, however long it runs.
    async fn claim_probe_round(&self, probe: &str, tick: DateTime<Utc>) -> Result<bool>;
    /// The state of `probe` (or of every probe) on each of its targets, by
    /// probe and target.
    async fn probe_states(&self, probe: Option<&str>) -> Result<Vec<ProbeStateRecord>>;
    /// Writes a round of `probe`: upserts each state and forgets the
    /// probe's targets not among them, in one transaction.
    async fn save_probe_states(&self, probe: &str, states: &[ProbeStateRecord]) -> Result<()>;
    /// Forgets the states and rounds of every probe not in `probes` (removed
    /// with its pack). Returns the states forgotten.
    async fn retain_probes(&self, probes: &[String]) -> Result<u64>;

    // --- drone checks --------------------------------------------------------
    /// Replaces what `drone_id` last reported of its checks with `checks`
    /// (its whole summary: a check not in it is gone), in one transaction.
    /// Nothing is written for a drone the store does not know.
    async fn replace_drone_checks(
        &self,
        drone_id: &DroneId,
        checks: &[ultron8_core::checks::CheckStatus],
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// The latest reported checks of every drone in the fleet (removed
    /// drones skipped), by drone then check.
    async fn list_drone_checks(&self) -> Result<Vec<DroneCheckRecord>>;
}
