//! Join tokens: the one-time credential a drone enrolls with.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use ultron8_core::audit::AuditVerb;
use ultron8_core::ids::DroneId;
use ultron8_pki::JoinToken;
use ultron8_store::NewJoinToken;

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;

/// A token just created. Its secret exists only here: the store keeps its
/// hash.
#[derive(Debug)]
pub struct IssuedJoinToken {
    pub token: JoinToken,
    pub expires_at: DateTime<Utc>,
}

/// Which drone names a token may enroll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TokenBinding {
    /// Any name not in the fleet.
    #[default]
    AnyNewName,
    /// Only this name, and only while it is not in the fleet.
    Name(DroneId),
    /// Only this name, which is in the fleet: the host joining takes its
    /// place and its current certificate is revoked.
    Replace(DroneId),
}

impl Hive {
    /// Creates a token whose drone gets `labels`; `ttl` `None` means the
    /// configured default.
    pub async fn create_join_token(
        &self,
        actor: &Actor,
        labels: BTreeMap<String, String>,
        ttl: Option<Duration>,
        binding: TokenBinding,
    ) -> Result<IssuedJoinToken, HiveError> {
        if self.config.dev {
            return Err(HiveError::failed_precondition(
                "this is a dev hive (`ultron8-hive dev`): its one drone is built in and talks \
                 to it over an in-process broker no other host can reach, so it makes no join \
                 tokens. Remote drones need a production hive: `ultron8-hive init`, then \
                 `ultron8-hive serve` with Postgres and RabbitMQ (README, \"Run it for real\")",
            ));
        }
        let replaces = matches!(binding, TokenBinding::Replace(_));
        let (drone_id, replaces) = match binding {
            TokenBinding::AnyNewName => (None, false),
            TokenBinding::Name(id) | TokenBinding::Replace(id) => {
                ultron8_core::target::validate_drone_id(id.as_str()).map_err(|e| {
                    HiveError::invalid_argument(format!(
                        "invalid drone name {}: {e}",
                        ultron8_core::echo::quote(id.as_str())
                    ))
                })?;
                if replaces {
                    // A replace token for a name not in the fleet would be a
                    // plain token that says more than it does.
                    self.fleet_drone(&id).await.map_err(|_| {
                        HiveError::failed_precondition(format!(
                            "drone {id} is not in the fleet, so there is nothing to replace; \
                             a token bound to the name joins it: \
                             ultronctl drone token create --name {id}"
                        ))
                    })?;
                }
                (Some(id), replaces)
            }
        };
        let token = JoinToken::generate(&self.ca.fingerprint())
            .map_err(|e| HiveError::internal(e.to_string()))?;
        let ttl = ttl.unwrap_or(self.config.join_token_ttl);
        let now = Utc::now();
        let expires_at = now
            + chrono::Duration::from_std(ttl)
                .map_err(|_| HiveError::invalid_argument("ttl too large"))?;
        self.store
            .create_join_token(&NewJoinToken {
                id: token.id.clone(),
                secret_sha256: token.secret_sha256(),
                labels,
                // The bare operator name, as tokens have always recorded it.
                created_by: actor.name().to_string(),
                created_at: now,
                expires_at,
                drone_id: drone_id.clone(),
                replaces,
            })
            .await?;
        let audit = self.audit(
            actor.clone(),
            AuditVerb::JoinTokenCreated,
            json!({
                "token_id": token.id,
                "expires_at": expires_at,
                "drone_id": drone_id,
                "replaces": replaces,
            }),
        );
        self.store.append_audit(&audit).await?;
        Ok(IssuedJoinToken { token, expires_at })
    }
}
