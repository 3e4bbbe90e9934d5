//! The pure half of [`crate::sql::SqlStore`]: column lists and statements
//! named once, rows as decoded and how they become records, and what a
//! transition, an expiry or a rule firing writes. No I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::FromRow;
use sqlx::types::JsonValue;
use ultron8_core::audit::{Actor, AuditVerb};
use ultron8_core::ids::{DroneId, EventId, ExecutionId, JobId};
use ultron8_core::policy::Observation;
use ultron8_core::{DroneFacts, ExecutionStatus};

use crate::dialect::SqlTime;
use crate::{
    ActionRecord, AuditRecord, DroneRecord, DroneRemoval, EventOutcome, EventRecord, EventState,
    ExecutionRecord, ExecutionResult, ExecutionUpdate, JobOrigin, JobRecord, JobSummary,
    NewAuditRecord, NewJob, OperatorCertificate, OperatorCertificateRecord, OutputChunkRecord,
    OutputStreamKind, PackRecord, PendingDispatch, Result, RevokedCertificate, RuleFiring,
    RuleRecord, StoreError,
};

/// Page size used when a caller asks for "no limit" (zero).
pub(crate) const DEFAULT_LIMIT: u32 = 100;

pub(crate) const DRONE_COLUMNS: &str = "id, facts, token_labels, stats, online, enrolled_at, \
     registered_at, last_seen_at, certificate_fingerprint, removed_at, removed_by";

pub(crate) const JOB_COLUMNS: &str =
    "id, target, requester, command, created_at, action_ref, rule, event_id, parameters";

pub(crate) const EXECUTION_COLUMNS: &str = "id, job_id, drone_id, status, exit_code, stdout, \
     stderr, stdout_truncated, stderr_truncated, duration_ms, error, created_at, expires_at, \
     dispatched_at, started_at, finished_at";

pub(crate) const AUDIT_COLUMNS: &str = "id, at, actor, action, job_id, execution_id, drone_id, \
     status, detail, event_id, rule, action_ref";

pub(crate) const PACK_COLUMNS: &str =
    "name, version, description, content, installed_at, installed_by";

pub(crate) const ACTION_COLUMNS: &str = "reference, pack, definition";

pub(crate) const RULE_COLUMNS: &str = "reference, pack, trigger, enabled, definition, source";

pub(crate) const EVENT_COLUMNS: &str =
    "id, trigger, payload, source, received_at, state, processed_at, error, matched_rules";

/// A rule's unfinished jobs, for `max_concurrent`. Driven from the partial
/// index of unfinished executions, so its cost follows the work in flight,
/// not the rule's history.
pub(crate) const RUNNING_JOBS_OF_RULE: &str = "SELECT count(DISTINCT e.job_id) \
     FROM executions e JOIN jobs j ON j.id = e.job_id \
     WHERE e.status IN ('requested', 'dispatched', 'running') AND j.rule = $1";

/// The distinct hosts a rule's jobs acted on since `$2`, for the blast
/// radius. Executions are created with their job, at its time, so the
/// `(rule, created_at)` index bounds the read to the window.
pub(crate) const HOSTS_OF_RULE_SINCE: &str = "SELECT DISTINCT e.drone_id \
     FROM jobs j JOIN executions e ON e.job_id = j.id \
     WHERE j.rule = $1 AND j.created_at > $2 AND e.created_at > $2";

/// The `rule_decisions.outcome` of a decision: a firing made a job, a
/// hold did not (as the table's CHECK requires).
pub(crate) fn decision_outcome(job_id: Option<&JobId>) -> &'static str {
    if job_id.is_some() { "fired" } else { "held" }
}

/// Bumps the rule catalog's version; run in every transaction that changes
/// packs, actions or rules.
pub(crate) const BUMP_CATALOG_VERSION: &str =
    "UPDATE catalog_version SET version = version + 1 WHERE id = 1";

pub(crate) fn effective_limit(limit: u32) -> i64 {
    i64::from(if limit == 0 { DEFAULT_LIMIT } else { limit })
}

pub(crate) fn not_found(kind: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_string(),
    }
}

pub(crate) fn parse_status(text: &str, context: &str) -> Result<ExecutionStatus> {
    text.parse()
        .map_err(|err| StoreError::Corrupt(format!("{context}: {err}")))
}

pub(crate) fn stream_name(stream: OutputStreamKind) -> &'static str {
    match stream {
        OutputStreamKind::Stdout => "stdout",
        OutputStreamKind::Stderr => "stderr",
    }
}

fn parse_stream(text: &str, execution_id: &str) -> Result<OutputStreamKind> {
    match text {
        "stdout" => Ok(OutputStreamKind::Stdout),
        "stderr" => Ok(OutputStreamKind::Stderr),
        other => Err(StoreError::Corrupt(format!(
            "unknown output stream {other:?} for execution {execution_id}"
        ))),
    }
}

/// Decodes a JSON column; a mismatch means the row was written by something
/// other than this store (or an incompatible version of the domain types).
pub(crate) fn from_json<T: DeserializeOwned>(
    value: JsonValue,
    column: &str,
    id: &str,
) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|err| StoreError::Corrupt(format!("{column} of {id}: {err}")))
}

/// The chunk's offset as the signed 64-bit column stores it.
pub(crate) fn output_offset(chunk: &OutputChunkRecord) -> Result<i64> {
    i64::try_from(chunk.offset).map_err(|_| {
        StoreError::Corrupt(format!(
            "output offset {} of execution {} exceeds the storable range",
            chunk.offset, chunk.execution_id
        ))
    })
}

/// One `(stream, byte_offset, data)` row of `execution_output`.
pub(crate) fn output_chunk(
    execution_id: &ExecutionId,
    stream: &str,
    offset: i64,
    data: Vec<u8>,
) -> Result<OutputChunkRecord> {
    Ok(OutputChunkRecord {
        execution_id: execution_id.clone(),
        stream: parse_stream(stream, execution_id.as_str())?,
        offset: u64::try_from(offset).map_err(|_| {
            StoreError::Corrupt(format!(
                "negative output offset {offset} for execution {execution_id}"
            ))
        })?,
        data,
    })
}

/// Per job, how many of its executions are in each status, from
/// `(job_id, status, count)` rows.
pub(crate) fn status_counts_by_job(
    rows: Vec<(String, String, i64)>,
) -> Result<BTreeMap<String, BTreeMap<ExecutionStatus, u32>>> {
    let mut counts_by_job: BTreeMap<String, BTreeMap<ExecutionStatus, u32>> = BTreeMap::new();
    for (job_id, status, count) in rows {
        let status = parse_status(&status, &job_id)?;
        let count = u32::try_from(count).map_err(|_| {
            StoreError::Corrupt(format!("job {job_id} has {count} {status} executions"))
        })?;
        counts_by_job
            .entry(job_id)
            .or_default()
            .insert(status, count);
    }
    Ok(counts_by_job)
}

/// Every status with its count from `(status, count)` rows, zeros included,
/// so a metrics gauge drops back to 0 instead of keeping its last value when
/// a status empties.
pub(crate) fn counts_for_every_status(
    rows: Vec<(String, i64)>,
) -> Result<Vec<(ExecutionStatus, i64)>> {
    let mut counts: BTreeMap<ExecutionStatus, i64> = BTreeMap::new();
    for (status, count) in rows {
        counts.insert(parse_status(&status, "executions.status")?, count);
    }
    Ok(ExecutionStatus::ALL
        .into_iter()
        .map(|status| (status, counts.get(&status).copied().unwrap_or(0)))
        .collect())
}

/// What an applied [`ExecutionUpdate`] writes to the execution's columns.
pub(crate) struct TransitionWrite<'a> {
    pub status: ExecutionStatus,
    /// Each timestamp is only written when `Some`; the stored one stays
    /// otherwise.
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Only with a terminal status: a result reported early is dropped.
    pub result: Option<&'a ExecutionResult>,
}

impl<'a> TransitionWrite<'a> {
    pub(crate) fn new(update: &'a ExecutionUpdate) -> TransitionWrite<'a> {
        let status = update.status;
        let started_at = if status == ExecutionStatus::Running {
            Some(update.started_at.unwrap_or(update.at))
        } else if status.is_terminal() {
            update.started_at
        } else {
            None
        };
        TransitionWrite {
            status,
            dispatched_at: (status == ExecutionStatus::Dispatched).then_some(update.at),
            started_at,
            finished_at: status.is_terminal().then_some(update.at),
            result: update.result.as_ref().filter(|_| status.is_terminal()),
        }
    }

    /// The result's duration for the signed 64-bit column; saturating, as a
    /// duration beyond i64 milliseconds is not a real one.
    pub(crate) fn duration_ms(&self) -> i64 {
        self.result
            .map_or(0, |r| i64::try_from(r.duration_ms).unwrap_or(i64::MAX))
    }
}

/// An id for an audit record the store writes itself: uuid v7, as the
/// hive's, so the trail sorts by time.
fn new_audit_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The audit record of an execution the expiry sweep moved to `expired`.
pub(crate) fn expiry_audit(execution: &ExecutionRecord, cutoff: DateTime<Utc>) -> NewAuditRecord {
    NewAuditRecord {
        id: new_audit_id(),
        at: cutoff,
        actor: Actor::Hive,
        action: AuditVerb::ExecutionExpired,
        job_id: Some(execution.job_id.clone()),
        execution_id: Some(execution.id.clone()),
        drone_id: Some(execution.drone_id.clone()),
        status: Some(ExecutionStatus::Expired),
        event_id: None,
        rule: None,
        action_ref: None,
        detail: serde_json::json!({ "expires_at": execution.expires_at }),
    }
}

pub(crate) fn event_state_name(state: EventState) -> &'static str {
    match state {
        EventState::Pending => "pending",
        EventState::Processed => "processed",
        EventState::Failed => "failed",
    }
}

/// The state a finished event moves to.
pub(crate) fn finished_state(outcome: &EventOutcome) -> EventState {
    if outcome.error.is_some() {
        EventState::Failed
    } else {
        EventState::Processed
    }
}

/// `events.matched_rules`: NULL when none matched, so the common case
/// stores nothing.
pub(crate) fn matched_rules_json(outcome: &EventOutcome) -> Option<JsonValue> {
    (!outcome.matched_rules.is_empty()).then(|| serde_json::json!(outcome.matched_rules))
}

/// A stored actor or verb of audit record `id` that the trail's vocabulary
/// does not know: written by something other than this store.
fn corrupt_audit(id: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("audit record {id}: {error}"))
}

fn parse_event_state(text: &str, event_id: &str) -> Result<EventState> {
    match text {
        "pending" => Ok(EventState::Pending),
        "processed" => Ok(EventState::Processed),
        "failed" => Ok(EventState::Failed),
        other => Err(StoreError::Corrupt(format!(
            "unknown state {other:?} of event {event_id}"
        ))),
    }
}

/// When a claim taken at `now` for `lease` runs out. Saturating: a lease too
/// long to represent is a lease that never runs out.
pub(crate) fn lease_end(now: DateTime<Utc>, lease: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Where the blast-radius window of a firing at `now` starts (exclusive), if
/// the policy has one. Saturating at the unix epoch, which no execution
/// predates and which, unlike chrono's minimum, Postgres can store.
pub(crate) fn blast_window_start(firing: &RuleFiring, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let window = firing.policy.blast_radius.as_ref()?.window;
    Some(
        chrono::Duration::from_std(window)
            .ok()
            .and_then(|window| now.checked_sub_signed(window))
            .map_or(DateTime::UNIX_EPOCH, |start| {
                start.max(DateTime::UNIX_EPOCH)
            }),
    )
}

/// A count from the database as the policy takes it; saturating, as a
/// count beyond u32 already exceeds any limit a policy can express.
fn policy_count(count: i64) -> u32 {
    u32::try_from(count.max(0)).unwrap_or(u32::MAX)
}

/// What the policy of `firing` is decided on, from what the backend counted
/// inside the firing's transaction.
pub(crate) fn observation(
    firing: &RuleFiring,
    last_fired_for_key: Option<DateTime<Utc>>,
    running_jobs: i64,
    hosts_in_window: &[String],
) -> Observation {
    // A host this firing asks for again is counted once, with the request.
    let again = hosts_in_window
        .iter()
        .filter(|host| {
            !firing
                .executions
                .iter()
                .any(|e| e.drone_id == host.as_str())
        })
        .count();
    Observation {
        last_fired_for_key,
        running_jobs: policy_count(running_jobs),
        hosts_in_window: u32::try_from(again).unwrap_or(u32::MAX),
        matching_fleet: firing.matching_fleet,
        hosts_requested: u32::try_from(firing.executions.len()).unwrap_or(u32::MAX),
    }
}

/// The job an allowed firing writes. The firing's rule and event go into the
/// origin whatever the caller put there: the policy counts a rule's jobs by
/// that column, so the two must not disagree.
pub(crate) fn fired_job(firing: &RuleFiring) -> NewJob {
    let mut job = firing.job.clone();
    job.origin.rule = Some(firing.rule.clone());
    job.origin.event_id = Some(firing.event_id.clone());
    job
}

/// The `rule.fired` record of an allowed firing that wrote `job`.
pub(crate) fn fired_audit(
    firing: &RuleFiring,
    job: &NewJob,
    observation: &Observation,
    now: DateTime<Utc>,
) -> NewAuditRecord {
    NewAuditRecord {
        job_id: Some(job.id.clone()),
        action_ref: job.origin.action_ref.clone(),
        detail: firing_detail(&firing.detail, observation, None),
        ..firing_audit(firing, AuditVerb::RuleFired, now)
    }
}

/// The `rule.held` record of a firing the policy held for `reason`.
pub(crate) fn held_audit(
    firing: &RuleFiring,
    observation: &Observation,
    reason: &str,
    now: DateTime<Utc>,
) -> NewAuditRecord {
    NewAuditRecord {
        action_ref: firing.job.origin.action_ref.clone(),
        detail: firing_detail(&firing.detail, observation, Some(reason)),
        ..firing_audit(firing, AuditVerb::RuleHeld, now)
    }
}

fn firing_audit(firing: &RuleFiring, action: AuditVerb, now: DateTime<Utc>) -> NewAuditRecord {
    NewAuditRecord {
        id: new_audit_id(),
        at: now,
        actor: Actor::Hive,
        action,
        job_id: None,
        execution_id: None,
        drone_id: None,
        status: None,
        event_id: Some(firing.event_id.clone()),
        rule: Some(firing.rule.clone()),
        action_ref: None,
        detail: JsonValue::Null,
    }
}

/// The caller's detail with the observation (and the reason of a hold)
/// added, so the audit trail shows what the decision was made on. A detail
/// that is not an object is kept under `detail`.
fn firing_detail(detail: &JsonValue, observation: &Observation, reason: Option<&str>) -> JsonValue {
    let mut fields = match detail {
        JsonValue::Object(fields) => fields.clone(),
        JsonValue::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("detail".to_string(), other.clone())]),
    };
    fields.insert("observation".to_string(), serde_json::json!(observation));
    if let Some(reason) = reason {
        fields.insert("reason".to_string(), JsonValue::from(reason));
    }
    JsonValue::Object(fields)
}

// --- rows ----------------------------------------------------------------------
//
// Columns as decoded from the database, before validation. Times are
// `SqlTime`, which each backend decodes its own way, so one `FromRow` serves
// both.

#[derive(FromRow)]
pub(crate) struct DroneRow {
    pub id: String,
    pub facts: Option<JsonValue>,
    pub token_labels: JsonValue,
    pub stats: Option<JsonValue>,
    pub online: bool,
    pub enrolled_at: SqlTime,
    pub registered_at: Option<SqlTime>,
    pub last_seen_at: Option<SqlTime>,
    pub certificate_fingerprint: String,
    pub removed_at: Option<SqlTime>,
    pub removed_by: Option<String>,
}

impl TryFrom<DroneRow> for DroneRecord {
    type Error = StoreError;

    fn try_from(row: DroneRow) -> Result<Self> {
        Ok(DroneRecord {
            facts: match row.facts {
                Some(facts) => from_json(facts, "drones.facts", &row.id)?,
                None => DroneFacts::default(),
            },
            token_labels: from_json(row.token_labels, "drones.token_labels", &row.id)?,
            stats: row
                .stats
                .map(|stats| from_json(stats, "drones.stats", &row.id))
                .transpose()?,
            online: row.online,
            enrolled_at: row.enrolled_at.into(),
            registered_at: row.registered_at.map(Into::into),
            last_seen_at: row.last_seen_at.map(Into::into),
            certificate_fingerprint: row.certificate_fingerprint,
            // The schema sets both or neither.
            removed: match (row.removed_at, row.removed_by) {
                (Some(at), Some(by)) => Some(DroneRemoval { at: at.into(), by }),
                _ => None,
            },
            id: DroneId::from(row.id),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct RevocationRow {
    pub fingerprint: String,
    pub subject: String,
    pub reason: String,
    pub revoked_at: SqlTime,
    pub revoked_by: String,
    pub not_after: Option<SqlTime>,
}

impl From<RevocationRow> for RevokedCertificate {
    fn from(row: RevocationRow) -> Self {
        RevokedCertificate {
            fingerprint: row.fingerprint,
            subject: row.subject,
            reason: row.reason,
            revoked_at: row.revoked_at.into(),
            revoked_by: row.revoked_by,
            not_after: row.not_after.map(Into::into),
        }
    }
}

/// An operator certificate joined with its revocation (all `None` if it
/// has none).
#[derive(FromRow)]
pub(crate) struct OperatorCertificateRow {
    pub fingerprint: String,
    pub name: String,
    pub role: String,
    pub not_after: SqlTime,
    pub issued_by: Option<String>,
    pub recorded_at: SqlTime,
    pub subject: Option<String>,
    pub reason: Option<String>,
    pub revoked_at: Option<SqlTime>,
    pub revoked_by: Option<String>,
    pub revoked_not_after: Option<SqlTime>,
}

impl From<OperatorCertificateRow> for OperatorCertificateRecord {
    fn from(row: OperatorCertificateRow) -> Self {
        let revoked = match (row.subject, row.reason, row.revoked_at, row.revoked_by) {
            (Some(subject), Some(reason), Some(revoked_at), Some(revoked_by)) => {
                Some(RevokedCertificate {
                    fingerprint: row.fingerprint.clone(),
                    subject,
                    reason,
                    revoked_at: revoked_at.into(),
                    revoked_by,
                    not_after: row.revoked_not_after.map(Into::into),
                })
            }
            _ => None,
        };
        OperatorCertificateRecord {
            certificate: OperatorCertificate {
                fingerprint: row.fingerprint,
                name: row.name,
                role: row.role,
                not_after: row.not_after.into(),
                issued_by: row.issued_by,
                recorded_at: row.recorded_at.into(),
            },
            revoked,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct JobRow {
    pub id: String,
    pub target: String,
    pub requester: String,
    pub command: JsonValue,
    pub created_at: SqlTime,
    pub action_ref: Option<String>,
    pub rule: Option<String>,
    pub event_id: Option<String>,
    pub parameters: Option<JsonValue>,
}

impl JobRow {
    fn origin(&mut self) -> JobOrigin {
        JobOrigin {
            action_ref: self.action_ref.take(),
            rule: self.rule.take(),
            event_id: self.event_id.take().map(EventId::from),
            parameters: self.parameters.take(),
        }
    }

    pub(crate) fn into_record(mut self, executions: Vec<ExecutionRecord>) -> Result<JobRecord> {
        Ok(JobRecord {
            origin: self.origin(),
            command: from_json(self.command, "jobs.command", &self.id)?,
            id: JobId::from(self.id),
            target: self.target,
            requester: self.requester,
            created_at: self.created_at.into(),
            executions,
        })
    }

    pub(crate) fn into_summary(
        mut self,
        status_counts: BTreeMap<ExecutionStatus, u32>,
    ) -> Result<JobSummary> {
        Ok(JobSummary {
            origin: self.origin(),
            command: from_json(self.command, "jobs.command", &self.id)?,
            status_counts,
            id: JobId::from(self.id),
            target: self.target,
            requester: self.requester,
            created_at: self.created_at.into(),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct ExecutionRow {
    pub id: String,
    pub job_id: String,
    pub drone_id: String,
    pub status: String,
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub created_at: SqlTime,
    pub expires_at: SqlTime,
    pub dispatched_at: Option<SqlTime>,
    pub started_at: Option<SqlTime>,
    pub finished_at: Option<SqlTime>,
}

impl TryFrom<ExecutionRow> for ExecutionRecord {
    type Error = StoreError;

    fn try_from(row: ExecutionRow) -> Result<Self> {
        let duration_ms = u64::try_from(row.duration_ms).map_err(|_| {
            StoreError::Corrupt(format!(
                "execution {} has negative duration {}",
                row.id, row.duration_ms
            ))
        })?;
        Ok(ExecutionRecord {
            status: parse_status(&row.status, &row.id)?,
            result: ExecutionResult {
                exit_code: row.exit_code,
                stdout: row.stdout,
                stderr: row.stderr,
                stdout_truncated: row.stdout_truncated,
                stderr_truncated: row.stderr_truncated,
                duration_ms,
                error: row.error,
            },
            id: ExecutionId::from(row.id),
            job_id: JobId::from(row.job_id),
            drone_id: DroneId::from(row.drone_id),
            created_at: row.created_at.into(),
            expires_at: row.expires_at.into(),
            dispatched_at: row.dispatched_at.map(Into::into),
            started_at: row.started_at.map(Into::into),
            finished_at: row.finished_at.map(Into::into),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct PendingRow {
    pub execution_id: String,
    pub job_id: String,
    pub drone_id: String,
    pub requester: String,
    pub command: JsonValue,
    pub created_at: SqlTime,
    pub expires_at: SqlTime,
}

impl TryFrom<PendingRow> for PendingDispatch {
    type Error = StoreError;

    fn try_from(row: PendingRow) -> Result<Self> {
        Ok(PendingDispatch {
            command: from_json(row.command, "jobs.command", &row.job_id)?,
            execution_id: ExecutionId::from(row.execution_id),
            job_id: JobId::from(row.job_id),
            drone_id: DroneId::from(row.drone_id),
            requester: row.requester,
            created_at: row.created_at.into(),
            expires_at: row.expires_at.into(),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct AuditRow {
    pub id: String,
    pub at: SqlTime,
    pub actor: String,
    pub action: String,
    pub job_id: Option<String>,
    pub execution_id: Option<String>,
    pub drone_id: Option<String>,
    pub status: Option<String>,
    pub detail: JsonValue,
    pub event_id: Option<String>,
    pub rule: Option<String>,
    pub action_ref: Option<String>,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self> {
        Ok(AuditRecord {
            status: row
                .status
                .as_deref()
                .map(|status| parse_status(status, &row.id))
                .transpose()?,
            actor: row.actor.parse().map_err(|e| corrupt_audit(&row.id, e))?,
            action: row.action.parse().map_err(|e| corrupt_audit(&row.id, e))?,
            id: row.id,
            at: row.at.into(),
            job_id: row.job_id.map(JobId::from),
            execution_id: row.execution_id.map(ExecutionId::from),
            drone_id: row.drone_id.map(DroneId::from),
            event_id: row.event_id.map(EventId::from),
            rule: row.rule,
            action_ref: row.action_ref,
            detail: row.detail,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct PackRow {
    pub name: String,
    pub version: String,
    pub description: String,
    pub content: JsonValue,
    pub installed_at: SqlTime,
    pub installed_by: String,
}

impl PackRow {
    /// The record, its content decoded; `column` names where it was read
    /// (`packs.content` or `pack_history.content`) for the error.
    pub(crate) fn into_record(self, column: &str) -> Result<PackRecord> {
        Ok(PackRecord {
            content: from_json(self.content, column, &self.name)?,
            name: self.name,
            version: self.version,
            description: self.description,
            installed_at: self.installed_at.into(),
            installed_by: self.installed_by,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct ActionRow {
    pub reference: String,
    pub pack: String,
    pub definition: JsonValue,
}

impl TryFrom<ActionRow> for ActionRecord {
    type Error = StoreError;

    fn try_from(row: ActionRow) -> Result<Self> {
        Ok(ActionRecord {
            definition: from_json(row.definition, "actions.definition", &row.reference)?,
            reference: row.reference,
            pack: row.pack,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct RuleRow {
    pub reference: String,
    pub pack: String,
    pub trigger: String,
    pub enabled: bool,
    pub definition: JsonValue,
    pub source: Option<String>,
}

impl TryFrom<RuleRow> for RuleRecord {
    type Error = StoreError;

    fn try_from(row: RuleRow) -> Result<Self> {
        Ok(RuleRecord {
            definition: from_json(row.definition, "rules.definition", &row.reference)?,
            reference: row.reference,
            pack: row.pack,
            trigger: row.trigger,
            enabled: row.enabled,
            source: row.source,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct EventRow {
    pub id: String,
    pub trigger: String,
    pub payload: JsonValue,
    pub source: String,
    pub received_at: SqlTime,
    pub state: String,
    pub processed_at: Option<SqlTime>,
    pub error: Option<String>,
    pub matched_rules: Option<JsonValue>,
}

impl TryFrom<EventRow> for EventRecord {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self> {
        Ok(EventRecord {
            state: parse_event_state(&row.state, &row.id)?,
            trigger: row.trigger,
            payload: row.payload,
            source: row.source,
            received_at: row.received_at.into(),
            matched_rules: row
                .matched_rules
                .map(|rules| from_json(rules, "events.matched_rules", &row.id))
                .transpose()?
                .unwrap_or_default(),
            processed_at: row.processed_at.map(Into::into),
            error: row.error,
            id: EventId::from(row.id),
        })
    }
}
