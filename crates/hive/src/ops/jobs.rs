//! Jobs: submitting one (an ad-hoc command or a pack action, one path for
//! both), watching it, reading jobs and executions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value, json};
use tokio_stream::wrappers::ReceiverStream;
use tracing::info;
use ultron8_core::audit::AuditVerb;
use ultron8_core::ids::{DroneId, ExecutionId, JobId};
use ultron8_core::{CommandSpec, ExecutionStatus, params, target};
use ultron8_pack::Action;
use ultron8_store::{
    AuditFilter, ExecutionRecord, ExecutionResult, ExecutionUpdate, JobFilter, JobRecord,
    JobSummary, NewExecution, NewJob, OutputStreamKind, PendingDispatch, TransitionOutcome,
};

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;
use crate::ids::{new_execution_id, new_job_id};
use crate::planning::{Fleet, PlanError};

/// Longest time a request may wait for its drone. Well inside the drones'
/// journal retention, so an id is never forgotten while its request lives.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often a job watcher re-reads the store when nothing on this replica
/// signalled a change (changes made through another replica).
const WATCH_POLL: Duration = Duration::from_millis(500);

/// What a job runs.
#[derive(Debug, Clone)]
pub enum Work {
    /// An ad-hoc command, run on every drone the target matches.
    Command(CommandSpec),
    /// A pack action by reference (`pack.name`), with its parameters as
    /// given: strings (as typed on a command line) are converted to the
    /// declared types, then everything is validated against the schema.
    Action {
        reference: String,
        parameters: Map<String, Value>,
    },
}

/// A job to submit.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub work: Work,
    /// A target expression. Required for commands and for actions that run
    /// on drones; empty for actions the hive runs itself (`http`, `noop`).
    pub target: String,
    /// How long each request may wait for its drone; `None` means the
    /// configured default. At most [`MAX_TTL`].
    pub ttl: Option<Duration>,
}

/// A job as submitted: stored, and the drones its target named that were
/// offline, so not run.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub job: JobRecord,
    pub offline_drones: Vec<DroneId>,
}

/// A job planned and not yet written.
struct PlannedJob {
    job: NewJob,
    executions: Vec<NewExecution>,
    /// What the `job.submitted` audit record says beyond the job id.
    audit_detail: Value,
    /// For an action job: the action and its validated parameters (secrets
    /// in clear, for running it; never shown).
    action: Option<(Action, Map<String, Value>)>,
}

impl Hive {
    /// Plans a job, writes it with its executions and the `job.submitted`
    /// audit record in one store call, dispatches it, and returns it as
    /// stored. Nothing is written when planning fails: a malformed target,
    /// command or parameters, or a target with no online drone (whose
    /// error names the matching offline drones).
    pub async fn submit(
        self: &Arc<Self>,
        actor: &Actor,
        spec: JobSpec,
    ) -> Result<Submitted, HiveError> {
        let ttl = self.job_ttl(spec.ttl)?;
        let requester = actor.to_string();
        let planned = match spec.work {
            Work::Command(command) => {
                self.plan_command(command, &spec.target, &requester, ttl)
                    .await?
            }
            Work::Action {
                reference,
                parameters,
            } => {
                self.plan_action(&reference, &parameters, &spec.target, &requester, ttl)
                    .await?
            }
        };

        let mut detail = planned.audit_detail;
        detail["target"] = json!(planned.job.target);
        detail["drones"] = json!(
            planned
                .executions
                .iter()
                .map(|e| &e.drone_id)
                .filter(|d| *d != crate::planning::HIVE_EXECUTOR)
                .collect::<Vec<_>>()
        );
        detail["ttl_ms"] = json!(ttl.as_millis() as u64);
        // The target names these too; they are not run, and the submitter
        // is told (see `offline_when_submitted`).
        let offline_drones = self.offline_drones_matching(&planned.job.target).await?;
        detail["offline_drones"] = json!(offline_drones);
        let mut audit = self.audit(actor.clone(), AuditVerb::JobSubmitted, detail);
        audit.job_id = Some(planned.job.id.clone());
        audit.action_ref = planned.job.origin.action_ref.clone();
        self.metrics
            .time_store(
                crate::metrics::StoreCall::CreateJob,
                self.store
                    .create_job(&planned.job, &planned.executions, &audit),
            )
            .await?;
        info!(job_id = %planned.job.id, target = %planned.job.target, drones = planned.executions.len(),
            action = ?planned.job.origin.action_ref, %requester, "job submitted");

        match planned.action {
            Some((action, parameters)) => {
                self.start_action_job(&planned.job, &planned.executions, &action, parameters)
                    .await
            }
            None => {
                let dispatches = planned.executions.iter().map(|execution| {
                    let item = PendingDispatch {
                        execution_id: execution.id.clone(),
                        job_id: planned.job.id.clone(),
                        drone_id: execution.drone_id.clone(),
                        requester: planned.job.requester.clone(),
                        command: planned.job.command.clone(),
                        action_ref: planned.job.origin.action_ref.clone(),
                        created_at: planned.job.created_at,
                        expires_at: execution.expires_at,
                    };
                    async move { self.dispatch(&item).await }
                });
                futures::future::join_all(dispatches).await;
            }
        }
        let job = self
            .store
            .get_job(&planned.job.id)
            .await?
            .ok_or_else(|| HiveError::internal("job vanished right after it was recorded"))?;
        Ok(Submitted {
            job,
            offline_drones,
        })
    }

    fn job_ttl(&self, requested: Option<Duration>) -> Result<Duration, HiveError> {
        let ttl = requested.unwrap_or(self.config.default_ttl);
        if ttl > MAX_TTL {
            return Err(HiveError::invalid_argument(format!(
                "a TTL of {} is too long; at most {} (drones forget executions after 30 days, so older requests could run twice)",
                humantime::format_duration(ttl),
                humantime::format_duration(MAX_TTL)
            )));
        }
        Ok(ttl)
    }

    async fn plan_command(
        &self,
        command: CommandSpec,
        target: &str,
        requester: &str,
        ttl: Duration,
    ) -> Result<PlannedJob, HiveError> {
        let matched = match Fleet::load(&*self.store).await {
            Ok(fleet) => fleet.matching(target),
            Err(e) => Err(e),
        };
        let drones = match matched {
            Ok((drones, _)) if !drones.is_empty() => drones,
            Ok(_) => {
                let unmatched = PlanError::NoOnlineDrone {
                    target: target.to_string(),
                };
                return Err(self.plan_failed(unmatched).await);
            }
            Err(e) => return Err(self.plan_failed(e).await),
        };
        let now = Utc::now();
        // At most MAX_TTL, so the conversion cannot overflow.
        let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or_default();
        let job = NewJob {
            id: new_job_id(),
            target: target.to_string(),
            requester: requester.to_string(),
            command,
            created_at: now,
            origin: Default::default(),
        };
        let executions = drones
            .into_iter()
            .map(|drone_id| NewExecution {
                id: new_execution_id(),
                job_id: job.id.clone(),
                drone_id,
                created_at: now,
                expires_at,
            })
            .collect();
        Ok(PlannedJob {
            audit_detail: json!({ "command": job.command }),
            job,
            executions,
            action: None,
        })
    }

    async fn plan_action(
        &self,
        reference: &str,
        given: &Map<String, Value>,
        target: &str,
        requester: &str,
        ttl: Duration,
    ) -> Result<PlannedJob, HiveError> {
        let Some(record) = self.store.get_action(reference).await? else {
            return Err(self.unknown_action(reference).await);
        };
        let action = record.definition;
        let given = params::coerce_strings(&action.parameters, given).map_err(|problems| {
            HiveError::invalid_argument(format!(
                "invalid parameters for {}: {}",
                action.reference(),
                problems.join("; ")
            ))
        })?;
        let target = Some(target).filter(|t| !t.trim().is_empty());
        let planned = match self
            .plan_action_job(&action, &given, target, requester, Default::default(), ttl)
            .await
        {
            Ok(planned) => planned,
            Err(e) => return Err(self.plan_failed(e).await),
        };
        Ok(PlannedJob {
            audit_detail: json!({
                "command": planned.job.command.display(),
                "parameters": planned.job.origin.parameters,
            }),
            job: planned.job,
            executions: planned.executions,
            action: Some((action, planned.parameters)),
        })
    }

    /// A planning failure as the submitter sees it: a target without an
    /// online drone names the matching drones that are offline.
    async fn plan_failed(&self, error: PlanError) -> HiveError {
        match error {
            PlanError::NoOnlineDrone { target } => {
                match self.offline_drones_matching(&target).await {
                    Ok(offline) => self.no_drone_matches(&target, offline).await,
                    Err(e) => e,
                }
            }
            other => other.into(),
        }
    }

    /// The offline drones `target` matches, to explain why it matches no
    /// online one.
    async fn offline_drones_matching(&self, target: &str) -> Result<Vec<DroneId>, HiveError> {
        let Ok(expr) = target::parse(target) else {
            return Ok(Vec::new());
        };
        Ok(self
            .store
            .list_drones()
            .await?
            .into_iter()
            .filter(|d| !d.online && crate::planning::matches(&expr, d))
            .map(|d| d.id)
            .collect())
    }

    /// The drones the job's target matched that were offline when it was
    /// submitted, and so were not run, as its `job.submitted` record says.
    pub async fn offline_when_submitted(&self, job_id: &JobId) -> Result<Vec<DroneId>, HiveError> {
        let records = self
            .store
            .list_audit(&AuditFilter {
                job_id: Some(job_id.clone()),
                action: Some(AuditVerb::JobSubmitted),
                limit: 1,
                ..AuditFilter::default()
            })
            .await?;
        Ok(records
            .first()
            .and_then(|r| r.detail.get("offline_drones"))
            .and_then(|v| v.as_array())
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(DroneId::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Every execution of the job now, then each again whenever its status
    /// changes; the stream ends once all are terminal, or with an error.
    pub async fn watch_job(
        self: &Arc<Self>,
        job_id: &JobId,
    ) -> Result<ReceiverStream<Result<ExecutionRecord, HiveError>>, HiveError> {
        // A job that does not exist is refused now rather than as an empty stream.
        self.get_job(job_id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let hive = self.clone();
        let job_id = job_id.clone();
        tokio::spawn(async move {
            let mut sent: HashMap<ExecutionId, ExecutionStatus> = HashMap::new();
            loop {
                // Subscribe before reading, so a change between the read and
                // the wait is not missed.
                let changed = hive.executions_changed.notified();
                let job = match hive.store.get_job(&job_id).await {
                    Ok(Some(job)) => job,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                for execution in job.executions.iter() {
                    if sent.get(&execution.id) != Some(&execution.status) {
                        sent.insert(execution.id.clone(), execution.status);
                        if tx.send(Ok(execution.clone())).await.is_err() {
                            return; // the watcher went away
                        }
                    }
                }
                if job.executions.iter().all(|e| e.status.is_terminal()) {
                    return;
                }
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep(WATCH_POLL) => {}
                    _ = tx.closed() => return,
                    _ = hive.stopping.cancelled() => {
                        let _ = tx.send(Err(hive.shutting_down(&job_id))).await;
                        return;
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    pub async fn get_job(&self, id: &JobId) -> Result<JobRecord, HiveError> {
        self.store
            .get_job(id)
            .await?
            .ok_or_else(|| HiveError::not_found(format!("no job {id}; see `ultronctl job list`")))
    }

    /// The newest jobs the filter selects; `limit` 0 means 50, and at most
    /// 1000 are returned.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobSummary>, HiveError> {
        let limit = match filter.limit {
            0 => 50,
            n => n.min(1000),
        };
        Ok(self
            .store
            .list_jobs(&JobFilter {
                limit,
                ..filter.clone()
            })
            .await?)
    }

    /// An execution; while it runs, with the output streamed in so far.
    pub async fn get_execution(&self, id: &ExecutionId) -> Result<ExecutionRecord, HiveError> {
        let mut execution = self
            .store
            .get_execution(id)
            .await?
            .ok_or_else(|| HiveError::not_found(format!("no execution {id}")))?;
        if !execution.status.is_terminal() {
            for chunk in self.store.execution_output(id).await? {
                match chunk.stream {
                    OutputStreamKind::Stdout => execution.result.stdout.extend(chunk.data),
                    OutputStreamKind::Stderr => execution.result.stderr.extend(chunk.data),
                }
            }
        }
        Ok(execution)
    }
}

/// What a cancel did to one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanceledExecution {
    pub execution_id: ExecutionId,
    pub drone_id: DroneId,
    pub outcome: CancelOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It had not started: recorded `canceled`, it will not run.
    Canceled,
    /// It runs: its drone was sent a signed cancel and will report
    /// `canceled` once the process group is gone.
    Signalled,
    /// It had already finished.
    AlreadyFinished,
}

/// How long a cancel message stays valid on a drone's queue: a drone that
/// is away longer has its execution declared lost anyway.
const CANCEL_TTL: Duration = Duration::from_secs(600);

impl Hive {
    /// Cancels a job's unfinished executions, or only `drone`'s. One not
    /// yet started is recorded `canceled` at once (and a drone that gets
    /// its request later is told not to start it); one running is sent a
    /// signed cancel, and its drone stops the process group and reports it
    /// `canceled`. Audited as `job.cancel_requested`.
    pub async fn cancel_job(
        &self,
        actor: &Actor,
        job_id: &JobId,
        drone: Option<&DroneId>,
    ) -> Result<Vec<CanceledExecution>, HiveError> {
        let job = self.get_job(job_id).await?;
        let chosen: Vec<&ExecutionRecord> = job
            .executions
            .iter()
            .filter(|e| drone.is_none_or(|d| e.drone_id == *d))
            .collect();
        if let Some(drone) = drone
            && chosen.is_empty()
        {
            return Err(HiveError::not_found(format!(
                "job {job_id} has no execution on drone {drone}"
            )));
        }
        let mut audit = self.audit(
            actor.clone(),
            AuditVerb::JobCancelRequested,
            json!({ "drone": drone }),
        );
        audit.job_id = Some(job_id.clone());
        audit.drone_id = drone.cloned();
        self.store.append_audit(&audit).await?;

        let requester = actor.to_string();
        let mut results = Vec::with_capacity(chosen.len());
        for execution in chosen {
            let outcome = self.cancel_execution(execution, &requester).await?;
            results.push(CanceledExecution {
                execution_id: execution.id.clone(),
                drone_id: execution.drone_id.clone(),
                outcome,
            });
        }
        self.executions_changed.notify_waiters();
        info!(%job_id, %requester, drone = ?drone, "job cancel requested");
        Ok(results)
    }

    async fn cancel_execution(
        &self,
        execution: &ExecutionRecord,
        requester: &str,
    ) -> Result<CancelOutcome, HiveError> {
        let mut status = execution.status;
        if matches!(
            status,
            ExecutionStatus::Requested | ExecutionStatus::Dispatched
        ) {
            let update = ExecutionUpdate {
                status: ExecutionStatus::Canceled,
                at: Utc::now(),
                started_at: None,
                result: Some(ExecutionResult {
                    error: Some(format!("canceled by {requester} before it started")),
                    ..Default::default()
                }),
            };
            let mut audit = self.audit(
                Actor::Hive,
                AuditVerb::ExecutionFinished,
                json!({ "error": format!("canceled by {requester} before it started") }),
            );
            audit.job_id = Some(execution.job_id.clone());
            audit.execution_id = Some(execution.id.clone());
            audit.drone_id = Some(execution.drone_id.clone());
            audit.status = Some(ExecutionStatus::Canceled);
            match self
                .store
                .transition_execution(&execution.id, &update, Some(&audit))
                .await?
            {
                TransitionOutcome::Applied { .. } => {
                    self.metrics.execution_finished(ExecutionStatus::Canceled);
                    // A request already on the drone's queue is refused
                    // at its start report; the cancel message also keeps a
                    // later delivery from starting.
                    if status == ExecutionStatus::Dispatched {
                        self.publish_cancel(execution, requester).await;
                    }
                    return Ok(CancelOutcome::Canceled);
                }
                // The drone started (or finished) it meanwhile.
                TransitionOutcome::Refused { current } => status = current,
                TransitionOutcome::NotFound => {
                    return Err(HiveError::not_found(format!(
                        "no execution {}",
                        execution.id
                    )));
                }
            }
        }
        if status.is_terminal() {
            return Ok(CancelOutcome::AlreadyFinished);
        }
        if execution.drone_id.as_str() == crate::planning::HIVE_EXECUTOR {
            // Hive-run actions (http, noop) are short and not interruptible.
            return Ok(CancelOutcome::AlreadyFinished);
        }
        self.publish_cancel(execution, requester).await;
        Ok(CancelOutcome::Signalled)
    }

    /// Best effort: a drone that never gets the cancel has its execution
    /// declared lost when it stays silent, or finishes it.
    async fn publish_cancel(&self, execution: &ExecutionRecord, requester: &str) {
        let body = self.signed_cancel(execution, requester, Utc::now(), CANCEL_TTL);
        if let Err(e) = self
            .publisher
            .publish(execution.drone_id.as_str(), body, CANCEL_TTL)
            .await
        {
            tracing::warn!(execution_id = %execution.id, drone_id = %execution.drone_id, error = %e,
                "cannot send the cancel to the drone");
        }
    }
}
