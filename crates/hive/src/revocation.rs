//! The certificates this hive refuses although its CA signed them: a
//! removed drone's, the one a re-enrolled drone had before, a revoked
//! operator's.
//!
//! The store holds the list (`revoked_certificates`); each replica keeps a
//! copy in memory, because it is asked on every TLS handshake and every
//! call, where a database round trip has no place. A replica adds what it
//! revokes itself at once and reloads the whole list every
//! [`REFRESH_INTERVAL`] for what other replicas revoked, so a revocation
//! reaches every replica within that interval. The list stays small: rows
//! are read only until the certificate expires.
//!
//! Checked in two places (see `caller::Admit`): the handshake, so a revoked
//! client cannot open a connection, and every call, so a connection opened
//! before the revocation cannot go on using it. Session resumption is off
//! on the hive's listener (`ultron8_transport::server_config`), so no
//! handshake skips the check.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use crate::hive::Hive;

/// How often a replica reloads the list from the store.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Fingerprints (SHA-256 hex of the DER certificate) of revoked
/// certificates.
#[derive(Debug, Default)]
pub struct RevokedCertificates {
    fingerprints: RwLock<HashSet<String>>,
}

impl RevokedCertificates {
    pub fn contains(&self, fingerprint: &str) -> bool {
        // A poisoned lock means a panic while replacing the set; the set
        // itself is whole either way.
        match self.fingerprints.read() {
            Ok(set) => set.contains(fingerprint),
            Err(poisoned) => poisoned.into_inner().contains(fingerprint),
        }
    }

    pub fn insert(&self, fingerprint: String) {
        match self.fingerprints.write() {
            Ok(mut set) => set.insert(fingerprint),
            Err(poisoned) => poisoned.into_inner().insert(fingerprint),
        };
    }

    fn replace(&self, fingerprints: HashSet<String>) -> usize {
        let count = fingerprints.len();
        match self.fingerprints.write() {
            Ok(mut set) => *set = fingerprints,
            Err(poisoned) => *poisoned.into_inner() = fingerprints,
        }
        count
    }
}

impl ultron8_transport::RevocationCheck for RevokedCertificates {
    fn is_revoked(&self, cert_der: &[u8]) -> bool {
        self.contains(&ultron8_pki::fingerprint(cert_der))
    }
}

impl Hive {
    /// Reloads the revocation list from the store. On failure the list in
    /// memory stays as it was (revocations are never dropped for want of
    /// an answer) and the error is returned.
    pub async fn refresh_revocations(&self) -> Result<usize, ultron8_store::StoreError> {
        let revoked = self.store.list_revoked_certificates(Utc::now()).await?;
        let fingerprints: HashSet<String> = revoked.into_iter().map(|r| r.fingerprint).collect();
        // What this replica revoked since the read began is in the store
        // too (it is written before it is added here), so nothing is lost.
        Ok(self.revoked.replace(fingerprints))
    }

    /// Loads the list before the hive listens, so no revoked certificate
    /// gets in during start-up; a store that does not answer is logged and
    /// the periodic refresh tries again.
    pub async fn load_revocations(&self) {
        match self.refresh_revocations().await {
            Ok(count) => info!(revoked_certificates = count, "revocation list loaded"),
            Err(e) => warn!(error = %e, "cannot load the revocation list yet; retrying"),
        }
    }

    /// One periodic refresh, for [`crate::hive::every`].
    pub async fn refresh_revocations_logged(&self) {
        if let Err(e) = self.refresh_revocations().await {
            warn!(error = %e, "cannot refresh the revocation list; keeping the last one");
        }
    }
}
