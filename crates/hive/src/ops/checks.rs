//! Drone checks: the signed check set each drone runs (the installed
//! packs' checks whose `targets` match it), the transitions drones report
//! (each stored once as a `drone.check` event), the summaries they send
//! with their heartbeats, and `ultronctl check list`.
//!
//! A drone's set is computed from the store as it is when the drone asks,
//! so a join, a change of labels, or a pack installed, upgraded or removed
//! changes the version the next heartbeat announces. The installed checks
//! are read once per catalog version.

use std::sync::Arc;

use chrono::Utc;
use ultron8_core::checks::{self, CheckSet, CheckSpec, CheckStatus, CheckTransition};
use ultron8_core::echo::quote;
use ultron8_core::health::CheckState;
use ultron8_core::ids::DroneId;
use ultron8_core::target::{self, TargetExpr};
use ultron8_core::triggers::DRONE_CHECK;
use ultron8_store::DroneCheckRecord;

use crate::error::HiveError;
use crate::hive::Hive;
use crate::planning;

/// The installed checks, each with its parsed target, as of one catalog
/// version.
#[derive(Default)]
pub struct CheckCatalog {
    /// (catalog version, the checks then)
    cached: tokio::sync::Mutex<Option<(i64, InstalledChecks)>>,
    /// A digest of the summary this replica last stored per drone: a
    /// summary that did not change (a drone with no checks, most of all)
    /// costs no write. Another replica's write is not seen here, so a
    /// drone moving between replicas is written again, which is harmless.
    stored_summaries: std::sync::Mutex<std::collections::HashMap<DroneId, u64>>,
}

/// Every installed check with its parsed target, sorted by reference.
type InstalledChecks = Arc<Vec<(TargetExpr, CheckSpec)>>;

/// A check set as the drone receives it: the bytes, and the signature over
/// [`checks::signed_bytes`] of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckSet {
    pub bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub key_id: String,
    pub version: String,
}

/// Most transitions one report may carry; a drone sends more in batches.
pub const MAX_TRANSITIONS_PER_REPORT: usize = 500;

impl Hive {
    async fn installed_checks(&self) -> Result<InstalledChecks, HiveError> {
        let version = self.store.catalog_version().await?;
        let mut cached = self.checks.cached.lock().await;
        if let Some((at, checks)) = cached.as_ref()
            && *at == version
        {
            return Ok(checks.clone());
        }
        let mut all = Vec::new();
        for pack in self.store.list_packs().await? {
            for check in &pack.content.checks {
                // Parsed at install; a stored target that no longer parses
                // is skipped loudly rather than failing every drone's set.
                match target::parse(&check.targets) {
                    Ok(expr) => all.push((expr, check.spec())),
                    Err(e) => tracing::error!(check = %check.reference(), error = %e,
                        "a stored check's target does not parse; skipping it"),
                }
            }
        }
        all.sort_by(|a, b| a.1.reference.cmp(&b.1.reference));
        let all = Arc::new(all);
        *cached = Some((version, all.clone()));
        Ok(all)
    }

    /// The checks `drone_id` should run now.
    pub async fn check_set(&self, drone_id: &DroneId) -> Result<CheckSet, HiveError> {
        let drone = self.fleet_drone(drone_id).await?;
        let checks: Vec<CheckSpec> = self
            .installed_checks()
            .await?
            .iter()
            .filter(|(expr, _)| planning::matches(expr, &drone))
            .map(|(_, spec)| spec.clone())
            .collect();
        let json = serde_json::to_vec(&checks)
            .map_err(|e| HiveError::internal(format!("cannot encode a check set: {e}")))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &json);
        Ok(CheckSet {
            drone_id: drone_id.to_string(),
            version: hex::encode(digest.as_ref()),
            checks,
        })
    }

    /// The version of the set `drone_id` should run: what its heartbeat
    /// answers. Empty when it runs none.
    pub async fn check_set_version(&self, drone_id: &DroneId) -> Result<String, HiveError> {
        let set = self.check_set(drone_id).await?;
        Ok(if set.checks.is_empty() {
            String::new()
        } else {
            set.version
        })
    }

    /// `drone_id`'s check set, signed with the key that signs action
    /// requests (under its own domain: see [`checks::CHECK_SET_DOMAIN`]).
    pub async fn signed_check_set(&self, drone_id: &DroneId) -> Result<SignedCheckSet, HiveError> {
        let set = self.check_set(drone_id).await?;
        let bytes = serde_json::to_vec(&set)
            .map_err(|e| HiveError::internal(format!("cannot encode a check set: {e}")))?;
        let signature = self.signing_key.sign(&checks::signed_bytes(&bytes));
        Ok(SignedCheckSet {
            bytes,
            signature,
            key_id: self.signing_key.key_id(),
            version: if set.checks.is_empty() {
                String::new()
            } else {
                set.version
            },
        })
    }

    /// Stores each transition as a `drone.check` event, once per
    /// (drone, transition id) however often it is reported; returns how
    /// many the hive now holds (new or stored before).
    pub async fn report_check_transitions(
        &self,
        drone_id: &DroneId,
        transitions: Vec<CheckTransition>,
    ) -> Result<u32, HiveError> {
        if transitions.len() > MAX_TRANSITIONS_PER_REPORT {
            return Err(HiveError::invalid_argument(format!(
                "{} transitions in one report; at most {MAX_TRANSITIONS_PER_REPORT}",
                transitions.len()
            )));
        }
        for transition in &transitions {
            if transition.id.is_empty() || transition.id.len() > 64 {
                return Err(HiveError::invalid_argument(format!(
                    "transition id {} must be 1 to 64 characters",
                    quote(&transition.id)
                )));
            }
            if transition.check.len() > 200 {
                return Err(HiveError::invalid_argument(format!(
                    "check name {} is too long",
                    quote(&transition.check)
                )));
            }
        }
        if transitions.is_empty() {
            return Ok(0);
        }
        let drone = self.fleet_drone(drone_id).await?;
        // The drone is alive: after a hive restart its spooled transitions
        // can arrive before its next heartbeat, and a rule acting on one
        // must find it online.
        self.store.record_seen(drone_id, chrono::Utc::now()).await?;
        let labels = drone.labels();
        let items = transitions
            .iter()
            .map(|transition| {
                let mut transition = transition.clone();
                // Bounded whatever the drone sent; NUL cannot be stored.
                transition.output =
                    checks::last_line(transition.output.as_bytes(), checks::MAX_OUTPUT_BYTES)
                        .replace('\0', "\u{fffd}");
                transition.check = transition.check.replace('\0', "\u{fffd}");
                let payload = checks::transition_payload(drone_id.as_str(), &labels, &transition);
                (
                    payload,
                    Some(format!("drone.check:{drone_id}:{}", transition.id)),
                )
            })
            .collect::<Vec<_>>();
        let ids = self
            .ingest_events(DRONE_CHECK, &format!("drone:{drone_id}"), items)
            .await?;
        Ok(u32::try_from(ids.len()).unwrap_or(u32::MAX))
    }

    /// Keeps `drone_id`'s latest summary of its checks for `check list`.
    pub async fn record_check_summary(
        &self,
        drone_id: &DroneId,
        mut summary: Vec<CheckStatus>,
    ) -> Result<(), HiveError> {
        summary.truncate(1000);
        for status in &mut summary {
            status.last_output =
                checks::last_line(status.last_output.as_bytes(), checks::MAX_OUTPUT_BYTES)
                    .replace('\0', "\u{fffd}");
            status.check = status.check.replace('\0', "\u{fffd}");
        }
        summary.sort_by(|a, b| a.check.cmp(&b.check));
        summary.dedup_by(|a, b| a.check == b.check);
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            for status in &summary {
                (
                    &status.check,
                    status.state.as_str(),
                    status.since_ms,
                    status.last_run_ms,
                    &status.last_output,
                )
                    .hash(&mut hasher);
            }
            hasher.finish()
        };
        let unchanged = |stored: &std::collections::HashMap<DroneId, u64>| {
            stored.get(drone_id) == Some(&digest)
        };
        if self
            .checks
            .stored_summaries
            .lock()
            .map(|stored| unchanged(&stored))
            .unwrap_or(false)
        {
            return Ok(());
        }
        self.store
            .replace_drone_checks(drone_id, &summary, Utc::now())
            .await?;
        if let Ok(mut stored) = self.checks.stored_summaries.lock() {
            stored.insert(drone_id.clone(), digest);
        }
        Ok(())
    }

    /// Every check on every drone `target` matches (all when None), in
    /// `state` if given.
    pub async fn list_checks(
        &self,
        target: Option<&str>,
        state: Option<CheckState>,
    ) -> Result<Vec<DroneCheckRecord>, HiveError> {
        let expr = match target {
            Some(text) => Some(target::parse(text).map_err(|e| {
                HiveError::invalid_argument(format!(
                    "invalid target expression: {}",
                    e.render(text)
                ))
            })?),
            None => None,
        };
        let mut checks = self.store.list_drone_checks().await?;
        if let Some(state) = state {
            checks.retain(|c| c.status.state == state);
        }
        if let Some(expr) = expr {
            let drones = self.store.list_drones().await?;
            let matching: std::collections::BTreeSet<&DroneId> = drones
                .iter()
                .filter(|d| planning::matches(&expr, d))
                .map(|d| &d.id)
                .collect();
            checks.retain(|c| matching.contains(&c.drone_id));
        }
        Ok(checks)
    }
}
