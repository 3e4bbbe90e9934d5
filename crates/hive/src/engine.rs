//! The rules engine: claims stored events, evaluates every enabled rule on
//! the event's trigger, and fires the matching ones through the store,
//! which applies the rule's policy atomically across replicas. Every
//! evaluation lands in the audit trail, linked to its event.
//!
//! [`Hive::plan_rule`] is shared with `ultronctl rule test`, so a test shows
//! exactly what the engine would do.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use ultron8_core::{criteria, template};
use ultron8_pack::{Action, Rule};
use ultron8_store::{EventRecord, FiringOutcome, JobOrigin, RuleFiring, RuleRecord};

use crate::actions::ActionJob;
use crate::hive::Hive;

/// Events whose rules fire through timers name their rule in the source.
const TIMER_SOURCE: &str = "timer:";
/// How long a claimed event is reserved for this replica.
const EVENT_LEASE: Duration = Duration::from_secs(60);

/// What a rule would do with an event.
#[derive(Debug, Clone, Serialize)]
pub struct RulePlan {
    pub rule: String,
    pub enabled: bool,
    pub matched: bool,
    /// Why it did not match, or what went wrong preparing the action.
    pub reasons: Vec<String>,
    pub action: String,
    /// Rendered and validated; secrets masked.
    pub parameters: Option<Value>,
    pub target: Option<String>,
    pub drones: Vec<String>,
    /// Set when the rule matched but its action cannot be prepared.
    pub error: Option<String>,
    #[serde(skip)]
    prepared: Option<Prepared>,
}

#[derive(Debug, Clone)]
struct Prepared {
    action: Action,
    policy: ultron8_core::policy::Policy,
    parameters: Map<String, Value>,
    job: ActionJobParts,
    cooldown_key: Option<String>,
    matching_fleet: u32,
}

#[derive(Debug, Clone)]
struct ActionJobParts {
    job: ultron8_store::NewJob,
    executions: Vec<ultron8_store::NewExecution>,
}

impl Hive {
    pub async fn plan_rule(
        &self,
        record: &RuleRecord,
        event_id: &str,
        payload: &Value,
        now: DateTime<Utc>,
    ) -> RulePlan {
        let mut plan = RulePlan {
            rule: record.reference.clone(),
            enabled: record.enabled,
            matched: false,
            reasons: Vec::new(),
            action: String::new(),
            parameters: None,
            target: None,
            drones: Vec::new(),
            error: None,
            prepared: None,
        };
        let rule: Rule = match serde_json::from_value(record.definition.clone()) {
            Ok(rule) => rule,
            Err(e) => {
                plan.error = Some(format!("stored rule is unreadable: {e}"));
                return plan;
            }
        };
        plan.action = rule.action.reference.clone();
        let evaluation = criteria::evaluate(&rule.criteria, payload, now);
        plan.matched = evaluation.matched;
        plan.reasons = evaluation.reasons;
        if !plan.matched {
            return plan;
        }
        match self.prepare(&rule, event_id, payload).await {
            Ok(prepared) => {
                plan.parameters = Some(Value::Object(ultron8_core::params::mask_secrets(
                    &prepared.action.parameters,
                    &prepared.parameters,
                )));
                plan.target = Some(prepared.job.job.target.clone());
                plan.drones = prepared
                    .job
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

    async fn prepare(
        &self,
        rule: &Rule,
        event_id: &str,
        payload: &Value,
    ) -> Result<Prepared, String> {
        let record = self
            .store
            .get_action(&rule.action.reference)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("action {} is not installed", rule.action.reference))?;
        let action: Action = serde_json::from_value(record.definition)
            .map_err(|e| format!("stored action is unreadable: {e}"))?;
        let rendered =
            template::render_value(&Value::Object(rule.action.parameters.clone()), payload)
                .map_err(|e| format!("parameters: {e}"))?;
        let given = match rendered {
            Value::Object(map) => map,
            _ => return Err("parameters did not render to an object".into()),
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
            rule: Some(format!("{}.{}", rule.pack, rule.name)),
            event_id: Some(event_id.to_string()),
            parameters: None,
        };
        let requester = format!("rule:{}.{}", rule.pack, rule.name);
        let ActionJob {
            job,
            executions,
            matching_fleet,
            parameters,
            ..
        } = self
            .plan_action_job(
                &action,
                &given,
                target.as_deref(),
                &requester,
                origin,
                self.config.default_ttl,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(Prepared {
            policy: rule.policy.clone(),
            action,
            parameters,
            job: ActionJobParts { job, executions },
            cooldown_key,
            matching_fleet,
        })
    }

    /// Evaluates every enabled rule on the event's trigger and fires the
    /// matching ones. Returns the errors to record on the event.
    pub async fn process_event(self: &Arc<Self>, event: &EventRecord) -> Vec<String> {
        let now = Utc::now();
        let rules = match self.store.list_rules(Some(&event.trigger)).await {
            Ok(rules) => rules,
            Err(e) => return vec![format!("cannot list rules: {e}")],
        };
        // A timer event is for the one rule whose timer fired.
        let only = event.source.strip_prefix(TIMER_SOURCE);
        let mut errors = Vec::new();
        for record in rules
            .iter()
            .filter(|r| r.enabled && only.is_none_or(|name| name == r.reference))
        {
            if self.already_decided(&event.id, &record.reference).await {
                continue;
            }
            let plan = self.plan_rule(record, &event.id, &event.payload, now).await;
            if let Some(error) = self.act_on(event, plan).await {
                errors.push(error);
            }
        }
        errors
    }

    /// Whether this rule already fired or was held for this event: a
    /// replica that died after firing but before marking the event
    /// processed leaves it to be claimed again, and the rule must not fire
    /// twice. (Claims are leases, so two replicas never hold the event at
    /// once.)
    async fn already_decided(&self, event_id: &str, rule: &str) -> bool {
        let filter = ultron8_store::AuditFilter {
            event_id: Some(event_id.to_string()),
            rule: Some(rule.to_string()),
            ..Default::default()
        };
        match self.store.list_audit(&filter).await {
            Ok(records) => records
                .iter()
                .any(|r| r.action == "rule.fired" || r.action == "rule.held"),
            Err(e) => {
                warn!(%event_id, %rule, error = %e, "cannot check whether the rule already fired; evaluating it");
                false
            }
        }
    }

    async fn act_on(self: &Arc<Self>, event: &EventRecord, plan: RulePlan) -> Option<String> {
        let mut audit = self.audit(
            "hive",
            "rule.evaluated",
            json!({ "matched": plan.matched, "reasons": plan.reasons }),
        );
        audit.event_id = Some(event.id.clone());
        audit.rule = Some(plan.rule.clone());
        audit.action_ref = Some(plan.action.clone()).filter(|a| !a.is_empty());
        if !plan.matched {
            if let Err(e) = self.store.append_audit(&audit).await {
                warn!(error = %e, "cannot record a rule evaluation");
            }
            return None;
        }
        let prepared = match (plan.prepared, plan.error) {
            (Some(prepared), _) => prepared,
            (None, error) => {
                let error = format!(
                    "{}: {}",
                    plan.rule,
                    error.unwrap_or_else(|| "cannot prepare the action".into())
                );
                audit.action = "rule.failed".into();
                audit.detail = json!({ "error": error });
                if let Err(e) = self.store.append_audit(&audit).await {
                    warn!(error = %e, "cannot record a rule failure");
                }
                warn!(event_id = %event.id, rule = %plan.rule, %error, "rule matched but cannot run");
                return Some(error);
            }
        };
        let firing = RuleFiring {
            rule: plan.rule.clone(),
            event_id: event.id.clone(),
            policy: prepared.policy.clone(),
            cooldown_key: prepared.cooldown_key.clone(),
            matching_fleet: prepared.matching_fleet,
            job: prepared.job.job.clone(),
            executions: prepared.job.executions.clone(),
            detail: json!({
                "parameters": plan.parameters,
                "target": plan.target,
                "drones": plan.drones,
                "cooldown_key": prepared.cooldown_key,
            }),
        };
        match self.store.fire_rule(&firing, Utc::now()).await {
            Ok(FiringOutcome::Fired) => {
                info!(event_id = %event.id, rule = %plan.rule, job_id = %firing.job.id, "rule fired");
                self.start_action_job(
                    &firing.job,
                    &firing.executions,
                    &prepared.action,
                    prepared.parameters,
                )
                .await;
                None
            }
            Ok(FiringOutcome::Held { reason }) => {
                warn!(event_id = %event.id, rule = %plan.rule, %reason, "rule held by its policy");
                // An escalation that is itself held must not escalate again.
                if event.trigger != "core.escalation" {
                    let payload = json!({
                        "rule": plan.rule,
                        "reason": reason,
                        "event_id": event.id,
                        "target": plan.target,
                        "action": plan.action,
                    });
                    if let Err(e) = self.ingest_event("core.escalation", payload, "hive").await {
                        warn!(error = %e, "cannot raise an escalation");
                    }
                }
                None
            }
            Err(e) => Some(format!("{}: cannot record the firing: {e}", plan.rule)),
        }
    }

    /// Claims and processes pending events until `shutdown`.
    pub async fn run_rules_engine(self: Arc<Self>, shutdown: CancellationToken) {
        let claimer = format!("hive-{}", uuid::Uuid::now_v7());
        loop {
            let wake = self.events_arrived.notified();
            match self
                .store
                .claim_pending_events(&claimer, 20, EVENT_LEASE, Utc::now())
                .await
            {
                Ok(events) if !events.is_empty() => {
                    for event in events {
                        let errors = self.process_event(&event).await;
                        let error = (!errors.is_empty()).then(|| errors.join("; "));
                        if let Err(e) = self
                            .store
                            .finish_event(&event.id, error.as_deref(), Utc::now())
                            .await
                        {
                            warn!(event_id = %event.id, error = %e, "cannot mark the event processed");
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot claim events"),
            }
            tokio::select! {
                _ = wake => {}
                // Events stored through other replicas.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Fires `core.interval` and `core.cron` rules. Each tick becomes one
    /// event, once across all replicas (the store hands each tick to one).
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        let mut next_due: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut interval = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let now = Utc::now();
            let mut timers = Vec::new();
            for trigger in ["core.interval", "core.cron"] {
                match self.store.list_rules(Some(trigger)).await {
                    Ok(rules) => timers.extend(rules.into_iter().filter(|r| r.enabled)),
                    Err(e) => warn!(error = %e, "cannot list timer rules"),
                }
            }
            next_due.retain(|name, _| timers.iter().any(|r| &r.reference == name));
            for record in timers {
                let Some(schedule) = serde_json::from_value::<Rule>(record.definition.clone())
                    .ok()
                    .and_then(|r| r.schedule)
                else {
                    continue;
                };
                let due = match next_due.get(&record.reference) {
                    Some(due) => *due,
                    None => match schedule.next_after(now) {
                        Ok(due) => {
                            next_due.insert(record.reference.clone(), due);
                            continue;
                        }
                        Err(e) => {
                            warn!(rule = %record.reference, error = %e, "cannot schedule timer");
                            continue;
                        }
                    },
                };
                if now < due {
                    continue;
                }
                match schedule.next_after(now) {
                    Ok(next) => next_due.insert(record.reference.clone(), next),
                    Err(_) => next_due.remove(&record.reference),
                };
                match self.store.claim_timer_tick(&record.reference, due).await {
                    Ok(true) => {
                        let payload = json!({ "fired_at": due.to_rfc3339(), "schedule": schedule });
                        let source = format!("{TIMER_SOURCE}{}", record.reference);
                        if let Err(e) = self.ingest_event(&record.trigger, payload, &source).await {
                            warn!(rule = %record.reference, error = %e, "cannot store a timer event");
                        }
                    }
                    Ok(false) => {} // another replica fired this tick
                    Err(e) => {
                        warn!(rule = %record.reference, error = %e, "cannot claim a timer tick")
                    }
                }
            }
        }
    }
}
