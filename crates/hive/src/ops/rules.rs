//! Rules: reading them, switching them on and off, and testing an event
//! against them without running anything.

use chrono::Utc;
use serde_json::{Value, json};
use ultron8_core::audit::AuditVerb;
use ultron8_core::echo::elide;
use ultron8_core::ids::EventId;
use ultron8_store::RuleRecord;

use crate::actor::Actor;
use crate::error::HiveError;
use crate::hive::Hive;
use crate::rulebook::RulePlan;

impl Hive {
    /// Every rule, or those on one trigger type.
    pub async fn list_rules(&self, trigger: Option<&str>) -> Result<Vec<RuleRecord>, HiveError> {
        Ok(self.store.list_rules(trigger).await?)
    }

    pub async fn get_rule(&self, name: &str) -> Result<RuleRecord, HiveError> {
        self.store.get_rule(name).await?.ok_or_else(|| {
            HiveError::not_found(format!(
                "no rule named {name}; rules are `pack.name`, see `ultronctl rule list`"
            ))
        })
    }

    /// Enables or disables a rule (audited) and returns it as it is now.
    pub async fn set_rule_enabled(
        &self,
        actor: &Actor,
        name: &str,
        enabled: bool,
    ) -> Result<RuleRecord, HiveError> {
        let verb = if enabled {
            AuditVerb::RuleEnabled
        } else {
            AuditVerb::RuleDisabled
        };
        let mut audit = self.audit(actor.clone(), verb, json!({}));
        audit.rule = Some(name.to_string());
        let found = self.store.set_rule_enabled(name, enabled, &audit).await?;
        if !found {
            return Err(HiveError::not_found(format!(
                "no rule named {}; see `ultronctl rule list`",
                elide(name)
            )));
        }
        self.store
            .get_rule(name)
            .await?
            .ok_or_else(|| HiveError::not_found(format!("rule {name} vanished")))
    }

    /// What the rules on `trigger` (or the one rule named) would do with
    /// an event carrying `payload`: which match, why the others do not,
    /// and what would run where. Nothing is written or run.
    pub async fn test_rules(
        &self,
        trigger: &str,
        rule: Option<&str>,
        payload: &Value,
    ) -> Result<Vec<RulePlan>, HiveError> {
        let rules = match rule {
            None => self.store.list_rules(Some(trigger)).await?,
            Some(name) => {
                let record = self.store.get_rule(name).await?;
                vec![record.ok_or_else(|| {
                    HiveError::not_found(format!("no rule named {}", elide(name)))
                })?]
            }
        };
        // The event is not stored: it has no id of its own.
        let event_id = EventId::new("test");
        Ok(self
            .plan_rules(&rules, &event_id, payload, Utc::now())
            .await)
    }
}
