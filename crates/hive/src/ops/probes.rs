//! Probes: where each probe stands on each of its targets.

use ultron8_core::echo::quote;
use ultron8_core::health::CheckState;
use ultron8_store::ProbeStateRecord;

use crate::error::HiveError;
use crate::hive::Hive;

impl Hive {
    /// Every probe's state on each of its targets, or those of `probe` and
    /// in `state`. An unknown probe is an error naming the probes there
    /// are; no probe at all is an empty list.
    pub async fn list_probes(
        &self,
        probe: Option<&str>,
        state: Option<CheckState>,
    ) -> Result<Vec<ProbeStateRecord>, HiveError> {
        let mut states = self.store.probe_states(probe).await?;
        if let Some(probe) = probe
            && states.is_empty()
        {
            let installed = self.installed_probes().await?;
            if !installed.iter().any(|p| p == probe) {
                return Err(HiveError::not_found(match installed.is_empty() {
                    true => format!("no probe {}: no pack installs one", quote(probe)),
                    false => format!(
                        "no probe {}; installed: {}",
                        quote(probe),
                        installed.join(", ")
                    ),
                }));
            }
        }
        if let Some(state) = state {
            states.retain(|s| s.state == state);
        }
        Ok(states)
    }

    async fn installed_probes(&self) -> Result<Vec<String>, HiveError> {
        Ok(self
            .store
            .list_packs()
            .await?
            .iter()
            .flat_map(|pack| pack.content.probes.iter().map(|p| p.reference()))
            .collect())
    }
}
