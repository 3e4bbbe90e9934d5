//! What drones tell the hive about their executions: output as it is
//! produced, and status reports.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::{info, warn};
use ultron8_core::ExecutionStatus;
use ultron8_core::audit::AuditVerb;
use ultron8_core::ids::{DroneId, ExecutionId};
use ultron8_store::{ExecutionResult, ExecutionUpdate, OutputChunkRecord, TransitionOutcome};

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;
use crate::metrics::StoreCall;

/// A drone's report on one execution.
#[derive(Debug, Clone)]
pub struct DroneReport {
    pub execution_id: ExecutionId,
    /// `running` or a terminal status.
    pub status: ExecutionStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Kept only with a terminal status.
    pub result: ExecutionResult,
    /// The rule of the drone's own policy that refused to run it, if one
    /// did (status `failed`).
    pub policy_rule: Option<String>,
}

/// The hive's answer to a drone's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportAnswer {
    /// The report changed the execution.
    pub applied: bool,
    /// The execution was canceled before the reported start: do not run it.
    pub canceled: bool,
}

/// Output chunks arriving from one drone on one stream. Remembers which
/// executions belong to the drone, so each is looked up once per stream.
pub struct OutputIntake<'a> {
    hive: &'a Hive,
    drone_id: DroneId,
    owned: HashMap<ExecutionId, bool>,
}

impl OutputIntake<'_> {
    /// Stores a chunk of one of the drone's executions; a chunk for any
    /// other execution is dropped (`false`).
    pub async fn accept(&mut self, chunk: &OutputChunkRecord) -> Result<bool, HiveError> {
        let belongs = match self.owned.get(&chunk.execution_id) {
            Some(known) => *known,
            None => {
                let execution = self.hive.store.get_execution(&chunk.execution_id).await?;
                let belongs = execution.is_some_and(|e| e.drone_id == self.drone_id);
                self.owned.insert(chunk.execution_id.clone(), belongs);
                belongs
            }
        };
        if belongs {
            self.hive.store.append_output(chunk).await?;
            // No follower listening is not an error.
            let _ = self.hive.output_arrived.send(chunk.execution_id.clone());
        }
        Ok(belongs)
    }
}

impl Hive {
    pub fn output_intake(&self, drone_id: &DroneId) -> OutputIntake<'_> {
        OutputIntake {
            hive: self,
            drone_id: drone_id.clone(),
            owned: HashMap::new(),
        }
    }

    /// Applies a drone's report if the state machine allows it, with the
    /// `execution.finished` audit record in the same transaction for a
    /// terminal one. Answers whether it changed anything (a duplicate or
    /// late report does not), and whether the execution was canceled
    /// before the start being reported, so the drone does not start it.
    ///
    /// A drone rejects only messages it could not trust: one that does not
    /// decode or verify, or one the hive addressed to another drone. The
    /// execution id such a message names is only a claim (anyone who can
    /// publish to the drone's queue can name a real execution), so a
    /// rejection never changes an execution, whoever owns the id: it is
    /// audited, and the request it names goes on. An expiry is reported
    /// only for a request that verified, so it applies to this drone's own
    /// executions; one naming no execution of this drone is audited too.
    pub async fn report_execution(
        &self,
        drone_id: &DroneId,
        report: DroneReport,
    ) -> Result<ReportAnswer, HiveError> {
        let status = report.status;
        if status == ExecutionStatus::Rejected {
            self.record_refused_request(drone_id, &report).await?;
            return Ok(ReportAnswer::default());
        }
        let refusal = status == ExecutionStatus::Expired;
        let execution = match self.store.get_execution(&report.execution_id).await? {
            Some(e) if e.drone_id == *drone_id => e,
            _ if refusal => {
                self.record_refused_request(drone_id, &report).await?;
                return Ok(ReportAnswer::default());
            }
            _ => {
                return Err(HiveError::not_found(format!(
                    "execution {} is not one of yours",
                    report.execution_id
                )));
            }
        };
        if refusal {
            self.metrics.refused_drone_reports.inc();
        }
        let error_text = report.result.error.clone().unwrap_or_default();
        let update = if status.is_terminal() {
            ExecutionUpdate {
                status,
                at: report.finished_at.unwrap_or_else(Utc::now),
                started_at: report.started_at,
                result: Some(report.result.clone()),
            }
        } else if status == ExecutionStatus::Running {
            ExecutionUpdate {
                status,
                at: report.started_at.unwrap_or_else(Utc::now),
                started_at: report.started_at,
                result: None,
            }
        } else {
            return Err(HiveError::invalid_argument(format!(
                "a drone cannot report an execution as {status}"
            )));
        };
        let audit = status.is_terminal().then(|| {
            // A refusal by the drone's own policy is a record of its own
            // kind, so the trail can be searched for what drones refused.
            let (verb, detail) = match &report.policy_rule {
                Some(rule) if status == ExecutionStatus::Failed => (
                    AuditVerb::ExecutionRefused,
                    json!({ "policy_rule": rule, "error": error_text }),
                ),
                _ => (
                    AuditVerb::ExecutionFinished,
                    json!({
                        "exit_code": report.result.exit_code,
                        "duration_ms": report.result.duration_ms,
                        "error": error_text,
                        "stdout_truncated": report.result.stdout_truncated,
                        "stderr_truncated": report.result.stderr_truncated,
                    }),
                ),
            };
            let mut audit = self.audit(Actor::Drone(drone_id.to_string()), verb, detail);
            audit.job_id = Some(execution.job_id.clone());
            audit.execution_id = Some(execution.id.clone());
            audit.drone_id = Some(drone_id.clone());
            audit.status = Some(status);
            audit
        });
        let outcome = self
            .metrics
            .time_store(
                StoreCall::ReportExecution,
                self.store
                    .transition_execution(&execution.id, &update, audit.as_ref()),
            )
            .await?;
        let applied = matches!(outcome, TransitionOutcome::Applied { .. });
        if applied && status.is_terminal() {
            self.metrics.execution_finished(status);
        }
        if let (
            TransitionOutcome::Refused {
                current: ExecutionStatus::Lost,
            },
            Some(mut audit),
        ) = (&outcome, audit)
            && status.is_terminal()
        {
            // The drone came back after the hive gave the execution up: its
            // real outcome goes into the audit trail, beside `lost`.
            audit.detail["recorded_as"] = json!("lost");
            self.store.append_audit(&audit).await?;
            warn!(job_id = %execution.job_id, execution_id = %execution.id, %drone_id, %status,
                "a result arrived for an execution already declared lost; audited, state kept");
        }
        if applied {
            info!(job_id = %execution.job_id, execution_id = %execution.id, %drone_id, %status,
                exit_code = ?report.result.exit_code, "execution {status}");
            self.executions_changed.notify_waiters();
        }
        Ok(ReportAnswer {
            applied,
            canceled: status == ExecutionStatus::Running
                && outcome
                    == TransitionOutcome::Refused {
                        current: ExecutionStatus::Canceled,
                    },
        })
    }

    /// Audits a refusal that changes no execution.
    async fn record_refused_request(
        &self,
        drone_id: &DroneId,
        report: &DroneReport,
    ) -> Result<(), HiveError> {
        self.metrics.refused_drone_reports.inc();
        let reason = report.result.error.clone().unwrap_or_default();
        let mut audit = self.audit(
            Actor::Drone(drone_id.to_string()),
            AuditVerb::DroneRefusedRequest,
            json!({ "claimed_execution_id": report.execution_id, "reason": reason }),
        );
        audit.drone_id = Some(drone_id.clone());
        audit.status = Some(report.status);
        self.store.append_audit(&audit).await?;
        warn!(%drone_id, claimed_execution_id = %report.execution_id, %reason,
            "drone refused a request it could not trust");
        Ok(())
    }
}
