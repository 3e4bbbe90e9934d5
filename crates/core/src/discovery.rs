//! Discovery and the fleet inventory, as far as pure code can know them:
//! what a discovery source is, reading what sources answer (a cloud API's
//! `GET /servers` and `GET /{id}`, a targets file), deciding an instance's
//! health, merging one refresh of a source into the inventory, and the
//! figures of the fleet views (per-service counts and averages, sorting,
//! services with too few healthy instances, and which services' healthy
//! counts changed, for the `fleet.service` event).
//!
//! The hive's loop (`ultron8_hive::discovery`) does the fetching and the
//! storing; everything it decides is here, with `now` passed in.
//!
//! # Health of an instance
//!
//! - **healthy**: its last report has CPU and memory both below the
//!   thresholds ([`Thresholds`], default 80 %, `[fleet]` in the hive's
//!   configuration);
//! - **unhealthy**: CPU or memory at or above its threshold;
//! - **unknown**: no usable report: the instance could not be reached,
//!   answered with an error or a malformed body, or its source gives no
//!   figures at all (a static list, a targets file). Its `error` says
//!   which. Unknown is *not* healthy: a service counts only the instances
//!   it knows are well, so an outage of the discovery API shows as fewer
//!   healthy instances rather than as a fleet frozen at its last figures.
//!
//! Checks and probes are one more input ([`HealthInputs::checks_failing`]):
//! a failing (or flapping, or erroring) check on a drone or probe of an
//! instance makes it unhealthy whatever its figures; an instance without
//! figures whose checks and probes all pass is healthy.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How many samples of CPU and memory are kept per instance, for trends
/// and sparklines: half an hour at the default 30 s interval.
pub const HISTORY_LEN: usize = 60;

/// Longest source name.
pub const MAX_SOURCE_NAME_LEN: usize = 64;

/// Longest instance name or address accepted from a source.
pub const MAX_INSTANCE_NAME_LEN: usize = 253;

/// Default refresh interval of a source.
pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Default per-request timeout of an `http` source.
pub const DEFAULT_HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Default number of instance requests an `http` source has in flight.
pub const DEFAULT_HTTP_CONCURRENCY: u32 = 16;

/// Most instance requests an `http` source may have in flight.
pub const MAX_HTTP_CONCURRENCY: u32 = 256;

/// Checks a source's name: a letter, then letters, digits, `-`, `_` or
/// `.`, at most [`MAX_SOURCE_NAME_LEN`] characters.
pub fn check_source_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(format!(
            "{} is not a valid source name: use a letter followed by letters, digits, -, _ or . (e.g. cloud-api)",
            crate::echo::quote(name)
        ));
    }
    if name.len() > MAX_SOURCE_NAME_LEN {
        return Err(format!(
            "a source name has at most {MAX_SOURCE_NAME_LEN} characters; this one has {}",
            name.len()
        ));
    }
    Ok(())
}

/// Where a source finds its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// A fixed list of instance names (or addresses).
    Static { targets: Vec<String> },
    /// A targets file on the hive's host (see [`parse_targets_file`]),
    /// read again at each refresh when it changed.
    File { path: String },
    /// A cloud API: `GET {url}/servers` lists instance ids, `GET
    /// {url}/{id}` reports one (`{"cpu":"61%","service":"...","memory":"4%"}`).
    Http {
        url: String,
        /// Instance requests in flight at once.
        concurrency: u32,
        /// Deadline of each request, in milliseconds.
        timeout_ms: u64,
    },
    /// The drones a target expression matches, with the host figures of
    /// their heartbeats; the service is the drone label `service_label`.
    Drones {
        target: String,
        service_label: String,
    },
}

impl SourceSpec {
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceSpec::Static { .. } => SourceKind::Static,
            SourceSpec::File { .. } => SourceKind::File,
            SourceSpec::Http { .. } => SourceKind::Http,
            SourceSpec::Drones { .. } => SourceKind::Drones,
        }
    }

    /// Checks what can be checked without I/O: a non-empty, unique static
    /// list of valid names; an absolute file path; an `http`/`https` URL
    /// with no query; a concurrency and timeout in range; a non-empty
    /// target expression that parses.
    pub fn check(&self) -> Result<(), String> {
        match self {
            SourceSpec::Static { targets } => {
                if targets.is_empty() {
                    return Err("a static source needs at least one target".to_string());
                }
                let mut seen = std::collections::HashSet::new();
                for target in targets {
                    check_instance_name(target)?;
                    if !seen.insert(target) {
                        return Err(format!("target {target} is listed twice"));
                    }
                }
                Ok(())
            }
            SourceSpec::File { path } => {
                if !path.starts_with('/') {
                    return Err(format!(
                        "a targets file is read by the hive, so its path must be absolute: {}",
                        crate::echo::quote(path)
                    ));
                }
                Ok(())
            }
            SourceSpec::Http {
                url,
                concurrency,
                timeout_ms,
            } => {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"))
                    .ok_or_else(|| {
                        format!(
                            "{} is not an http:// or https:// URL",
                            crate::echo::quote(url)
                        )
                    })?;
                if rest.is_empty() || rest.starts_with('/') {
                    return Err(format!("{} names no host", crate::echo::quote(url)));
                }
                if url.contains(['?', '#', ' ']) {
                    return Err(format!(
                        "{} must be a base URL without query, fragment or spaces (the hive appends /servers and /<id>)",
                        crate::echo::quote(url)
                    ));
                }
                if *concurrency == 0 || *concurrency > MAX_HTTP_CONCURRENCY {
                    return Err(format!(
                        "concurrency must be between 1 and {MAX_HTTP_CONCURRENCY}; got {concurrency}"
                    ));
                }
                if *timeout_ms == 0 || *timeout_ms > 300_000 {
                    return Err(format!(
                        "the timeout must be between 1 ms and 5 min; got {timeout_ms} ms"
                    ));
                }
                Ok(())
            }
            SourceSpec::Drones {
                target,
                service_label,
            } => {
                crate::target::parse(target).map_err(|e| format!("target {target}: {e}"))?;
                if service_label.is_empty() {
                    return Err("the service label must not be empty".to_string());
                }
                Ok(())
            }
        }
    }
}

/// The kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Static,
    File,
    Http,
    Drones,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Static => "static",
            SourceKind::File => "file",
            SourceKind::Http => "http",
            SourceKind::Drones => "drones",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instance name or address: 1 to [`MAX_INSTANCE_NAME_LEN`] printable
/// ASCII characters without spaces, `/`, `?`, `#` or `%`, and not `.` or
/// `..`: an `http` source puts it in a URL path (`GET {url}/{id}`), where
/// such characters would reach another endpoint.
pub fn check_instance_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_INSTANCE_NAME_LEN {
        return Err(format!(
            "an instance name has 1 to {MAX_INSTANCE_NAME_LEN} characters; got {}",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || !name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '?' | '#' | '%' | '\\'))
    {
        return Err(format!(
            "{} is not a usable instance name (printable ASCII without /, ?, #, %, \\ or spaces)",
            crate::echo::quote(name)
        ));
    }
    Ok(())
}

/// An instance's health (see the module docs).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    Healthy,
    Unhealthy,
    #[default]
    Unknown,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Healthy => "healthy",
            InstanceStatus::Unhealthy => "unhealthy",
            InstanceStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstanceStatus {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "healthy" => Ok(InstanceStatus::Healthy),
            "unhealthy" => Ok(InstanceStatus::Unhealthy),
            "unknown" => Ok(InstanceStatus::Unknown),
            other => Err(format!(
                "{} is not a status: healthy, unhealthy or unknown",
                crate::echo::quote(other)
            )),
        }
    }
}

/// CPU and memory percentages at or above which an instance is unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub cpu: f64,
    pub memory: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            cpu: 80.0,
            memory: 80.0,
        }
    }
}

/// What an instance's health is decided from.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HealthInputs {
    /// CPU and memory of the last report, if it had them.
    pub figures: Option<(f64, f64)>,
    /// Whether fetching the report failed.
    pub failed: bool,
    /// Its checks and probes: `Some(true)` when one is failing, flapping or
    /// in error, which makes it unhealthy whatever its figures;
    /// `Some(false)` when all that have a verdict pass; `None` when it has
    /// none.
    pub checks_failing: Option<bool>,
}

/// An instance's health from what is known of it (see the module docs).
pub fn classify(inputs: HealthInputs, thresholds: Thresholds) -> InstanceStatus {
    if inputs.checks_failing == Some(true) {
        return InstanceStatus::Unhealthy;
    }
    match inputs.figures {
        _ if inputs.failed => InstanceStatus::Unknown,
        // A source without figures (a static list, a targets file): the
        // checks and probes that pass are what is known of it.
        None if inputs.checks_failing == Some(false) => InstanceStatus::Healthy,
        None => InstanceStatus::Unknown,
        Some((cpu, memory)) if cpu >= thresholds.cpu || memory >= thresholds.memory => {
            InstanceStatus::Unhealthy
        }
        Some(_) => InstanceStatus::Healthy,
    }
}

/// One sample of an instance's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub cpu: f64,
    pub memory: f64,
}

/// An instance of the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The source that reported it.
    pub source: String,
    /// Its id at the source (a cloud instance id, a host name, a drone id).
    pub name: String,
    pub address: Option<String>,
    /// Empty when the source says none.
    pub service: String,
    pub labels: BTreeMap<String, String>,
    /// Figures of the last report; None when it had none or failed.
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    pub status: InstanceStatus,
    /// Why there are no figures, when a report failed.
    pub error: Option<String>,
    /// The last report with figures.
    pub last_seen: Option<DateTime<Utc>>,
    /// The last refresh that listed it.
    pub updated_at: DateTime<Utc>,
    /// The last [`HISTORY_LEN`] samples, oldest first.
    pub history: Vec<Sample>,
}

/// What one refresh of a source said about one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub name: String,
    pub address: Option<String>,
    pub service: String,
    pub labels: BTreeMap<String, String>,
    /// The report: figures `(cpu, memory)`, none (the source gives no
    /// figures), or why it could not be had.
    pub report: Report,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Figures { cpu: f64, memory: f64 },
    NoFigures,
    Failed(String),
}

impl Observation {
    /// An instance listed with nothing more known of it.
    pub fn named(name: impl Into<String>) -> Observation {
        Observation {
            name: name.into(),
            address: None,
            service: String::new(),
            labels: BTreeMap::new(),
            report: Report::NoFigures,
        }
    }
}

/// One refresh of `source` merged into its part of the inventory:
/// instances it no longer lists are dropped; each listed one keeps its
/// history, gains a sample when its report had figures, and is classified
/// again. A failed report keeps the history but no figures (status
/// unknown, with the error), and keeps the service and address known from
/// earlier reports when this one could not say. Instances come out in the
/// order observed; a name observed twice counts once (the last).
/// `checked` says, by instance name, whether a check or probe of it is
/// failing (`true`) or all of them pass (`false`); an instance it does not
/// name has none.
pub fn merge(
    source: &str,
    previous: &[Instance],
    observations: Vec<Observation>,
    thresholds: Thresholds,
    checked: &HashMap<String, bool>,
    now: DateTime<Utc>,
) -> Vec<Instance> {
    let mut before: HashMap<&str, &Instance> = previous
        .iter()
        .filter(|instance| instance.source == source)
        .map(|instance| (instance.name.as_str(), instance))
        .collect();
    let mut order: Vec<String> = Vec::with_capacity(observations.len());
    let mut merged: HashMap<String, Instance> = HashMap::with_capacity(observations.len());
    for observation in observations {
        let earlier = before.get(observation.name.as_str()).copied();
        let mut history = earlier.map(|e| e.history.clone()).unwrap_or_default();
        let (cpu, memory, error, last_seen, failed) = match &observation.report {
            Report::Figures { cpu, memory } => {
                history.push(Sample {
                    at_ms: now.timestamp_millis(),
                    cpu: *cpu,
                    memory: *memory,
                });
                (Some(*cpu), Some(*memory), None, Some(now), false)
            }
            Report::NoFigures => (None, None, None, earlier.and_then(|e| e.last_seen), false),
            Report::Failed(error) => (
                None,
                None,
                Some(error.clone()),
                earlier.and_then(|e| e.last_seen),
                true,
            ),
        };
        if history.len() > HISTORY_LEN {
            history.drain(..history.len() - HISTORY_LEN);
        }
        let status = classify(
            HealthInputs {
                figures: cpu.zip(memory),
                failed,
                checks_failing: checked.get(&observation.name).copied(),
            },
            thresholds,
        );
        let service = if observation.service.is_empty() && failed {
            earlier.map(|e| e.service.clone()).unwrap_or_default()
        } else {
            observation.service
        };
        let address = observation
            .address
            .or_else(|| earlier.and_then(|e| e.address.clone()));
        let instance = Instance {
            source: source.to_string(),
            name: observation.name.clone(),
            address,
            service,
            labels: observation.labels,
            cpu,
            memory,
            status,
            error,
            last_seen,
            updated_at: now,
            history,
        };
        if merged.insert(observation.name.clone(), instance).is_none() {
            order.push(observation.name);
        }
    }
    before.clear();
    order
        .into_iter()
        .filter_map(|name| merged.remove(&name))
        .collect()
}

// --- what sources answer ----------------------------------------------------

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// A percentage as the API writes it: `"61%"`, `"61"`, `"61.5 %"`, or a
/// JSON number; between 0 and 100.
pub fn parse_percent(value: &serde_json::Value) -> Result<f64, PayloadError> {
    let number = match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(text) => {
            let text = text.trim();
            let text = text.strip_suffix('%').unwrap_or(text).trim_end();
            text.parse::<f64>().ok()
        }
        _ => None,
    };
    match number {
        Some(n) if n.is_finite() && (0.0..=100.0).contains(&n) => Ok(n),
        _ => Err(PayloadError(format!(
            "{} is not a percentage between 0 and 100",
            match value {
                serde_json::Value::String(text) => crate::echo::quote(text),
                other => crate::echo::quote(&other.to_string()),
            }
        ))),
    }
}

/// `GET /servers`: a JSON array of instance ids (strings). Ids that could
/// not be put in a URL are returned apart, with why, so each is reported
/// on its own instance while the rest are fetched.
pub fn parse_server_list(body: &[u8]) -> Result<ServerList, PayloadError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PayloadError(format!("the server list is not JSON: {e}")))?;
    let serde_json::Value::Array(items) = value else {
        return Err(PayloadError(
            "the server list is not a JSON array of instance ids".to_string(),
        ));
    };
    let mut list = ServerList::default();
    let mut seen = std::collections::HashSet::new();
    for (index, item) in items.into_iter().enumerate() {
        let serde_json::Value::String(id) = item else {
            return Err(PayloadError(format!(
                "item {index} of the server list is not a string: {}",
                crate::echo::quote(&item.to_string())
            )));
        };
        if !seen.insert(id.clone()) {
            continue;
        }
        match check_instance_name(&id) {
            Ok(()) => list.ids.push(id),
            Err(problem) => list.unusable.push((id, problem)),
        }
    }
    Ok(list)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerList {
    /// Ids to fetch, in the order listed, each once.
    pub ids: Vec<String>,
    /// Ids that cannot be fetched, with why.
    pub unusable: Vec<(String, String)>,
}

/// `GET /{id}`: `{"cpu":"61%","service":"UserService","memory":"4%"}`.
/// Other fields are ignored. The observation for instance `id`.
pub fn parse_instance_report(id: &str, body: &[u8]) -> Observation {
    let mut observation = Observation::named(id);
    // An instance's address is its id when the id is one (the seed API's
    // ids are IP addresses); a name stays without.
    if id.parse::<std::net::IpAddr>().is_ok() {
        observation.address = Some(id.to_string());
    }
    match read_instance_report(body) {
        Ok((service, cpu, memory)) => {
            observation.service = service;
            observation.report = Report::Figures { cpu, memory };
        }
        Err(error) => observation.report = Report::Failed(error.0),
    }
    observation
}

fn read_instance_report(body: &[u8]) -> Result<(String, f64, f64), PayloadError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PayloadError(format!("malformed report: not JSON: {e}")))?;
    let serde_json::Value::Object(fields) = value else {
        return Err(PayloadError(
            "malformed report: not a JSON object".to_string(),
        ));
    };
    let field = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| PayloadError(format!("malformed report: no {name}")))
    };
    let cpu = parse_percent(field("cpu")?)
        .map_err(|e| PayloadError(format!("malformed report: cpu: {e}")))?;
    let memory = parse_percent(field("memory")?)
        .map_err(|e| PayloadError(format!("malformed report: memory: {e}")))?;
    let service = match field("service")? {
        serde_json::Value::String(service) if service.len() <= MAX_INSTANCE_NAME_LEN => {
            service.clone()
        }
        other => {
            return Err(PayloadError(format!(
                "malformed report: service is not a short string: {}",
                crate::echo::quote(&other.to_string())
            )));
        }
    };
    Ok((service, cpu, memory))
}

/// A problem in a targets file, with its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct FileProblem {
    pub line: usize,
    pub message: String,
}

/// A targets file. Either a JSON array of objects
/// (`[{"name": "web-1", "address": "127.0.0.1", "service": "web",
/// "labels": {"zone": "a"}}]`; only `name` is required), or lines:
///
/// ```text
/// # comments and blank lines are skipped
/// web-1 127.0.0.1 service=web zone=a
/// web-2 service=web
/// db-1
/// ```
///
/// one instance per line: its name, then optionally its address (the
/// second word when it has no `=`), then `key=value` labels; the label
/// `service` is the instance's service. Every problem is reported, with
/// its line, and none of the file is used if there is one.
pub fn parse_targets_file(text: &str) -> Result<Vec<Observation>, Vec<FileProblem>> {
    if text.trim_start().starts_with('[') {
        return parse_targets_json(text);
    }
    let mut problems = Vec::new();
    let mut observations: Vec<Observation> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let content = line.split_once('#').map_or(line, |(before, _)| before);
        let mut words = content.split_whitespace();
        let Some(name) = words.next() else { continue };
        let mut problem = |message: String| {
            problems.push(FileProblem {
                line: line_no,
                message,
            })
        };
        if let Err(e) = check_instance_name(name) {
            problem(e);
            continue;
        }
        if let Some(first) = seen.insert(name.to_string(), line_no) {
            problem(format!("{name} is listed already, on line {first}"));
            continue;
        }
        let mut observation = Observation::named(name);
        for (position, word) in words.enumerate() {
            match word.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    if key == "service" {
                        observation.service = value.to_string();
                    } else {
                        observation
                            .labels
                            .insert(key.to_string(), value.to_string());
                    }
                }
                Some(_) => problem(format!("{word}: a label needs a key before =")),
                None if position == 0 => match check_instance_name(word) {
                    Ok(()) => observation.address = Some(word.to_string()),
                    Err(e) => problem(format!("address: {e}")),
                },
                None => problem(format!(
                    "{word}: after the name and address, only key=value labels"
                )),
            }
        }
        observations.push(observation);
    }
    if problems.is_empty() {
        Ok(observations)
    } else {
        Err(problems)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTarget {
    name: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    service: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn parse_targets_json(text: &str) -> Result<Vec<Observation>, Vec<FileProblem>> {
    let targets: Vec<JsonTarget> = serde_json::from_str(text).map_err(|e| {
        vec![FileProblem {
            line: e.line(),
            message: e.to_string(),
        }]
    })?;
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut observations = Vec::with_capacity(targets.len());
    for (index, target) in targets.into_iter().enumerate() {
        let problem = |message: String| FileProblem {
            line: 0,
            message: format!("item {index}: {message}"),
        };
        if let Err(e) = check_instance_name(&target.name) {
            problems.push(problem(e));
            continue;
        }
        if let Some(Err(e)) = target.address.as_deref().map(check_instance_name) {
            problems.push(problem(format!("address: {e}")));
            continue;
        }
        if !seen.insert(target.name.clone()) {
            problems.push(problem(format!("{} is listed already", target.name)));
            continue;
        }
        observations.push(Observation {
            name: target.name,
            address: target.address,
            service: target.service,
            labels: target.labels,
            report: Report::NoFigures,
        });
    }
    if problems.is_empty() {
        Ok(observations)
    } else {
        Err(problems)
    }
}

// --- fleet views ------------------------------------------------------------

/// What the fleet views sort instances by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Name,
    Address,
    Service,
    Cpu,
    Memory,
    Status,
}

impl FromStr for SortKey {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "name" | "" => SortKey::Name,
            "address" => SortKey::Address,
            "service" => SortKey::Service,
            "cpu" => SortKey::Cpu,
            "memory" => SortKey::Memory,
            "status" => SortKey::Status,
            other => {
                return Err(format!(
                    "cannot sort by {}: name, address, service, cpu, memory or status",
                    crate::echo::quote(other)
                ));
            }
        })
    }
}

/// Compares names as people read them: runs of digits by their value, so
/// `127.0.0.2` comes before `127.0.0.10` and `web-9` before `web-10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn chunks(text: &str) -> impl Iterator<Item = (bool, &str)> {
        let mut rest = text;
        std::iter::from_fn(move || {
            let first = rest.chars().next()?;
            let digits = first.is_ascii_digit();
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digits)
                .unwrap_or(rest.len());
            let (chunk, tail) = rest.split_at(end);
            rest = tail;
            Some((digits, chunk))
        })
    }
    let mut left = chunks(a);
    let mut right = chunks(b);
    loop {
        let ordering = match (left.next(), right.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((true, x)), Some((true, y))) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            (Some((_, x)), Some((_, y))) => x.cmp(y),
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
}

/// Sorts instances by `key` (ascending, or descending with `descending`);
/// ties by service, then name (in [`natural_cmp`] order), then source,
/// always ascending, so a page boundary is stable. Missing figures sort
/// below every figure.
pub fn sort_instances(instances: &mut [Instance], key: SortKey, descending: bool) {
    use std::cmp::Ordering;
    fn figure(a: Option<f64>, b: Option<f64>) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        }
    }
    instances.sort_by(|a, b| {
        let primary = match key {
            SortKey::Name => Ordering::Equal,
            SortKey::Address => a.address.cmp(&b.address),
            SortKey::Service => a.service.cmp(&b.service),
            SortKey::Cpu => figure(a.cpu, b.cpu),
            SortKey::Memory => figure(a.memory, b.memory),
            SortKey::Status => a.status.cmp(&b.status),
        };
        let primary = if descending {
            primary.reverse()
        } else {
            primary
        };
        let name = natural_cmp(&a.name, &b.name).then_with(|| a.source.cmp(&b.source));
        let name = if descending && key == SortKey::Name {
            name.reverse()
        } else {
            name
        };
        primary
            .then_with(|| {
                if key == SortKey::Name {
                    Ordering::Equal
                } else {
                    a.service.cmp(&b.service)
                }
            })
            .then(name)
    });
}

/// A service's figures over its instances.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSummary {
    /// Empty for instances without a service.
    pub service: String,
    pub instances: usize,
    pub healthy: usize,
    pub unhealthy: usize,
    pub unknown: usize,
    /// Mean over the instances that reported figures; None when none did.
    pub avg_cpu: Option<f64>,
    pub avg_memory: Option<f64>,
    /// The instances that are not healthy (unhealthy or unknown), by name.
    pub not_healthy: Vec<String>,
}

/// A service's state: every instance healthy, some, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    Healthy,
    Degraded,
    Down,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Healthy => "healthy",
            ServiceStatus::Degraded => "degraded",
            ServiceStatus::Down => "down",
        }
    }
}

impl ServiceSummary {
    pub fn status(&self) -> ServiceStatus {
        if self.healthy == self.instances {
            ServiceStatus::Healthy
        } else if self.healthy == 0 {
            ServiceStatus::Down
        } else {
            ServiceStatus::Degraded
        }
    }
}

/// Per-service figures, by service name.
pub fn summarize_services(instances: &[Instance]) -> Vec<ServiceSummary> {
    struct Acc {
        summary: ServiceSummary,
        cpu_sum: f64,
        cpu_n: usize,
        memory_sum: f64,
        memory_n: usize,
    }
    let mut by_service: BTreeMap<&str, Acc> = BTreeMap::new();
    for instance in instances {
        let acc = by_service
            .entry(instance.service.as_str())
            .or_insert_with(|| Acc {
                summary: ServiceSummary {
                    service: instance.service.clone(),
                    instances: 0,
                    healthy: 0,
                    unhealthy: 0,
                    unknown: 0,
                    avg_cpu: None,
                    avg_memory: None,
                    not_healthy: Vec::new(),
                },
                cpu_sum: 0.0,
                cpu_n: 0,
                memory_sum: 0.0,
                memory_n: 0,
            });
        acc.summary.instances += 1;
        match instance.status {
            InstanceStatus::Healthy => acc.summary.healthy += 1,
            InstanceStatus::Unhealthy => acc.summary.unhealthy += 1,
            InstanceStatus::Unknown => acc.summary.unknown += 1,
        }
        if instance.status != InstanceStatus::Healthy {
            acc.summary.not_healthy.push(instance.name.clone());
        }
        if let Some(cpu) = instance.cpu {
            acc.cpu_sum += cpu;
            acc.cpu_n += 1;
        }
        if let Some(memory) = instance.memory {
            acc.memory_sum += memory;
            acc.memory_n += 1;
        }
    }
    by_service
        .into_values()
        .map(|mut acc| {
            acc.summary.avg_cpu = (acc.cpu_n > 0).then(|| acc.cpu_sum / acc.cpu_n as f64);
            acc.summary.avg_memory =
                (acc.memory_n > 0).then(|| acc.memory_sum / acc.memory_n as f64);
            acc.summary.not_healthy.sort_by(|a, b| natural_cmp(a, b));
            acc.summary
        })
        .collect()
}

/// The services with fewer than `min_healthy` healthy instances.
pub fn below_min_healthy(services: &[ServiceSummary], min_healthy: usize) -> Vec<&ServiceSummary> {
    services
        .iter()
        .filter(|service| service.healthy < min_healthy)
        .collect()
}

/// The services whose healthy count differs between two summaries of the
/// inventory (a service that appears counts from 0, one that disappears
/// goes to 0 instances): what the `fleet.service` event reports. Instances
/// without a service are no service, and raise nothing.
pub fn service_changes(before: &[ServiceSummary], after: &[ServiceSummary]) -> Vec<ServiceSummary> {
    let before: Vec<&ServiceSummary> = before.iter().filter(|s| !s.service.is_empty()).collect();
    let after: Vec<&ServiceSummary> = after.iter().filter(|s| !s.service.is_empty()).collect();
    let earlier: HashMap<&str, usize> = before
        .iter()
        .map(|s| (s.service.as_str(), s.healthy))
        .collect();
    let mut changes: Vec<ServiceSummary> = after
        .iter()
        .filter(|s| earlier.get(s.service.as_str()).copied().unwrap_or(0) != s.healthy)
        .map(|s| (*s).clone())
        .collect();
    let now: std::collections::HashSet<&str> = after.iter().map(|s| s.service.as_str()).collect();
    for gone in before.iter().filter(|s| !now.contains(s.service.as_str())) {
        if gone.healthy > 0 {
            changes.push(ServiceSummary {
                service: gone.service.clone(),
                instances: 0,
                healthy: 0,
                unhealthy: 0,
                unknown: 0,
                avg_cpu: None,
                avg_memory: None,
                not_healthy: Vec::new(),
            });
        }
    }
    changes
}

/// The `fleet.service` event's payload for a service.
pub fn service_event_payload(summary: &ServiceSummary) -> serde_json::Value {
    serde_json::json!({
        "service": summary.service,
        "instances": summary.instances,
        "healthy": summary.healthy,
        "unhealthy": summary.not_healthy,
    })
}

#[cfg(test)]
mod tests;
