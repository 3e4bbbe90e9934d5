//! What the gRPC services share: who is calling, one mapping from store
//! errors to gRPC statuses, and record-to-wire conversions.

use tonic::{Request, Status};
use ultron8_pki::PeerIdentity;
use ultron8_proto::convert::{command_to_wire, facts_to_wire, stats_to_wire, status_to_wire};
use ultron8_proto::v1;
use ultron8_store::{DroneRecord, ExecutionRecord, JobRecord, StoreError};

/// The drone id of a caller that must be a drone.
pub fn require_drone<T>(request: &Request<T>) -> Result<String, Status> {
    match ultron8_transport::caller_identity(request.extensions()) {
        Some(PeerIdentity::Drone { id }) => Ok(id),
        Some(other) => Err(Status::permission_denied(format!(
            "{other} may not call the drone service; only drone certificates may"
        ))),
        None => Err(Status::unauthenticated(
            "this call needs a drone certificate; join the hive first",
        )),
    }
}

/// The operator name of a caller that must be an operator.
pub fn require_operator<T>(request: &Request<T>) -> Result<String, Status> {
    match ultron8_transport::caller_identity(request.extensions()) {
        Some(PeerIdentity::Operator { name, .. }) => Ok(name),
        Some(other) => Err(Status::permission_denied(format!(
            "{other} may not call the control service; only operator certificates may"
        ))),
        None => Err(Status::unauthenticated(
            "this call needs an operator certificate; point ultronctl at the one `ultron8-hive init` wrote",
        )),
    }
}

pub fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::NotFound { kind, id } => Status::not_found(format!("{kind} {id} not found")),
        StoreError::JoinTokenInvalid => Status::permission_denied(
            "join token is unknown, already used or expired; create a new one with `ultronctl drone token create`",
        ),
        StoreError::Database(e) => {
            tracing::error!(error = %e, "database error");
            Status::unavailable("the hive cannot reach its database; try again shortly")
        }
        other => {
            tracing::error!(error = %other, "store error");
            Status::internal(format!("store error: {other}"))
        }
    }
}

pub fn ms(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

fn opt_ms(at: Option<chrono::DateTime<chrono::Utc>>) -> i64 {
    at.map_or(0, ms)
}

pub fn execution_to_wire(e: &ExecutionRecord) -> v1::Execution {
    v1::Execution {
        id: e.id.clone(),
        job_id: e.job_id.clone(),
        drone_id: e.drone_id.clone(),
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

pub fn job_to_wire(job: &JobRecord) -> v1::Job {
    v1::Job {
        id: job.id.clone(),
        target: job.target.clone(),
        requester: job.requester.clone(),
        // Operators see the command with its secrets masked.
        command: Some(command_to_wire(&job.command.redacted())),
        created_at_ms: ms(job.created_at),
        executions: job.executions.iter().map(execution_to_wire).collect(),
    }
}

pub fn drone_to_wire(drone: &DroneRecord) -> v1::Drone {
    let mut facts = facts_to_wire(&drone.facts);
    facts.labels = drone.labels().into_iter().collect();
    v1::Drone {
        id: drone.id.clone(),
        facts: Some(facts),
        online: drone.online,
        last_seen_ms: opt_ms(drone.last_seen_at),
        stats: drone.stats.as_ref().map(stats_to_wire),
        registered_at_ms: opt_ms(drone.registered_at),
        enrolled_at_ms: ms(drone.enrolled_at),
    }
}
