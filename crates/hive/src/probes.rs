//! The probe loop: runs the probes of installed packs (`sensors/*.yaml`,
//! `kind: probe`) against their targets, judges each answer, keeps each
//! target's state, and raises `probe.failed`, `probe.recovered`,
//! `probe.flapping` and `probe.error` events on transitions.
//!
//! - **Rounds.** A probe runs in rounds at multiples of its interval since
//!   the epoch, so every replica computes the same ticks; the store hands
//!   each tick to one replica (`claim_probe_round`), which probes every
//!   target of the probe concurrently (at most [`CONCURRENCY`] at once),
//!   each within the probe's timeout.
//! - **State.** The thresholds, recovery and flap detection are the core's
//!   (`health::Tracker`), as for drone checks. A round reads the probe's
//!   states from the store and writes them back, so counts survive a
//!   restart and carry over between replicas.
//! - **Events** are stored before the states, each with an idempotency key
//!   naming the probe, the target and the round: a round retried after a
//!   failed write raises nothing twice. A hive that dies between the two
//!   writes re-judges that round's runs in its next round and may raise a
//!   transition again; it never loses one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use regex::Regex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use ultron8_core::health::{Tracker, Transition};
use ultron8_core::probe::{self, HttpProbe, ProbeCheck, ProbeTargets, Verdict};
use ultron8_pack::Probe;
use ultron8_store::{ProbeStateRecord, StoreError, TargetFilter};

use crate::hive::Hive;

/// Targets probed at once, per round.
const CONCURRENCY: usize = 64;
/// How much of a body an HTTP probe reads to match it.
const BODY_LIMIT: usize = 64 * 1024;
/// How often the loop looks for due rounds.
const TICK: Duration = Duration::from_millis(250);
/// The longest detail kept for a run (an error from the network stack can
/// be long).
const DETAIL_LIMIT: usize = 512;

/// The event raised for each transition.
pub fn trigger_of(transition: Transition) -> &'static str {
    match transition {
        Transition::Failing => ultron8_core::triggers::PROBE_FAILED,
        Transition::Recovered => ultron8_core::triggers::PROBE_RECOVERED,
        Transition::Flapping => ultron8_core::triggers::PROBE_FLAPPING,
        Transition::Error => ultron8_core::triggers::PROBE_ERROR,
    }
}

/// A probe ready to run: its pack model and its compiled body pattern.
pub struct ProbeDefinition {
    pub reference: String,
    pub probe: Probe,
    body: Option<Regex>,
}

impl ProbeDefinition {
    /// `None` (logged) for a body pattern that does not compile, which the
    /// pack loader refuses; a pack stored by an older hive is not trusted
    /// to have been checked.
    pub fn new(probe: Probe) -> Option<ProbeDefinition> {
        let reference = probe.reference();
        let body = match &probe.spec.check {
            ProbeCheck::Http(HttpProbe {
                body: Some(pattern),
                ..
            }) => match Regex::new(pattern) {
                Ok(regex) => Some(regex),
                Err(e) => {
                    warn!(probe = %reference, error = %e, "probe body pattern does not compile; probe skipped");
                    return None;
                }
            },
            _ => None,
        };
        Some(ProbeDefinition {
            reference,
            probe,
            body,
        })
    }
}

/// One target of a probe: a discovered instance or a listed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub name: String,
    pub address: String,
    pub service: Option<String>,
    pub source: Option<String>,
}

impl Hive {
    /// The discovered instances a probe selects by source or service, at
    /// their address (or their name, when the source gave no address).
    async fn discovered_probe_targets(
        &self,
        targets: &ProbeTargets,
    ) -> Result<Vec<ProbeTarget>, StoreError> {
        let instances = self
            .store
            .list_targets(&TargetFilter {
                source: targets.source.clone(),
                service: targets.service.clone(),
            })
            .await?;
        Ok(instances
            .into_iter()
            .filter(|instance| {
                targets.selects(
                    &instance.source,
                    (!instance.service.is_empty()).then_some(instance.service.as_str()),
                )
            })
            .map(|instance| ProbeTarget {
                address: instance
                    .address
                    .clone()
                    .unwrap_or_else(|| instance.name.clone()),
                service: (!instance.service.is_empty()).then_some(instance.service),
                source: Some(instance.source),
                name: instance.name,
            })
            .collect())
    }
}

/// The probes of a catalog version.
struct Catalog {
    version: i64,
    probes: Arc<Vec<Arc<ProbeDefinition>>>,
}

/// The round of `interval` that `now` falls in: the last multiple of the
/// interval since the epoch at or before `now`.
pub fn round_at(now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let step = i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let millis = now.timestamp_millis();
    let tick = millis - millis.rem_euclid(step);
    DateTime::from_timestamp_millis(tick).unwrap_or(now)
}

impl Hive {
    /// Runs due probe rounds until `shutdown`.
    pub async fn run_probes(self: Arc<Self>, shutdown: CancellationToken) {
        let mut catalog: Option<Catalog> = None;
        // The last round this replica looked at, per probe, so each tick is
        // claimed once from here.
        let mut seen: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut running: HashSet<String> = HashSet::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                Some(finished) = done_rx.recv() => {
                    running.remove(&finished);
                    continue;
                }
                _ = shutdown.cancelled() => return,
            }
            let probes = match self.probe_catalog(&mut catalog).await {
                Ok(probes) => probes,
                Err(e) => {
                    warn!(error = %e, "cannot read the probes");
                    continue;
                }
            };
            seen.retain(|reference, _| probes.iter().any(|p| &p.reference == reference));
            let now = Utc::now();
            for definition in probes.iter() {
                let tick = round_at(now, definition.probe.spec.interval);
                if seen.get(&definition.reference) == Some(&tick)
                    || running.contains(&definition.reference)
                {
                    continue;
                }
                seen.insert(definition.reference.clone(), tick);
                match self
                    .store
                    .claim_probe_round(&definition.reference, tick)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => continue, // another replica runs it
                    Err(e) => {
                        warn!(probe = %definition.reference, error = %e, "cannot claim a probe round");
                        continue;
                    }
                }
                running.insert(definition.reference.clone());
                let hive = Arc::clone(&self);
                let definition = Arc::clone(definition);
                let done = done_tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = hive.probe_round(&definition, tick).await {
                        warn!(probe = %definition.reference, error = %e, "probe round failed");
                    }
                    let _ = done.send(definition.reference.clone());
                });
            }
        }
    }

    /// The installed probes, reread when the catalog changes; the states of
    /// probes no longer installed are forgotten then.
    async fn probe_catalog(
        &self,
        catalog: &mut Option<Catalog>,
    ) -> Result<Arc<Vec<Arc<ProbeDefinition>>>, StoreError> {
        let version = self.store.catalog_version().await?;
        if let Some(current) = catalog
            && current.version == version
        {
            return Ok(Arc::clone(&current.probes));
        }
        let packs = self.store.list_packs().await?;
        let probes: Vec<Arc<ProbeDefinition>> = packs
            .into_iter()
            .flat_map(|pack| pack.content.probes)
            .filter_map(ProbeDefinition::new)
            .map(Arc::new)
            .collect();
        let references: Vec<String> = probes.iter().map(|p| p.reference.clone()).collect();
        let forgotten = self.store.retain_probes(&references).await?;
        self.metrics.declare_probes(&references);
        info!(
            catalog_version = version,
            probes = probes.len(),
            forgotten,
            "probes loaded"
        );
        let probes = Arc::new(probes);
        *catalog = Some(Catalog {
            version,
            probes: Arc::clone(&probes),
        });
        Ok(probes)
    }

    /// The targets `targets` selects: its listed addresses, then the
    /// discovered instances of its source or service.
    pub async fn probe_targets(
        &self,
        targets: &ProbeTargets,
    ) -> Result<Vec<ProbeTarget>, StoreError> {
        let mut selected: Vec<ProbeTarget> = targets
            .listed
            .iter()
            .map(|address| ProbeTarget {
                name: address.clone(),
                address: address.clone(),
                service: None,
                source: None,
            })
            .collect();
        if targets.reads_inventory() {
            selected.extend(self.discovered_probe_targets(targets).await?);
        }
        let mut names = HashSet::new();
        selected.retain(|target| names.insert(target.name.clone()));
        Ok(selected)
    }

    /// Runs one round of `definition` and records what it found.
    async fn probe_round(
        &self,
        definition: &ProbeDefinition,
        tick: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let spec = &definition.probe.spec;
        let targets = self.probe_targets(&spec.targets).await?;
        let mut previous: HashMap<String, ProbeStateRecord> = self
            .store
            .probe_states(Some(&definition.reference))
            .await?
            .into_iter()
            .map(|state| (state.target.clone(), state))
            .collect();
        let runs: Vec<(ProbeTarget, Verdict, Duration, String)> =
            futures::stream::iter(targets.into_iter().map(|target| async move {
                let started = Instant::now();
                let (verdict, address) = self.probe_once(definition, &target).await;
                (target, verdict, started.elapsed(), address)
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;

        let now = Utc::now();
        let mut states = Vec::with_capacity(runs.len());
        let mut events = Vec::new();
        for (target, verdict, latency, address) in runs {
            let before = previous.remove(&target.name);
            let mut tracker = before
                .map(|state| state.tracker)
                .unwrap_or_else(|| Tracker::new(spec.thresholds));
            tracker.set_thresholds(spec.thresholds);
            let transition = tracker.observe(verdict.outcome, now);
            self.metrics
                .probe_ran(&definition.reference, verdict.outcome, latency);
            let detail = truncate(&verdict.detail, DETAIL_LIMIT);
            if let Some(transition) = transition {
                info!(
                    probe = %definition.reference,
                    target = %target.name,
                    %transition,
                    detail = %detail,
                    "probe transition"
                );
                let payload = json!({
                    "probe": definition.reference,
                    "target": target.name,
                    "address": address,
                    "service": target.service,
                    "source": target.source,
                    "state": tracker.state().as_str(),
                    "consecutive": tracker.consecutive(),
                    "detail": detail,
                    "latency_ms": latency.as_secs_f64() * 1000.0,
                });
                let key = format!(
                    "probe:{}:{}:{}",
                    definition.reference,
                    target.name,
                    tick.timestamp_millis()
                );
                events.push((trigger_of(transition), payload, key));
            }
            states.push(ProbeStateRecord {
                probe: definition.reference.clone(),
                target: target.name,
                address,
                state: tracker.state(),
                since: tracker.since(),
                last_run: now,
                last_outcome: verdict.outcome,
                detail,
                latency_us: i64::try_from(latency.as_micros()).unwrap_or(i64::MAX),
                tracker,
            });
        }
        // One batch per trigger: `ingest_events` stores events of one
        // trigger together.
        let mut by_trigger: HashMap<&'static str, Vec<(Value, Option<String>)>> = HashMap::new();
        for (trigger, payload, key) in events {
            by_trigger
                .entry(trigger)
                .or_default()
                .push((payload, Some(key)));
        }
        let source = format!("probe:{}", definition.reference);
        for (trigger, items) in by_trigger {
            self.ingest_events(trigger, &source, items)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        self.metrics.probe_states(
            &definition.reference,
            states.iter().map(|state| state.state),
        );
        self.store
            .save_probe_states(&definition.reference, &states)
            .await?;
        debug!(probe = %definition.reference, targets = states.len(), "probe round done");
        Ok(())
    }

    /// Probes one target once, within the probe's timeout. Returns the
    /// verdict and where it was probed.
    async fn probe_once(
        &self,
        definition: &ProbeDefinition,
        target: &ProbeTarget,
    ) -> (Verdict, String) {
        let timeout = definition.probe.spec.timeout;
        match &definition.probe.spec.check {
            ProbeCheck::Http(http) => {
                let url = match probe::http_url(http, &target.address) {
                    Ok(url) => url,
                    Err(e) => return (Verdict::error(e.to_string()), target.address.clone()),
                };
                let verdict = match tokio::time::timeout(
                    timeout,
                    self.http_probe(http, definition.body.as_ref(), &url),
                )
                .await
                {
                    Ok(verdict) => verdict,
                    Err(_) => Verdict::unhealthy(format!(
                        "no answer within {}",
                        humantime::format_duration(timeout)
                    )),
                };
                (verdict, url)
            }
            ProbeCheck::Tcp(tcp) => {
                let endpoint = match probe::endpoint(&target.address, tcp.port, None) {
                    Ok(endpoint) => endpoint,
                    Err(e) => return (Verdict::error(e.to_string()), target.address.clone()),
                };
                let authority = endpoint.authority();
                let verdict = match tokio::time::timeout(
                    timeout,
                    tokio::net::TcpStream::connect(authority.as_str()),
                )
                .await
                {
                    Ok(Ok(_stream)) => Verdict::healthy("connected"),
                    Ok(Err(e)) => Verdict::unhealthy(format!("cannot connect: {e}")),
                    Err(_) => Verdict::unhealthy(format!(
                        "no connection within {}",
                        humantime::format_duration(timeout)
                    )),
                };
                (verdict, authority)
            }
        }
    }

    async fn http_probe(&self, http: &HttpProbe, body: Option<&Regex>, url: &str) -> Verdict {
        let mut response = match self.http.get(url).send().await {
            Ok(response) => response,
            Err(e) => return Verdict::unhealthy(format!("request failed: {}", error_chain(&e))),
        };
        let status = response.status().as_u16();
        let mut text = Vec::new();
        if body.is_some() {
            // Read only what the pattern may need: a probe must not buffer
            // whatever a target sends.
            while text.len() < BODY_LIMIT {
                match response.chunk().await {
                    Ok(Some(chunk)) => text.extend_from_slice(&chunk),
                    Ok(None) => break,
                    Err(e) => {
                        return Verdict::unhealthy(format!(
                            "HTTP {status}, body cut off: {}",
                            error_chain(&e)
                        ));
                    }
                }
            }
            text.truncate(BODY_LIMIT);
        }
        probe::judge_http(http, body, status, &String::from_utf8_lossy(&text))
    }
}

/// An error with its causes: reqwest's own message is often only
/// "error sending request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_multiples_of_the_interval_since_the_epoch() {
        let at = |s: i64, ms: u32| DateTime::from_timestamp(s, ms * 1_000_000).expect("valid");
        assert_eq!(
            round_at(at(1_000_007, 500), Duration::from_secs(10)),
            at(1_000_000, 0)
        );
        assert_eq!(
            round_at(at(1_000_010, 0), Duration::from_secs(10)),
            at(1_000_010, 0)
        );
        assert_eq!(
            round_at(at(1_000_000, 740), Duration::from_millis(250)),
            at(1_000_000, 500)
        );
    }

    #[test]
    fn long_details_are_cut_on_a_character() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééééé", 3), "é…");
    }
}
