//! The hive's named secrets: set, list, reveal and delete them (admins;
//! operators may list), and hand their values to the drone about to run a
//! command that names them.
//!
//! Values are sealed ([`crate::keys`]) before they reach the store and
//! opened only to answer [`Hive::reveal_secret`] and
//! [`Hive::execution_secrets`]; both are audited. No audit record, log
//! line or error message holds a value.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tracing::info;
use ultron8_core::ExecutionStatus;
use ultron8_core::audit::AuditVerb;
use ultron8_core::ids::{DroneId, ExecutionId};
use ultron8_core::secrets::{check_name, check_value};
use ultron8_store::{SecretRecord, SecretWrite};

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;
use crate::keys::KeyProvider;

/// What may be shown of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
    /// Set by [`Hive::set_secret`]: whether the call created it.
    pub created: bool,
}

impl From<&SecretRecord> for SecretInfo {
    fn from(record: &SecretRecord) -> Self {
        SecretInfo {
            name: record.name.clone(),
            created_at: record.created_at,
            created_by: record.created_by.clone(),
            updated_at: record.updated_at,
            updated_by: record.updated_by.clone(),
            created: false,
        }
    }
}

impl Hive {
    fn secrets_key(&self) -> Result<&dyn KeyProvider, HiveError> {
        self.secrets_key.as_deref().ok_or_else(|| {
            HiveError::failed_precondition(
                "this hive was started without a secrets key, so it keeps no secrets",
            )
        })
    }

    /// Creates or replaces secret `name`.
    pub async fn set_secret(
        &self,
        actor: &Actor,
        name: &str,
        value: SecretString,
    ) -> Result<SecretInfo, HiveError> {
        check_name(name).map_err(HiveError::invalid_argument)?;
        check_value(value.expose_secret())
            .map_err(|problem| HiveError::invalid_argument(format!("secret {name}: {problem}")))?;
        let key = self.secrets_key()?;
        let sealed = key
            .seal(name, value.expose_secret())
            .map_err(|e| HiveError::internal(e.to_string()))?;
        let now = Utc::now();
        let mut audit = self.audit(
            actor.clone(),
            AuditVerb::SecretSet,
            json!({ "name": name, "key_id": key.key_id() }),
        );
        audit.at = now;
        let created = self
            .store
            .put_secret(
                &SecretWrite {
                    name: name.to_string(),
                    sealed,
                    at: now,
                    by: actor.to_string(),
                },
                &audit,
            )
            .await?;
        info!(secret = name, %actor, created, "secret set");
        let stored = self.stored_secret(name).await?;
        Ok(SecretInfo {
            created,
            ..SecretInfo::from(&stored)
        })
    }

    /// Every secret's name and dates, by name.
    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>, HiveError> {
        Ok(self
            .store
            .list_secrets()
            .await?
            .iter()
            .map(SecretInfo::from)
            .collect())
    }

    /// Secret `name` with its value, for an admin; audited.
    pub async fn reveal_secret(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<(SecretInfo, SecretString), HiveError> {
        check_name(name).map_err(HiveError::invalid_argument)?;
        let key = self.secrets_key()?;
        let stored = self.stored_secret(name).await?;
        let value = key
            .open(name, &stored.sealed)
            .map_err(|e| HiveError::failed_precondition(e.to_string()))?;
        let audit = self.audit(
            actor.clone(),
            AuditVerb::SecretRevealed,
            json!({ "name": name }),
        );
        self.store.append_audit(&audit).await?;
        info!(secret = name, %actor, "secret revealed");
        Ok((SecretInfo::from(&stored), value))
    }

    /// Deletes secret `name`. Commands planned with it fail when their
    /// drone asks for it.
    pub async fn delete_secret(&self, actor: &Actor, name: &str) -> Result<(), HiveError> {
        check_name(name).map_err(HiveError::invalid_argument)?;
        let audit = self.audit(
            actor.clone(),
            AuditVerb::SecretDeleted,
            json!({ "name": name }),
        );
        if !self.store.delete_secret(name, &audit).await? {
            return Err(self.no_secret(name).await);
        }
        info!(secret = name, %actor, "secret deleted");
        Ok(())
    }

    /// The environment the command of `execution_id` needs from the
    /// hive's secrets (variable → value), for `drone_id`, which must be
    /// the drone the execution is assigned to, while it may still start or
    /// runs. The variables and the secrets they name come from the job as
    /// the hive stored it, never from the drone. Audited as one
    /// `secret.delivered` naming the secrets.
    pub async fn execution_secrets(
        &self,
        drone_id: &DroneId,
        execution_id: &ExecutionId,
    ) -> Result<BTreeMap<String, SecretString>, HiveError> {
        let execution = self
            .store
            .get_execution(execution_id)
            .await?
            .filter(|e| &e.drone_id == drone_id)
            // Another drone's execution is answered as no execution at all:
            // a drone learns nothing of what others run.
            .ok_or_else(|| {
                HiveError::not_found(format!("no execution {execution_id} on drone {drone_id}"))
            })?;
        // `requested` too: the broker may deliver a request before the
        // hive has recorded its publisher confirm (`dispatched`), and the
        // drone reports `running` only on a best-effort basis.
        let may_run = matches!(
            execution.status,
            ExecutionStatus::Requested | ExecutionStatus::Dispatched | ExecutionStatus::Running
        );
        if !may_run {
            return Err(HiveError::failed_precondition(format!(
                "execution {execution_id} is {}; its secrets are given only while it may start or runs",
                execution.status
            )));
        }
        let job = self
            .store
            .get_job(&execution.job_id)
            .await?
            .ok_or_else(|| {
                HiveError::internal(format!("the job of execution {execution_id} is missing"))
            })?;
        let wanted = &job.command.secret_env;
        if wanted.is_empty() {
            return Ok(BTreeMap::new());
        }
        let key = self.secrets_key()?;
        let mut env = BTreeMap::new();
        for (variable, name) in wanted {
            let stored = self.store.get_secret(name).await?.ok_or_else(|| {
                HiveError::failed_precondition(format!(
                    "the command needs secret {name}, which is not set (deleted since the job was created?); \
                     set it with `ultronctl secret set {name}` and run the job again"
                ))
            })?;
            let value = key
                .open(name, &stored.sealed)
                .map_err(|e| HiveError::failed_precondition(e.to_string()))?;
            env.insert(variable.clone(), value);
        }
        let names: std::collections::BTreeSet<&String> = wanted.values().collect();
        let mut audit = self.audit(
            Actor::Drone(drone_id.to_string()),
            AuditVerb::SecretsDelivered,
            json!({ "names": names }),
        );
        audit.job_id = Some(execution.job_id.clone());
        audit.execution_id = Some(execution_id.clone());
        audit.drone_id = Some(drone_id.clone());
        self.store.append_audit(&audit).await?;
        info!(%execution_id, %drone_id, secrets = names.len(), "secrets delivered");
        Ok(env)
    }

    async fn stored_secret(&self, name: &str) -> Result<SecretRecord, HiveError> {
        match self.store.get_secret(name).await? {
            Some(stored) => Ok(stored),
            None => Err(self.no_secret(name).await),
        }
    }

    /// Secret `name` does not exist: say so, with the closest names.
    async fn no_secret(&self, name: &str) -> HiveError {
        let names: Vec<String> = self
            .store
            .list_secrets()
            .await
            .map(|all| all.into_iter().map(|s| s.name).collect())
            .unwrap_or_default();
        let close: Vec<&String> = names
            .iter()
            .filter(|n| strsim::levenshtein(n, name) <= 2)
            .take(3)
            .collect();
        let hint = match close.as_slice() {
            [] => String::new(),
            some => format!(
                " (did you mean {}?)",
                some.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        HiveError::not_found(format!(
            "no secret {name}{hint}; see `ultronctl secret list`"
        ))
    }
}
