//! The gRPC service drones call: enroll, register, heartbeat, output and
//! results.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use serde_json::json;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};
use ultron8_core::ExecutionStatus;
use ultron8_pki::JoinToken;
use ultron8_proto::convert::{facts_from_wire, stats_from_wire, status_from_wire};
use ultron8_proto::v1::{self, drone_service_server::DroneService};
use ultron8_store::{
    DroneEnrollment, ExecutionResult, ExecutionUpdate, OutputChunkRecord, OutputStreamKind,
    TransitionOutcome,
};

use crate::hive::Hive;
use crate::rpc::{require_drone, store_status};

pub struct DroneApi {
    pub hive: Arc<Hive>,
}

#[tonic::async_trait]
impl DroneService for DroneApi {
    async fn enroll(
        &self,
        request: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        let hive = &self.hive;
        let request = request.into_inner();
        let token = JoinToken::parse(&request.token)
            .map_err(|e| Status::invalid_argument(format!("malformed join token: {e}")))?;
        ultron8_core::target::validate_drone_id(&request.drone_id).map_err(|e| {
            Status::invalid_argument(format!("invalid drone name {:?}: {e}", request.drone_id))
        })?;
        if token.ca_fingerprint != hive.ca.fingerprint() {
            return Err(Status::permission_denied(
                "join token was issued by another hive (CA fingerprint differs)",
            ));
        }
        // Sign first: a malformed CSR must not burn the one-time token.
        let validity = hive.config.drone_certificate_validity;
        let signed = hive
            .ca
            .sign_drone_csr(&request.csr_der, &request.drone_id, validity)
            .map_err(|e| {
                Status::invalid_argument(format!("certificate signing request refused: {e}"))
            })?;
        let now = Utc::now();
        let grant = hive
            .store
            .consume_join_token(&token.id, &token.secret_sha256(), &request.drone_id, now)
            .await
            .map_err(store_status)?;
        let enrollment = DroneEnrollment {
            drone_id: request.drone_id.clone(),
            certificate_fingerprint: signed.fingerprint.clone(),
            certificate_not_after: signed.not_after,
            labels: grant.labels.clone(),
            token_id: token.id.clone(),
            enrolled_at: now,
        };
        hive.store
            .record_enrollment(&enrollment)
            .await
            .map_err(store_status)?;
        let mut audit = hive.audit(
            format!("drone:{}", request.drone_id),
            "drone.enrolled",
            json!({ "token_id": token.id, "certificate_fingerprint": signed.fingerprint, "labels": grant.labels }),
        );
        audit.drone_id = Some(request.drone_id.clone());
        hive.store
            .append_audit(&audit)
            .await
            .map_err(store_status)?;
        info!(drone_id = %request.drone_id, token_id = %token.id, "drone enrolled");
        Ok(Response::new(v1::EnrollResponse {
            certificate_der: signed.cert_der,
            ca_certificate_der: hive.ca.cert_der().to_vec(),
            labels: grant.labels.into_iter().collect(),
        }))
    }

    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let drone_id = require_drone(&request)?;
        let hive = &self.hive;
        let facts = request
            .into_inner()
            .facts
            .ok_or_else(|| Status::invalid_argument("facts are missing"))?;
        let broker_url = hive
            .config
            .drone_broker_url()
            .ok_or_else(|| {
                Status::failed_precondition("the hive has no broker URL for drones configured")
            })?
            .to_string();
        hive.publisher
            .ensure_drone_queue(&drone_id)
            .await
            .map_err(|e| {
                warn!(%drone_id, error = %e, "cannot declare the drone's queue");
                Status::unavailable("the hive cannot reach its message broker; retry shortly")
            })?;
        hive.store
            .record_registration(&drone_id, &facts_from_wire(facts), Utc::now())
            .await
            .map_err(store_status)?;
        info!(%drone_id, "drone registered");
        Ok(Response::new(v1::RegisterResponse {
            broker: Some(v1::BrokerEndpoint {
                url: broker_url,
                auth: v1::BrokerAuth::Url as i32,
            }),
            queue: ultron8_broker::drone_queue_name(&drone_id),
            heartbeat_interval_ms: hive.config.heartbeat_interval.as_millis() as u32,
            request_signing_public_key: hive.signing_key.public_key(),
            request_signing_key_id: hive.signing_key.key_id(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let drone_id = require_drone(&request)?;
        let stats = request
            .into_inner()
            .stats
            .map(stats_from_wire)
            .unwrap_or_default();
        self.hive
            .store
            .record_heartbeat(&drone_id, &stats, Utc::now())
            .await
            .map_err(store_status)?;
        Ok(Response::new(v1::HeartbeatResponse {
            heartbeat_interval_ms: self.hive.config.heartbeat_interval.as_millis() as u32,
        }))
    }

    async fn stream_output(
        &self,
        request: Request<Streaming<v1::OutputChunk>>,
    ) -> Result<Response<v1::StreamOutputResponse>, Status> {
        let drone_id = require_drone(&request)?;
        let mut chunks = request.into_inner();
        // Whether each execution seen on this stream belongs to the caller.
        let mut owned: HashMap<String, bool> = HashMap::new();
        let mut accepted = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            let belongs = match owned.get(&chunk.execution_id) {
                Some(known) => *known,
                None => {
                    let execution = self
                        .hive
                        .store
                        .get_execution(&chunk.execution_id)
                        .await
                        .map_err(store_status)?;
                    let belongs = execution.is_some_and(|e| e.drone_id == drone_id);
                    owned.insert(chunk.execution_id.clone(), belongs);
                    belongs
                }
            };
            if !belongs {
                continue;
            }
            let stream = match v1::OutputStream::try_from(chunk.stream) {
                Ok(v1::OutputStream::Stderr) => OutputStreamKind::Stderr,
                _ => OutputStreamKind::Stdout,
            };
            let record = OutputChunkRecord {
                execution_id: chunk.execution_id,
                stream,
                offset: chunk.offset,
                data: chunk.data,
            };
            self.hive
                .store
                .append_output(&record)
                .await
                .map_err(store_status)?;
            accepted += 1;
        }
        Ok(Response::new(v1::StreamOutputResponse {
            chunks_accepted: accepted,
        }))
    }

    async fn report_result(
        &self,
        request: Request<v1::ExecutionReport>,
    ) -> Result<Response<v1::ReportResultResponse>, Status> {
        let drone_id = require_drone(&request)?;
        let report = request.into_inner();
        let status =
            status_from_wire(report.status).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let hive = &self.hive;
        let execution = hive
            .store
            .get_execution(&report.execution_id)
            .await
            .map_err(store_status)?;
        let execution = match execution {
            Some(e) if e.drone_id == drone_id => e,
            _ => {
                return self
                    .record_refusal_of_unknown_request(&drone_id, &report, status)
                    .await;
            }
        };
        if matches!(status, ExecutionStatus::Rejected | ExecutionStatus::Expired) {
            hive.metrics.refused_drone_reports.inc();
        }
        let started_at = from_ms(report.started_at_ms);
        let update = if status.is_terminal() {
            ExecutionUpdate {
                status,
                at: from_ms(report.finished_at_ms).unwrap_or_else(Utc::now),
                started_at,
                result: Some(ExecutionResult {
                    exit_code: report.exit_code,
                    stdout: report.stdout,
                    stderr: report.stderr,
                    stdout_truncated: report.stdout_truncated,
                    stderr_truncated: report.stderr_truncated,
                    duration_ms: report.duration_ms,
                    error: Some(report.error.clone()).filter(|e| !e.is_empty()),
                }),
            }
        } else if status == ExecutionStatus::Running {
            ExecutionUpdate {
                status,
                at: started_at.unwrap_or_else(Utc::now),
                started_at,
                result: None,
            }
        } else {
            return Err(Status::invalid_argument(format!(
                "a drone cannot report an execution as {status}"
            )));
        };
        let audit = status.is_terminal().then(|| {
            let mut audit = hive.audit(
                format!("drone:{drone_id}"),
                "execution.finished",
                json!({
                    "exit_code": report.exit_code,
                    "duration_ms": report.duration_ms,
                    "error": report.error,
                    "stdout_truncated": report.stdout_truncated,
                    "stderr_truncated": report.stderr_truncated,
                }),
            );
            audit.job_id = Some(execution.job_id.clone());
            audit.execution_id = Some(execution.id.clone());
            audit.drone_id = Some(drone_id.clone());
            audit.status = Some(status);
            audit
        });
        let outcome = hive
            .store
            .transition_execution(&execution.id, &update, audit.as_ref())
            .await
            .map_err(store_status)?;
        let applied = matches!(outcome, TransitionOutcome::Applied { .. });
        if applied {
            info!(job_id = %execution.job_id, execution_id = %execution.id, %drone_id, %status, exit_code = ?report.exit_code,
                "execution {status}");
            hive.executions_changed.notify_waiters();
        }
        Ok(Response::new(v1::ReportResultResponse { applied }))
    }

    async fn fetch_script(
        &self,
        request: Request<v1::FetchScriptRequest>,
    ) -> Result<Response<v1::FetchScriptResponse>, Status> {
        require_drone(&request)?;
        let sha256 = request.into_inner().sha256.to_ascii_lowercase();
        match self
            .hive
            .store
            .get_script(&sha256)
            .await
            .map_err(store_status)?
        {
            Some(content) => Ok(Response::new(v1::FetchScriptResponse { content })),
            None => Err(Status::not_found(format!(
                "no script with SHA-256 {sha256}; was its pack removed?"
            ))),
        }
    }
}

impl DroneApi {
    /// A drone refused a request that does not name one of its executions:
    /// most likely a message forged on the broker. Nothing to update, but
    /// the attempt belongs in the audit trail.
    async fn record_refusal_of_unknown_request(
        &self,
        drone_id: &str,
        report: &v1::ExecutionReport,
        status: ExecutionStatus,
    ) -> Result<Response<v1::ReportResultResponse>, Status> {
        if !matches!(status, ExecutionStatus::Rejected | ExecutionStatus::Expired) {
            return Err(Status::not_found(format!(
                "execution {} is not one of yours",
                report.execution_id
            )));
        }
        self.hive.metrics.refused_drone_reports.inc();
        let mut audit = self.hive.audit(
            format!("drone:{drone_id}"),
            "drone.refused_request",
            json!({ "claimed_execution_id": report.execution_id, "reason": report.error }),
        );
        audit.drone_id = Some(drone_id.to_string());
        audit.status = Some(status);
        self.hive
            .store
            .append_audit(&audit)
            .await
            .map_err(store_status)?;
        warn!(%drone_id, claimed_execution_id = %report.execution_id, reason = %report.error,
            "drone refused a request the hive never issued");
        Ok(Response::new(v1::ReportResultResponse { applied: false }))
    }
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0)
        .then(|| Utc.timestamp_millis_opt(ms).single())
        .flatten()
}
