//! The discovery loop: each replica looks for sources due a refresh every
//! `[fleet] poll_interval`, claims each one it refreshes (a lease row per
//! source, `Store::claim_source`, so several replicas never poll one source
//! at once), fetches what the source lists, merges it into the inventory
//! (`ultron8_core::discovery::merge`), stores it under its lease, and
//! raises a `fleet.service` event for every service whose healthy count
//! changed.
//!
//! An `http` source is fetched with at most `concurrency` instance
//! requests in flight, each with its own deadline; an instance that fails,
//! answers slowly or malformed is reported on that instance (unknown, with
//! the error) while the others update. Only a source that cannot be listed
//! at all (`GET /servers` fails) keeps its inventory as it was, with the
//! error on the source.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use ultron8_core::discovery::{
    Instance, Observation, Report, SourceSpec, merge, parse_instance_report, parse_server_list,
    parse_targets_file, service_changes, service_event_payload, summarize_services,
};
use ultron8_core::health::CheckState;
use ultron8_core::target;
use ultron8_store::{DroneRecord, SourceRecord, SourceRefresh, StoreError, TargetFilter};

use crate::hive::Hive;

/// Largest `GET /servers` body read.
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;
/// Largest `GET /{id}` body read.
const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Largest targets file read.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// What one replica's loop remembers between ticks.
#[derive(Default)]
struct LoopState {
    /// Sources this replica is refreshing now.
    in_flight: Mutex<HashSet<String>>,
    /// The modification time of each file source's file when last seen.
    file_times: Mutex<HashMap<String, SystemTime>>,
}

impl Hive {
    /// Runs the discovery loop until `shutdown`.
    pub async fn run_discovery(self: Arc<Self>, shutdown: CancellationToken) {
        // The lease holder's name: unique to this process, so a replica
        // restarted under the same host name does not inherit a lease.
        let holder = format!("hive:{}", uuid::Uuid::now_v7());
        let state = Arc::new(LoopState::default());
        let mut refreshes = tokio::task::JoinSet::new();
        let mut ticker = tokio::time::interval(self.config.fleet.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                Some(_) = refreshes.join_next(), if !refreshes.is_empty() => continue,
            }
            let sources = match self.store.list_sources().await {
                Ok(sources) => sources,
                Err(e) => {
                    warn!(error = %e, "discovery: cannot list the sources");
                    continue;
                }
            };
            let now = Utc::now();
            for source in sources {
                if state
                    .in_flight
                    .lock()
                    .map(|set| set.contains(&source.name))
                    .unwrap_or(true)
                {
                    continue;
                }
                if source.next_due_at > now && !self.file_changed(&state, &source, now).await {
                    continue;
                }
                let lease_until = now + lease_length(&source);
                match self
                    .store
                    .claim_source(&source.name, &holder, now, lease_until)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        warn!(source = %source.name, error = %e, "discovery: cannot claim the source");
                        continue;
                    }
                }
                if let Ok(mut set) = state.in_flight.lock() {
                    set.insert(source.name.clone());
                }
                let hive = self.clone();
                let holder = holder.clone();
                let state = state.clone();
                refreshes.spawn(async move {
                    hive.refresh_source(&source, &holder, &state).await;
                    if let Ok(mut set) = state.in_flight.lock() {
                        set.remove(&source.name);
                    }
                });
            }
        }
        refreshes.shutdown().await;
    }

    /// Whether `source`'s targets file changed since this replica last
    /// saw it; if so the source is made due now.
    async fn file_changed(
        &self,
        state: &LoopState,
        source: &SourceRecord,
        now: DateTime<Utc>,
    ) -> bool {
        let SourceSpec::File { path } = &source.spec else {
            return false;
        };
        let Ok(modified) = tokio::fs::metadata(path).await.and_then(|m| m.modified()) else {
            return false;
        };
        let changed = state
            .file_times
            .lock()
            .map(|times| {
                times
                    .get(&source.name)
                    .is_some_and(|seen| *seen != modified)
            })
            .unwrap_or(false);
        if changed {
            if let Err(e) = self.store.mark_source_due(&source.name, now).await {
                warn!(source = %source.name, error = %e, "discovery: cannot mark the source due");
                return false;
            }
            info!(source = %source.name, path, "targets file changed; reading it again");
        }
        changed
    }

    /// What checks and probes say of each instance, by name (a drone's id,
    /// a probe's target): `true` when one of them is failing, flapping or
    /// in error, `false` when all that have a verdict pass. Pending ones
    /// say nothing yet.
    async fn checks_and_probes(&self) -> Result<HashMap<String, bool>, StoreError> {
        let mut checked: HashMap<String, bool> = HashMap::new();
        let mut note = |name: String, state: CheckState| {
            if state != CheckState::Pending {
                *checked.entry(name).or_default() |= state.is_unhealthy();
            }
        };
        for probe in self.store.probe_states(None).await? {
            note(probe.target, probe.state);
        }
        for check in self.store.list_drone_checks().await? {
            note(check.drone_id.to_string(), check.status.state);
        }
        Ok(checked)
    }

    /// Refreshes `source` under `holder`'s lease and stores the result.
    async fn refresh_source(&self, source: &SourceRecord, holder: &str, state: &LoopState) {
        let started = std::time::Instant::now();
        let observed = self.observe(source, state).await;
        let now = Utc::now();
        let next_due_at = now + chrono::Duration::from_std(source.interval).unwrap_or_default();
        let (refresh, changes) = match observed {
            Ok(observations) => {
                let everything = match self.store.list_targets(&TargetFilter::default()).await {
                    Ok(all) => all,
                    Err(e) => {
                        warn!(source = %source.name, error = %e, "discovery: cannot read the inventory");
                        return;
                    }
                };
                let (previous, others): (Vec<Instance>, Vec<Instance>) = everything
                    .into_iter()
                    .partition(|instance| instance.source == source.name);
                let checked = match self.checks_and_probes().await {
                    Ok(checked) => checked,
                    Err(e) => {
                        warn!(source = %source.name, error = %e, "discovery: cannot read the checks and probes");
                        return;
                    }
                };
                let merged = merge(
                    &source.name,
                    &previous,
                    observations,
                    self.config.fleet.thresholds(),
                    &checked,
                    now,
                );
                let before = summarize_services(&[others.as_slice(), previous.as_slice()].concat());
                let after = summarize_services(&[others.as_slice(), merged.as_slice()].concat());
                let changes = service_changes(&before, &after);
                (
                    SourceRefresh {
                        instances: merged,
                        error: None,
                        at: now,
                        next_due_at,
                    },
                    changes,
                )
            }
            Err(error) => {
                warn!(source = %source.name, %error, "discovery: the source could not be listed");
                (
                    SourceRefresh {
                        instances: Vec::new(),
                        error: Some(error),
                        at: now,
                        next_due_at,
                    },
                    Vec::new(),
                )
            }
        };
        let listed = refresh.instances.len();
        match self
            .store
            .finish_source_refresh(&source.name, holder, &refresh)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                warn!(source = %source.name, "discovery: the lease ran out before the refresh was stored; another replica has it");
                return;
            }
            Err(e) => {
                warn!(source = %source.name, error = %e, "discovery: cannot store the refresh");
                return;
            }
        }
        info!(source = %source.name, instances = listed, elapsed_ms = started.elapsed().as_millis() as u64,
            "source refreshed");
        if !changes.is_empty() {
            let items = changes
                .iter()
                .map(|summary| (service_event_payload(summary), None))
                .collect();
            if let Err(e) = self
                .ingest_events(
                    ultron8_core::triggers::FLEET_SERVICE,
                    &format!("source:{}", source.name),
                    items,
                )
                .await
            {
                warn!(source = %source.name, error = %e, "discovery: cannot store fleet.service events");
            }
        }
    }

    /// What `source` lists now, or why it could not be listed at all.
    async fn observe(
        &self,
        source: &SourceRecord,
        state: &LoopState,
    ) -> Result<Vec<Observation>, String> {
        match &source.spec {
            SourceSpec::Static { targets } => Ok(targets.iter().map(Observation::named).collect()),
            SourceSpec::File { path } => {
                let (text, modified) = read_targets_file(path).await?;
                if let Ok(mut times) = state.file_times.lock() {
                    times.insert(source.name.clone(), modified);
                }
                parse_targets_file(&text).map_err(|problems| {
                    let listed: Vec<String> =
                        problems.iter().take(5).map(|p| p.to_string()).collect();
                    format!(
                        "{path}: {}{}",
                        listed.join("; "),
                        if problems.len() > 5 {
                            format!(" (and {} more)", problems.len() - 5)
                        } else {
                            String::new()
                        }
                    )
                })
            }
            SourceSpec::Http {
                url,
                concurrency,
                timeout_ms,
            } => {
                fetch_http(
                    &self.http,
                    url,
                    *concurrency as usize,
                    Duration::from_millis(*timeout_ms),
                )
                .await
            }
            SourceSpec::Drones {
                target,
                service_label,
            } => {
                let expr = target::parse(target).map_err(|e| format!("target {target}: {e}"))?;
                let drones = self
                    .store
                    .list_drones()
                    .await
                    .map_err(|e| format!("cannot list the drones: {e}"))?;
                Ok(drones
                    .iter()
                    .filter(|drone| drone.removed.is_none())
                    .filter(|drone| crate::planning::matches(&expr, drone))
                    .map(|drone| drone_observation(drone, service_label))
                    .collect())
            }
        }
    }
}

/// How long a replica holds a source while refreshing it: long enough for
/// a slow `http` source's list and every page of instance requests, short
/// enough that a replica that died holding it is replaced soon.
fn lease_length(source: &SourceRecord) -> chrono::Duration {
    let work = match &source.spec {
        SourceSpec::Http { timeout_ms, .. } => Duration::from_millis(timeout_ms.saturating_mul(4)),
        _ => Duration::ZERO,
    };
    chrono::Duration::from_std(Duration::from_secs(60) + work).unwrap_or(chrono::Duration::MAX)
}

/// A drone as an instance: its host figures from its last heartbeat, its
/// service from label `service_label`. An offline drone's figures are
/// stale, so it is reported unknown.
pub fn drone_observation(drone: &DroneRecord, service_label: &str) -> Observation {
    let labels = drone.labels();
    let report = match (&drone.stats, drone.online) {
        (_, false) => Report::Failed("offline: no heartbeat".to_string()),
        (Some(stats), true) => Report::Figures {
            cpu: f64::from(stats.cpu_percent),
            memory: f64::from(stats.memory_percent),
        },
        (None, true) => Report::NoFigures,
    };
    Observation {
        name: drone.id.to_string(),
        address: (!drone.facts.hostname.is_empty()).then(|| drone.facts.hostname.clone()),
        service: labels.get(service_label).cloned().unwrap_or_default(),
        labels,
        report,
    }
}

async fn read_targets_file(path: &str) -> Result<(String, SystemTime), String> {
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{path} has {} bytes; a targets file has at most {MAX_FILE_BYTES}",
            metadata.len()
        ));
    }
    let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {path}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8 text"))?;
    Ok((text, modified))
}

/// The HTTP client discovery uses (the hive's: rustls with the ring
/// provider and the Mozilla roots), for callers without a hive (the bench).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    crate::hive::http_client()
}

/// `GET {url}/servers`, then `GET {url}/{id}` for each id, `concurrency`
/// at a time, each within `timeout`.
pub async fn fetch_http(
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    timeout: Duration,
) -> Result<Vec<Observation>, String> {
    let base = url.trim_end_matches('/');
    let list_url = format!("{base}/servers");
    let body = get(client, &list_url, timeout, MAX_LIST_BYTES)
        .await
        .map_err(|e| format!("GET {list_url}: {e}"))?;
    let list = parse_server_list(&body).map_err(|e| format!("GET {list_url}: {e}"))?;
    let mut observations: Vec<Observation> = futures::stream::iter(list.ids)
        .map(|id| async move {
            let instance_url = format!("{base}/{id}");
            match get(client, &instance_url, timeout, MAX_REPORT_BYTES).await {
                Ok(body) => parse_instance_report(&id, &body),
                Err(error) => {
                    let mut failed = parse_instance_report(&id, b"{}");
                    failed.report = Report::Failed(error);
                    failed
                }
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    for (id, problem) in list.unusable {
        let mut unusable = Observation::named(id);
        unusable.report = Report::Failed(problem);
        observations.push(unusable);
    }
    Ok(observations)
}

/// The body of a successful GET of at most `limit` bytes, read within
/// `timeout` (headers and body together).
async fn get(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let fetch = async {
        let mut response = client.get(url).send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > limit {
                return Err(format!("answer larger than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "timed out after {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// A reqwest error with its causes, which its own text leaves out.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
