//! Actions: what the installed packs let an operator run, with their
//! parameters, and the answer to a misspelt one.

use ultron8_store::ActionRecord;

use crate::error::HiveError;
use crate::hive::Hive;
use crate::ops::lookup::{closest, did_you_mean};

impl Hive {
    /// Every installed action, or one pack's, ordered by reference.
    pub async fn list_actions(&self, pack: Option<&str>) -> Result<Vec<ActionRecord>, HiveError> {
        let actions = self.store.list_actions(pack).await?;
        if let Some(pack) = pack
            && actions.is_empty()
            && self.store.get_pack(pack).await?.is_none()
        {
            return Err(HiveError::not_found(format!(
                "no pack named {pack}; see `ultronctl pack list`"
            )));
        }
        Ok(actions)
    }

    /// One action by its reference, `pack.name`.
    pub async fn get_action(&self, reference: &str) -> Result<ActionRecord, HiveError> {
        match self.store.get_action(reference).await? {
            Some(action) => Ok(action),
            None => Err(self.unknown_action(reference).await),
        }
    }

    /// The error for an action reference that names nothing installed,
    /// offering the closest references.
    pub async fn unknown_action(&self, reference: &str) -> HiveError {
        let installed = match self.store.list_actions(None).await {
            Ok(installed) => installed,
            Err(e) => return e.into(),
        };
        let references: Vec<&str> = installed.iter().map(|a| a.reference.as_str()).collect();
        // A bare name (`restart_service`) is compared with the names too.
        let mut suggestions = closest(reference, references.iter().copied(), 3);
        if suggestions.is_empty() && !reference.contains('.') {
            let names = installed
                .iter()
                .filter(|a| a.definition.name == reference)
                .map(|a| a.reference.as_str());
            suggestions = names.take(3).collect();
        }
        let see = if suggestions.is_empty() {
            "; actions are `pack.name`, see `ultronctl action list`"
        } else {
            " (see `ultronctl action list`)"
        };
        HiveError::not_found(format!(
            "no action named {reference:?}{}{see}",
            did_you_mean(&suggestions)
        ))
    }
}
