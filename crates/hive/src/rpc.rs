//! The one place the hive's wire messages become operation inputs and
//! records become wire messages. Core types go through
//! `ultron8_proto::convert`; what is added here is about store records and
//! operation inputs, which the proto crate does not know.
//!
//! Wire input is untrusted: decoding is fallible and refuses with
//! `InvalidArgument`, naming the field.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use ultron8_core::ids::{DroneId, EventId, ExecutionId, JobId};
use ultron8_core::{DroneFacts, ExecutionStatus, HostStats};
use ultron8_proto::convert::{
    command_from_wire, command_to_wire, facts_from_wire, facts_to_wire, stats_from_wire,
    stats_to_wire, status_from_wire, status_to_wire,
};
use ultron8_proto::v1;
use ultron8_store::{
    ActionRecord, AuditFilter, AuditRecord, DroneRecord, EventFilter, EventRecord, EventState,
    ExecutionRecord, ExecutionResult, IdKind, JobFilter, JobRecord, JobSummary, OutputChunkRecord,
    OutputStreamKind, RuleRecord,
};

use crate::error::HiveError;
use crate::ops::drones::{Enrollment, EnrollmentRequest, Registration};
use crate::ops::executions::DroneReport;
use crate::ops::follow::JobEvent;
use crate::ops::health::HiveStatus;
use crate::ops::jobs::{CancelOutcome, CanceledExecution, JobSpec, Work};
use crate::ops::packs::PackView;
use crate::ops::secrets::SecretInfo;
use crate::ops::tokens::IssuedJoinToken;
use crate::planning::HIVE_EXECUTOR;
use crate::rulebook::RulePlan;

// --- decoding ---------------------------------------------------------------

/// A duration in milliseconds where 0 means "the default".
fn optional_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0)
        .then(|| Utc.timestamp_millis_opt(ms).single())
        .flatten()
}

/// An empty string as "not given".
fn given(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

pub fn job_spec_from_submit(request: v1::SubmitJobRequest) -> Result<JobSpec, HiveError> {
    let command = command_from_wire(request.command)
        .map_err(|e| HiveError::invalid_argument(e.to_string()))?;
    Ok(JobSpec {
        work: Work::Command(command),
        target: request.target,
        ttl: optional_ms(request.ttl_ms),
    })
}

pub fn job_spec_from_run_action(request: v1::RunActionRequest) -> Result<JobSpec, HiveError> {
    let parameters = match request.parameters_json.trim() {
        "" => Map::new(),
        text => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(HiveError::invalid_argument(
                    "parameters must be a JSON object",
                ));
            }
        },
    };
    Ok(JobSpec {
        work: Work::Action {
            reference: request.action,
            parameters,
        },
        target: request.target,
        ttl: optional_ms(request.ttl_ms),
    })
}

pub fn join_token_ttl(request: &v1::CreateJoinTokenRequest) -> Option<Duration> {
    optional_ms(request.ttl_ms)
}

pub fn join_token_binding(
    request: &v1::CreateJoinTokenRequest,
) -> Result<crate::ops::tokens::TokenBinding, HiveError> {
    use crate::ops::tokens::TokenBinding;
    match (request.drone_id.is_empty(), request.replace) {
        (true, false) => Ok(TokenBinding::AnyNewName),
        (true, true) => Err(HiveError::invalid_argument(
            "a token that replaces a drone must name it",
        )),
        (false, false) => Ok(TokenBinding::Name(DroneId::from(request.drone_id.clone()))),
        (false, true) => Ok(TokenBinding::Replace(DroneId::from(
            request.drone_id.clone(),
        ))),
    }
}

pub fn operator_validity(request: &v1::CreateOperatorRequest) -> Option<Duration> {
    optional_ms(request.validity_ms)
}

pub fn operator_certificate_to_wire(
    certificate: ultron8_store::OperatorCertificate,
    revoked: Option<ultron8_store::RevokedCertificate>,
) -> v1::OperatorCertificate {
    let (revoked_at_ms, revoked_by, revocation_reason) = match revoked {
        Some(r) => (ms(r.revoked_at), r.revoked_by, r.reason),
        None => (0, String::new(), String::new()),
    };
    v1::OperatorCertificate {
        name: certificate.name,
        role: certificate.role,
        fingerprint: certificate.fingerprint,
        not_after_ms: ms(certificate.not_after),
        issued_by: certificate.issued_by.unwrap_or_default(),
        recorded_at_ms: ms(certificate.recorded_at),
        revoked_at_ms,
        revoked_by,
        revocation_reason,
    }
}

pub fn enrollment_request(request: v1::EnrollRequest) -> EnrollmentRequest {
    EnrollmentRequest {
        token: request.token,
        drone_id: DroneId::from(request.drone_id),
        csr_der: request.csr_der,
    }
}

pub fn registration_facts(request: v1::RegisterRequest) -> Result<DroneFacts, HiveError> {
    let facts = request
        .facts
        .ok_or_else(|| HiveError::invalid_argument("facts are missing"))?;
    Ok(facts_from_wire(facts))
}

/// A heartbeat without stats counts as one with empty stats.
pub fn heartbeat_stats(request: v1::HeartbeatRequest) -> HostStats {
    request.stats.map(stats_from_wire).unwrap_or_default()
}

pub fn report_from_wire(report: v1::ExecutionReport) -> Result<DroneReport, HiveError> {
    let status =
        status_from_wire(report.status).map_err(|e| HiveError::invalid_argument(e.to_string()))?;
    Ok(DroneReport {
        execution_id: ExecutionId::from(report.execution_id),
        status,
        started_at: from_ms(report.started_at_ms),
        finished_at: from_ms(report.finished_at_ms),
        result: ExecutionResult {
            exit_code: report.exit_code,
            stdout: report.stdout,
            stderr: report.stderr,
            stdout_truncated: report.stdout_truncated,
            stderr_truncated: report.stderr_truncated,
            duration_ms: report.duration_ms,
            error: given(report.error),
        },
        policy_rule: given(report.policy_rule),
    })
}

pub fn chunk_from_wire(chunk: v1::OutputChunk) -> OutputChunkRecord {
    let stream = match v1::OutputStream::try_from(chunk.stream) {
        Ok(v1::OutputStream::Stderr) => OutputStreamKind::Stderr,
        _ => OutputStreamKind::Stdout,
    };
    OutputChunkRecord {
        execution_id: ExecutionId::from(chunk.execution_id),
        stream,
        offset: chunk.offset,
        data: chunk.data,
    }
}

/// An event payload an operator fires: empty means `{}`.
pub fn event_payload(text: &str) -> Result<Value, HiveError> {
    match text.trim() {
        "" => Ok(serde_json::json!({})),
        text => serde_json::from_str(text)
            .map_err(|e| HiveError::invalid_argument(format!("payload is not valid JSON: {e}"))),
    }
}

/// The event a rule test evaluates.
pub fn test_event(text: &str) -> Result<Value, HiveError> {
    serde_json::from_str(text)
        .map_err(|e| HiveError::invalid_argument(format!("the event is not valid JSON: {e}")))
}

pub fn event_filter(request: v1::ListEventsRequest) -> EventFilter {
    EventFilter {
        trigger: given(request.trigger),
        limit: request.limit,
        before_id: given(request.before_id).map(EventId::from),
        ..Default::default()
    }
}

pub fn audit_filter(request: v1::ListAuditRequest) -> Result<AuditFilter, HiveError> {
    let status = match given(request.status) {
        Some(text) => Some(
            text.parse::<ExecutionStatus>()
                .map_err(|e| HiveError::invalid_argument(e.to_string()))?,
        ),
        None => None,
    };
    Ok(AuditFilter {
        since: from_ms(request.since_ms),
        until: from_ms(request.until_ms),
        rule: given(request.rule),
        action_ref: given(request.action),
        drone_id: given(request.drone).map(DroneId::from),
        status,
        event_id: given(request.event).map(EventId::from),
        job_id: given(request.job).map(JobId::from),
        limit: request.limit,
        before_id: given(request.before_id),
        ..Default::default()
    })
}

pub fn job_filter(request: v1::ListJobsRequest) -> Result<JobFilter, HiveError> {
    let statuses = request
        .statuses
        .iter()
        .flat_map(|text| text.split(','))
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(|text| {
            text.parse::<ExecutionStatus>()
                .map_err(|e| HiveError::invalid_argument(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JobFilter {
        since: from_ms(request.since_ms),
        statuses,
        drone_id: given(request.drone).map(DroneId::from),
        rule: given(request.rule),
        action_ref: given(request.action),
        limit: request.limit,
    })
}

pub fn id_kind(kind: i32) -> Result<IdKind, HiveError> {
    match v1::IdKind::try_from(kind) {
        Ok(v1::IdKind::Job) => Ok(IdKind::Job),
        Ok(v1::IdKind::Execution) => Ok(IdKind::Execution),
        Ok(v1::IdKind::Event) => Ok(IdKind::Event),
        _ => Err(HiveError::invalid_argument(
            "say which kind of ids to shorten: job, execution or event",
        )),
    }
}

/// An optional name from the wire, where empty means "none".
pub fn optional(text: &str) -> Option<&str> {
    Some(text).filter(|t| !t.is_empty())
}

// --- encoding ---------------------------------------------------------------

pub fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn opt_ms(at: Option<DateTime<Utc>>) -> i64 {
    at.map_or(0, ms)
}

pub fn execution_to_wire(e: &ExecutionRecord) -> v1::Execution {
    v1::Execution {
        id: e.id.to_string(),
        job_id: e.job_id.to_string(),
        drone_id: e.drone_id.to_string(),
        status: status_to_wire(e.status) as i32,
        exit_code: e.result.exit_code,
        stdout: e.result.stdout.clone(),
        stderr: e.result.stderr.clone(),
        stdout_truncated: e.result.stdout_truncated,
        stderr_truncated: e.result.stderr_truncated,
        duration_ms: e.result.duration_ms,
        error: e.result.error.clone().unwrap_or_default(),
        created_at_ms: ms(e.created_at),
        dispatched_at_ms: opt_ms(e.dispatched_at),
        started_at_ms: opt_ms(e.started_at),
        finished_at_ms: opt_ms(e.finished_at),
        expires_at_ms: ms(e.expires_at),
    }
}

pub fn job_to_wire(job: &JobRecord, offline_drones: &[DroneId]) -> v1::Job {
    v1::Job {
        offline_drones: offline_drones.iter().map(ToString::to_string).collect(),
        id: job.id.to_string(),
        target: job.target.clone(),
        requester: job.requester.clone(),
        // Operators see the command with its secrets masked.
        command: Some(command_to_wire(&job.command.redacted())),
        created_at_ms: ms(job.created_at),
        executions: job.executions.iter().map(execution_to_wire).collect(),
    }
}

pub fn job_summary_to_wire(job: JobSummary) -> v1::JobSummary {
    let count = |pred: fn(ExecutionStatus) -> bool| -> u32 {
        job.status_counts
            .iter()
            .filter(|(s, _)| pred(**s))
            .map(|(_, n)| *n)
            .sum()
    };
    v1::JobSummary {
        executions: count(|_| true),
        succeeded: count(|s| s == ExecutionStatus::Succeeded),
        failed: count(|s| s.is_terminal() && s != ExecutionStatus::Succeeded),
        pending: count(|s| !s.is_terminal()),
        id: job.id.into_string(),
        target: job.target,
        requester: job.requester,
        command: job.command.display(),
        created_at_ms: job.created_at.timestamp_millis(),
    }
}

pub fn drone_to_wire(drone: &DroneRecord) -> v1::Drone {
    let mut facts = facts_to_wire(&drone.facts);
    facts.labels = drone.labels().into_iter().collect();
    v1::Drone {
        id: drone.id.to_string(),
        facts: Some(facts),
        online: drone.online,
        last_seen_ms: opt_ms(drone.last_seen_at),
        stats: drone.stats.as_ref().map(stats_to_wire),
        registered_at_ms: opt_ms(drone.registered_at),
        enrolled_at_ms: ms(drone.enrolled_at),
        removed_at_ms: opt_ms(drone.removed.as_ref().map(|r| r.at)),
        removed_by: drone
            .removed
            .as_ref()
            .map(|r| r.by.clone())
            .unwrap_or_default(),
    }
}

pub fn join_token_to_wire(issued: IssuedJoinToken) -> v1::CreateJoinTokenResponse {
    v1::CreateJoinTokenResponse {
        token: issued.token.encode(),
        token_id: issued.token.id,
        expires_at_ms: ms(issued.expires_at),
        ca_fingerprint: issued.token.ca_fingerprint,
    }
}

pub fn enrollment_to_wire(enrollment: Enrollment) -> v1::EnrollResponse {
    v1::EnrollResponse {
        certificate_der: enrollment.certificate_der,
        ca_certificate_der: enrollment.ca_certificate_der,
        labels: enrollment.labels.into_iter().collect(),
    }
}

pub fn registration_to_wire(registration: Registration) -> v1::RegisterResponse {
    v1::RegisterResponse {
        broker: Some(v1::BrokerEndpoint {
            url: registration.broker_url,
            auth: v1::BrokerAuth::Url as i32,
        }),
        queue: registration.queue,
        heartbeat_interval_ms: interval_ms(registration.heartbeat_interval),
        request_signing_public_key: registration.request_signing_public_key,
        request_signing_key_id: registration.request_signing_key_id,
    }
}

pub fn interval_ms(interval: Duration) -> u32 {
    u32::try_from(interval.as_millis()).unwrap_or(u32::MAX)
}

/// The JSON text of a pack, action or rule as the hive stores it. Through
/// a `Value`, whose object keys are sorted: the same text a stored
/// definition read back as JSON always gave.
fn json_text(value: &impl Serialize) -> Result<String, HiveError> {
    serde_json::to_value(value)
        .map(|json| json.to_string())
        .map_err(|e| HiveError::internal(format!("cannot encode a stored definition: {e}")))
}

pub fn pack_info(view: PackView) -> Result<v1::PackInfo, HiveError> {
    let pack = &view.record.content;
    Ok(v1::PackInfo {
        actions: pack.actions.iter().map(|a| a.reference()).collect(),
        rules: pack.rules.iter().map(|r| r.reference()).collect(),
        previous_versions: view.history.into_iter().map(|p| p.version).collect(),
        content_json: json_text(pack)?,
        name: view.record.name,
        version: view.record.version,
        description: view.record.description,
        installed_by: view.record.installed_by,
        installed_at_ms: ms(view.record.installed_at),
    })
}

pub fn event_info(event: &EventRecord) -> v1::EventInfo {
    v1::EventInfo {
        id: event.id.to_string(),
        trigger: event.trigger.clone(),
        payload_json: event.payload.to_string(),
        source: event.source.clone(),
        received_at_ms: ms(event.received_at),
        state: match event.state {
            EventState::Pending => "pending",
            EventState::Processed => "processed",
            EventState::Failed => "failed",
        }
        .to_string(),
        error: event.error.clone().unwrap_or_default(),
        matched_rules: event.matched_rules.clone(),
    }
}

pub fn rule_info(rule: &RuleRecord) -> Result<v1::RuleInfo, HiveError> {
    Ok(v1::RuleInfo {
        name: rule.reference.clone(),
        pack: rule.pack.clone(),
        trigger: rule.trigger.clone(),
        enabled: rule.enabled,
        action: rule.definition.action.reference.clone(),
        description: rule.definition.description.clone(),
        definition_json: json_text(&rule.definition)?,
        source: rule.source.clone().unwrap_or_default(),
    })
}

pub fn action_info(action: &ActionRecord) -> Result<v1::ActionInfo, HiveError> {
    let definition = &action.definition;
    let parameters = definition
        .parameters
        .iter()
        .map(|(name, spec)| {
            let default_json = match &spec.default {
                // Packs may give a secret only the empty default; should
                // another reach here, it is a secret too.
                Some(value) if spec.secret && value.as_str() != Some("") => {
                    json_text(&ultron8_core::params::MASK)?
                }
                Some(value) => json_text(value)?,
                None => String::new(),
            };
            Ok(v1::ActionParameter {
                name: name.clone(),
                r#type: json_text(&spec.kind)?.trim_matches('"').to_string(),
                required: spec.required,
                default_json,
                secret: spec.secret,
                description: spec.description.clone(),
                allowed_json: spec
                    .allowed
                    .iter()
                    .flatten()
                    .map(json_text)
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect::<Result<_, HiveError>>()?;
    Ok(v1::ActionInfo {
        reference: action.reference.clone(),
        pack: action.pack.clone(),
        name: definition.name.clone(),
        description: definition.description.clone(),
        runner: definition.runner.kind().to_string(),
        runs_on_drones: definition.runs_on_drones(),
        timeout_ms: definition
            .timeout
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        parameters,
    })
}

pub fn rule_test(plan: RulePlan) -> v1::RuleTest {
    v1::RuleTest {
        rule: plan.rule,
        enabled: plan.enabled,
        matched: plan.matched,
        reasons: plan.reasons,
        error: plan.error.unwrap_or_default(),
        action: plan.action,
        parameters_json: plan
            .parameters
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        target: plan.target.unwrap_or_default(),
        // Hive-side actions run on no drone.
        drones: plan
            .drones
            .into_iter()
            .filter(|d| *d != HIVE_EXECUTOR)
            .map(DroneId::into_string)
            .collect(),
    }
}

pub fn audit_entry(record: AuditRecord) -> v1::AuditEntry {
    v1::AuditEntry {
        id: record.id,
        at_ms: ms(record.at),
        actor: record.actor.to_string(),
        kind: record.action.as_str().to_string(),
        job_id: record.job_id.map(JobId::into_string).unwrap_or_default(),
        execution_id: record
            .execution_id
            .map(ExecutionId::into_string)
            .unwrap_or_default(),
        drone_id: record
            .drone_id
            .map(DroneId::into_string)
            .unwrap_or_default(),
        status: record.status.map(|s| s.to_string()).unwrap_or_default(),
        event_id: record
            .event_id
            .map(EventId::into_string)
            .unwrap_or_default(),
        rule: record.rule.unwrap_or_default(),
        action: record.action_ref.unwrap_or_default(),
        detail_json: record.detail.to_string(),
    }
}

pub fn hive_status_to_wire(status: HiveStatus) -> v1::HiveStatus {
    let dependency = |answer: Result<(), String>| v1::DependencyStatus {
        up: answer.is_ok(),
        error: answer.err().unwrap_or_default(),
    };
    let mut wire = v1::HiveStatus {
        version: status.build.version,
        commit: status.build.commit,
        started_at_ms: ms(status.started_at),
        store: Some(dependency(status.readiness.store)),
        broker: Some(dependency(status.readiness.broker)),
        recent_window_s: u32::try_from(crate::ops::health::RECENT.as_secs()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    match status.figures {
        Ok(figures) => {
            wire.pending_events = figures.backlog.count;
            wire.oldest_pending_event_at_ms = figures.backlog.oldest_received_at.map_or(0, ms);
            wire.drones_online = figures.drones_online;
            wire.drones_offline = figures.drones_offline;
            wire.executions_running = figures.executions_running;
            wire.recent_executions = figures
                .recent
                .finished_executions
                .into_iter()
                .map(|(status, count)| v1::StatusCount {
                    status: status_to_wire(status) as i32,
                    count,
                })
                .collect();
            wire.recent_failed_events = figures.recent.failed_events;
        }
        Err(e) => wire.figures_error = e,
    }
    wire
}

/// An event of [`Hive::follow_job`](crate::hive::Hive::follow_job); an
/// execution travels without its output, which came as output events.
pub fn job_event_to_wire(event: &JobEvent) -> v1::JobEvent {
    let event = match event {
        JobEvent::Execution(execution) => {
            let mut wire = execution_to_wire(execution);
            wire.stdout = Vec::new();
            wire.stderr = Vec::new();
            v1::job_event::Event::Execution(wire)
        }
        JobEvent::Output { drone_id, chunk } => v1::job_event::Event::Output(v1::JobOutput {
            execution_id: chunk.execution_id.to_string(),
            drone_id: drone_id.to_string(),
            stream: match chunk.stream {
                OutputStreamKind::Stdout => v1::OutputStream::Stdout as i32,
                OutputStreamKind::Stderr => v1::OutputStream::Stderr as i32,
            },
            offset: chunk.offset,
            data: chunk.data.clone(),
        }),
    };
    v1::JobEvent { event: Some(event) }
}

pub fn canceled_to_wire(canceled: Vec<CanceledExecution>) -> v1::CancelJobResponse {
    v1::CancelJobResponse {
        executions: canceled
            .into_iter()
            .map(|c| v1::CanceledExecution {
                execution_id: c.execution_id.to_string(),
                drone_id: c.drone_id.to_string(),
                outcome: match c.outcome {
                    CancelOutcome::Canceled => v1::CancelOutcome::Canceled,
                    CancelOutcome::Signalled => v1::CancelOutcome::Signalled,
                    CancelOutcome::AlreadyFinished => v1::CancelOutcome::AlreadyFinished,
                } as i32,
            })
            .collect(),
    }
}

pub fn secret_info_to_wire(info: SecretInfo) -> v1::SecretInfo {
    v1::SecretInfo {
        name: info.name,
        created_at_ms: ms(info.created_at),
        created_by: info.created_by,
        updated_at_ms: ms(info.updated_at),
        updated_by: info.updated_by,
        created: info.created,
    }
}

// --- drone checks ------------------------------------------------------------

fn check_state(text: &str) -> Result<ultron8_core::health::CheckState, HiveError> {
    text.parse()
        .map_err(|e: ultron8_core::health::UnknownCheckState| {
            HiveError::invalid_argument(e.to_string())
        })
}

fn nonzero_ms(ms: i64) -> Option<i64> {
    (ms != 0).then_some(ms)
}

pub fn check_summary_from_wire(
    checks: &[v1::CheckStatus],
) -> Result<Vec<ultron8_core::checks::CheckStatus>, HiveError> {
    checks
        .iter()
        .map(|c| {
            Ok(ultron8_core::checks::CheckStatus {
                check: c.check.clone(),
                state: check_state(&c.state)?,
                since_ms: nonzero_ms(c.since_ms),
                last_run_ms: nonzero_ms(c.last_run_ms),
                last_output: c.last_output.clone(),
            })
        })
        .collect()
}

pub fn check_transitions_from_wire(
    request: v1::ReportCheckTransitionsRequest,
) -> Result<Vec<ultron8_core::checks::CheckTransition>, HiveError> {
    request
        .transitions
        .into_iter()
        .map(|t| {
            let state = t
                .state
                .parse()
                .map_err(|e: ultron8_core::health::UnknownCheckState| {
                    HiveError::invalid_argument(e.to_string())
                })?;
            Ok(ultron8_core::checks::CheckTransition {
                id: t.id,
                check: t.check,
                state,
                consecutive: t.consecutive,
                output: t.output,
                at_ms: t.at_ms,
            })
        })
        .collect()
}

pub fn list_checks_request(
    request: v1::ListChecksRequest,
) -> Result<(Option<String>, Option<ultron8_core::health::CheckState>), HiveError> {
    let target = (!request.target.trim().is_empty()).then_some(request.target);
    let state = if request.state.is_empty() {
        None
    } else {
        Some(check_state(&request.state)?)
    };
    Ok((target, state))
}

pub fn drone_check_to_wire(record: ultron8_store::DroneCheckRecord) -> v1::DroneCheckInfo {
    v1::DroneCheckInfo {
        drone_id: record.drone_id.to_string(),
        check: record.status.check,
        state: record.status.state.as_str().to_string(),
        since_ms: record.status.since_ms.unwrap_or(0),
        last_run_ms: record.status.last_run_ms.unwrap_or(0),
        last_output: record.status.last_output,
        reported_at_ms: ms(record.reported_at),
    }
}
