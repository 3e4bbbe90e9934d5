//! Packs: installing, reading and removing them, and the scripts drones
//! fetch from them. Validation is all-or-nothing: `ultron8_pack::load`
//! reports every problem, and only a pack without any is written, in one
//! store transaction.

use std::collections::BTreeMap;

use serde_json::json;
use ultron8_core::audit::AuditVerb;
use ultron8_core::echo::elide;
use ultron8_pack::{Action, Installed, Pack, PackFiles};
use ultron8_store::{ActionRecord, PackRecord, RuleRecord, ScriptRecord};

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;

/// An installed pack: its record (which holds the validated pack) and the
/// versions it replaced (newest first).
#[derive(Debug, Clone)]
pub struct PackView {
    pub record: PackRecord,
    pub history: Vec<PackRecord>,
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
    async fn installed_snapshot(&self) -> Result<InstalledSnapshot, HiveError> {
        let actions = self
            .store
            .list_actions(None)
            .await?
            .into_iter()
            .map(|record| (record.reference, record.definition))
            .collect();
        let versions = self
            .store
            .list_packs()
            .await?
            .into_iter()
            .map(|pack| (pack.name, pack.content.manifest.version))
            .collect();
        Ok(InstalledSnapshot { actions, versions })
    }

    /// Validates and installs a pack from a `.tar.gz`. Returns it and the
    /// version it replaced. A pack with problems is refused with all of
    /// them in the error's detail, and nothing is written.
    pub async fn install_pack(
        &self,
        actor: &Actor,
        tarball: &[u8],
    ) -> Result<(PackView, Option<String>), HiveError> {
        let files = ultron8_pack::read_tarball(tarball)
            .map_err(|e| HiveError::invalid_argument(format!("cannot read the pack: {e}")))?;
        let installed = self.installed_snapshot().await?;
        let pack = ultron8_pack::load(&files, &installed).map_err(|problems| {
            HiveError::pack_refused(problems.iter().map(ToString::to_string).collect())
        })?;
        let name = pack.manifest.name.clone();
        if let Some(current) = installed.versions.get(&name)
            && *current > pack.manifest.version
        {
            return Err(HiveError::failed_precondition(format!(
                "{name} {current} is installed; refusing to downgrade to {}. Remove it first (`ultronctl pack remove {name}`) if you mean it",
                pack.manifest.version
            )));
        }
        self.check_dependents_keep_working(&pack).await?;
        let sources = pack.sources.clone();
        let (record, actions, mut rules, scripts) = records(pack, &files, actor);
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
            actor.clone(),
            AuditVerb::PackInstalled,
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
        tracing::info!(pack = %name, version = %record.version, previous = ?previous, %actor, "pack installed");
        self.sync_pack_sources(actor, &name, &sources).await?;
        Ok((self.pack_view(record).await?, previous))
    }

    /// Refuses an upgrade that drops an action the rules of an installed
    /// pack depending on this one still use.
    async fn check_dependents_keep_working(&self, pack: &Pack) -> Result<(), HiveError> {
        let name = &pack.manifest.name;
        let prefix = format!("{name}.");
        let mut broken = Vec::new();
        for other in self.store.list_packs().await? {
            let other = other.content;
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
            Err(HiveError::failed_precondition(format!(
                "{name} {} drops actions that installed packs use: {}; upgrade or remove those first",
                pack.manifest.version,
                broken.join(", ")
            )))
        }
    }

    pub async fn remove_pack(&self, actor: &Actor, name: &str) -> Result<(), HiveError> {
        let packs = self.store.list_packs().await?;
        if !packs.iter().any(|p| p.name == name) {
            return Err(HiveError::not_found(format!(
                "no pack named {name}; see `ultronctl pack list`"
            )));
        }
        let dependents: Vec<String> = packs
            .iter()
            .filter(|p| p.name != name)
            .filter(|p| p.content.manifest.dependencies.iter().any(|d| d == name))
            .map(|p| p.name.clone())
            .collect();
        if !dependents.is_empty() {
            return Err(HiveError::failed_precondition(format!(
                "{name} is a dependency of {}; remove those first",
                dependents.join(", ")
            )));
        }
        let audit = self.audit(
            actor.clone(),
            AuditVerb::PackRemoved,
            json!({ "pack": name }),
        );
        self.store.remove_pack(name, &audit).await?;
        tracing::info!(pack = %name, %actor, "pack removed");
        self.sync_pack_sources(actor, name, &[]).await?;
        Ok(())
    }

    pub async fn list_packs(&self) -> Result<Vec<PackView>, HiveError> {
        let mut views = Vec::new();
        for record in self.store.list_packs().await? {
            views.push(self.pack_view(record).await?);
        }
        Ok(views)
    }

    pub async fn get_pack(&self, name: &str) -> Result<PackView, HiveError> {
        let record = self.store.get_pack(name).await?.ok_or_else(|| {
            HiveError::not_found(format!(
                "no pack named {}; see `ultronctl pack list`",
                elide(name)
            ))
        })?;
        self.pack_view(record).await
    }

    async fn pack_view(&self, record: PackRecord) -> Result<PackView, HiveError> {
        let history = self.store.pack_history(&record.name).await?;
        Ok(PackView { record, history })
    }

    /// A pack script by its SHA-256, for a drone about to run it.
    pub async fn fetch_script(&self, sha256: &str) -> Result<Vec<u8>, HiveError> {
        let sha256 = sha256.to_ascii_lowercase();
        self.store.get_script(&sha256).await?.ok_or_else(|| {
            HiveError::not_found(format!(
                "no script with SHA-256 {sha256}; was its pack removed?"
            ))
        })
    }
}

type Records = (
    PackRecord,
    Vec<ActionRecord>,
    Vec<RuleRecord>,
    Vec<ScriptRecord>,
);

/// What installing `pack` (read from `files`) writes: the pack (whose
/// record keeps it whole), its actions and rules (each rule with its file's
/// text, which `ultronctl rule get` shows), and its scripts.
fn records(pack: Pack, files: &PackFiles, actor: &Actor) -> Records {
    let actions = pack
        .actions
        .iter()
        .map(|action| ActionRecord {
            reference: action.reference(),
            pack: action.pack.clone(),
            definition: action.clone(),
        })
        .collect();
    let rules = pack
        .rules
        .iter()
        .map(|rule| RuleRecord {
            reference: rule.reference(),
            pack: rule.pack.clone(),
            trigger: rule.trigger.clone(),
            enabled: rule.enabled,
            definition: rule.clone(),
            // The loader named the file after the rule; it is UTF-8 YAML.
            source: files
                .get(&format!("rules/{}.yaml", rule.name))
                .map(|text| String::from_utf8_lossy(text).into_owned()),
        })
        .collect();
    let scripts = pack
        .scripts
        .iter()
        .map(|script| ScriptRecord {
            sha256: script.sha256.clone(),
            content: script.content.clone(),
        })
        .collect();
    let record = PackRecord {
        name: pack.manifest.name.clone(),
        version: pack.manifest.version.to_string(),
        description: pack.manifest.description.clone(),
        installed_at: chrono::Utc::now(),
        installed_by: actor.to_string(),
        content: pack,
    };
    (record, actions, rules, scripts)
}
