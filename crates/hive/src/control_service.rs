//! The gRPC service ultronctl calls.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::Stream;
use serde_json::json;
use tonic::{Request, Response, Status};
use tracing::info;
use ultron8_core::ExecutionStatus;
use ultron8_core::target::{self, TargetSubject};
use ultron8_pki::JoinToken;
use ultron8_proto::convert::command_from_wire;
use ultron8_proto::v1::{self, control_service_server::ControlService};
use ultron8_store::{DroneRecord, NewExecution, NewJob, NewJoinToken, PendingDispatch};

use crate::hive::Hive;
use crate::rpc::{drone_to_wire, execution_to_wire, job_to_wire, require_operator, store_status};

pub struct ControlApi {
    pub hive: Arc<Hive>,
}

type ExecutionStream = Pin<Box<dyn Stream<Item = Result<v1::Execution, Status>> + Send>>;

/// How often a job watcher re-reads the store when nothing on this replica
/// signalled a change (changes made through another replica).
const WATCH_POLL: Duration = Duration::from_millis(500);

/// Longest time a request may wait for its drone. Well inside the drones'
/// journal retention, so an id is never forgotten while its request lives.
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[tonic::async_trait]
impl ControlService for ControlApi {
    async fn create_join_token(
        &self,
        request: Request<v1::CreateJoinTokenRequest>,
    ) -> Result<Response<v1::CreateJoinTokenResponse>, Status> {
        let operator = require_operator(&request)?;
        let request = request.into_inner();
        let hive = &self.hive;
        let token = JoinToken::generate(&hive.ca.fingerprint())
            .map_err(|e| Status::internal(e.to_string()))?;
        let ttl = match request.ttl_ms {
            0 => hive.config.join_token_ttl,
            ms => Duration::from_millis(ms),
        };
        let now = Utc::now();
        let expires_at = now
            + chrono::Duration::from_std(ttl)
                .map_err(|_| Status::invalid_argument("ttl too large"))?;
        let labels = request.labels.into_iter().collect();
        hive.store
            .create_join_token(&NewJoinToken {
                id: token.id.clone(),
                secret_sha256: token.secret_sha256(),
                labels,
                created_by: operator.clone(),
                created_at: now,
                expires_at,
            })
            .await
            .map_err(store_status)?;
        let audit = hive.audit(
            format!("operator:{operator}"),
            "join_token.created",
            json!({ "token_id": token.id, "expires_at": expires_at }),
        );
        hive.store
            .append_audit(&audit)
            .await
            .map_err(store_status)?;
        Ok(Response::new(v1::CreateJoinTokenResponse {
            token: token.encode(),
            token_id: token.id,
            expires_at_ms: expires_at.timestamp_millis(),
            ca_fingerprint: token.ca_fingerprint,
        }))
    }

    async fn list_drones(
        &self,
        request: Request<v1::ListDronesRequest>,
    ) -> Result<Response<v1::ListDronesResponse>, Status> {
        require_operator(&request)?;
        let filter = request.into_inner().target;
        let drones = self.hive.store.list_drones().await.map_err(store_status)?;
        let drones = if filter.trim().is_empty() {
            drones
        } else {
            let expr = parse_target(&filter)?;
            drones
                .into_iter()
                .filter(|d| matches_target(&expr, d))
                .collect()
        };
        Ok(Response::new(v1::ListDronesResponse {
            drones: drones.iter().map(drone_to_wire).collect(),
        }))
    }

    async fn get_drone(
        &self,
        request: Request<v1::GetDroneRequest>,
    ) -> Result<Response<v1::Drone>, Status> {
        require_operator(&request)?;
        let id = request.into_inner().id;
        match self.hive.store.get_drone(&id).await.map_err(store_status)? {
            Some(drone) => Ok(Response::new(drone_to_wire(&drone))),
            None => Err(Status::not_found(format!(
                "no drone named {id:?}; see `ultronctl drone list`"
            ))),
        }
    }

    async fn submit_job(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let operator = require_operator(&request)?;
        let request = request.into_inner();
        let hive = &self.hive;
        let expr = parse_target(&request.target)?;
        let command = command_from_wire(request.command)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;

        let drones = hive.store.list_drones().await.map_err(store_status)?;
        let (online, offline): (Vec<&DroneRecord>, Vec<&DroneRecord>) = drones
            .iter()
            .filter(|d| matches_target(&expr, d))
            .partition(|d| d.online);
        if online.is_empty() {
            let mut message = format!("target {:?} matches no online drone", request.target);
            if !offline.is_empty() {
                let names: Vec<&str> = offline.iter().map(|d| d.id.as_str()).collect();
                message.push_str(&format!(" (offline: {})", names.join(", ")));
            }
            message.push_str("; see `ultronctl drone list`");
            return Err(Status::failed_precondition(message));
        }

        let ttl = match request.ttl_ms {
            0 => hive.config.default_ttl,
            ms => Duration::from_millis(ms),
        };
        if ttl > MAX_TTL {
            return Err(Status::invalid_argument(format!(
                "a TTL of {} is too long; at most {} (drones forget executions after 30 days, so older requests could run twice)",
                humantime::format_duration(ttl),
                humantime::format_duration(MAX_TTL)
            )));
        }
        let now = Utc::now();
        let expires_at = now
            + chrono::Duration::from_std(ttl)
                .map_err(|_| Status::invalid_argument("ttl too large"))?;
        let job = NewJob {
            id: uuid::Uuid::now_v7().to_string(),
            target: request.target.clone(),
            requester: format!("operator:{operator}"),
            command: command.clone(),
            created_at: now,
        };
        let executions: Vec<NewExecution> = online
            .iter()
            .map(|drone| NewExecution {
                id: uuid::Uuid::now_v7().to_string(),
                job_id: job.id.clone(),
                drone_id: drone.id.clone(),
                created_at: now,
                expires_at,
            })
            .collect();
        let mut audit = hive.audit(
            job.requester.clone(),
            "job.submitted",
            json!({
                "target": request.target,
                "command": command,
                "drones": executions.iter().map(|e| &e.drone_id).collect::<Vec<_>>(),
                "ttl_ms": ttl.as_millis() as u64,
            }),
        );
        audit.job_id = Some(job.id.clone());
        hive.store
            .create_job(&job, &executions, &audit)
            .await
            .map_err(store_status)?;
        info!(job_id = %job.id, target = %job.target, drones = executions.len(), requester = %job.requester, "job submitted");

        let dispatches = executions.iter().map(|e| {
            let item = PendingDispatch {
                execution_id: e.id.clone(),
                job_id: job.id.clone(),
                drone_id: e.drone_id.clone(),
                requester: job.requester.clone(),
                command: command.clone(),
                created_at: now,
                expires_at,
            };
            async move { hive.dispatch(&item).await }
        });
        futures::future::join_all(dispatches).await;

        let stored = hive.store.get_job(&job.id).await.map_err(store_status)?;
        let stored =
            stored.ok_or_else(|| Status::internal("job vanished right after it was recorded"))?;
        Ok(Response::new(job_to_wire(&stored)))
    }

    type WatchJobStream = ExecutionStream;

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        require_operator(&request)?;
        let job_id = request.into_inner().job_id;
        let hive = self.hive.clone();
        if hive
            .store
            .get_job(&job_id)
            .await
            .map_err(store_status)?
            .is_none()
        {
            return Err(Status::not_found(format!(
                "no job {job_id}; see `ultronctl job list`"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut sent: HashMap<String, ExecutionStatus> = HashMap::new();
            loop {
                // Subscribe before reading, so a change between the read and
                // the wait is not missed.
                let changed = hive.executions_changed.notified();
                let job = match hive.store.get_job(&job_id).await {
                    Ok(Some(job)) => job,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(store_status(e))).await;
                        return;
                    }
                };
                for execution in &job.executions {
                    if sent.get(&execution.id) != Some(&execution.status) {
                        sent.insert(execution.id.clone(), execution.status);
                        if tx.send(Ok(execution_to_wire(execution))).await.is_err() {
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
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        require_operator(&request)?;
        let id = request.into_inner().id;
        match self.hive.store.get_job(&id).await.map_err(store_status)? {
            Some(job) => Ok(Response::new(job_to_wire(&job))),
            None => Err(Status::not_found(format!(
                "no job {id}; see `ultronctl job list`"
            ))),
        }
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        require_operator(&request)?;
        let limit = match request.into_inner().limit {
            0 => 50,
            n => n.min(1000),
        };
        let jobs = self
            .hive
            .store
            .list_jobs(limit)
            .await
            .map_err(store_status)?;
        let jobs = jobs
            .into_iter()
            .map(|job| {
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
                    id: job.id,
                    target: job.target,
                    requester: job.requester,
                    command: job.command.program.display(),
                    created_at_ms: job.created_at.timestamp_millis(),
                }
            })
            .collect();
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    async fn get_execution(
        &self,
        request: Request<v1::GetExecutionRequest>,
    ) -> Result<Response<v1::Execution>, Status> {
        require_operator(&request)?;
        let id = request.into_inner().id;
        let execution = self
            .hive
            .store
            .get_execution(&id)
            .await
            .map_err(store_status)?;
        let execution = execution.ok_or_else(|| Status::not_found(format!("no execution {id}")))?;
        let mut wire = execution_to_wire(&execution);
        // While it runs, show what has streamed in so far.
        if !execution.status.is_terminal() {
            let chunks = self
                .hive
                .store
                .execution_output(&id)
                .await
                .map_err(store_status)?;
            for chunk in chunks {
                match chunk.stream {
                    ultron8_store::OutputStreamKind::Stdout => wire.stdout.extend(chunk.data),
                    ultron8_store::OutputStreamKind::Stderr => wire.stderr.extend(chunk.data),
                }
            }
        }
        Ok(Response::new(wire))
    }
}

fn parse_target(text: &str) -> Result<target::TargetExpr, Status> {
    target::parse(text)
        .map_err(|e| Status::invalid_argument(format!("invalid target: {}\n{}", e, e.render(text))))
}

fn matches_target(expr: &target::TargetExpr, drone: &DroneRecord) -> bool {
    let labels = drone.labels();
    expr.matches(&TargetSubject {
        id: &drone.id,
        hostname: &drone.facts.hostname,
        labels: &labels,
    })
}
