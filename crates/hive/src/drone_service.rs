//! The gRPC service drones call (enroll, register, heartbeat, output,
//! results, scripts): an adapter that decodes each request, calls one hive
//! operation ([`crate::ops`]) for the drone the caller layer admitted
//! ([`crate::caller`]), and encodes the result.

use std::sync::Arc;

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use ultron8_proto::v1::{self, drone_service_server::DroneService};

use crate::caller::drone;
use crate::hive::Hive;
use crate::rpc;

pub struct DroneApi {
    pub hive: Arc<Hive>,
}

#[tonic::async_trait]
impl DroneService for DroneApi {
    /// Open to anonymous callers: the join token is the credential.
    async fn enroll(
        &self,
        request: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        let enrollment = self
            .hive
            .enroll(rpc::enrollment_request(request.into_inner()))
            .await?;
        Ok(Response::new(rpc::enrollment_to_wire(enrollment)))
    }

    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let drone_id = drone(&request)?;
        let facts = rpc::registration_facts(request.into_inner())?;
        let registration = self.hive.register_drone(&drone_id, &facts).await?;
        Ok(Response::new(rpc::registration_to_wire(registration)))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let drone_id = drone(&request)?;
        let request = request.into_inner();
        let spooled = u64::from(request.spooled_results);
        let summary = rpc::check_summary_from_wire(&request.checks)?;
        let stats = rpc::heartbeat_stats(request);
        let interval = self.hive.heartbeat(&drone_id, &stats, spooled).await?;
        self.hive.record_check_summary(&drone_id, summary).await?;
        let check_set_version = self.hive.check_set_version(&drone_id).await?;
        Ok(Response::new(v1::HeartbeatResponse {
            heartbeat_interval_ms: rpc::interval_ms(interval),
            check_set_version,
        }))
    }

    async fn stream_output(
        &self,
        request: Request<Streaming<v1::OutputChunk>>,
    ) -> Result<Response<v1::StreamOutputResponse>, Status> {
        let drone_id = drone(&request)?;
        self.hive.check_in_fleet(&drone_id).await?;
        let mut chunks = request.into_inner();
        let mut intake = self.hive.output_intake(&drone_id);
        let mut accepted = 0;
        loop {
            // A drone streams for as long as its command runs; a hive
            // shutting down ends the stream (the final result carries the
            // output) instead of waiting for the command.
            let chunk = tokio::select! {
                chunk = chunks.next() => chunk,
                _ = self.hive.stopping.cancelled() => break,
            };
            let Some(chunk) = chunk else { break };
            if intake.accept(&rpc::chunk_from_wire(chunk?)).await? {
                accepted += 1;
            }
        }
        Ok(Response::new(v1::StreamOutputResponse {
            chunks_accepted: accepted,
        }))
    }

    async fn report_result(
        &self,
        request: Request<v1::ExecutionReport>,
    ) -> Result<Response<v1::ReportResultResponse>, Status> {
        let drone_id = drone(&request)?;
        self.hive.check_in_fleet(&drone_id).await?;
        let report = rpc::report_from_wire(request.into_inner())?;
        let answer = self.hive.report_execution(&drone_id, report).await?;
        Ok(Response::new(v1::ReportResultResponse {
            applied: answer.applied,
            canceled: answer.canceled,
        }))
    }

    async fn fetch_script(
        &self,
        request: Request<v1::FetchScriptRequest>,
    ) -> Result<Response<v1::FetchScriptResponse>, Status> {
        let content = self.hive.fetch_script(&request.into_inner().sha256).await?;
        Ok(Response::new(v1::FetchScriptResponse { content }))
    }

    async fn get_execution_secrets(
        &self,
        request: Request<v1::GetExecutionSecretsRequest>,
    ) -> Result<Response<v1::GetExecutionSecretsResponse>, Status> {
        let drone_id = drone(&request)?;
        self.hive.check_in_fleet(&drone_id).await?;
        let execution_id = ultron8_core::ids::ExecutionId::from(request.into_inner().execution_id);
        let env = self
            .hive
            .execution_secrets(&drone_id, &execution_id)
            .await?;
        Ok(Response::new(v1::GetExecutionSecretsResponse {
            env: env
                .into_iter()
                .map(|(variable, value)| {
                    (
                        variable,
                        secrecy::ExposeSecret::expose_secret(&value).to_string(),
                    )
                })
                .collect(),
        }))
    }

    async fn get_checks(
        &self,
        request: Request<v1::GetChecksRequest>,
    ) -> Result<Response<v1::GetChecksResponse>, Status> {
        let drone_id = drone(&request)?;
        let signed = self.hive.signed_check_set(&drone_id).await?;
        Ok(Response::new(v1::GetChecksResponse {
            check_set: signed.bytes,
            signature: signed.signature,
            key_id: signed.key_id,
        }))
    }

    async fn report_check_transitions(
        &self,
        request: Request<v1::ReportCheckTransitionsRequest>,
    ) -> Result<Response<v1::ReportCheckTransitionsResponse>, Status> {
        let drone_id = drone(&request)?;
        self.hive.check_in_fleet(&drone_id).await?;
        let transitions = rpc::check_transitions_from_wire(request.into_inner())?;
        let stored = self
            .hive
            .report_check_transitions(&drone_id, transitions)
            .await?;
        Ok(Response::new(v1::ReportCheckTransitionsResponse { stored }))
    }
}
