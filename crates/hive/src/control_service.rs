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
            origin: Default::default(),
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
                    command: job.command.display(),
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

    async fn install_pack(
        &self,
        request: Request<v1::InstallPackRequest>,
    ) -> Result<Response<v1::InstallPackResponse>, Status> {
        let operator = require_operator(&request)?;
        let tarball = request.into_inner().tarball;
        let (record, previous) = self
            .hive
            .install_pack(&operator, &tarball)
            .await
            .map_err(pack_status)?;
        let pack = self.pack_info(record).await?;
        Ok(Response::new(v1::InstallPackResponse {
            pack: Some(pack),
            previous_version: previous.unwrap_or_default(),
        }))
    }

    async fn list_packs(
        &self,
        request: Request<v1::ListPacksRequest>,
    ) -> Result<Response<v1::ListPacksResponse>, Status> {
        require_operator(&request)?;
        let mut packs = Vec::new();
        for record in self.hive.store.list_packs().await.map_err(store_status)? {
            packs.push(self.pack_info(record).await?);
        }
        Ok(Response::new(v1::ListPacksResponse { packs }))
    }

    async fn get_pack(
        &self,
        request: Request<v1::GetPackRequest>,
    ) -> Result<Response<v1::PackInfo>, Status> {
        require_operator(&request)?;
        let name = request.into_inner().name;
        let record = self
            .hive
            .store
            .get_pack(&name)
            .await
            .map_err(store_status)?;
        let record = record.ok_or_else(|| {
            Status::not_found(format!("no pack named {name}; see `ultronctl pack list`"))
        })?;
        Ok(Response::new(self.pack_info(record).await?))
    }

    async fn remove_pack(
        &self,
        request: Request<v1::RemovePackRequest>,
    ) -> Result<Response<v1::RemovePackResponse>, Status> {
        let operator = require_operator(&request)?;
        let name = request.into_inner().name;
        self.hive
            .remove_pack(&operator, &name)
            .await
            .map_err(pack_status)?;
        Ok(Response::new(v1::RemovePackResponse {}))
    }

    async fn run_action(
        &self,
        request: Request<v1::RunActionRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let operator = require_operator(&request)?;
        let request = request.into_inner();
        let hive = &self.hive;
        let record = hive
            .store
            .get_action(&request.action)
            .await
            .map_err(store_status)?;
        let record = record.ok_or_else(|| {
            Status::not_found(format!(
                "no action named {:?}; actions are `pack.name`, see `ultronctl pack show PACK`",
                request.action
            ))
        })?;
        let action: ultron8_pack::Action = serde_json::from_value(record.definition)
            .map_err(|e| Status::internal(format!("stored action is unreadable: {e}")))?;
        let given = match request.parameters_json.trim() {
            "" => serde_json::Map::new(),
            text => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => return Err(Status::invalid_argument("parameters must be a JSON object")),
            },
        };
        // ultronctl sends every value as a string; convert to the declared types.
        let given = ultron8_core::params::coerce_strings(&action.parameters, &given).map_err(
            |problems| {
                Status::invalid_argument(format!(
                    "invalid parameters for {}: {}",
                    action.reference(),
                    problems.join("; ")
                ))
            },
        )?;
        let ttl = match request.ttl_ms {
            0 => hive.config.default_ttl,
            ms => Duration::from_millis(ms).min(MAX_TTL),
        };
        let requester = format!("operator:{operator}");
        let target = Some(request.target.as_str()).filter(|t| !t.trim().is_empty());
        let planned = hive
            .plan_action_job(&action, &given, target, &requester, Default::default(), ttl)
            .await
            .map_err(|e| match e {
                crate::actions::PlanError::Store(e) => store_status(e),
                crate::actions::PlanError::Target(m) if m.contains("matches no online drone") => {
                    Status::failed_precondition(m)
                }
                other => Status::invalid_argument(other.to_string()),
            })?;
        let mut audit = hive.audit(
            requester.clone(),
            "job.submitted",
            json!({
                "target": planned.job.target,
                "command": planned.job.command.display(),
                "parameters": planned.job.origin.parameters,
                "drones": planned.drones,
            }),
        );
        audit.job_id = Some(planned.job.id.clone());
        audit.action_ref = Some(action.reference());
        hive.store
            .create_job(&planned.job, &planned.executions, &audit)
            .await
            .map_err(store_status)?;
        info!(job_id = %planned.job.id, action = %action.reference(), %requester, "action run");
        hive.start_action_job(
            &planned.job,
            &planned.executions,
            &action,
            planned.parameters.clone(),
        )
        .await;
        let stored = hive
            .store
            .get_job(&planned.job.id)
            .await
            .map_err(store_status)?;
        let stored =
            stored.ok_or_else(|| Status::internal("job vanished right after it was recorded"))?;
        Ok(Response::new(job_to_wire(&stored)))
    }

    async fn fire_event(
        &self,
        request: Request<v1::FireEventRequest>,
    ) -> Result<Response<v1::EventInfo>, Status> {
        let operator = require_operator(&request)?;
        let request = request.into_inner();
        if ultron8_core::triggers::built_in(&request.trigger).is_none() {
            let known: Vec<&str> = ultron8_core::triggers::BUILT_IN
                .iter()
                .map(|t| t.name)
                .collect();
            return Err(Status::invalid_argument(format!(
                "unknown trigger type {:?}; known: {}",
                request.trigger,
                known.join(", ")
            )));
        }
        let payload: serde_json::Value = match request.payload_json.trim() {
            "" => json!({}),
            text => serde_json::from_str(text)
                .map_err(|e| Status::invalid_argument(format!("payload is not valid JSON: {e}")))?,
        };
        let id = self
            .hive
            .ingest_event(&request.trigger, payload, &format!("operator:{operator}"))
            .await
            .map_err(store_status)?;
        let event = self.hive.store.get_event(&id).await.map_err(store_status)?;
        let event =
            event.ok_or_else(|| Status::internal("event vanished right after it was stored"))?;
        Ok(Response::new(event_info(&event)))
    }

    async fn list_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        require_operator(&request)?;
        let request = request.into_inner();
        let filter = ultron8_store::EventFilter {
            trigger: Some(request.trigger).filter(|t| !t.is_empty()),
            limit: request.limit,
            before_id: Some(request.before_id).filter(|t| !t.is_empty()),
            ..Default::default()
        };
        let events = self
            .hive
            .store
            .list_events(&filter)
            .await
            .map_err(store_status)?;
        Ok(Response::new(v1::ListEventsResponse {
            events: events.iter().map(event_info).collect(),
        }))
    }

    async fn get_event(
        &self,
        request: Request<v1::GetEventRequest>,
    ) -> Result<Response<v1::EventInfo>, Status> {
        require_operator(&request)?;
        let id = request.into_inner().id;
        let event = self.hive.store.get_event(&id).await.map_err(store_status)?;
        let event = event.ok_or_else(|| {
            Status::not_found(format!("no event {id}; see `ultronctl event list`"))
        })?;
        Ok(Response::new(event_info(&event)))
    }

    async fn list_rules(
        &self,
        request: Request<v1::ListRulesRequest>,
    ) -> Result<Response<v1::ListRulesResponse>, Status> {
        require_operator(&request)?;
        let trigger = request.into_inner().trigger;
        let trigger = Some(trigger.as_str()).filter(|t| !t.is_empty());
        let rules = self
            .hive
            .store
            .list_rules(trigger)
            .await
            .map_err(store_status)?;
        Ok(Response::new(v1::ListRulesResponse {
            rules: rules.iter().map(rule_info).collect(),
        }))
    }

    async fn get_rule(
        &self,
        request: Request<v1::GetRuleRequest>,
    ) -> Result<Response<v1::RuleInfo>, Status> {
        require_operator(&request)?;
        let name = request.into_inner().name;
        let rule = self
            .hive
            .store
            .get_rule(&name)
            .await
            .map_err(store_status)?;
        let rule = rule.ok_or_else(|| {
            Status::not_found(format!(
                "no rule named {name}; rules are `pack.name`, see `ultronctl rule list`"
            ))
        })?;
        Ok(Response::new(rule_info(&rule)))
    }

    async fn set_rule_enabled(
        &self,
        request: Request<v1::SetRuleEnabledRequest>,
    ) -> Result<Response<v1::RuleInfo>, Status> {
        let operator = require_operator(&request)?;
        let request = request.into_inner();
        let verb = if request.enabled {
            "rule.enabled"
        } else {
            "rule.disabled"
        };
        let mut audit = self
            .hive
            .audit(format!("operator:{operator}"), verb, json!({}));
        audit.rule = Some(request.name.clone());
        let found = self
            .hive
            .store
            .set_rule_enabled(&request.name, request.enabled, &audit)
            .await
            .map_err(store_status)?;
        if !found {
            return Err(Status::not_found(format!(
                "no rule named {}; see `ultronctl rule list`",
                request.name
            )));
        }
        let rule = self
            .hive
            .store
            .get_rule(&request.name)
            .await
            .map_err(store_status)?;
        let rule =
            rule.ok_or_else(|| Status::not_found(format!("rule {} vanished", request.name)))?;
        Ok(Response::new(rule_info(&rule)))
    }

    async fn test_rules(
        &self,
        request: Request<v1::TestRulesRequest>,
    ) -> Result<Response<v1::TestRulesResponse>, Status> {
        require_operator(&request)?;
        let request = request.into_inner();
        let payload: serde_json::Value = serde_json::from_str(&request.payload_json)
            .map_err(|e| Status::invalid_argument(format!("the event is not valid JSON: {e}")))?;
        let rules = if request.rule.is_empty() {
            self.hive
                .store
                .list_rules(Some(&request.trigger))
                .await
                .map_err(store_status)?
        } else {
            let rule = self
                .hive
                .store
                .get_rule(&request.rule)
                .await
                .map_err(store_status)?;
            vec![rule.ok_or_else(|| Status::not_found(format!("no rule named {}", request.rule)))?]
        };
        let mut results = Vec::new();
        for record in &rules {
            let plan = self
                .hive
                .plan_rule(record, "test", &payload, Utc::now())
                .await;
            results.push(v1::RuleTest {
                rule: plan.rule.clone(),
                enabled: plan.enabled,
                matched: plan.matched,
                reasons: plan.reasons.clone(),
                error: plan.error.clone().unwrap_or_default(),
                action: plan.action.clone(),
                parameters_json: plan
                    .parameters
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                target: plan.target.clone().unwrap_or_default(),
                // Hive-side actions run on no drone.
                drones: plan
                    .drones
                    .iter()
                    .filter(|d| *d != crate::actions::HIVE_EXECUTOR)
                    .cloned()
                    .collect(),
            });
        }
        Ok(Response::new(v1::TestRulesResponse { results }))
    }

    async fn list_audit(
        &self,
        request: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        require_operator(&request)?;
        let r = request.into_inner();
        let opt = |s: String| Some(s).filter(|s| !s.is_empty());
        let time = |ms: i64| {
            (ms > 0)
                .then(|| chrono::TimeZone::timestamp_millis_opt(&Utc, ms).single())
                .flatten()
        };
        let status = match opt(r.status) {
            Some(text) => Some(
                text.parse::<ExecutionStatus>()
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
            None => None,
        };
        let filter = ultron8_store::AuditFilter {
            since: time(r.since_ms),
            until: time(r.until_ms),
            rule: opt(r.rule),
            action_ref: opt(r.action),
            drone_id: opt(r.drone),
            status,
            event_id: opt(r.event),
            job_id: opt(r.job),
            limit: r.limit,
            before_id: opt(r.before_id),
            ..Default::default()
        };
        let records = self
            .hive
            .store
            .list_audit(&filter)
            .await
            .map_err(store_status)?;
        let entries = records
            .into_iter()
            .map(|a| v1::AuditEntry {
                id: a.id,
                at_ms: a.at.timestamp_millis(),
                actor: a.actor,
                kind: a.action,
                job_id: a.job_id.unwrap_or_default(),
                execution_id: a.execution_id.unwrap_or_default(),
                drone_id: a.drone_id.unwrap_or_default(),
                status: a.status.map(|s| s.to_string()).unwrap_or_default(),
                event_id: a.event_id.unwrap_or_default(),
                rule: a.rule.unwrap_or_default(),
                action: a.action_ref.unwrap_or_default(),
                detail_json: a.detail.to_string(),
            })
            .collect();
        Ok(Response::new(v1::ListAuditResponse { entries }))
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

impl ControlApi {
    async fn pack_info(&self, record: ultron8_store::PackRecord) -> Result<v1::PackInfo, Status> {
        // The stored content is the validated pack: its actions and rules
        // are read from it rather than queried again for every pack listed.
        let pack: ultron8_pack::Pack =
            serde_json::from_value(record.content.clone()).map_err(|e| {
                Status::internal(format!("stored pack {} is unreadable: {e}", record.name))
            })?;
        let history = self
            .hive
            .store
            .pack_history(&record.name)
            .await
            .map_err(store_status)?;
        Ok(v1::PackInfo {
            actions: pack.actions.iter().map(|a| a.reference()).collect(),
            rules: pack
                .rules
                .iter()
                .map(|r| format!("{}.{}", r.pack, r.name))
                .collect(),
            previous_versions: history.into_iter().map(|p| p.version).collect(),
            name: record.name,
            version: record.version,
            description: record.description,
            installed_by: record.installed_by,
            installed_at_ms: record.installed_at.timestamp_millis(),
            content_json: record.content.to_string(),
        })
    }
}

fn pack_status(error: crate::packs::PackError) -> Status {
    use crate::packs::PackError;
    match error {
        PackError::Invalid(m) => Status::invalid_argument(m),
        PackError::Conflict(m) => Status::failed_precondition(m),
        PackError::NotFound(m) => Status::not_found(m),
        PackError::Store(e) => store_status(e),
    }
}

fn event_info(event: &ultron8_store::EventRecord) -> v1::EventInfo {
    v1::EventInfo {
        id: event.id.clone(),
        trigger: event.trigger.clone(),
        payload_json: event.payload.to_string(),
        source: event.source.clone(),
        received_at_ms: event.received_at.timestamp_millis(),
        state: match event.state {
            ultron8_store::EventState::Pending => "pending",
            ultron8_store::EventState::Processed => "processed",
            ultron8_store::EventState::Failed => "failed",
        }
        .to_string(),
        error: event.error.clone().unwrap_or_default(),
        matched_rules: event.matched_rules.clone(),
    }
}

fn rule_info(rule: &ultron8_store::RuleRecord) -> v1::RuleInfo {
    let definition: Option<ultron8_pack::Rule> =
        serde_json::from_value(rule.definition.clone()).ok();
    v1::RuleInfo {
        name: rule.reference.clone(),
        pack: rule.pack.clone(),
        trigger: rule.trigger.clone(),
        enabled: rule.enabled,
        action: definition
            .as_ref()
            .map(|d| d.action.reference.clone())
            .unwrap_or_default(),
        description: definition.map(|d| d.description).unwrap_or_default(),
        definition_json: rule.definition.to_string(),
    }
}
