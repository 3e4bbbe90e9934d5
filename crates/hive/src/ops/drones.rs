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
use ultron8_store::{DroneRecord, DroneRemoval, EnrollmentClaim, StoreError};

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;
use crate::ops::lookup::{closest, did_you_mean};

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

    /// A drone of the fleet: [`Hive::get_drone`], refusing one that was
    /// removed with when and by whom.
    pub async fn fleet_drone(&self, id: &DroneId) -> Result<DroneRecord, HiveError> {
        let drone = self.get_drone(id).await?;
        match &drone.removed {
            Some(removal) => Err(HiveError::not_found(removed_message(id, removal))),
            None => Ok(drone),
        }
    }

    /// Takes a drone out of the fleet (see [`ultron8_store::Store::remove_drone`]),
    /// audited as `drone.removed`; refuses an online one unless `force`.
    /// Returns the drone as it was, marked removed.
    pub async fn remove_drone(
        &self,
        actor: &Actor,
        id: &DroneId,
        force: bool,
    ) -> Result<DroneRecord, HiveError> {
        let drone = self.fleet_drone(id).await?;
        if drone.online && !force {
            return Err(HiveError::failed_precondition(format!(
                "drone {id} is online; stop ultron8-drone on it first, or remove it anyway with \
                 --force (what it is running then ends lost, and the hive refuses its reports)"
            )));
        }
        let removal = DroneRemoval {
            at: Utc::now(),
            by: actor.to_string(),
        };
        let mut audit = self.audit(
            actor.clone(),
            AuditVerb::DroneRemoved,
            json!({
                "online": drone.online,
                "forced": force,
                "last_seen_at": drone.last_seen_at,
                "certificate_fingerprint": drone.certificate_fingerprint,
            }),
        );
        audit.drone_id = Some(id.clone());
        if !self.store.remove_drone(id, &removal, &audit).await? {
            // Another operator removed it meanwhile.
            return Err(self.fleet_drone(id).await.err().unwrap_or_else(|| {
                HiveError::not_found(format!("drone {id} is no longer in the fleet"))
            }));
        }
        self.revoked.insert(drone.certificate_fingerprint.clone());
        info!(drone_id = %id, %actor, forced = force, "drone removed; its certificate is revoked");
        Ok(DroneRecord {
            online: false,
            removed: Some(removal),
            ..drone
        })
    }

    /// Refuses a drone that is not in the fleet (it was removed, or never
    /// joined), before the hive takes a report or output from it.
    pub async fn check_in_fleet(&self, id: &DroneId) -> Result<(), HiveError> {
        match self.store.get_drone(id).await? {
            Some(drone) => match &drone.removed {
                Some(removal) => Err(HiveError::failed_precondition(removed_message(id, removal))),
                None => Ok(()),
            },
            None => Err(HiveError::failed_precondition(format!(
                "drone {id} is not in the fleet; join it with a new token"
            ))),
        }
    }

    /// What a drone's failed registration or heartbeat tells it: a removed
    /// drone learns it was removed and how to come back.
    async fn drone_write_failed(&self, id: &DroneId, error: StoreError) -> HiveError {
        if matches!(error, StoreError::NotFound { .. })
            && let Ok(Some(drone)) = self.store.get_drone(id).await
            && let Some(removal) = &drone.removed
        {
            return HiveError::failed_precondition(removed_message(id, removal));
        }
        error.into()
    }

    /// The error for a target that matches no online drone: names the
    /// offline drones it matches, or else the drones whose ids are closest
    /// to the names it gives.
    pub async fn no_drone_matches(&self, target: &str, offline: Vec<DroneId>) -> HiveError {
        if !offline.is_empty() {
            return HiveError::no_online_drone(target, offline);
        }
        let fleet = match self.store.list_drones().await {
            Ok(fleet) => fleet,
            Err(e) => return e.into(),
        };
        let ids: Vec<&str> = fleet.iter().map(|d| d.id.as_str()).collect();
        let mut suggestions: Vec<&str> = Vec::new();
        for name in target_names(target) {
            let known = fleet.iter().any(|d| {
                d.id.as_str().eq_ignore_ascii_case(&name)
                    || d.facts.hostname.eq_ignore_ascii_case(&name)
            });
            if !known {
                for id in closest(&name, ids.iter().copied(), 3) {
                    if !suggestions.contains(&id) {
                        suggestions.push(id);
                    }
                }
            }
        }
        suggestions.truncate(5);
        HiveError::no_drone_matches(target, &did_you_mean(&suggestions))
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
            .enroll_drone(&EnrollmentClaim {
                token_id: token.id.clone(),
                secret_sha256: token.secret_sha256(),
                drone_id: request.drone_id.clone(),
                certificate_fingerprint: signed.fingerprint.clone(),
                certificate_not_after: signed.not_after,
                enrolled_at: now,
            })
            .await?;
        if let Some(replaced) = &grant.replaced_certificate {
            // Refused here at once; other replicas at their next refresh.
            self.revoked.insert(replaced.clone());
            warn!(drone_id = %request.drone_id, replaced_certificate = %replaced,
                "drone re-enrolled; its previous certificate is revoked");
        }
        let mut audit = self.audit(
            Actor::Drone(request.drone_id.to_string()),
            AuditVerb::DroneEnrolled,
            json!({
                "token_id": token.id,
                "certificate_fingerprint": signed.fingerprint,
                "labels": grant.labels,
                "replaced_certificate": grant.replaced_certificate,
            }),
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
        if let Err(e) = self
            .store
            .record_registration(drone_id, facts, Utc::now())
            .await
        {
            return Err(self.drone_write_failed(drone_id, e).await);
        }
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
        if let Err(e) = self
            .store
            .record_heartbeat(drone_id, stats, Utc::now())
            .await
        {
            return Err(self.drone_write_failed(drone_id, e).await);
        }
        self.metrics.drone_spool(drone_id, spooled_results);
        Ok(self.config.heartbeat_interval)
    }
}

/// Why a removed drone is refused, and how it comes back.
fn removed_message(id: &DroneId, removal: &DroneRemoval) -> String {
    format!(
        "drone {id} was removed from the fleet by {} at {}; the hive takes nothing from it. \
         To bring it back, join it again with a new token: \
         ultron8-drone join --name {id} --token <token> --force",
        removal.by,
        removal
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// The plain names in a target expression (no globs, labels, keywords or
/// punctuation), lowercased: the words a typo may be in.
fn target_names(target: &str) -> Vec<String> {
    target
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')'))
        .map(|word| word.trim_matches(|c| c == '\'' || c == '"'))
        .filter(|word| !word.is_empty())
        .filter(|word| !matches!(word.to_ascii_lowercase().as_str(), "and" | "or" | "not"))
        .filter(|word| !word.to_ascii_lowercase().starts_with("label:"))
        .filter(|word| !word.contains(['*', '?', '[']))
        .map(str::to_ascii_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_of_a_target_are_its_plain_words() {
        assert_eq!(target_names("web1"), ["web1"]);
        assert_eq!(
            target_names("(Web-1,web-2) and not label:role=db or db-* and 'cache'"),
            ["web-1", "web-2", "cache"]
        );
        assert!(target_names("*").is_empty());
    }
}
