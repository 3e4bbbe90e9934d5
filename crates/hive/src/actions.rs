//! Pack actions as jobs: render an action's templates with its validated
//! parameters, choose where it runs (drones for `shell` and `script`, the
//! hive itself for `http` and `noop`), and run the hive-side ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value, json};
use tracing::{info, warn};
use ultron8_core::params;
use ultron8_core::target::{self, TargetSubject};
use ultron8_core::{CommandSpec, ExecutionStatus, Program, template};
use ultron8_pack::{Action, Runner, ShellProgram};
use ultron8_store::{
    DroneRecord, ExecutionResult, ExecutionUpdate, JobOrigin, NewExecution, NewJob, PendingDispatch,
};

use crate::actor::Actor;
use crate::hive::{HIVE_EXECUTOR, Hive};

/// Cap on the response body an `http` action keeps, like a drone's output cap.
const HTTP_BODY_LIMIT: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Parameters(String),
    #[error("{0}")]
    Template(String),
    /// The target does not parse; the message points at the column.
    #[error("{0}")]
    InvalidTarget(String),
    #[error("{action} runs on drones: give a target (-t)")]
    MissingTarget { action: String },
    #[error("target {target:?} matches no online drone")]
    NoOnlineDrone { target: String },
    #[error("{0}")]
    Store(#[from] ultron8_store::StoreError),
}

/// A job ready to be recorded: what `create_job` or `fire_rule` writes.
pub struct ActionJob {
    pub job: NewJob,
    pub executions: Vec<NewExecution>,
    /// Drones the target matched (empty for hive-side actions).
    pub drones: Vec<String>,
    /// Online drones in the whole fleet: what a blast-radius percentage is
    /// a percentage of (the matched hosts alone would always be 100%).
    pub matching_fleet: u32,
    /// The validated parameters, defaults filled in (secrets in clear: for
    /// running the action, never for showing).
    pub parameters: Map<String, Value>,
}

/// The online drones, read once and used for every target resolved against
/// them: per request for an operator's run, per batch of events for the
/// rules engine (never per rule).
#[derive(Default)]
pub struct Fleet {
    online: Vec<DroneRecord>,
}

impl Fleet {
    pub async fn load(store: &dyn ultron8_store::Store) -> Result<Fleet, PlanError> {
        let mut drones = store.list_drones().await?;
        drones.retain(|d| d.online);
        Ok(Fleet { online: drones })
    }

    /// The online drones `text` selects, and how many drones are online.
    pub fn matching(&self, text: &str) -> Result<(Vec<String>, u32), PlanError> {
        let expr = target::parse(text).map_err(|e| {
            PlanError::InvalidTarget(format!("invalid target {text:?}: {e}\n{}", e.render(text)))
        })?;
        let matched = self
            .online
            .iter()
            .filter(|d| matches(&expr, d))
            .map(|d| d.id.clone())
            .collect();
        Ok((
            matched,
            u32::try_from(self.online.len()).unwrap_or(u32::MAX),
        ))
    }
}

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
        plan_action_job(
            action,
            given,
            target_text,
            requester,
            origin,
            ttl,
            &fleet,
            Utc::now(),
        )
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
        job_id: &str,
        execution_id: &str,
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
            "execution.finished",
            json!({ "duration_ms": result.duration_ms, "error": result.error }),
        );
        audit.job_id = Some(job_id.to_string());
        audit.execution_id = Some(execution_id.to_string());
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
        let failed = |error: String| {
            (
                ExecutionStatus::Failed,
                ExecutionResult {
                    error: Some(error),
                    ..ExecutionResult::default()
                },
            )
        };
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
            return failed(format!("url {url:?} is not an http:// or https:// URL"));
        }
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return failed(format!("invalid HTTP method {method}"));
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
                            "no response from {url} within {}",
                            humantime::format_duration(timeout)
                        )),
                        ..Default::default()
                    },
                );
            }
            Ok(Err(e)) => return failed(format!("request to {url} failed: {e}")),
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

/// Validates `given` against the action's schema and plans the job: its
/// command, and the executions on the drones of `fleet` the target selects
/// (or the one hive-side execution). Nothing is written.
#[allow(clippy::too_many_arguments)] // each is one part of the request
pub fn plan_action_job(
    action: &Action,
    given: &Map<String, Value>,
    target_text: Option<&str>,
    requester: &str,
    mut origin: JobOrigin,
    ttl: Duration,
    fleet: &Fleet,
    now: chrono::DateTime<Utc>,
) -> Result<ActionJob, PlanError> {
    let parameters = params::validate(&action.parameters, given).map_err(|problems| {
        PlanError::Parameters(format!(
            "invalid parameters for {}: {}",
            action.reference(),
            problems.join("; ")
        ))
    })?;
    let command = command_for(action, &parameters)?;
    let expires_at =
        now + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::minutes(5));
    origin.action_ref = Some(action.reference());
    origin.parameters = Some(Value::Object(params::mask_secrets(
        &action.parameters,
        &parameters,
    )));
    let (drones, matching_fleet, command, target) = match command {
        Some(command) => {
            let text = target_text
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| PlanError::MissingTarget {
                    action: action.reference(),
                })?;
            let (matched, online) = fleet.matching(text)?;
            if matched.is_empty() {
                return Err(PlanError::NoOnlineDrone {
                    target: text.to_string(),
                });
            }
            (matched, online, command, text.to_string())
        }
        None => {
            // The hive runs it; the job still records what ran, for the
            // audit trail and `job get`.
            let described = CommandSpec {
                program: Program::Argv(vec![format!(
                    "{} ({})",
                    action.reference(),
                    runner_name(&action.runner)
                )]),
                env: Default::default(),
                working_dir: None,
                timeout_ms: action.timeout.map(|t| t.as_millis() as u64),
                output_limit_bytes: None,
                redact: secret_values(action, &parameters),
            };
            (
                vec![HIVE_EXECUTOR.to_string()],
                0,
                described,
                HIVE_EXECUTOR.to_string(),
            )
        }
    };
    let job = NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        target,
        requester: requester.to_string(),
        command,
        created_at: now,
        origin,
    };
    let executions = drones
        .iter()
        .map(|drone| NewExecution {
            id: uuid::Uuid::now_v7().to_string(),
            job_id: job.id.clone(),
            drone_id: drone.clone(),
            created_at: now,
            expires_at,
        })
        .collect();
    let drones = if drones == [HIVE_EXECUTOR] {
        Vec::new()
    } else {
        drones
    };
    Ok(ActionJob {
        job,
        executions,
        drones,
        matching_fleet,
        parameters,
    })
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

fn runner_name(runner: &Runner) -> &'static str {
    match runner {
        Runner::Shell { .. } => "shell",
        Runner::Script { .. } => "script",
        Runner::Http { .. } => "http",
        Runner::Noop => "noop",
    }
}

pub(crate) fn matches(expr: &target::TargetExpr, drone: &DroneRecord) -> bool {
    let labels = drone.labels();
    expr.matches(&TargetSubject {
        id: &drone.id,
        hostname: &drone.facts.hostname,
        labels: &labels,
    })
}

/// The texts of the secret parameters' values, to mask in output.
pub fn secret_values(action: &Action, parameters: &Map<String, Value>) -> Vec<String> {
    params::secret_texts(&action.parameters, parameters)
}

/// The command a drone runs for a `shell` or `script` action; None for
/// actions the hive runs itself.
pub fn command_for(
    action: &Action,
    parameters: &Map<String, Value>,
) -> Result<Option<CommandSpec>, PlanError> {
    let context = Value::Object(parameters.clone());
    let render = |text: &str| {
        template::render_str(text, &context).map_err(|e| {
            PlanError::Template(format!("{}: template {text:?}: {e}", action.reference()))
        })
    };
    let render_all = |items: &[String]| {
        items
            .iter()
            .map(|t| render(t))
            .collect::<Result<Vec<_>, _>>()
    };
    let render_env = |env: &std::collections::BTreeMap<String, String>| {
        env.iter()
            .map(|(k, v)| Ok((k.clone(), render(v)?)))
            .collect::<Result<_, PlanError>>()
    };
    let (program, env) = match &action.runner {
        Runner::Shell { program, env } => {
            let program = match program {
                ShellProgram::Argv(args) => Program::Argv(render_all(args)?),
                ShellProgram::Script(script) => Program::Shell(render(script)?),
            };
            (program, render_env(env)?)
        }
        Runner::Script {
            path,
            sha256,
            args,
            env,
        } => (
            Program::Script {
                sha256: sha256.clone(),
                name: format!("{}/{path}", action.pack),
                args: render_all(args)?,
            },
            render_env(env)?,
        ),
        Runner::Http { .. } | Runner::Noop => return Ok(None),
    };
    Ok(Some(CommandSpec {
        program,
        env,
        working_dir: None,
        timeout_ms: action.timeout.map(|t| t.as_millis() as u64),
        output_limit_bytes: None,
        redact: secret_values(action, parameters),
    }))
}
