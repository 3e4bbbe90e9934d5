//! The fleet: listing drones for operators, and what drones do to join and
//! stay known (enroll, register, heartbeat).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tracing::{info, warn};
use ultron8_core::audit::AuditVerb;
use ultron8_core::echo::quote;
use ultron8_core::ids::DroneId;
use ultron8_core::target;
use ultron8_core::{DroneFacts, HostStats};
use ultron8_pki::JoinToken;
use ultron8_store::{DroneEnrollment, DroneRecord};

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;

/// A drone asking to join: the join token, the name it wants and its CSR.
#[derive(Debug, Clone)]
pub struct EnrollmentRequest {
    pub token: String,
    /// As the drone asked; checked by [`Hive::enroll`].
    pub drone_id: DroneId,
    pub csr_der: Vec<u8>,
}

/// What a drone that joined receives.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub certificate_der: Vec<u8>,
    pub ca_certificate_der: Vec<u8>,
    /// From the join token.
    pub labels: BTreeMap<String, String>,
}

/// What a registered drone needs to consume requests and verify them.
#[derive(Debug, Clone)]
pub struct Registration {
    pub broker_url: String,
    pub queue: String,
    pub heartbeat_interval: Duration,
    pub request_signing_public_key: Vec<u8>,
    pub request_signing_key_id: String,
}

impl Hive {
    /// Every drone, or those an expression selects (online or not).
    pub async fn list_drones(&self, filter: &str) -> Result<Vec<DroneRecord>, HiveError> {
        let drones = self.store.list_drones().await?;
        if filter.trim().is_empty() {
            return Ok(drones);
        }
        let expr = target::parse(filter).map_err(|e| {
            HiveError::invalid_argument(format!("invalid target: {}\n{}", e, e.render(filter)))
        })?;
        Ok(drones
            .into_iter()
            .filter(|d| crate::planning::matches(&expr, d))
            .collect())
    }

    pub async fn get_drone(&self, id: &DroneId) -> Result<DroneRecord, HiveError> {
        self.store.get_drone(id).await?.ok_or_else(|| {
            HiveError::not_found(format!(
                "no drone named {}; see `ultronctl drone list`",
                quote(id.as_str())
            ))
        })
    }

    /// Signs the drone's CSR and consumes its join token. The CSR is
    /// signed first: a malformed one must not burn the one-time token.
    pub async fn enroll(&self, request: EnrollmentRequest) -> Result<Enrollment, HiveError> {
        let token = JoinToken::parse(&request.token)
            .map_err(|e| HiveError::invalid_argument(format!("malformed join token: {e}")))?;
        ultron8_core::target::validate_drone_id(request.drone_id.as_str()).map_err(|e| {
            HiveError::invalid_argument(format!(
                "invalid drone name {}: {e}",
                quote(request.drone_id.as_str())
            ))
        })?;
        if token.ca_fingerprint != self.ca.fingerprint() {
            return Err(HiveError::permission_denied(
                "join token was issued by another hive (CA fingerprint differs)",
            ));
        }
        let signed = self
            .ca
            .sign_drone_csr(
                &request.csr_der,
                request.drone_id.as_str(),
                self.config.drone_certificate_validity,
            )
            .map_err(|e| {
                HiveError::invalid_argument(format!("certificate signing request refused: {e}"))
            })?;
        let now = Utc::now();
        let grant = self
            .store
            .consume_join_token(&token.id, &token.secret_sha256(), &request.drone_id, now)
            .await?;
        self.store
            .record_enrollment(&DroneEnrollment {
                drone_id: request.drone_id.clone(),
                certificate_fingerprint: signed.fingerprint.clone(),
                certificate_not_after: signed.not_after,
                labels: grant.labels.clone(),
                token_id: token.id.clone(),
                enrolled_at: now,
            })
            .await?;
        let mut audit = self.audit(
            Actor::Drone(request.drone_id.to_string()),
            AuditVerb::DroneEnrolled,
            json!({ "token_id": token.id, "certificate_fingerprint": signed.fingerprint, "labels": grant.labels }),
        );
        audit.drone_id = Some(request.drone_id.clone());
        self.store.append_audit(&audit).await?;
        info!(drone_id = %request.drone_id, token_id = %token.id, "drone enrolled");
        Ok(Enrollment {
            certificate_der: signed.cert_der,
            ca_certificate_der: self.ca.cert_der().to_vec(),
            labels: grant.labels,
        })
    }

    /// Records the drone's facts, declares its queue and tells it where to
    /// consume and how to verify what it receives.
    pub async fn register_drone(
        &self,
        drone_id: &DroneId,
        facts: &DroneFacts,
    ) -> Result<Registration, HiveError> {
        let broker_url = self
            .config
            .drone_broker_url()
            .ok_or_else(|| {
                HiveError::failed_precondition("the hive has no broker URL for drones configured")
            })?
            .to_string();
        self.publisher
            .ensure_drone_queue(drone_id.as_str())
            .await
            .map_err(|e| {
                warn!(%drone_id, error = %e, "cannot declare the drone's queue");
                HiveError::unavailable("the hive cannot reach its message broker; retry shortly")
            })?;
        self.store
            .record_registration(drone_id, facts, Utc::now())
            .await?;
        info!(%drone_id, "drone registered");
        Ok(Registration {
            broker_url,
            queue: ultron8_broker::drone_queue_name(drone_id.as_str()),
            heartbeat_interval: self.config.heartbeat_interval,
            request_signing_public_key: self.signing_key.public_key(),
            request_signing_key_id: self.signing_key.key_id(),
        })
    }

    /// Marks the drone seen with its latest stats; returns the interval at
    /// which the hive expects the next heartbeat.
    pub async fn heartbeat(
        &self,
        drone_id: &DroneId,
        stats: &HostStats,
        spooled_results: u64,
    ) -> Result<Duration, HiveError> {
        self.store
            .record_heartbeat(drone_id, stats, Utc::now())
            .await?;
        self.metrics.drone_spool(drone_id, spooled_results);
        Ok(self.config.heartbeat_interval)
    }
}
