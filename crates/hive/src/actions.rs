//! Pack actions as jobs: plan one against the fleet as it is now
//! (`planning.rs` holds the planning itself), start a recorded job
//! (dispatch to drones), and run the hive-side ones (`http`, `noop`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value, json};
use tracing::{info, warn};
use ultron8_core::audit::AuditVerb;
use ultron8_core::echo::{elide, quote};
use ultron8_core::ids::{ExecutionId, JobId};
use ultron8_core::{ExecutionStatus, template};
use ultron8_pack::{Action, Runner};
use ultron8_store::{
    ExecutionResult, ExecutionUpdate, JobOrigin, NewExecution, NewJob, PendingDispatch,
};

use crate::actor::Actor;
use crate::hive::Hive;
use crate::planning::{ActionJob, Fleet, HIVE_EXECUTOR, PlanError, plan_action_job, secret_values};

/// Cap on the response body an `http` action keeps, like a drone's output cap.
const HTTP_BODY_LIMIT: usize = 1024 * 1024;

impl Hive {
    /// [`plan_action_job`] against the fleet as it is now.
    pub async fn plan_action_job(
        &self,
        action: &Action,
        given: &Map<String, Value>,
        target_text: Option<&str>,
        requester: &str,
        origin: JobOrigin,
        ttl: Duration,
    ) -> Result<ActionJob, PlanError> {
        let fleet = if action.runs_on_drones() {
            Fleet::load(&*self.store).await?
        } else {
            Fleet::default()
        };
        let planned = plan_action_job(
            action,
            given,
            target_text,
            requester,
            origin,
            ttl,
            &fleet,
            Utc::now(),
        )?;
        // A secret that is not set would fail every execution when its
        // drone asks for it; refuse before anything is written instead.
        let needed = &planned.job.command.secret_env;
        if !needed.is_empty() {
            let stored: Vec<String> = self
                .store
                .list_secrets()
                .await?
                .into_iter()
                .map(|s| s.name)
                .collect();
            let mut names: Vec<String> = needed
                .values()
                .filter(|name| !stored.contains(name))
                .cloned()
                .collect();
            names.sort();
            names.dedup();
            if !names.is_empty() {
                return Err(PlanError::MissingSecrets {
                    action: action.reference(),
                    names,
                });
            }
        }
        Ok(planned)
    }

    /// Starts a recorded action job: publishes drone executions, or runs
    /// the hive-side one in the background.
    pub async fn start_action_job(
        self: &Arc<Self>,
        job: &NewJob,
        executions: &[NewExecution],
        action: &Action,
        parameters: Map<String, Value>,
    ) {
        for execution in executions {
            if execution.drone_id == HIVE_EXECUTOR {
                let hive = self.clone();
                let action = action.clone();
                let parameters = parameters.clone();
                let execution = execution.clone();
                let job_id = job.id.clone();
                tokio::spawn(async move {
                    hive.run_in_hive(&job_id, &execution.id, &action, &parameters)
                        .await
                });
            } else {
                let item = PendingDispatch {
                    execution_id: execution.id.clone(),
                    job_id: job.id.clone(),
                    drone_id: execution.drone_id.clone(),
                    requester: job.requester.clone(),
                    command: job.command.clone(),
                    action_ref: job.origin.action_ref.clone(),
                    created_at: job.created_at,
                    expires_at: execution.expires_at,
                };
                self.dispatch(&item).await;
            }
        }
    }

    /// Runs an `http` or `noop` action here and records its result.
    async fn run_in_hive(
        &self,
        job_id: &JobId,
        execution_id: &ExecutionId,
        action: &Action,
        parameters: &Map<String, Value>,
    ) {
        let started = Utc::now();
        let running = ExecutionUpdate {
            status: ExecutionStatus::Running,
            at: started,
            started_at: Some(started),
            result: None,
        };
        if let Err(e) = self
            .store
            .transition_execution(execution_id, &running, None)
            .await
        {
            warn!(%execution_id, error = %e, "cannot record the start of a hive-side action");
        }
        let clock = Instant::now();
        let (status, mut result) = match &action.runner {
            Runner::Http { .. } => self.http_request(action, parameters).await,
            Runner::Escalate => self.escalate_action(job_id, action, parameters).await,
            _ => (ExecutionStatus::Succeeded, ExecutionResult::default()),
        };
        result.duration_ms = clock.elapsed().as_millis() as u64;
        let secrets = secret_values(action, parameters);
        result.stdout = ultron8_core::model::redact_bytes(&result.stdout, &secrets);
        result.error = result
            .error
            .map(|e| ultron8_core::model::redact(&e, &secrets));
        let mut audit = self.audit(
            Actor::Hive,
            AuditVerb::ExecutionFinished,
            json!({ "duration_ms": result.duration_ms, "error": result.error }),
        );
        audit.job_id = Some(job_id.clone());
        audit.execution_id = Some(execution_id.clone());
        audit.action_ref = Some(action.reference());
        audit.status = Some(status);
        let update = ExecutionUpdate {
            status,
            at: Utc::now(),
            started_at: Some(started),
            result: Some(result),
        };
        match self
            .store
            .transition_execution(execution_id, &update, Some(&audit))
            .await
        {
            Ok(_) => {
                info!(%job_id, %execution_id, action = %action.reference(), %status, "hive-side action finished");
                self.executions_changed.notify_waiters();
            }
            Err(e) => {
                warn!(%execution_id, error = %e, "cannot record the result of a hive-side action")
            }
        }
    }

    async fn http_request(
        &self,
        action: &Action,
        parameters: &Map<String, Value>,
    ) -> (ExecutionStatus, ExecutionResult) {
        let Runner::Http {
            method,
            url,
            headers,
            body,
            expect_status,
        } = &action.runner
        else {
            return failed("not an http action".into());
        };
        let context = Value::Object(parameters.clone());
        let render = |text: &str| template::render_str(text, &context).map_err(|e| e.to_string());
        let url = match render(url) {
            Ok(url) => url,
            Err(e) => return failed(format!("url template: {e}")),
        };
        // A template may render anything; only web URLs leave the hive.
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return failed(format!(
                "url {} is not an http:// or https:// URL",
                quote(&url)
            ));
        }
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return failed(format!("invalid HTTP method {}", elide(method)));
        };
        let mut request = self.http.request(method, &url);
        for (name, value) in headers {
            match render(value) {
                // An optional header whose parameter was left empty is not sent.
                Ok(value) if value.is_empty() => {}
                Ok(value) => request = request.header(name.as_str(), value),
                Err(e) => return failed(format!("header {name} template: {e}")),
            }
        }
        if let Some(body) = body {
            match render(body) {
                Ok(body) => request = request.body(body),
                Err(e) => return failed(format!("body template: {e}")),
            }
        }
        let timeout = action.timeout.unwrap_or(Duration::from_secs(30));
        let response = match tokio::time::timeout(timeout, request.send()).await {
            Err(_) => {
                return (
                    ExecutionStatus::TimedOut,
                    ExecutionResult {
                        error: Some(format!(
                            "no response from {} within {}",
                            elide(&url),
                            humantime::format_duration(timeout)
                        )),
                        ..Default::default()
                    },
                );
            }
            Ok(Err(e)) => return failed(format!("request to {} failed: {e}", elide(&url))),
            Ok(Ok(response)) => response,
        };
        let code = response.status().as_u16();
        let mut body = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let truncated = body.len() > HTTP_BODY_LIMIT;
        body.truncate(HTTP_BODY_LIMIT);
        let expected = if expect_status.is_empty() {
            (200..300).contains(&code)
        } else {
            expect_status.contains(&code)
        };
        let result = ExecutionResult {
            exit_code: Some(i32::from(code)),
            stdout: body,
            stdout_truncated: truncated,
            error: (!expected).then(|| {
                format!(
                    "HTTP {code} from {url}, expected {}",
                    describe_expected(expect_status)
                )
            }),
            ..ExecutionResult::default()
        };
        (
            if expected {
                ExecutionStatus::Succeeded
            } else {
                ExecutionStatus::Failed
            },
            result,
        )
    }
}

impl Hive {
    /// `runner: escalate`: raises `core.escalation` with the rule and event
    /// the job came from and the action's `reason`. Refused for a job that
    /// a `core.escalation` event fired: an escalation raising another
    /// would loop.
    async fn escalate_action(
        &self,
        job_id: &JobId,
        action: &Action,
        parameters: &Map<String, Value>,
    ) -> (ExecutionStatus, ExecutionResult) {
        let job = match self.store.get_job(job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return failed(format!("job {job_id} is not stored")),
            Err(e) => return failed(format!("cannot read job {job_id}: {e}")),
        };
        if let Some(event_id) = &job.origin.event_id {
            match self.store.get_event(event_id).await {
                Ok(Some(event)) if event.trigger == ultron8_core::triggers::ESCALATION => {
                    return failed(format!(
                        "{} does not run for a core.escalation event: an escalation raising another would loop",
                        action.reference()
                    ));
                }
                Ok(_) => {}
                Err(e) => return failed(format!("cannot read event {event_id}: {e}")),
            }
        }
        let reason = parameters
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let payload = json!({
            "rule": job.origin.rule.clone().unwrap_or_default(),
            "reason": reason,
            "event_id": job.origin.event_id.as_ref().map(|id| id.to_string()).unwrap_or_default(),
            "target": parameters.get("target").and_then(Value::as_str).unwrap_or_default(),
            "action": action.reference(),
        });
        match self
            .ingest_event(
                ultron8_core::triggers::ESCALATION,
                payload,
                &format!("action:{}", action.reference()),
            )
            .await
        {
            Ok(event_id) => {
                self.metrics
                    .escalated(crate::metrics::EscalationCause::Action);
                (
                    ExecutionStatus::Succeeded,
                    ExecutionResult {
                        stdout: format!("raised core.escalation {event_id}: {reason}\n")
                            .into_bytes(),
                        ..ExecutionResult::default()
                    },
                )
            }
            Err(e) => failed(format!("cannot store the escalation: {e}")),
        }
    }
}

/// A hive-side action that failed, and why.
fn failed(error: String) -> (ExecutionStatus, ExecutionResult) {
    (
        ExecutionStatus::Failed,
        ExecutionResult {
            error: Some(error),
            ..ExecutionResult::default()
        },
    )
}

fn describe_expected(expect: &[u16]) -> String {
    if expect.is_empty() {
        "2xx".into()
    } else {
        expect
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" or ")
    }
}
