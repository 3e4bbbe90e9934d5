//! Installing, listing and removing packs. Validation is all-or-nothing:
//! `ultron8_pack::load` reports every problem, and only a pack without any
//! is written, in one store transaction.

use std::collections::BTreeMap;

use serde_json::json;
use ultron8_pack::{Action, Installed, Pack};
use ultron8_store::{ActionRecord, PackRecord, RuleRecord, ScriptRecord};

use crate::hive::Hive;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The pack is malformed: every problem, one per line, `file:line:column: message`.
    #[error("{0}")]
    Invalid(String),
    /// The pack is fine but cannot be installed or removed now.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Store(#[from] ultron8_store::StoreError),
}

/// What is installed, read once from the store for one validation.
struct InstalledSnapshot {
    actions: BTreeMap<String, Action>,
    versions: BTreeMap<String, semver::Version>,
}

impl Installed for InstalledSnapshot {
    fn action(&self, reference: &str) -> Option<Action> {
        self.actions.get(reference).cloned()
    }

    fn pack_version(&self, name: &str) -> Option<semver::Version> {
        self.versions.get(name).cloned()
    }
}

impl Hive {
    async fn installed_snapshot(&self) -> Result<InstalledSnapshot, PackError> {
        let mut actions = BTreeMap::new();
        for record in self.store.list_actions(None).await? {
            if let Ok(action) = serde_json::from_value::<Action>(record.definition) {
                actions.insert(record.reference, action);
            }
        }
        let mut versions = BTreeMap::new();
        for pack in self.store.list_packs().await? {
            if let Ok(version) = semver::Version::parse(&pack.version) {
                versions.insert(pack.name, version);
            }
        }
        Ok(InstalledSnapshot { actions, versions })
    }

    /// Validates and installs a pack from a `.tar.gz`. Returns the record
    /// and the version it replaced.
    pub async fn install_pack(
        &self,
        operator: &str,
        tarball: &[u8],
    ) -> Result<(PackRecord, Option<String>), PackError> {
        let files = ultron8_pack::read_tarball(tarball)
            .map_err(|e| PackError::Invalid(format!("cannot read the pack: {e}")))?;
        let installed = self.installed_snapshot().await?;
        let pack = ultron8_pack::load(&files, &installed).map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            PackError::Invalid(format!(
                "the pack has {} problem{}; nothing was installed:\n{}",
                lines.len(),
                if lines.len() == 1 { "" } else { "s" },
                lines.join("\n")
            ))
        })?;
        let name = pack.manifest.name.clone();
        if let Some(current) = installed.versions.get(&name)
            && *current > pack.manifest.version
        {
            return Err(PackError::Conflict(format!(
                "{name} {current} is installed; refusing to downgrade to {}. Remove it first (`ultronctl pack remove {name}`) if you mean it",
                pack.manifest.version
            )));
        }
        self.check_dependents_keep_working(&pack).await?;
        let (record, actions, mut rules, scripts) = records(&pack, operator)?;
        // An upgrade keeps each rule enabled or disabled as an operator left
        // it; only new rules take the value from their file.
        for existing in self
            .store
            .list_rules(None)
            .await?
            .into_iter()
            .filter(|r| r.pack == name)
        {
            if let Some(rule) = rules.iter_mut().find(|r| r.reference == existing.reference) {
                rule.enabled = existing.enabled;
            }
        }
        let mut audit = self.audit(
            format!("operator:{operator}"),
            "pack.installed",
            json!({
                "pack": name,
                "version": record.version,
                "actions": actions.iter().map(|a| &a.reference).collect::<Vec<_>>(),
                "rules": rules.iter().map(|r| &r.reference).collect::<Vec<_>>(),
            }),
        );
        audit.detail["previous_version"] =
            json!(installed.versions.get(&name).map(ToString::to_string));
        let previous = self
            .store
            .install_pack(&record, &actions, &rules, &scripts, &audit)
            .await?;
        tracing::info!(pack = %name, version = %record.version, previous = ?previous, %operator, "pack installed");
        Ok((record, previous))
    }

    /// Refuses an upgrade that drops an action the rules of an installed
    /// pack depending on this one still use.
    async fn check_dependents_keep_working(&self, pack: &Pack) -> Result<(), PackError> {
        let name = &pack.manifest.name;
        let prefix = format!("{name}.");
        let mut broken = Vec::new();
        for other in self.store.list_packs().await? {
            let Ok(other) = serde_json::from_value::<Pack>(other.content) else {
                continue;
            };
            if other.manifest.name == *name || !other.manifest.dependencies.contains(name) {
                continue;
            }
            for rule in &other.rules {
                let reference = &rule.action.reference;
                let action = reference.strip_prefix(&prefix);
                if action.is_some_and(|action| !pack.actions.iter().any(|a| a.name == action)) {
                    broken.push(format!(
                        "{}.{} uses {reference}",
                        other.manifest.name, rule.name
                    ));
                }
            }
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(PackError::Conflict(format!(
                "{name} {} drops actions that installed packs use: {}; upgrade or remove those first",
                pack.manifest.version,
                broken.join(", ")
            )))
        }
    }

    pub async fn remove_pack(&self, operator: &str, name: &str) -> Result<(), PackError> {
        let packs = self.store.list_packs().await?;
        if !packs.iter().any(|p| p.name == name) {
            return Err(PackError::NotFound(format!(
                "no pack named {name}; see `ultronctl pack list`"
            )));
        }
        let dependents: Vec<String> = packs
            .iter()
            .filter(|p| p.name != name)
            .filter(|p| {
                serde_json::from_value::<Pack>(p.content.clone())
                    .map(|pack| pack.manifest.dependencies.iter().any(|d| d == name))
                    .unwrap_or(false)
            })
            .map(|p| p.name.clone())
            .collect();
        if !dependents.is_empty() {
            return Err(PackError::Conflict(format!(
                "{name} is a dependency of {}; remove those first",
                dependents.join(", ")
            )));
        }
        let audit = self.audit(
            format!("operator:{operator}"),
            "pack.removed",
            json!({ "pack": name }),
        );
        self.store.remove_pack(name, &audit).await?;
        tracing::info!(pack = %name, %operator, "pack removed");
        Ok(())
    }
}

type Records = (
    PackRecord,
    Vec<ActionRecord>,
    Vec<RuleRecord>,
    Vec<ScriptRecord>,
);

fn records(pack: &Pack, operator: &str) -> Result<Records, PackError> {
    let to_json = |value: serde_json::Result<serde_json::Value>| {
        value.map_err(|e| PackError::Invalid(format!("cannot serialize the pack: {e}")))
    };
    let record = PackRecord {
        name: pack.manifest.name.clone(),
        version: pack.manifest.version.to_string(),
        description: pack.manifest.description.clone(),
        content: to_json(serde_json::to_value(pack))?,
        installed_at: chrono::Utc::now(),
        installed_by: format!("operator:{operator}"),
    };
    let actions = pack
        .actions
        .iter()
        .map(|action| {
            Ok(ActionRecord {
                reference: action.reference(),
                pack: action.pack.clone(),
                definition: to_json(serde_json::to_value(action))?,
            })
        })
        .collect::<Result<Vec<_>, PackError>>()?;
    let rules = pack
        .rules
        .iter()
        .map(|rule| {
            Ok(RuleRecord {
                reference: format!("{}.{}", rule.pack, rule.name),
                pack: rule.pack.clone(),
                trigger: rule.trigger.clone(),
                enabled: rule.enabled,
                definition: to_json(serde_json::to_value(rule))?,
            })
        })
        .collect::<Result<Vec<_>, PackError>>()?;
    let scripts = pack
        .scripts
        .iter()
        .map(|script| ScriptRecord {
            sha256: script.sha256.clone(),
            content: script.content.clone(),
        })
        .collect();
    Ok((record, actions, rules, scripts))
}
