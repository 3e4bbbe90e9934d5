//! Prometheus metrics served on `/metrics`.
//!
//! Counts that the store already knows (jobs, executions by status, drones
//! online and offline, the engine's backlog) are read from the store at
//! scrape time, so every replica reports the same fleet-wide numbers and
//! nothing is lost on restart. What this replica observes itself (events it
//! received, rules it evaluated, dispatch and store latency) is kept in
//! memory as counters and histograms.
//!
//! Every family is present from the first scrape: counters start at zero
//! for every label value known at start (built-in triggers, refusal
//! reasons, statuses, store calls) and for every rule as soon as the rules
//! are compiled. Labels hold only bounded sets: triggers and rules of the
//! installed catalog, statuses, reasons; never ids or targets.
//!
//! The body is OpenMetrics when the scraper asks for it (Prometheus does),
//! and the Prometheus 0.0.4 text format otherwise (curl, promtool): the two
//! differ in how counters are named in their metadata, so each is served
//! with the content type it really is. See [`Exposition`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use ultron8_core::ExecutionStatus;
use ultron8_core::health::{CheckState, RunOutcome};
use ultron8_core::ids::DroneId;
use ultron8_store::{Store, StoreError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabel {
    probe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeOutcomeLabel {
    probe: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeStateLabel {
    probe: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
    commit: String,
}

/// Why an HTTP event request was refused: the `reason` label of
/// `ultron8_events_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownWebhook,
    TooLarge,
    /// The body did not arrive within `http_body_timeout`.
    TooSlow,
    Unauthorized,
    Malformed,
    /// The store could not take it; the sender should retry.
    StoreUnavailable,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::UnknownWebhook,
        Refusal::TooLarge,
        Refusal::TooSlow,
        Refusal::Unauthorized,
        Refusal::Malformed,
        Refusal::StoreUnavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::UnknownWebhook => "unknown_webhook",
            Refusal::TooLarge => "too_large",
            Refusal::TooSlow => "too_slow",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Malformed => "malformed",
            Refusal::StoreUnavailable => "store_unavailable",
        }
    }
}

/// The store calls whose latency is measured: the engine's and the hot
/// paths of jobs and reports, not every read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCall {
    Ping,
    ClaimEvents,
    FireRules,
    FinishEvents,
    RecordEvent,
    CreateJob,
    ReportExecution,
}

impl StoreCall {
    const ALL: [StoreCall; 7] = [
        StoreCall::Ping,
        StoreCall::ClaimEvents,
        StoreCall::FireRules,
        StoreCall::FinishEvents,
        StoreCall::RecordEvent,
        StoreCall::CreateJob,
        StoreCall::ReportExecution,
    ];

    fn label(self) -> &'static str {
        match self {
            StoreCall::Ping => "ping",
            StoreCall::ClaimEvents => "claim_events",
            StoreCall::FireRules => "fire_rules",
            StoreCall::FinishEvents => "finish_events",
            StoreCall::RecordEvent => "record_event",
            StoreCall::CreateJob => "create_job",
            StoreCall::ReportExecution => "report_execution",
        }
    }
}

/// Why `core.escalation` was raised: the `cause` label of
/// `ultron8_escalations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationCause {
    /// A rule's policy held its firing.
    Held,
    /// A rule matched and could not run.
    Failed,
    /// An action of the escalate runner raised it.
    Action,
}

impl EscalationCause {
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationCause::Held => "held",
            EscalationCause::Failed => "failed",
            EscalationCause::Action => "action",
        }
    }
}

/// What one batch of the rules engine did to each rule, added to the
/// counters at once rather than per evaluation.
#[derive(Debug, Default)]
pub struct RuleCounts {
    pub evaluations: HashMap<String, u64>,
    pub firings: HashMap<String, u64>,
    pub holds: HashMap<String, u64>,
    pub failures: HashMap<String, u64>,
}

impl RuleCounts {
    pub fn add(counts: &mut HashMap<String, u64>, rule: &str) {
        match counts.get_mut(rule) {
            Some(n) => *n += 1,
            None => {
                counts.insert(rule.to_string(), 1);
            }
        }
    }
}

/// Spool depths drones reported in their heartbeats.
#[derive(Debug, Default)]
struct Spools {
    by_drone: HashMap<DroneId, (u64, Instant)>,
}

/// The two exposition formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Text,
}

impl Exposition {
    /// OpenMetrics if the `Accept` header names it, as Prometheus's does;
    /// the 0.0.4 text format for anything else (no header, `*/*`,
    /// `text/plain`), as the Prometheus client libraries decide.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let refused = parts.any(|p| p.replace(' ', "") == "q=0");
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            Exposition::OpenMetrics
        } else {
            Exposition::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// How long a drone's reported spool depth counts without a new heartbeat:
/// a drone that went away no longer holds this replica's figure up.
const SPOOL_REPORT_TTL: Duration = Duration::from_secs(120);

/// How long a scrape waits for the store's figures: less than Prometheus's
/// default scrape timeout of 10 s.
const STORE_GAUGES_TIMEOUT: Duration = Duration::from_secs(4);

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    jobs: Gauge,
    executions: Family<StatusLabel, Gauge>,
    drones: Family<StateLabel, Gauge>,
    /// Per service of the inventory; no per-instance series (a fleet of
    /// thousands of instances would be thousands of series per scrape).
    fleet_service_instances: Family<ServiceLabel, Gauge>,
    fleet_service_healthy: Family<ServiceLabel, Gauge>,
    checks: Family<StateLabel, Gauge>,
    pending_events: Gauge,
    oldest_pending_event_age: Gauge<f64, AtomicU64>,
    ready: Gauge,
    dependency_up: Family<DependencyLabel, Gauge>,
    spools: Mutex<Spools>,
    spooled_results: Gauge,
    drones_spooling: Gauge,
    build_info: Family<BuildLabel, Gauge>,
    pub dispatch_latency: Histogram,
    pub broker_publish: Histogram,
    pub dispatch_failures: Counter,
    store_calls: HistogramFamily<CallLabel>,
    pub refused_drone_reports: Counter,
    events_received: Family<TriggerLabel, Counter>,
    events_refused: Family<ReasonLabel, Counter>,
    events_processed: Family<TriggerLabel, Counter>,
    /// The sum over triggers of `events_processed`, for callers waiting on
    /// the engine (a family cannot be summed without encoding it).
    events_processed_total: Counter,
    rule_evaluations: Family<RuleLabel, Counter>,
    rule_firings: Family<RuleLabel, Counter>,
    rule_holds: Family<RuleLabel, Counter>,
    rule_failures: Family<RuleLabel, Counter>,
    escalations: Family<CauseLabel, Counter>,
    executions_finished: Family<StatusLabel, Counter>,
    probe_duration: HistogramFamily<ProbeLabel>,
    probe_runs: Family<ProbeOutcomeLabel, Counter>,
    probe_targets: Family<ProbeStateLabel, Gauge>,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Registry::default(),
            jobs: Gauge::default(),
            executions: Family::default(),
            drones: Family::default(),
            fleet_service_instances: Family::default(),
            fleet_service_healthy: Family::default(),
            checks: Family::default(),
            pending_events: Gauge::default(),
            oldest_pending_event_age: Gauge::default(),
            ready: Gauge::default(),
            dependency_up: Family::default(),
            spools: Mutex::new(Spools::default()),
            spooled_results: Gauge::default(),
            drones_spooling: Gauge::default(),
            build_info: Family::default(),
            dispatch_latency: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            broker_publish: latency_buckets(),
            dispatch_failures: Counter::default(),
            store_calls: Family::new_with_constructor(latency_buckets),
            refused_drone_reports: Counter::default(),
            events_received: Family::default(),
            events_refused: Family::default(),
            events_processed: Family::default(),
            events_processed_total: Counter::default(),
            rule_evaluations: Family::default(),
            rule_firings: Family::default(),
            rule_holds: Family::default(),
            rule_failures: Family::default(),
            escalations: Family::default(),
            executions_finished: Family::default(),
            probe_duration: Family::new_with_constructor(latency_buckets),
            probe_runs: Family::default(),
            probe_targets: Family::default(),
        };
        metrics.register()
    }

    fn register(mut self) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let r = registry.sub_registry_with_prefix("ultron8");
        r.register(
            "build_info",
            "The hive's version and the commit it was built from (always 1)",
            self.build_info.clone(),
        );
        r.register(
            "ready",
            "1 if the store and the broker answered the last readiness check",
            self.ready.clone(),
        );
        r.register(
            "dependency_up",
            "1 if the dependency answered the last readiness check",
            self.dependency_up.clone(),
        );
        r.register(
            "events_received",
            "Events stored, by trigger type",
            self.events_received.clone(),
        );
        r.register(
            "events_refused",
            "Webhook and Alertmanager requests refused, by reason",
            self.events_refused.clone(),
        );
        r.register(
            "events_processed",
            "Events this replica's rules engine finished, by trigger type",
            self.events_processed.clone(),
        );
        r.register(
            "engine_pending_events",
            "Events stored and not yet processed by any replica's rules engine",
            self.pending_events.clone(),
        );
        r.register(
            "engine_oldest_pending_event_age_seconds",
            "How long the oldest pending event has waited (0 when none waits)",
            self.oldest_pending_event_age.clone(),
        );
        r.register(
            "rule_evaluations",
            "Events this replica evaluated against each rule",
            self.rule_evaluations.clone(),
        );
        r.register(
            "rule_firings",
            "Jobs each rule started on this replica",
            self.rule_firings.clone(),
        );
        r.register(
            "rule_holds",
            "Firings each rule's policy held (cooldown, concurrency, blast radius)",
            self.rule_holds.clone(),
        );
        r.register(
            "rule_failures",
            "Times each rule matched and could not run (no such drone, template error, ...)",
            self.rule_failures.clone(),
        );
        r.register(
            "probe_duration_seconds",
            "How long each probe's runs took on this replica, from the request to the verdict",
            self.probe_duration.clone(),
        );
        r.register(
            "probe_runs",
            "Probe runs on this replica, by probe and outcome (healthy, unhealthy, error)",
            self.probe_runs.clone(),
        );
        r.register(
            "probe_targets",
            "Targets of each probe by state, as the last round this replica ran left them",
            self.probe_targets.clone(),
        );
        r.register(
            "escalations",
            "core.escalation events raised, by cause",
            self.escalations.clone(),
        );
        r.register("jobs", "Jobs stored", self.jobs.clone());
        r.register(
            "executions",
            "Executions stored, by status",
            self.executions.clone(),
        );
        r.register(
            "executions_finished",
            "Executions this replica saw reach a final status, by status",
            self.executions_finished.clone(),
        );
        r.register(
            "drones",
            "Enrolled drones, by state (online: heartbeat recently)",
            self.drones.clone(),
        );
        r.register(
            "fleet_service_instances",
            "Instances of each service in the discovered inventory",
            self.fleet_service_instances.clone(),
        );
        r.register(
            "fleet_service_healthy",
            "Healthy instances of each service in the discovered inventory",
            self.fleet_service_healthy.clone(),
        );
        r.register(
            "checks",
            "Checks on drones, by state, as the drones last reported them",
            self.checks.clone(),
        );
        r.register(
            "drone_spooled_results",
            "Results drones connected to this replica hold undelivered",
            self.spooled_results.clone(),
        );
        r.register(
            "drones_spooling",
            "Drones connected to this replica holding at least one undelivered result",
            self.drones_spooling.clone(),
        );
        r.register(
            "dispatch_latency_seconds",
            "From job creation to the broker's confirmation of its request",
            self.dispatch_latency.clone(),
        );
        r.register(
            "broker_publish_seconds",
            "One request's publish until the broker confirmed or refused it",
            self.broker_publish.clone(),
        );
        r.register(
            "dispatch_failures",
            "Publishes the broker did not confirm",
            self.dispatch_failures.clone(),
        );
        r.register(
            "store_call_seconds",
            "Latency of the hive's main store calls",
            self.store_calls.clone(),
        );
        r.register(
            "refused_drone_reports",
            "Reports from drones about requests they refused (forged, expired, misaddressed)",
            self.refused_drone_reports.clone(),
        );
        self.registry = registry;
        self.declare_known_labels();
        self
    }

    /// Creates the series whose label values are known at start, so each
    /// counter reads 0 rather than being absent until its first increment.
    /// (`get_or_create` creates the series; its returned guard is unused.)
    fn declare_known_labels(&self) {
        for trigger in ultron8_core::triggers::BUILT_IN {
            let label = TriggerLabel {
                trigger: trigger.name.to_string(),
            };
            let _ = self.events_received.get_or_create(&label);
            let _ = self.events_processed.get_or_create(&label);
        }
        for reason in Refusal::ALL {
            let _ = self.events_refused.get_or_create(&ReasonLabel {
                reason: reason.label().to_string(),
            });
        }
        for status in ExecutionStatus::ALL {
            let label = StatusLabel {
                status: status.to_string(),
            };
            let _ = self.executions.get_or_create(&label);
            if status.is_terminal() {
                let _ = self.executions_finished.get_or_create(&label);
            }
        }
        for state in ["online", "offline"] {
            let _ = self.drones.get_or_create(&StateLabel {
                state: state.to_string(),
            });
        }
        for dependency in ["store", "broker"] {
            let _ = self.dependency_up.get_or_create(&DependencyLabel {
                dependency: dependency.to_string(),
            });
        }
        for cause in [
            EscalationCause::Held,
            EscalationCause::Failed,
            EscalationCause::Action,
        ] {
            let _ = self.escalations.get_or_create(&CauseLabel {
                cause: cause.as_str().to_string(),
            });
        }
        for call in StoreCall::ALL {
            let _ = self.store_calls.get_or_create(&CallLabel {
                call: call.label().to_string(),
            });
        }
    }

    pub fn set_build(&self, version: &str, commit: &str) {
        self.build_info.clear();
        self.build_info
            .get_or_create(&BuildLabel {
                version: version.to_string(),
                commit: commit.to_string(),
            })
            .set(1);
    }

    /// The rules of a newly compiled catalog: their counters start at 0.
    pub fn declare_rules<'a>(&self, rules: impl IntoIterator<Item = &'a str>) {
        for rule in rules {
            let label = RuleLabel {
                rule: rule.to_string(),
            };
            let _ = self.rule_evaluations.get_or_create(&label);
            let _ = self.rule_firings.get_or_create(&label);
            let _ = self.rule_holds.get_or_create(&label);
            let _ = self.rule_failures.get_or_create(&label);
        }
    }

    /// The probes of a newly loaded catalog: their series exist at 0. The
    /// target gauges of removed probes go; their counters stay until the
    /// hive restarts, as clearing a counter would read as a reset.
    pub fn declare_probes(&self, probes: &[String]) {
        self.probe_targets.clear();
        for probe in probes {
            let _ = self.probe_duration.get_or_create(&ProbeLabel {
                probe: probe.clone(),
            });
            for outcome in [
                RunOutcome::Healthy,
                RunOutcome::Unhealthy,
                RunOutcome::Error,
            ] {
                let _ = self.probe_runs.get_or_create(&ProbeOutcomeLabel {
                    probe: probe.clone(),
                    outcome: outcome.as_str(),
                });
            }
            for state in CheckState::ALL {
                let _ = self.probe_targets.get_or_create(&ProbeStateLabel {
                    probe: probe.clone(),
                    state: state.as_str(),
                });
            }
        }
    }

    pub fn probe_ran(&self, probe: &str, outcome: RunOutcome, took: Duration) {
        self.probe_duration
            .get_or_create(&ProbeLabel {
                probe: probe.to_string(),
            })
            .observe(took.as_secs_f64());
        self.probe_runs
            .get_or_create(&ProbeOutcomeLabel {
                probe: probe.to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// The states of a probe's targets after a round.
    pub fn probe_states(&self, probe: &str, states: impl Iterator<Item = CheckState>) {
        let mut counts: HashMap<CheckState, i64> = HashMap::new();
        for state in states {
            *counts.entry(state).or_default() += 1;
        }
        for state in CheckState::ALL {
            self.probe_targets
                .get_or_create(&ProbeStateLabel {
                    probe: probe.to_string(),
                    state: state.as_str(),
                })
                .set(counts.get(&state).copied().unwrap_or(0));
        }
    }

    pub fn count_rules(&self, counts: &RuleCounts) {
        let add = |family: &Family<RuleLabel, Counter>, counts: &HashMap<String, u64>| {
            for (rule, n) in counts {
                family
                    .get_or_create(&RuleLabel { rule: rule.clone() })
                    .inc_by(*n);
            }
        };
        add(&self.rule_evaluations, &counts.evaluations);
        add(&self.rule_firings, &counts.firings);
        add(&self.rule_holds, &counts.holds);
        add(&self.rule_failures, &counts.failures);
    }

    pub fn event_received(&self, trigger: &str) {
        self.events_received
            .get_or_create(&TriggerLabel {
                trigger: trigger.to_string(),
            })
            .inc();
    }

    pub fn event_refused(&self, reason: Refusal) {
        self.events_refused
            .get_or_create(&ReasonLabel {
                reason: reason.label().to_string(),
            })
            .inc();
    }

    /// Events this replica's engine finished, over all triggers.
    pub fn events_processed_total(&self) -> u64 {
        self.events_processed_total.get()
    }

    pub fn event_processed(&self, trigger: &str) {
        self.events_processed_total.inc();
        self.events_processed
            .get_or_create(&TriggerLabel {
                trigger: trigger.to_string(),
            })
            .inc();
    }

    pub fn escalated(&self, cause: EscalationCause) {
        self.escalations
            .get_or_create(&CauseLabel {
                cause: cause.as_str().to_string(),
            })
            .inc();
    }

    pub fn execution_finished(&self, status: ExecutionStatus) {
        self.executions_finished
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    pub fn observe_store(&self, call: StoreCall, elapsed: Duration) {
        self.store_calls
            .get_or_create(&CallLabel {
                call: call.label().to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Runs `call` and records how long it took under `which`.
    pub async fn time_store<T>(&self, which: StoreCall, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        self.observe_store(which, started.elapsed());
        result
    }

    pub fn set_readiness(&self, store_up: bool, broker_up: bool) {
        for (dependency, up) in [("store", store_up), ("broker", broker_up)] {
            self.dependency_up
                .get_or_create(&DependencyLabel {
                    dependency: dependency.to_string(),
                })
                .set(i64::from(up));
        }
        self.ready.set(i64::from(store_up && broker_up));
    }

    /// A drone's heartbeat said it holds `spooled` undelivered results.
    pub fn drone_spool(&self, drone: &DroneId, spooled: u64) {
        if let Ok(mut spools) = self.spools.lock() {
            spools
                .by_drone
                .insert(drone.clone(), (spooled, Instant::now()));
        }
    }

    fn refresh_spools(&self) {
        let Ok(mut spools) = self.spools.lock() else {
            return;
        };
        spools
            .by_drone
            .retain(|_, (_, at)| at.elapsed() < SPOOL_REPORT_TTL);
        let total: u64 = spools.by_drone.values().map(|(n, _)| n).sum();
        let spooling = spools.by_drone.values().filter(|(n, _)| *n > 0).count();
        self.spooled_results
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        self.drones_spooling
            .set(i64::try_from(spooling).unwrap_or(i64::MAX));
    }

    /// Refreshes the store-backed gauges and renders the exposition in
    /// `format`. A store that cannot answer (in time) does not fail the
    /// scrape: its gauges keep their last values, and `ultron8_ready` and
    /// `ultron8_dependency_up` (set by the readiness checks) say so, which
    /// is what an alert needs.
    pub async fn render(
        &self,
        store: &dyn Store,
        format: Exposition,
        now: DateTime<Utc>,
    ) -> Result<String, std::fmt::Error> {
        let refreshed =
            tokio::time::timeout(STORE_GAUGES_TIMEOUT, self.refresh_store_gauges(store, now)).await;
        match refreshed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot read the store's figures"),
            Err(_) => tracing::warn!("metrics: the store did not answer in time"),
        }
        self.refresh_spools();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(match format {
            Exposition::OpenMetrics => text,
            Exposition::Text => openmetrics_to_text(&text),
        })
    }

    async fn refresh_store_gauges(
        &self,
        store: &dyn Store,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let jobs = store.count_jobs().await?;
        let by_status = store.count_executions_by_status().await?;
        let drones = store.list_drones().await?;
        let backlog = store.pending_events().await?;
        self.jobs.set(jobs);
        for (status, count) in by_status {
            self.executions
                .get_or_create(&StatusLabel {
                    status: status.to_string(),
                })
                .set(count);
        }
        let online = drones.iter().filter(|d| d.online).count();
        for (state, count) in [("online", online), ("offline", drones.len() - online)] {
            self.drones
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .set(count as i64);
        }
        let checks = store.list_drone_checks().await?;
        // Every state, so a state no check is in reads 0 rather than
        // keeping its last value.
        for state in ultron8_core::health::CheckState::ALL {
            let count = checks.iter().filter(|c| c.status.state == state).count();
            self.checks
                .get_or_create(&StateLabel {
                    state: state.as_str().to_string(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.pending_events.set(backlog.count);
        let inventory = store
            .list_targets(&ultron8_store::TargetFilter::default())
            .await?;
        // Services that are gone drop their series rather than staying at
        // their last counts.
        self.fleet_service_instances.clear();
        self.fleet_service_healthy.clear();
        for summary in ultron8_core::discovery::summarize_services(&inventory) {
            let label = ServiceLabel {
                service: summary.service,
            };
            self.fleet_service_instances
                .get_or_create(&label)
                .set(summary.instances as i64);
            self.fleet_service_healthy
                .get_or_create(&label)
                .set(summary.healthy as i64);
        }
        let age = backlog.oldest_received_at.map_or(0.0, |at| {
            (now - at).to_std().unwrap_or_default().as_secs_f64()
        });
        self.oldest_pending_event_age.set(age);
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Rewrites an OpenMetrics exposition (as `prometheus_client` writes it)
/// into the Prometheus 0.0.4 text format: counter families are named with
/// their `_total` suffix in `# HELP` and `# TYPE`, as their samples are;
/// `# UNIT` and `# EOF` do not exist there. Gauges and histograms read the
/// same in both.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let metadata = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (prefix, rest)));
        if let Some((prefix, rest)) = metadata {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(&name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The standard `process_*` metrics, read from `/proc` at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A host without /proc reports no process metrics rather than
        // failing the whole scrape.
        let Ok(stats) = ultron8_host::process::process_stats() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stats.resident_memory_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stats.virtual_memory_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                stats.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                stats.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                stats.max_fds as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_anyone_else_the_text_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::negotiate(Some(prometheus)),
            Exposition::OpenMetrics
        );
        assert_eq!(Exposition::negotiate(Some("*/*")), Exposition::Text);
        assert_eq!(Exposition::negotiate(None), Exposition::Text);
        assert_eq!(
            Exposition::negotiate(Some("text/plain; version=0.0.4")),
            Exposition::Text
        );
        assert_eq!(
            Exposition::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Exposition::Text
        );
    }

    #[test]
    fn counters_are_named_with_total_in_the_text_format() {
        let openmetrics = "# HELP ultron8_events_received Events stored.\n\
                           # TYPE ultron8_events_received counter\n\
                           ultron8_events_received_total{trigger=\"core.webhook\"} 3\n\
                           # HELP ultron8_jobs Jobs stored.\n\
                           # TYPE ultron8_jobs gauge\n\
                           ultron8_jobs 7\n\
                           # UNIT ultron8_x_seconds seconds\n\
                           # EOF\n";
        assert_eq!(
            openmetrics_to_text(openmetrics),
            "# HELP ultron8_events_received_total Events stored.\n\
             # TYPE ultron8_events_received_total counter\n\
             ultron8_events_received_total{trigger=\"core.webhook\"} 3\n\
             # HELP ultron8_jobs Jobs stored.\n\
             # TYPE ultron8_jobs gauge\n\
             ultron8_jobs 7\n"
        );
    }

    #[test]
    fn every_family_is_present_before_anything_happens() {
        let metrics = Metrics::new();
        metrics.set_build("1.2.3", "abc1234");
        metrics.declare_rules(["web.restart"]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).expect("encode");
        let text = openmetrics_to_text(&text);
        for sample in [
            "ultron8_build_info{version=\"1.2.3\",commit=\"abc1234\"} 1",
            "ultron8_events_received_total{trigger=\"core.webhook\"} 0",
            "ultron8_events_refused_total{reason=\"store_unavailable\"} 0",
            "ultron8_events_processed_total{trigger=\"core.escalation\"} 0",
            "ultron8_rule_failures_total{rule=\"web.restart\"} 0",
            "ultron8_rule_evaluations_total{rule=\"web.restart\"} 0",
            "ultron8_escalations_total{cause=\"failed\"} 0",
            "ultron8_executions_finished_total{status=\"lost\"} 0",
            "ultron8_drones{state=\"offline\"} 0",
            "ultron8_dispatch_failures_total 0",
            "ultron8_store_call_seconds_count{call=\"fire_rules\"} 0",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(text.contains(sample), "missing {sample:?} in:\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn spool_depths_add_up_over_drones() {
        let metrics = Metrics::new();
        metrics.drone_spool(&DroneId::from("a"), 3);
        metrics.drone_spool(&DroneId::from("b"), 0);
        metrics.drone_spool(&DroneId::from("c"), 2);
        metrics.drone_spool(&DroneId::from("a"), 1);
        metrics.refresh_spools();
        assert_eq!(metrics.spooled_results.get(), 3);
        assert_eq!(metrics.drones_spooling.get(), 2);
    }
}
