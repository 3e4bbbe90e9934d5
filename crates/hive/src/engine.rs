//! The rules engine: claims stored events in batches, evaluates the rules
//! on each event's trigger, and fires the matching ones through the store,
//! which applies each rule's policy atomically across replicas.
//!
//! What an event costs does not grow with the rules that do not match it
//! nor with the history stored:
//!
//! - Rules are compiled once per catalog version ([`RuleBook`]): read,
//!   their actions resolved, grouped by trigger. A batch costs one read of
//!   the catalog's version to know whether to reload.
//! - Criteria are evaluated in memory. A miss writes nothing; its reasons
//!   are recomputed on demand by `ultronctl rule test` and
//!   `ultronctl event get --explain`, which call [`Hive::plan_rules`], the
//!   same evaluation the engine runs.
//! - The fleet is read once per batch, and only if a matching rule's action
//!   runs on drones.
//! - The batch's firings are decided in one store transaction
//!   ([`ultron8_store::Store::fire_rules`]); the store keeps "a rule fires
//!   at most once per event" with a primary key, so a reclaimed event never
//!   fires a rule twice.
//! - The batch's outcomes (state, error, the rules that matched) are
//!   written together, in one transaction: the one record of each event's
//!   evaluation.
//! - Dispatch of the fired jobs runs while the next batch is evaluated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use ultron8_core::audit::AuditVerb;
use ultron8_core::criteria;
use ultron8_core::ids::EventId;
use ultron8_pack::Action;
use ultron8_store::{EventOutcome, EventRecord, FiringOutcome, RuleFiring, RuleRecord, StoreError};

use crate::actor::Actor;
use crate::hive::Hive;
use crate::metrics::{EscalationCause, RuleCounts, StoreCall};
use crate::planning::Fleet;
use crate::rulebook::{CompiledRule, Prepared, RuleBook, RulePlan, failed_plan};

/// Events whose rules fire through timers name their rule in the source.
const TIMER_SOURCE: &str = "timer:";
/// How long a claimed event is reserved for this replica.
const EVENT_LEASE: Duration = Duration::from_secs(60);
/// Events claimed and evaluated together: their firings share one store
/// transaction and their outcomes one statement.
const BATCH: u32 = 200;
/// The escalation trigger; an escalation that is itself held must not
/// escalate again.
const ESCALATION: &str = "core.escalation";
/// How often a failing rule without a cooldown may escalate.
pub const FAILURE_ESCALATION_WINDOW: Duration = Duration::from_secs(300);

/// A matched rule's firing on its way to the store.
struct Pending {
    /// Index of the event in the batch.
    event: usize,
    firing: RuleFiring,
    action: Action,
    parameters: Map<String, Value>,
}

/// Fired jobs of a batch, dispatched while the next batch is evaluated.
type Dispatching = tokio::task::JoinHandle<()>;

impl Hive {
    /// The compiled rules, reloaded if the catalog changed since they were
    /// compiled.
    pub async fn rule_book(&self) -> Result<Arc<RuleBook>, StoreError> {
        let version = self.store.catalog_version().await?;
        if let Some(book) = self.rules.get()
            && book.version == version
        {
            return Ok(book);
        }
        // Read after the version: a change committed in between makes the
        // book newer than its number, and the next look reloads it again.
        let rules = self.store.list_rules(None).await?;
        let actions = self.store.list_actions(None).await?;
        let book = Arc::new(RuleBook::compile(version, &rules, actions));
        self.metrics
            .declare_rules(rules.iter().map(|r| r.reference.as_str()));
        info!(
            catalog_version = version,
            rules = rules.len(),
            "rules compiled"
        );
        self.rules.set(book.clone());
        Ok(book)
    }

    /// What each of `records` would do with an event carrying `payload`:
    /// the same evaluation the engine runs, writing nothing. The rules and
    /// the fleet are read once for all of them.
    pub async fn plan_rules(
        &self,
        records: &[RuleRecord],
        event_id: &EventId,
        payload: &Value,
        now: DateTime<Utc>,
    ) -> Vec<RulePlan> {
        let book = match self.rule_book().await {
            Ok(book) => book,
            Err(e) => {
                let error = format!("cannot read the rules: {e}");
                return records
                    .iter()
                    .map(|r| failed_plan(r, error.clone()))
                    .collect();
            }
        };
        let compiled: Vec<Option<Arc<CompiledRule>>> = records
            .iter()
            .map(|record| {
                book.rules_for(&record.trigger)
                    .iter()
                    .find(|r| r.reference == record.reference)
                    .cloned()
            })
            .collect();
        let fleet = if compiled.iter().flatten().any(|r| r.needs_drones()) {
            match Fleet::load(&*self.store).await {
                Ok(fleet) => Some(fleet),
                Err(e) => {
                    let error = e.to_string();
                    return records
                        .iter()
                        .map(|r| failed_plan(r, error.clone()))
                        .collect();
                }
            }
        } else {
            None
        };
        let fleet = fleet.unwrap_or_default();
        records
            .iter()
            .zip(compiled)
            .map(|(record, rule)| match rule {
                Some(rule) => rule.plan(event_id, payload, &fleet, self.config.default_ttl, now),
                // The book is read after the records: a pack installed or
                // removed in between took this rule away (or moved it to
                // another trigger).
                None => failed_plan(
                    record,
                    format!(
                        "rule {} was changed or removed meanwhile; try again",
                        record.reference
                    ),
                ),
            })
            .collect()
    }

    /// Evaluates a claimed batch and fires what matched. Returns each
    /// event's outcome (to record), and the dispatch of the fired jobs.
    async fn process_batch(
        self: &Arc<Self>,
        events: &[EventRecord],
        book: &RuleBook,
    ) -> (Vec<EventOutcome>, Dispatching) {
        let now = Utc::now();
        let mut outcomes: Vec<EventOutcome> = events
            .iter()
            .map(|event| EventOutcome {
                id: event.id.clone(),
                error: None,
                matched_rules: Vec::new(),
            })
            .collect();
        let mut errors: Vec<Vec<String>> = vec![Vec::new(); events.len()];
        let mut fleet: Option<Fleet> = None;
        let mut pending: Vec<Pending> = Vec::new();
        let mut counts = RuleCounts::default();

        for (index, event) in events.iter().enumerate() {
            // A timer event is for the one rule whose timer fired.
            let only = event.source.strip_prefix(TIMER_SOURCE);
            for rule in book
                .rules_for(&event.trigger)
                .iter()
                .filter(|r| r.enabled && only.is_none_or(|name| name == r.reference))
            {
                RuleCounts::add(&mut counts.evaluations, &rule.reference);
                if !criteria::matches(&rule.rule.criteria, &event.payload, now) {
                    continue;
                }
                outcomes[index].matched_rules.push(rule.reference.clone());
                if fleet.is_none() && rule.needs_drones() {
                    match Fleet::load(&*self.store).await {
                        Ok(loaded) => fleet = Some(loaded),
                        Err(e) => {
                            RuleCounts::add(&mut counts.failures, &rule.reference);
                            errors[index].push(format!("{}: {e}", rule.reference));
                            continue;
                        }
                    }
                }
                let fleet = fleet.get_or_insert_with(Fleet::default);
                match rule.prepare(
                    &event.id,
                    &event.payload,
                    fleet,
                    self.config.default_ttl,
                    now,
                ) {
                    Ok(prepared) => pending.push(Pending {
                        event: index,
                        firing: firing(rule, event, &prepared),
                        action: prepared.action,
                        parameters: prepared.parameters,
                    }),
                    Err(error) => {
                        RuleCounts::add(&mut counts.failures, &rule.reference);
                        let error = format!("{}: {error}", rule.reference);
                        self.record_rule_failure(event, rule, &error, now).await;
                        errors[index].push(error);
                    }
                }
            }
        }

        let decided = self.decide(&pending, now).await;
        let mut fired = Vec::new();
        for (item, result) in pending.into_iter().zip(decided) {
            let event = &events[item.event];
            let rule = &item.firing.rule;
            match result {
                Ok(FiringOutcome::Fired) => {
                    RuleCounts::add(&mut counts.firings, rule);
                    info!(event_id = %event.id, %rule, job_id = %item.firing.job.id, "rule fired");
                    fired.push(item);
                }
                Ok(FiringOutcome::Held { reason }) => {
                    RuleCounts::add(&mut counts.holds, rule);
                    warn!(event_id = %event.id, %rule, %reason, "rule held by its policy");
                    if event.trigger != ESCALATION {
                        self.escalate(
                            EscalationCause::Held,
                            json!({
                                "rule": item.firing.rule,
                                "reason": reason,
                                "event_id": event.id,
                                "target": item.firing.job.target,
                                "action": item.firing.job.origin.action_ref,
                            }),
                        )
                        .await;
                    }
                }
                Ok(FiringOutcome::AlreadyDecided) => {
                    debug!(event_id = %event.id, %rule, "already decided before this claim");
                }
                Err(e) => {
                    RuleCounts::add(&mut counts.failures, rule);
                    errors[item.event].push(format!("{rule}: cannot record the firing: {e}"))
                }
            }
        }
        self.metrics.count_rules(&counts);
        for (outcome, errors) in outcomes.iter_mut().zip(errors) {
            outcome.error = (!errors.is_empty()).then(|| errors.join("; "));
        }

        let hive = self.clone();
        let dispatching = tokio::spawn(async move {
            let starts = fired.into_iter().map(|item| {
                let hive = hive.clone();
                async move {
                    hive.start_action_job(
                        &item.firing.job,
                        &item.firing.executions,
                        &item.action,
                        item.parameters,
                    )
                    .await
                }
            });
            futures::future::join_all(starts).await;
        });
        (outcomes, dispatching)
    }

    /// Decides the batch's firings in one transaction. If the store
    /// refuses it, each firing is tried alone, so one bad firing fails only
    /// its own event.
    async fn decide(
        &self,
        pending: &[Pending],
        now: DateTime<Utc>,
    ) -> Vec<Result<FiringOutcome, StoreError>> {
        if pending.is_empty() {
            return Vec::new();
        }
        let firings: Vec<RuleFiring> = pending.iter().map(|p| p.firing.clone()).collect();
        let decided = self
            .metrics
            .time_store(StoreCall::FireRules, self.store.fire_rules(&firings, now))
            .await;
        match decided {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => {
                warn!(error = %e, firings = firings.len(), "a batch of firings failed; deciding them one by one");
                let mut results = Vec::with_capacity(firings.len());
                for firing in &firings {
                    results.push(self.store.fire_rule(firing, now).await);
                }
                results
            }
        }
    }

    /// A rule that matched and cannot run is audited, and raises
    /// `core.escalation` at most once per rule per window (the rule's
    /// cooldown, or [`FAILURE_ESCALATION_WINDOW`]), so a storm of alerts
    /// that all fail the same way pages once, not five hundred times.
    async fn record_rule_failure(
        &self,
        event: &EventRecord,
        rule: &CompiledRule,
        error: &str,
        now: DateTime<Utc>,
    ) {
        let mut audit = self.audit(
            Actor::Hive,
            AuditVerb::RuleFailed,
            json!({ "error": error }),
        );
        audit.event_id = Some(event.id.clone());
        audit.rule = Some(rule.reference.clone());
        audit.action_ref = Some(rule.rule.action.reference.clone());
        if let Err(e) = self.store.append_audit(&audit).await {
            warn!(error = %e, "cannot record a rule failure");
        }
        warn!(event_id = %event.id, rule = %rule.reference, %error, "rule matched but cannot run");
        if event.trigger == ESCALATION {
            return;
        }
        let window = rule
            .rule
            .policy
            .cooldown
            .as_ref()
            .map_or(FAILURE_ESCALATION_WINDOW, |c| c.period);
        if !self.failure_escalations.due(&rule.reference, window, now) {
            debug!(rule = %rule.reference, "failure already escalated within the window");
            return;
        }
        self.escalate(
            EscalationCause::Failed,
            json!({
                "rule": rule.reference,
                "reason": error,
                "event_id": event.id,
                "action": rule.rule.action.reference,
            }),
        )
        .await;
    }

    /// Raises `core.escalation`, so other rules can route it to a human.
    async fn escalate(&self, cause: EscalationCause, mut payload: Value) {
        payload["cause"] = json!(cause.as_str());
        match self
            .ingest_event(ESCALATION, payload, &Actor::Hive.to_string())
            .await
        {
            Ok(_) => self.metrics.escalated(cause),
            Err(e) => warn!(error = %e, "cannot raise an escalation"),
        }
    }

    /// One step of the engine: claims a batch of pending events as
    /// `claimer`, evaluates it, fires what matched and records each event's
    /// outcome. Returns how many events it claimed (0: none were pending)
    /// and the dispatch of the fired jobs, still running.
    async fn step(
        self: &Arc<Self>,
        claimer: &str,
    ) -> Result<(usize, Option<Dispatching>), StoreError> {
        let book = self.rule_book().await?;
        let events = self
            .metrics
            .time_store(
                StoreCall::ClaimEvents,
                self.store
                    .claim_pending_events(claimer, BATCH, EVENT_LEASE, Utc::now()),
            )
            .await?;
        if events.is_empty() {
            return Ok((0, None));
        }
        let (outcomes, dispatching) = self.process_batch(&events, &book).await;
        let finished = self
            .metrics
            .time_store(
                StoreCall::FinishEvents,
                self.store.finish_events(&outcomes, Utc::now()),
            )
            .await;
        match finished {
            Ok(_) => {
                for event in &events {
                    self.metrics.event_processed(&event.trigger);
                }
            }
            // The claims run out and the events are processed again; rules
            // already decided are not fired twice.
            Err(e) => {
                warn!(error = %e, events = outcomes.len(), "cannot mark events processed")
            }
        }
        Ok((events.len(), Some(dispatching)))
    }

    /// Processes every event pending now, batch after batch, each batch's
    /// jobs dispatched before the next: what the engine loop does, in the
    /// caller's task. Returns how many events it claimed.
    pub async fn process_pending_events(self: &Arc<Self>) -> Result<usize, StoreError> {
        let claimer = format!("hive-{}", uuid::Uuid::now_v7());
        let mut claimed = 0;
        loop {
            match self.step(&claimer).await? {
                (0, _) => return Ok(claimed),
                (count, dispatching) => {
                    claimed += count;
                    if let Some(dispatching) = dispatching {
                        let _ = dispatching.await;
                    }
                }
            }
        }
    }

    /// Evaluates `events` and fires what matched, as a step does, but
    /// records no outcome: the events stay claimed, as when a replica dies
    /// after firing and before finishing them. For crash tests.
    #[doc(hidden)]
    pub async fn fire_without_finishing(self: &Arc<Self>, events: &[EventRecord]) {
        if let Ok(book) = self.rule_book().await {
            let (_, dispatching) = self.process_batch(events, &book).await;
            let _ = dispatching.await;
        }
    }

    /// Claims and processes pending events until `shutdown`.
    pub async fn run_rules_engine(self: Arc<Self>, shutdown: CancellationToken) {
        let claimer = format!("hive-{}", uuid::Uuid::now_v7());
        let mut dispatching: Option<Dispatching> = None;
        // Checked between batches too: a steady stream of events must not
        // keep the engine from stopping.
        while !shutdown.is_cancelled() {
            let wake = self.events_arrived.notified();
            match self.step(&claimer).await {
                Ok((0, _)) => {}
                Ok((_, dispatch)) => {
                    // One batch dispatches while the next is evaluated,
                    // never more: the broker sets the pace.
                    if let Some(previous) = std::mem::replace(&mut dispatching, dispatch) {
                        let _ = previous.await;
                    }
                    continue;
                }
                Err(e) => warn!(error = %e, "cannot claim events or read the rules; events wait"),
            }
            tokio::select! {
                _ = wake => {}
                // Events stored through other replicas.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if let Some(previous) = dispatching {
            let _ = previous.await;
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
            let book = match self.rule_book().await {
                Ok(book) => book,
                Err(e) => {
                    warn!(error = %e, "cannot read timer rules");
                    continue;
                }
            };
            let timers: Vec<(&str, &Arc<CompiledRule>)> = ["core.interval", "core.cron"]
                .into_iter()
                .flat_map(|trigger| {
                    book.rules_for(trigger)
                        .iter()
                        .filter(|r| r.enabled)
                        .map(move |r| (trigger, r))
                })
                .collect();
            next_due.retain(|name, _| timers.iter().any(|(_, r)| &r.reference == name));
            for (trigger, rule) in timers {
                let Some(schedule) = &rule.rule.schedule else {
                    continue;
                };
                let due = match next_due.get(&rule.reference) {
                    Some(due) => *due,
                    None => match schedule.next_after(now) {
                        Ok(due) => {
                            next_due.insert(rule.reference.clone(), due);
                            continue;
                        }
                        Err(e) => {
                            warn!(rule = %rule.reference, error = %e, "cannot schedule timer");
                            continue;
                        }
                    },
                };
                if now < due {
                    continue;
                }
                match schedule.next_after(now) {
                    Ok(next) => next_due.insert(rule.reference.clone(), next),
                    Err(_) => next_due.remove(&rule.reference),
                };
                match self.store.claim_timer_tick(&rule.reference, due).await {
                    Ok(true) => {
                        let payload = json!({ "fired_at": due.to_rfc3339(), "schedule": schedule });
                        let source = format!("{TIMER_SOURCE}{}", rule.reference);
                        if let Err(e) = self.ingest_event(trigger, payload, &source).await {
                            warn!(rule = %rule.reference, error = %e, "cannot store a timer event");
                        }
                    }
                    Ok(false) => {} // another replica fired this tick
                    Err(e) => {
                        warn!(rule = %rule.reference, error = %e, "cannot claim a timer tick")
                    }
                }
            }
        }
    }
}

/// The store's view of a prepared firing.
fn firing(rule: &CompiledRule, event: &EventRecord, prepared: &Prepared) -> RuleFiring {
    let masked =
        ultron8_core::params::mask_secrets(&prepared.action.parameters, &prepared.parameters);
    let drones: Vec<&str> = prepared
        .executions
        .iter()
        .map(|e| e.drone_id.as_str())
        .collect();
    RuleFiring {
        rule: rule.reference.clone(),
        event_id: event.id.clone(),
        policy: prepared.policy.clone(),
        cooldown_key: prepared.cooldown_key.clone(),
        matching_fleet: prepared.matching_fleet,
        job: prepared.job.clone(),
        executions: prepared.executions.clone(),
        detail: json!({
            "parameters": masked,
            "target": prepared.job.target,
            "drones": drones,
            "cooldown_key": prepared.cooldown_key,
        }),
    }
}
