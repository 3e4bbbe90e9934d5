//! Planning a pack action as a job, writing nothing: validate the
//! parameters against the action's schema, render its templates, and choose
//! where it runs (the drones a target selects in a [`Fleet`] read once, or
//! the hive itself for `http` and `noop`). The rules engine, `rule test` and
//! an operator's `run` all plan through here; `actions.rs` runs what was
//! planned. Nothing here knows the hive, so the modules above can all use it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use ultron8_core::echo::quote;
use ultron8_core::ids::DroneId;
use ultron8_core::params;
use ultron8_core::target::{self, TargetSubject};
use ultron8_core::{CommandSpec, Program, template};
use ultron8_pack::{Action, Runner, ShellProgram};
use ultron8_store::{DroneRecord, JobOrigin, NewExecution, NewJob};

use crate::ids::{new_execution_id, new_job_id};

/// Executions the hive runs itself (`http` and `noop` actions) carry this
/// in place of a drone id; it can never be a drone's id (drone ids start
/// with a letter or digit).
pub const HIVE_EXECUTOR: &str = "@hive";

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
    #[error("target {} matches no online drone", quote(.target))]
    NoOnlineDrone { target: String },
    /// The command needs secrets the hive does not hold.
    #[error(
        "{action} needs secret{} {}, which {} not set; an admin sets one with `ultronctl secret set NAME`",
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
        if names.len() == 1 { "is" } else { "are" }
    )]
    MissingSecrets { action: String, names: Vec<String> },
    #[error("{0}")]
    Store(#[from] ultron8_store::StoreError),
}

/// A job ready to be recorded: what `create_job` or `fire_rule` writes.
pub struct ActionJob {
    pub job: NewJob,
    pub executions: Vec<NewExecution>,
    /// Drones the target matched (empty for hive-side actions).
    pub drones: Vec<DroneId>,
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
    pub fn matching(&self, text: &str) -> Result<(Vec<DroneId>, u32), PlanError> {
        let expr = target::parse(text).map_err(|e| {
            PlanError::InvalidTarget(format!(
                "invalid target {}: {e}\n{}",
                quote(text),
                e.render(text)
            ))
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
    now: DateTime<Utc>,
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
                secret_env: Default::default(),
            };
            (
                vec![DroneId::new(HIVE_EXECUTOR)],
                0,
                described,
                HIVE_EXECUTOR.to_string(),
            )
        }
    };
    let job = NewJob {
        id: new_job_id(),
        target,
        requester: requester.to_string(),
        command,
        created_at: now,
        origin,
    };
    let executions = drones
        .iter()
        .map(|drone| NewExecution {
            id: new_execution_id(),
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

fn runner_name(runner: &Runner) -> &'static str {
    match runner {
        Runner::Shell { .. } => "shell",
        Runner::Script { .. } => "script",
        Runner::Http { .. } => "http",
        Runner::Noop => "noop",
        Runner::Escalate => "escalate",
    }
}

pub(crate) fn matches(expr: &target::TargetExpr, drone: &DroneRecord) -> bool {
    let labels = drone.labels();
    expr.matches(&TargetSubject {
        id: drone.id.as_str(),
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
///
/// `{{ secret.NAME }}` never renders to a value here (see
/// [`ultron8_core::secrets`]): in a `shell:` script it is a reference to an
/// environment variable, an `env:` value that is exactly one becomes an
/// entry of [`CommandSpec::secret_env`], and anywhere else (argv, a
/// script's args) it is refused, as argv is readable by every user of the
/// drone's host. The pack loader refuses the same at install time; this
/// keeps the rule for packs installed before it did.
pub fn command_for(
    action: &Action,
    parameters: &Map<String, Value>,
) -> Result<Option<CommandSpec>, PlanError> {
    let context = Value::Object(parameters.clone());
    let render = |text: &str| {
        template::render_str(text, &context).map_err(|e| {
            PlanError::Template(format!(
                "{}: template {}: {e}",
                action.reference(),
                quote(text)
            ))
        })
    };
    let no_secret_in = |items: &[String]| {
        let names: std::collections::BTreeSet<String> = items
            .iter()
            .flat_map(|item| template::secret_references(item))
            .collect();
        if names.is_empty() {
            Ok(())
        } else {
            Err(PlanError::Template(format!(
                "{}: argv uses secret {}: {}",
                action.reference(),
                names.into_iter().collect::<Vec<_>>().join(", "),
                SECRETS_THROUGH_THE_ENVIRONMENT
            )))
        }
    };
    let render_all = |items: &[String]| {
        no_secret_in(items)?;
        items
            .iter()
            .map(|t| render(t))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut secret_env = std::collections::BTreeMap::new();
    let mut render_env = |env: &std::collections::BTreeMap<String, String>| {
        let mut rendered = std::collections::BTreeMap::new();
        for (variable, value) in env {
            match template::whole_secret_reference(value) {
                Some(name) => {
                    secret_env.insert(variable.clone(), name);
                }
                None => {
                    rendered.insert(variable.clone(), render(value)?);
                }
            }
        }
        Ok::<_, PlanError>(rendered)
    };
    let (program, env) = match &action.runner {
        Runner::Shell { program, env } => {
            let env = render_env(env)?;
            let program = match program {
                ShellProgram::Argv(args) => Program::Argv(render_all(args)?),
                // Values are quoted as shell words: see `template::render_shell`.
                ShellProgram::Script(script) => {
                    let rendered =
                        template::render_shell_script(script, &context).map_err(|e| {
                            PlanError::Template(format!(
                                "{}: template {script:?}: {e}",
                                action.reference()
                            ))
                        })?;
                    for name in rendered.secrets {
                        secret_env.insert(ultron8_core::secrets::env_var(&name), name);
                    }
                    Program::Shell(rendered.text)
                }
            };
            (program, env)
        }
        Runner::Script {
            path,
            sha256,
            args,
            env,
        } => {
            let env = render_env(env)?;
            (
                Program::Script {
                    sha256: sha256.clone(),
                    name: format!("{}/{path}", action.pack),
                    args: render_all(args)?,
                },
                env,
            )
        }
        Runner::Http { .. } | Runner::Noop | Runner::Escalate => return Ok(None),
    };
    Ok(Some(CommandSpec {
        program,
        env,
        working_dir: None,
        timeout_ms: action.timeout.map(|t| t.as_millis() as u64),
        output_limit_bytes: None,
        redact: secret_values(action, parameters),
        secret_env,
    }))
}

/// Why a secret may not appear in argv, as the loader and the planner say.
pub const SECRETS_THROUGH_THE_ENVIRONMENT: &str =
    "secrets reach commands through the environment; use it in shell: or env:";
