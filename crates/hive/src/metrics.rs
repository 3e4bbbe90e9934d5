//! Prometheus metrics served on `/metrics`.
//!
//! Counts that the store already knows (jobs, executions by status, online
//! drones) are read from the store at scrape time, so every replica reports
//! the same fleet-wide numbers and nothing is lost on restart. Only what
//! this replica observes itself (dispatch latency, refused requests) is
//! kept in memory.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use ultron8_core::ExecutionStatus;
use ultron8_store::Store;

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

pub struct Metrics {
    registry: Registry,
    jobs: Gauge,
    executions: Family<StatusLabel, Gauge>,
    drones_online: Gauge,
    drones_known: Gauge,
    pub dispatch_latency: Histogram,
    pub dispatch_failures: Counter,
    pub refused_drone_reports: Counter,
    pub events_received: Family<TriggerLabel, Counter>,
    pub events_refused: Family<ReasonLabel, Counter>,
    /// Events this replica's rules engine finished (processed or failed).
    pub events_processed: Counter,
    /// Rules this replica fired.
    pub rules_fired: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ultron8");
        let jobs = Gauge::default();
        let executions = Family::<StatusLabel, Gauge>::default();
        let drones_online = Gauge::default();
        let drones_known = Gauge::default();
        let dispatch_latency = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let dispatch_failures = Counter::default();
        let refused_drone_reports = Counter::default();
        let events_received = Family::<TriggerLabel, Counter>::default();
        let events_refused = Family::<ReasonLabel, Counter>::default();
        let events_processed = Counter::default();
        let rules_fired = Counter::default();
        registry.register(
            "events_processed",
            "Events this replica's rules engine finished evaluating",
            events_processed.clone(),
        );
        registry.register(
            "rules_fired",
            "Rule firings this replica's rules engine recorded",
            rules_fired.clone(),
        );
        registry.register(
            "events_received",
            "Events stored, by trigger type",
            events_received.clone(),
        );
        registry.register(
            "events_refused",
            "Webhook and Alertmanager requests refused (malformed, unauthorized, too large, unknown webhook)",
            events_refused.clone(),
        );
        registry.register("jobs", "Jobs recorded", jobs.clone());
        registry.register("executions", "Executions by status", executions.clone());
        registry.register(
            "drones_online",
            "Drones that heartbeat recently",
            drones_online.clone(),
        );
        registry.register(
            "drones_known",
            "Drones that ever enrolled",
            drones_known.clone(),
        );
        registry.register(
            "dispatch_latency_seconds",
            "From job creation to the broker's publish confirmation",
            dispatch_latency.clone(),
        );
        registry.register(
            "dispatch_failures",
            "Publishes the broker did not confirm",
            dispatch_failures.clone(),
        );
        registry.register(
            "refused_drone_reports",
            "Reports from drones about requests they refused (forged, expired, misaddressed)",
            refused_drone_reports.clone(),
        );
        Metrics {
            registry,
            jobs,
            executions,
            drones_online,
            drones_known,
            dispatch_latency,
            dispatch_failures,
            refused_drone_reports,
            events_received,
            events_refused,
            events_processed,
            rules_fired,
        }
    }

    /// Refreshes the store-backed gauges and renders the exposition text.
    pub async fn render(&self, store: &dyn Store) -> Result<String, ultron8_store::StoreError> {
        let jobs = store.count_jobs().await?;
        let by_status = store.count_executions_by_status().await?;
        let drones = store.list_drones().await?;
        self.jobs.set(jobs);
        for status in ExecutionStatus::ALL {
            let count = by_status
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            self.executions
                .get_or_create(&StatusLabel {
                    status: status.to_string(),
                })
                .set(count);
        }
        self.drones_known.set(drones.len() as i64);
        self.drones_online
            .set(drones.iter().filter(|d| d.online).count() as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).map_err(|e| {
            ultron8_store::StoreError::Corrupt(format!("cannot encode metrics: {e}"))
        })?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
