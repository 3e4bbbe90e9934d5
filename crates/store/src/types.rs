//! Records as the store reads and writes them.
//!
//! They hold the domain's types, not their stored text: the core's ids
//! ([`JobId`], [`ExecutionId`], [`DroneId`], [`EventId`]), its audit
//! vocabulary ([`AuditVerb`], [`Actor`]) and the validated pack model
//! ([`Pack`], [`Action`], [`Rule`]). The store writes each as the text or
//! JSON stored before these types existed, and parses it once, when a row
//! is read; what does not parse is [`crate::StoreError::Corrupt`], naming
//! the row.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ultron8_core::audit::{Actor, AuditVerb};
use ultron8_core::ids::{DroneId, EventId, ExecutionId, JobId};
use ultron8_core::{CommandSpec, DroneFacts, ExecutionStatus, HostStats};
use ultron8_pack::{Action, Pack, Rule};

#[derive(Debug, Clone)]
pub struct NewJoinToken {
    pub id: String,
    /// SHA-256 of the token's secret; the secret itself is never stored.
    pub secret_sha256: Vec<u8>,
    pub labels: BTreeMap<String, String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The one drone name that may join with the token; `None`: any name
    /// not already in the fleet.
    pub drone_id: Option<DroneId>,
    /// Lets the drone named by `drone_id` be enrolled again while it is in
    /// the fleet, revoking its current certificate.
    pub replaces: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinTokenGrant {
    pub labels: BTreeMap<String, String>,
}

/// A drone joining with a join token, for [`crate::Store::enroll_drone`].
#[derive(Debug, Clone)]
pub struct EnrollmentClaim {
    pub token_id: String,
    pub secret_sha256: Vec<u8>,
    pub drone_id: DroneId,
    /// SHA-256 (hex) of the certificate just issued.
    pub certificate_fingerprint: String,
    pub certificate_not_after: DateTime<Utc>,
    pub enrolled_at: DateTime<Utc>,
}

/// What an accepted [`EnrollmentClaim`] grants.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentGrant {
    /// From the join token.
    pub labels: BTreeMap<String, String>,
    /// The certificate of the enrollment this one replaced, now revoked.
    pub replaced_certificate: Option<String>,
}

/// A certificate the hive refuses before it expires.
#[derive(Debug, Clone, PartialEq)]
pub struct RevokedCertificate {
    /// SHA-256 (hex) of the DER certificate.
    pub fingerprint: String,
    /// Whose it was: `drone:web-1`, `operator:alice`.
    pub subject: String,
    pub reason: String,
    pub revoked_at: DateTime<Utc>,
    pub revoked_by: String,
    /// `None` when unknown; the row is kept until then.
    pub not_after: Option<DateTime<Utc>>,
}

/// An operator certificate the hive issued or was shown.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorCertificate {
    pub fingerprint: String,
    pub name: String,
    pub role: String,
    pub not_after: DateTime<Utc>,
    /// `None` for one issued offline (`ultron8-hive init`, `ultron8-hive
    /// operator create`), recorded when first presented.
    pub issued_by: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// An operator certificate and its revocation, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorCertificateRecord {
    pub certificate: OperatorCertificate,
    pub revoked: Option<RevokedCertificate>,
}

#[derive(Debug, Clone)]
pub struct DroneEnrollment {
    pub drone_id: DroneId,
    /// SHA-256 (hex) of the issued certificate.
    pub certificate_fingerprint: String,
    pub certificate_not_after: DateTime<Utc>,
    /// Labels from the join token.
    pub labels: BTreeMap<String, String>,
    pub token_id: String,
    pub enrolled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DroneRecord {
    pub id: DroneId,
    /// Empty until the drone first registers.
    pub facts: DroneFacts,
    /// Labels granted by the join token (the drone's own are in `facts`).
    pub token_labels: BTreeMap<String, String>,
    pub stats: Option<HostStats>,
    pub online: bool,
    pub enrolled_at: DateTime<Utc>,
    pub registered_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub certificate_fingerprint: String,
    /// Set once an operator removed the drone from the fleet (see
    /// [`crate::Store::remove_drone`]); cleared when it joins again.
    pub removed: Option<DroneRemoval>,
}

/// When and by whom a drone was taken out of the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct DroneRemoval {
    pub at: DateTime<Utc>,
    /// The actor's text, `operator:<name>`.
    pub by: String,
}

impl DroneRecord {
    /// Token labels overlaid with the drone's own (the drone's win).
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.token_labels.clone();
        labels.extend(self.facts.labels.clone());
        labels
    }
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub target: String,
    /// Who asked: an [`Actor`]'s text (`operator:alice`, `rule:web.restart`).
    /// Kept as text, not parsed: it is signed into the drone's request and
    /// shown as it was written, and a job must stay readable (and
    /// re-dispatchable) whatever wrote this field, which only describes.
    pub requester: String,
    pub command: CommandSpec,
    pub created_at: DateTime<Utc>,
    /// Why the job exists beyond "an operator ran a command".
    pub origin: JobOrigin,
}

/// Links a job to the pack action it runs and the rule and event that
/// caused it; all empty for an ad-hoc command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobOrigin {
    /// `pack.action`, for action runs (by hand or by a rule).
    pub action_ref: Option<String>,
    /// `pack.rule`, for rule firings.
    pub rule: Option<String>,
    pub event_id: Option<EventId>,
    /// The rendered parameters, secrets already masked.
    pub parameters: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct NewExecution {
    pub id: ExecutionId,
    pub job_id: JobId,
    pub drone_id: DroneId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub target: String,
    /// As [`NewJob::requester`].
    pub requester: String,
    pub command: CommandSpec,
    pub created_at: DateTime<Utc>,
    pub origin: JobOrigin,
    pub executions: Vec<ExecutionRecord>,
}

/// Which jobs [`crate::Store::list_jobs`] returns, newest first; every
/// filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// With at least one execution in one of these statuses; empty: any.
    pub statuses: Vec<ExecutionStatus>,
    /// With an execution on this drone.
    pub drone_id: Option<DroneId>,
    /// Fired by this rule (`pack.name`).
    pub rule: Option<String>,
    /// Running this pack action (`pack.name`).
    pub action_ref: Option<String>,
    /// Zero means 100.
    pub limit: u32,
}

/// The records whose ids operators may abbreviate: what
/// [`crate::Store::ids_with_prefix`] and [`crate::Store::ids_like`] search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Job,
    Execution,
    Event,
}

impl IdKind {
    /// The noun, for messages: `job`.
    pub fn noun(self) -> &'static str {
        match self {
            IdKind::Job => "job",
            IdKind::Execution => "execution",
            IdKind::Event => "event",
        }
    }
}

/// How many leading characters of an id the store indexes for prefix
/// lookups (`substr(id, 1, 8)`, migration 0005), and so the fewest an
/// abbreviated id is shortened to.
pub const ID_INDEXED_PREFIX: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub id: JobId,
    pub target: String,
    pub requester: String,
    pub command: CommandSpec,
    pub created_at: DateTime<Utc>,
    pub origin: JobOrigin,
    pub status_counts: BTreeMap<ExecutionStatus, u32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecutionResult {
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    pub id: ExecutionId,
    pub job_id: JobId,
    pub drone_id: DroneId,
    pub status: ExecutionStatus,
    pub result: ExecutionResult,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A requested status change. `at` is recorded as `dispatched_at` for
/// `dispatched`, `started_at` for `running`, `finished_at` for terminal
/// states; `started_at` may also be given with a terminal state.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionUpdate {
    pub status: ExecutionStatus,
    pub at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// Only stored with a terminal status.
    pub result: Option<ExecutionResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TransitionOutcome {
    Applied {
        previous: ExecutionStatus,
    },
    /// The state machine refused the move; nothing changed.
    Refused {
        current: ExecutionStatus,
    },
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStreamKind {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputChunkRecord {
    pub execution_id: ExecutionId,
    pub stream: OutputStreamKind,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// What the hive needs to (re-)publish an execution.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDispatch {
    pub execution_id: ExecutionId,
    pub job_id: JobId,
    pub drone_id: DroneId,
    pub requester: String,
    pub command: CommandSpec,
    /// The job's [`JobOrigin::action_ref`], signed into the request so a
    /// drone's policy can decide by action.
    pub action_ref: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditRecord {
    /// uuid v7, so records sort by time.
    pub id: String,
    pub at: DateTime<Utc>,
    /// Who caused it, stored as its text (`operator:<name>`, `drone:<id>`,
    /// `rule:<pack.name>`, `hive`).
    pub actor: Actor,
    /// What happened, stored as its dotted text (`job.submitted`, ...).
    pub action: AuditVerb,
    pub job_id: Option<JobId>,
    pub execution_id: Option<ExecutionId>,
    pub drone_id: Option<DroneId>,
    /// Execution status at the time, where one applies.
    pub status: Option<ExecutionStatus>,
    /// The event this record belongs to, so `audit show EVENT` finds the chain.
    pub event_id: Option<EventId>,
    /// `pack.rule`, for rule evaluations and firings.
    pub rule: Option<String>,
    /// `pack.action` run, where one applies.
    pub action_ref: Option<String>,
    pub detail: serde_json::Value,
}

pub type AuditRecord = NewAuditRecord;

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub actor: Option<Actor>,
    pub action: Option<AuditVerb>,
    pub job_id: Option<JobId>,
    pub execution_id: Option<ExecutionId>,
    pub drone_id: Option<DroneId>,
    pub status: Option<ExecutionStatus>,
    pub event_id: Option<EventId>,
    pub rule: Option<String>,
    pub action_ref: Option<String>,
    /// Zero means 100.
    pub limit: u32,
    /// Records strictly older than this id (ids sort by time), for paging.
    pub before_id: Option<String>,
}

// --- packs -----------------------------------------------------------------
// Packs, actions and rules carry the validated `ultron8-pack` model. The
// store writes it as JSON and decodes it once, when a row is read: a row
// that does not decode is `StoreError::Corrupt`, naming it.

#[derive(Debug, Clone, PartialEq)]
pub struct PackRecord {
    pub name: String,
    /// Semver text.
    pub version: String,
    pub description: String,
    /// The whole validated pack.
    pub content: Pack,
    pub installed_at: DateTime<Utc>,
    /// `operator:<name>`.
    pub installed_by: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActionRecord {
    /// `pack.name`.
    pub reference: String,
    pub pack: String,
    pub definition: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleRecord {
    /// `pack.name`.
    pub reference: String,
    pub pack: String,
    pub trigger: String,
    pub enabled: bool,
    pub definition: Rule,
    /// The rule's file as its pack holds it (`rules/<name>.yaml`); `None`
    /// for rules installed before the store kept it.
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScriptRecord {
    pub sha256: String,
    pub content: Vec<u8>,
}

// --- secrets ---------------------------------------------------------------

/// A secret's value as the hive sealed it: the store never sees it in
/// clear, and cannot open it (the key is not in the database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub ciphertext: Vec<u8>,
    /// 24 bytes (XChaCha20-Poly1305).
    pub nonce: Vec<u8>,
    /// Which key sealed it.
    pub key_id: String,
}

/// Creating or replacing a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretWrite {
    pub name: String,
    pub sealed: SealedValue,
    pub at: DateTime<Utc>,
    /// Who wrote it (an actor's text, `operator:alice`).
    pub by: String,
}

/// A stored secret: its name, when and by whom it was written, and its
/// sealed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub name: String,
    pub sealed: SealedValue,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

// --- events ----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// uuid v7.
    pub id: EventId,
    pub trigger: String,
    pub payload: serde_json::Value,
    /// Where it came from: `webhook:<name>`, `alertmanager`, `timer:<rule>`,
    /// `operator:<name>`, `hive` (escalations). Text, not an [`Actor`]:
    /// webhooks, Alertmanager and timers are sources but not actors.
    pub source: String,
    pub received_at: DateTime<Utc>,
    /// What makes this event the same as one sent before, for a sender that
    /// retries: an event whose key is already stored is not stored again
    /// ([`crate::Store::record_events`]). None: every event is new.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// Stored, waiting for the rules engine.
    Pending,
    /// Every rule on its trigger was evaluated.
    Processed,
    /// Processing failed (e.g. a template error); `error` says why.
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub id: EventId,
    pub trigger: String,
    pub payload: serde_json::Value,
    pub source: String,
    pub received_at: DateTime<Utc>,
    pub state: EventState,
    pub processed_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// The rules that matched, once processed (`pack.rule`); empty while
    /// pending and when none did.
    pub matched_rules: Vec<String>,
}

/// The rules engine's backlog: [`crate::Store::pending_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingEvents {
    pub count: i64,
    /// When the oldest pending event arrived; `None` when none is pending.
    pub oldest_received_at: Option<DateTime<Utc>>,
}

/// What finished in a window: [`crate::Store::activity_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Executions that reached a final status in the window, by status
    /// (only statuses with at least one).
    pub finished_executions: Vec<(ultron8_core::ExecutionStatus, i64)>,
    /// Events whose processing failed in the window.
    pub failed_events: i64,
}

/// How processing a claimed event ended, for [`crate::Store::finish_events`].
#[derive(Debug, Clone, PartialEq)]
pub struct EventOutcome {
    pub id: EventId,
    /// None: processed; Some: failed, and why.
    pub error: Option<String>,
    /// The rules whose criteria matched (fired, held or failed).
    pub matched_rules: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub trigger: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub state: Option<EventState>,
    /// Zero means 100.
    pub limit: u32,
    /// Events strictly older than this id, for paging.
    pub before_id: Option<EventId>,
}

// --- rule firings ------------------------------------------------------------

/// A rule matched an event and wants to run its action: everything the
/// store needs to decide the policy and record the outcome atomically.
#[derive(Debug, Clone)]
pub struct RuleFiring {
    pub rule: String,
    pub event_id: EventId,
    pub policy: ultron8_core::policy::Policy,
    /// The rendered cooldown key, when the policy has a cooldown.
    pub cooldown_key: Option<String>,
    /// Drones the rendered target matches (for the blast-radius percentage).
    pub matching_fleet: u32,
    /// The job to create if the policy allows; `origin` names rule and event.
    pub job: NewJob,
    pub executions: Vec<NewExecution>,
    /// Goes into the `rule.fired` or `rule.held` audit record.
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FiringOutcome {
    /// Job, executions, cooldown and a `rule.fired` audit record written.
    Fired,
    /// Nothing but a `rule.held` audit record written.
    Held { reason: String },
    /// The rule already fired or was held for this event (its first
    /// processor died before marking the event processed); nothing written.
    AlreadyDecided,
}

// --- probes ----------------------------------------------------------------

/// Where one probe stands on one target, as the last round left it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStateRecord {
    /// The probe, `pack.name`.
    pub probe: String,
    /// The target's name (a discovered instance, or a listed address).
    pub target: String,
    /// Where it was probed (`host:port` or the URL).
    pub address: String,
    pub state: ultron8_core::health::CheckState,
    /// When the state last changed.
    pub since: Option<DateTime<Utc>>,
    pub last_run: DateTime<Utc>,
    pub last_outcome: ultron8_core::health::RunOutcome,
    /// What a person reads about the last run (`HTTP 503, expected 2xx`).
    pub detail: String,
    /// How long the last run took, in microseconds.
    pub latency_us: i64,
    /// The run history the thresholds judge, kept so counts survive a
    /// restart and a round run by another replica.
    pub tracker: ultron8_core::health::Tracker,
}

/// Where one check stands on one drone, as the drone last reported it
/// (`Store::replace_drone_checks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroneCheckRecord {
    pub drone_id: DroneId,
    pub status: ultron8_core::checks::CheckStatus,
    /// When the hive stored the report.
    pub reported_at: DateTime<Utc>,
}

// --- fleet: discovery sources and their instances ---------------------------

/// A discovery source as stored (see `migrations/*/0009_discovery.sql`).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub name: String,
    pub spec: ultron8_core::discovery::SourceSpec,
    pub interval: std::time::Duration,
    /// `operator` for `ultronctl source add`, `pack:<name>` for a pack's.
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub next_due_at: DateTime<Utc>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// Why the last refresh failed as a whole; None after one that did not.
    pub last_error: Option<String>,
    /// How many instances it listed at its last refresh.
    pub instances: u64,
}

/// What `create_source` writes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSource {
    pub name: String,
    pub spec: ultron8_core::discovery::SourceSpec,
    pub interval: std::time::Duration,
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// One refresh of a source, as [`crate::Store::finish_source_refresh`]
/// stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRefresh {
    /// The source's whole inventory after the refresh (instances of other
    /// sources are ignored). Ignored when `error` is set: a source that
    /// could not be listed keeps its instances as they were.
    pub instances: Vec<ultron8_core::discovery::Instance>,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
    pub next_due_at: DateTime<Utc>,
}

/// Which instances `list_targets` returns; every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetFilter {
    pub source: Option<String>,
    pub service: Option<String>,
}
