//! Operators' certificates: issued by the hive from a CSR, recorded when
//! first presented, listed and revoked.
//!
//! Roles ride in the certificate (see `ultron8_pki::identity`), so a
//! certificate's role cannot change: an operator who needs another role
//! gets a new certificate and the old one is revoked.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tracing::{info, warn};
use ultron8_core::audit::AuditVerb;
use ultron8_core::roles::Role;
use ultron8_store::{OperatorCertificate, OperatorCertificateRecord, RevokedCertificate};

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;

/// How long an operator certificate issued by the hive is valid unless the
/// admin says otherwise: as long as those `ultron8-hive init` writes.
pub const DEFAULT_OPERATOR_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// An operator certificate just issued.
#[derive(Debug)]
pub struct IssuedOperator {
    pub certificate_pem: String,
    pub ca_certificate_pem: String,
    pub certificate: OperatorCertificate,
}

impl Hive {
    /// Signs `csr_der` as operator `name` with `role`, records the
    /// certificate and audits who issued it.
    pub async fn create_operator(
        &self,
        actor: &Actor,
        name: &str,
        role: &str,
        csr_der: &[u8],
        validity: Option<Duration>,
    ) -> Result<IssuedOperator, HiveError> {
        let role: Role = role.parse().map_err(|_| {
            HiveError::invalid_argument(format!(
                "unknown role {}: use viewer, operator or admin",
                ultron8_core::echo::quote(role)
            ))
        })?;
        let signed = self
            .ca
            .sign_operator_csr(
                csr_der,
                name,
                role.as_str(),
                validity.unwrap_or(DEFAULT_OPERATOR_VALIDITY),
            )
            .map_err(|e| {
                HiveError::invalid_argument(format!("cannot issue the certificate: {e}"))
            })?;
        let certificate = OperatorCertificate {
            fingerprint: signed.fingerprint.clone(),
            name: name.to_string(),
            role: role.as_str().to_string(),
            not_after: signed.not_after,
            issued_by: Some(actor.to_string()),
            recorded_at: Utc::now(),
        };
        self.store.record_operator_certificate(&certificate).await?;
        let audit = self.audit(
            actor.clone(),
            AuditVerb::OperatorCreated,
            json!({
                "name": name,
                "role": role.as_str(),
                "fingerprint": signed.fingerprint,
                "not_after": signed.not_after,
            }),
        );
        self.store.append_audit(&audit).await?;
        info!(operator = %name, role = %role, by = %actor, "operator certificate issued");
        Ok(IssuedOperator {
            certificate_pem: signed.cert_pem,
            ca_certificate_pem: self.ca.cert_pem(),
            certificate,
        })
    }

    pub async fn list_operators(&self) -> Result<Vec<OperatorCertificateRecord>, HiveError> {
        Ok(self.store.list_operator_certificates().await?)
    }

    /// Revokes every recorded certificate of operator `name` that is not
    /// revoked yet; returns them. An admin cannot revoke their own name
    /// (another admin must), so a slip cannot lock the last admin out.
    pub async fn revoke_operator(
        &self,
        actor: &Actor,
        name: &str,
        reason: &str,
    ) -> Result<Vec<OperatorCertificate>, HiveError> {
        if matches!(actor, Actor::Operator(own) if own == name) {
            return Err(HiveError::failed_precondition(format!(
                "operator {name} cannot revoke their own certificates; another admin can"
            )));
        }
        let records = self.store.list_operator_certificates().await?;
        let known = records.iter().any(|r| r.certificate.name == name);
        let live: Vec<OperatorCertificate> = records
            .into_iter()
            .filter(|r| r.certificate.name == name && r.revoked.is_none())
            .map(|r| r.certificate)
            .collect();
        if live.is_empty() {
            return Err(if known {
                HiveError::failed_precondition(format!(
                    "every certificate of operator {name} is already revoked"
                ))
            } else {
                HiveError::not_found(format!(
                    "the hive knows no certificate of operator {name}: it records those it \
                     issues and those presented to it (`ultronctl operator list` shows them)"
                ))
            });
        }
        let now = Utc::now();
        let reason = if reason.trim().is_empty() {
            "revoked by an admin".to_string()
        } else {
            reason.trim().to_string()
        };
        let revocations: Vec<RevokedCertificate> = live
            .iter()
            .map(|c| RevokedCertificate {
                fingerprint: c.fingerprint.clone(),
                subject: format!("operator:{}", c.name),
                reason: reason.clone(),
                revoked_at: now,
                revoked_by: actor.to_string(),
                not_after: Some(c.not_after),
            })
            .collect();
        let audit = self.audit(
            actor.clone(),
            AuditVerb::OperatorRevoked,
            json!({
                "name": name,
                "reason": reason,
                "fingerprints": live.iter().map(|c| c.fingerprint.as_str()).collect::<Vec<_>>(),
            }),
        );
        self.store.revoke_certificates(&revocations, &audit).await?;
        for revocation in revocations {
            self.revoked.insert(revocation.fingerprint);
        }
        warn!(operator = %name, by = %actor, certificates = live.len(), "operator revoked");
        Ok(live)
    }

    /// Records an operator certificate the first time this replica sees it
    /// presented, so `operator list` shows certificates issued offline too.
    pub async fn note_operator_certificate(&self, name: &str, role: &str, cert_der: &[u8]) {
        let fingerprint = ultron8_pki::fingerprint(cert_der);
        {
            let mut recorded = match self.operators_recorded.lock() {
                Ok(recorded) => recorded,
                Err(poisoned) => poisoned.into_inner(),
            };
            if !recorded.insert(fingerprint.clone()) {
                return;
            }
        }
        let not_after = match ultron8_pki::certificate_not_after(cert_der) {
            Ok(not_after) => not_after,
            Err(e) => {
                warn!(error = %e, operator = %name, "cannot read an operator certificate's validity");
                return;
            }
        };
        let certificate = OperatorCertificate {
            fingerprint: fingerprint.clone(),
            name: name.to_string(),
            role: role.to_string(),
            not_after,
            issued_by: None,
            recorded_at: Utc::now(),
        };
        if let Err(e) = self.store.record_operator_certificate(&certificate).await {
            // Try again on its next call.
            if let Ok(mut recorded) = self.operators_recorded.lock() {
                recorded.remove(&fingerprint);
            }
            warn!(error = %e, operator = %name, "cannot record an operator certificate");
        }
    }
}
