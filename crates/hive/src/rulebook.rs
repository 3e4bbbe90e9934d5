//! Rules as the engine runs them: read once per catalog version, their
//! actions resolved, grouped by trigger ([`RuleBook`]), and planned against
//! an event and a fleet ([`CompiledRule`]), writing nothing. The engine
//! (`engine.rs`), `rule test` and `event get --explain` all plan through
//! here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use ultron8_core::ids::{DroneId, EventId};
use ultron8_core::{criteria, template};
use ultron8_pack::{Action, Rule};
use ultron8_store::{ActionRecord, JobOrigin, NewExecution, NewJob, RuleRecord};

use crate::actor::Actor;
use crate::planning::{ActionJob, Fleet, plan_action_job};

/// A rule as the engine runs it: read once per catalog version, its action
/// resolved.
#[derive(Debug)]
pub struct CompiledRule {
    pub reference: String,
    pub enabled: bool,
    pub rule: Rule,
    /// The action the rule runs, or why it cannot run (not installed).
    action: Result<Action, String>,
}

impl CompiledRule {
    /// Compiles a stored rule; `action` looks its action up.
    pub fn compile(
        record: &RuleRecord,
        action: impl FnOnce(&str) -> Option<Action>,
    ) -> CompiledRule {
        let rule = record.definition.clone();
        let reference = &rule.action.reference;
        CompiledRule {
            reference: record.reference.clone(),
            enabled: record.enabled,
            action: action(reference).ok_or_else(|| format!("action {reference} is not installed")),
            rule,
        }
    }

    pub(crate) fn needs_drones(&self) -> bool {
        self.action.as_ref().is_ok_and(Action::runs_on_drones)
    }

    /// Renders the rule's parameters, target and cooldown key from the
    /// event and plans the job against `fleet`. Nothing is written.
    pub(crate) fn prepare(
        &self,
        event_id: &EventId,
        payload: &Value,
        fleet: &Fleet,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Prepared, String> {
        let action = self.action.as_ref().map_err(Clone::clone)?;
        let rule = &self.rule;
        let rendered =
            template::render_value(&Value::Object(rule.action.parameters.clone()), payload)
                .map_err(|e| format!("parameters: {e}"))?;
        let Value::Object(given) = rendered else {
            return Err("parameters did not render to an object".into());
        };
        let target = match &rule.action.target {
            Some(t) => Some(template::render_str(t, payload).map_err(|e| format!("target: {e}"))?),
            None => None,
        };
        let cooldown_key = match &rule.policy.cooldown {
            Some(c) => Some(
                template::render_str(&c.key, payload).map_err(|e| format!("cooldown key: {e}"))?,
            ),
            None => None,
        };
        let origin = JobOrigin {
            action_ref: Some(action.reference()),
            rule: Some(self.reference.clone()),
            event_id: Some(event_id.clone()),
            parameters: None,
        };
        let requester = Actor::Rule(self.reference.clone()).to_string();
        let ActionJob {
            job,
            executions,
            matching_fleet,
            parameters,
            ..
        } = plan_action_job(
            action,
            &given,
            target.as_deref(),
            &requester,
            origin,
            ttl,
            fleet,
            now,
        )
        .map_err(|e| e.to_string())?;
        Ok(Prepared {
            action: action.clone(),
            policy: rule.policy.clone(),
            parameters,
            job,
            executions,
            cooldown_key,
            matching_fleet,
        })
    }

    /// What the rule would do with an event: the evaluation with its
    /// reasons and, if it matches, the prepared job. `rule test` and
    /// `event get --explain` come through here; the engine takes the same
    /// two steps without the reasons (`criteria::matches`, then
    /// [`CompiledRule::prepare`]).
    pub(crate) fn plan(
        &self,
        event_id: &EventId,
        payload: &Value,
        fleet: &Fleet,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> RulePlan {
        let evaluation = criteria::evaluate(&self.rule.criteria, payload, now);
        let mut plan = RulePlan {
            rule: self.reference.clone(),
            enabled: self.enabled,
            matched: evaluation.matched,
            reasons: evaluation.reasons,
            action: self.rule.action.reference.clone(),
            parameters: None,
            target: None,
            drones: Vec::new(),
            error: None,
            prepared: None,
        };
        if !plan.matched {
            return plan;
        }
        match self.prepare(event_id, payload, fleet, ttl, now) {
            Ok(prepared) => {
                plan.parameters = Some(Value::Object(ultron8_core::params::mask_secrets(
                    &prepared.action.parameters,
                    &prepared.parameters,
                )));
                plan.target = Some(prepared.job.target.clone());
                plan.drones = prepared
                    .executions
                    .iter()
                    .map(|e| e.drone_id.clone())
                    .collect();
                plan.prepared = Some(prepared);
            }
            Err(error) => plan.error = Some(error),
        }
        plan
    }
}

/// Every rule, compiled, by trigger, as of one catalog version.
#[derive(Debug, Default)]
pub struct RuleBook {
    pub(crate) version: i64,
    by_trigger: HashMap<String, Vec<Arc<CompiledRule>>>,
}

impl RuleBook {
    /// Compiles the catalog. The store decoded every rule and action when
    /// it read them (a stored one that does not decode fails the read), so
    /// every rule is in the book; one whose action is not installed is
    /// kept, and says so when it matches.
    pub fn compile(version: i64, rules: &[RuleRecord], actions: Vec<ActionRecord>) -> RuleBook {
        let actions: HashMap<String, Action> = actions
            .into_iter()
            .map(|record| (record.reference, record.definition))
            .collect();
        let mut by_trigger: HashMap<String, Vec<Arc<CompiledRule>>> = HashMap::new();
        for record in rules {
            let rule = CompiledRule::compile(record, |reference| actions.get(reference).cloned());
            by_trigger
                .entry(record.trigger.clone())
                .or_default()
                .push(Arc::new(rule));
        }
        RuleBook {
            version,
            by_trigger,
        }
    }

    /// The rules on `trigger`, enabled or not, ordered by reference.
    pub fn rules_for(&self, trigger: &str) -> &[Arc<CompiledRule>] {
        self.by_trigger.get(trigger).map_or(&[], Vec::as_slice)
    }
}

/// The compiled rules this replica runs, reloaded when the store's catalog
/// version moves (a pack installed, upgraded or removed, a rule enabled or
/// disabled, here or on another replica).
#[derive(Debug, Default)]
pub struct RuleCache {
    current: RwLock<Option<Arc<RuleBook>>>,
}

impl RuleCache {
    pub(crate) fn get(&self) -> Option<Arc<RuleBook>> {
        // A poisoned lock only means a panic elsewhere while swapping an
        // Arc; the value is still whole.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, book: Arc<RuleBook>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(book);
    }
}

/// What a rule would do with an event.
#[derive(Debug, Clone, Serialize)]
pub struct RulePlan {
    pub rule: String,
    pub enabled: bool,
    pub matched: bool,
    /// Why it did not match.
    pub reasons: Vec<String>,
    pub action: String,
    /// Rendered and validated; secrets masked.
    pub parameters: Option<Value>,
    pub target: Option<String>,
    pub drones: Vec<DroneId>,
    /// Set when the rule matched but its action cannot be prepared.
    pub error: Option<String>,
    #[serde(skip)]
    prepared: Option<Prepared>,
}

#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) action: Action,
    pub(crate) policy: ultron8_core::policy::Policy,
    pub(crate) parameters: Map<String, Value>,
    pub(crate) job: NewJob,
    pub(crate) executions: Vec<NewExecution>,
    pub(crate) cooldown_key: Option<String>,
    pub(crate) matching_fleet: u32,
}

/// The plan of a rule that could not be evaluated at all.
pub(crate) fn failed_plan(record: &RuleRecord, error: String) -> RulePlan {
    RulePlan {
        rule: record.reference.clone(),
        enabled: record.enabled,
        matched: false,
        reasons: Vec::new(),
        action: String::new(),
        parameters: None,
        target: None,
        drones: Vec::new(),
        error: Some(error),
        prepared: None,
    }
}

/// When each rule last escalated a failure, so that a rule failing on
/// every event of a storm escalates once per window.
#[derive(Debug, Default)]
pub struct EscalationLimiter {
    last: std::sync::Mutex<HashMap<String, DateTime<Utc>>>,
}

impl EscalationLimiter {
    /// Whether `rule` may escalate at `now`, given a window of `window`
    /// between escalations; if so, `now` is remembered as its last.
    pub fn due(&self, rule: &str, window: std::time::Duration, now: DateTime<Utc>) -> bool {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let due = last
            .get(rule)
            .is_none_or(|at| now < *at || now - *at >= window);
        if due {
            last.insert(rule.to_string(), now);
        }
        due
    }
}

#[cfg(test)]
mod escalation_tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_rule_escalates_once_per_window_and_rules_do_not_share_one() {
        let limiter = EscalationLimiter::default();
        let t = |s: i64| Utc.timestamp_opt(1_000_000 + s, 0).single().expect("time");
        let window = std::time::Duration::from_secs(300);
        assert!(limiter.due("web.restart", window, t(0)));
        assert!(!limiter.due("web.restart", window, t(1)));
        assert!(!limiter.due("web.restart", window, t(299)));
        assert!(limiter.due("db.failover", window, t(1)));
        assert!(limiter.due("web.restart", window, t(300)));
        assert!(!limiter.due("web.restart", window, t(301)));
    }
}
