//! The fleet: discovery sources (added and removed by admins, audited) and
//! the views of the inventory they feed (`ultronctl fleet summary`,
//! `services`, `health`, `top`; `target list`). The figures and decisions
//! are `ultron8_core::discovery`'s; the refreshing is `crate::discovery`'s.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tracing::info;
use ultron8_core::audit::AuditVerb;
use ultron8_core::discovery::{
    Instance, InstanceStatus, ServiceSummary, SortKey, SourceSpec, below_min_healthy,
    check_source_name, sort_instances, summarize_services,
};
use ultron8_core::echo::quote;
use ultron8_store::{NewSource, SourceRecord, TargetFilter};

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;
use crate::ops::lookup::{closest, did_you_mean};

/// The built-in source of the drones (`[fleet] drones`).
pub const DRONES_SOURCE: &str = "drones";

/// Shortest refresh interval of a source.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Which instances a fleet view shows, in which order, which page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceQuery {
    pub source: Option<String>,
    pub service: Option<String>,
    pub status: Option<InstanceStatus>,
    pub sort: SortKey,
    pub descending: bool,
    pub offset: usize,
    /// None: all.
    pub limit: Option<usize>,
}

/// A page of instances and how many match over all pages.
#[derive(Debug, Clone, PartialEq)]
pub struct InstancePage {
    pub instances: Vec<Instance>,
    pub total: usize,
}

/// Every service and those with fewer healthy instances than asked.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetHealth {
    pub services: Vec<ServiceSummary>,
    pub flagged: Vec<String>,
}

impl Hive {
    /// Adds source `name`; it is refreshed at once, then every `interval`.
    pub async fn add_source(
        &self,
        actor: &Actor,
        name: &str,
        spec: SourceSpec,
        interval: Option<Duration>,
    ) -> Result<SourceRecord, HiveError> {
        check_source_name(name).map_err(HiveError::invalid_argument)?;
        spec.check()
            .map_err(|problem| HiveError::invalid_argument(format!("source {name}: {problem}")))?;
        let interval = interval.unwrap_or(ultron8_core::discovery::DEFAULT_INTERVAL);
        if interval < MIN_INTERVAL {
            return Err(HiveError::invalid_argument(format!(
                "source {name}: the interval must be at least {}; got {}",
                humantime::format_duration(MIN_INTERVAL),
                humantime::format_duration(interval)
            )));
        }
        let now = Utc::now();
        let mut audit = self.audit(
            actor.clone(),
            AuditVerb::SourceAdded,
            json!({
                "name": name,
                "spec": spec,
                "interval_ms": u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            }),
        );
        audit.at = now;
        let source = NewSource {
            name: name.to_string(),
            spec,
            interval,
            origin: "operator".to_string(),
            created_at: now,
            created_by: actor.to_string(),
        };
        if !self.store.create_source(&source, &audit).await? {
            return Err(HiveError::failed_precondition(format!(
                "source {name} exists already; remove it first to change it"
            )));
        }
        info!(source = name, %actor, kind = %source.spec.kind(), "source added");
        self.store
            .get_source(name)
            .await?
            .ok_or_else(|| HiveError::internal(format!("source {name} vanished once added")))
    }

    /// Makes the sources of pack `pack` (origin `pack:<pack>`, named
    /// `<pack>.<sensor>`) exactly `declared`: adds the new ones, removes
    /// those no longer declared, and replaces those whose spec or interval
    /// changed. Called after the pack is installed or removed, each change
    /// in a transaction of its own with its audit record (so not atomic
    /// with the install: a hive that stops in between converges at the
    /// next install of the pack). A name an operator's source already holds
    /// is left to it, with a warning.
    pub async fn sync_pack_sources(
        &self,
        actor: &Actor,
        pack: &str,
        declared: &[ultron8_pack::discovery_source::SourceDecl],
    ) -> Result<(), HiveError> {
        let origin = format!("pack:{pack}");
        let all = self.store.list_sources().await?;
        let same = |record: &SourceRecord, decl: &ultron8_pack::discovery_source::SourceDecl| {
            record.name == format!("{pack}.{}", decl.name)
                && record.spec == decl.spec
                && record.interval == decl.interval
        };
        for record in all.iter().filter(|s| s.origin == origin) {
            if !declared.iter().any(|decl| same(record, decl)) {
                let audit = self.audit(
                    actor.clone(),
                    AuditVerb::SourceRemoved,
                    json!({ "name": record.name, "pack": pack }),
                );
                self.store.remove_source(&record.name, &audit).await?;
                info!(source = %record.name, pack, "pack source removed");
            }
        }
        for decl in declared {
            if all
                .iter()
                .any(|record| record.origin == origin && same(record, decl))
            {
                continue;
            }
            let name = format!("{pack}.{}", decl.name);
            let now = Utc::now();
            let mut audit = self.audit(
                actor.clone(),
                AuditVerb::SourceAdded,
                json!({
                    "name": name,
                    "pack": pack,
                    "spec": decl.spec,
                    "interval_ms": u64::try_from(decl.interval.as_millis()).unwrap_or(u64::MAX),
                }),
            );
            audit.at = now;
            let source = NewSource {
                name: name.clone(),
                spec: decl.spec.clone(),
                interval: decl.interval,
                origin: origin.clone(),
                created_at: now,
                created_by: actor.to_string(),
            };
            if self.store.create_source(&source, &audit).await? {
                info!(source = %name, pack, "pack source added");
            } else {
                tracing::warn!(source = %name, pack, "a source of this name exists and is not the pack's; the pack's is not added");
            }
        }
        Ok(())
    }

    /// Creates the built-in `drones` source when `[fleet] drones` asks for
    /// it and there is none of that name (see [`crate::config::FleetConfig`]).
    pub async fn ensure_drones_source(&self) -> Result<(), HiveError> {
        if !self.config.fleet.drones || self.store.get_source(DRONES_SOURCE).await?.is_some() {
            return Ok(());
        }
        let spec = SourceSpec::Drones {
            target: "*".to_string(),
            service_label: "service".to_string(),
        };
        let now = Utc::now();
        let mut audit = self.audit(
            Actor::Hive,
            AuditVerb::SourceAdded,
            json!({ "name": DRONES_SOURCE, "spec": spec, "interval_ms": 30_000 }),
        );
        audit.at = now;
        let source = NewSource {
            name: DRONES_SOURCE.to_string(),
            spec,
            interval: ultron8_core::discovery::DEFAULT_INTERVAL,
            origin: "hive".to_string(),
            created_at: now,
            created_by: Actor::Hive.to_string(),
        };
        // Another replica starting at the same time may win; either is fine.
        if self.store.create_source(&source, &audit).await? {
            info!(
                source = DRONES_SOURCE,
                "built-in drones source added ([fleet] drones = false to go without)"
            );
        }
        Ok(())
    }

    /// Every source, by name.
    pub async fn list_sources(&self) -> Result<Vec<SourceRecord>, HiveError> {
        Ok(self.store.list_sources().await?)
    }

    /// Removes source `name` and the instances it listed.
    pub async fn remove_source(&self, actor: &Actor, name: &str) -> Result<(), HiveError> {
        let audit = self.audit(
            actor.clone(),
            AuditVerb::SourceRemoved,
            json!({ "name": name }),
        );
        if !self.store.remove_source(name, &audit).await? {
            let names: Vec<String> = self
                .store
                .list_sources()
                .await
                .map(|all| all.into_iter().map(|s| s.name).collect())
                .unwrap_or_default();
            let close = closest(name, names.iter().map(String::as_str), 3);
            return Err(HiveError::not_found(format!(
                "no source named {}{}",
                quote(name),
                did_you_mean(&close)
            )));
        }
        info!(source = name, %actor, "source removed");
        Ok(())
    }

    /// The instances `query` selects, sorted, one page of them.
    pub async fn fleet_instances(&self, query: &InstanceQuery) -> Result<InstancePage, HiveError> {
        let mut instances = self
            .store
            .list_targets(&TargetFilter {
                source: query.source.clone(),
                service: query.service.clone(),
            })
            .await?;
        if let Some(status) = query.status {
            instances.retain(|instance| instance.status == status);
        }
        sort_instances(&mut instances, query.sort, query.descending);
        let total = instances.len();
        let page: Vec<Instance> = instances
            .into_iter()
            .skip(query.offset)
            .take(query.limit.unwrap_or(usize::MAX))
            .collect();
        Ok(InstancePage {
            instances: page,
            total,
        })
    }

    /// Per-service counts and averages, by service.
    pub async fn fleet_services(
        &self,
        source: Option<String>,
        service: Option<String>,
    ) -> Result<Vec<ServiceSummary>, HiveError> {
        let instances = self
            .store
            .list_targets(&TargetFilter { source, service })
            .await?;
        Ok(summarize_services(&instances))
    }

    /// Every service, and those with fewer than `min_healthy` healthy
    /// instances.
    pub async fn fleet_health(&self, min_healthy: usize) -> Result<FleetHealth, HiveError> {
        if min_healthy == 0 {
            return Err(HiveError::invalid_argument(
                "--min-healthy must be at least 1: no service has fewer than 0 healthy instances",
            ));
        }
        let services = self.fleet_services(None, None).await?;
        let flagged = below_min_healthy(&services, min_healthy)
            .into_iter()
            .map(|s| s.service.clone())
            .collect();
        Ok(FleetHealth { services, flagged })
    }
}
