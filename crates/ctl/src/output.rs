//! How results look: tables for people, JSON (`-o json`) for programs.
//! Data goes to stdout; diagnostics go to stderr.

use chrono::{DateTime, TimeZone, Utc};
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;
use ultron8_proto::convert::status_from_wire;
use ultron8_proto::v1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    table
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn time(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0)
        .then(|| Utc.timestamp_millis_opt(ms).single())
        .flatten()
}

pub fn ago(ms: i64) -> String {
    match time(ms) {
        Some(at) => {
            let elapsed = (Utc::now() - at).to_std().unwrap_or_default();
            format!(
                "{} ago",
                humantime::format_duration(std::time::Duration::from_secs(elapsed.as_secs()))
            )
        }
        None => "never".into(),
    }
}

pub fn status_name(status: i32) -> String {
    status_from_wire(status)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| format!("unknown({status})"))
}

/// How long a running execution has run: `12.30s so far`, or `not
/// started` before its drone picked it up.
pub fn running_for(started_at_ms: i64, now: DateTime<Utc>) -> String {
    match time(started_at_ms) {
        Some(started) => {
            let ms = (now - started).num_milliseconds().max(0) as u64;
            format!("{} so far", seconds(ms))
        }
        None => "not started".into(),
    }
}

pub fn seconds(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

#[derive(Serialize)]
pub struct DroneView {
    pub id: String,
    pub online: bool,
    pub hostname: String,
    pub os: String,
    pub os_version: String,
    pub kernel: String,
    pub arch: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub labels: std::collections::BTreeMap<String, String>,
    pub agent_version: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub enrolled_at: Option<DateTime<Utc>>,
    pub stats: Option<StatsView>,
}

#[derive(Serialize)]
pub struct StatsView {
    pub cpu_percent: f32,
    pub memory_percent: f32,
    pub disk_percent: f32,
    pub load: [f64; 3],
    pub uptime_seconds: u64,
}

impl From<&v1::Drone> for DroneView {
    fn from(d: &v1::Drone) -> Self {
        let facts = d.facts.clone().unwrap_or_default();
        DroneView {
            id: d.id.clone(),
            online: d.online,
            hostname: facts.hostname,
            os: facts.os,
            os_version: facts.os_version,
            kernel: facts.kernel,
            arch: facts.arch,
            cpus: facts.cpus,
            memory_bytes: facts.memory_bytes,
            labels: facts.labels.into_iter().collect(),
            agent_version: facts.agent_version,
            last_seen: time(d.last_seen_ms),
            enrolled_at: time(d.enrolled_at_ms),
            stats: d.stats.as_ref().map(|s| StatsView {
                cpu_percent: s.cpu_percent,
                memory_percent: s.memory_percent,
                disk_percent: s.disk_percent,
                load: [s.load1, s.load5, s.load15],
                uptime_seconds: s.uptime_seconds,
            }),
        }
    }
}

#[derive(Serialize)]
pub struct ExecutionView {
    pub id: String,
    pub job_id: String,
    pub drone: String,
    pub status: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&v1::Execution> for ExecutionView {
    fn from(e: &v1::Execution) -> Self {
        ExecutionView {
            id: e.id.clone(),
            job_id: e.job_id.clone(),
            drone: e.drone_id.clone(),
            status: status_name(e.status),
            exit_code: e.exit_code,
            duration_ms: e.duration_ms,
            stdout: String::from_utf8_lossy(&e.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&e.stderr).into_owned(),
            stdout_truncated: e.stdout_truncated,
            stderr_truncated: e.stderr_truncated,
            error: Some(e.error.clone()).filter(|s| !s.is_empty()),
            created_at: time(e.created_at_ms),
            dispatched_at: time(e.dispatched_at_ms),
            started_at: time(e.started_at_ms),
            finished_at: time(e.finished_at_ms),
            expires_at: time(e.expires_at_ms),
        }
    }
}

#[derive(Serialize)]
pub struct JobView {
    pub id: String,
    pub target: String,
    pub requester: String,
    pub command: String,
    pub created_at: Option<DateTime<Utc>>,
    pub executions: Vec<ExecutionView>,
    /// Drones the target named that were offline at submission: not run.
    pub offline_drones: Vec<String>,
}

impl From<&v1::Job> for JobView {
    fn from(j: &v1::Job) -> Self {
        JobView {
            id: j.id.clone(),
            target: j.target.clone(),
            requester: j.requester.clone(),
            command: j
                .command
                .clone()
                .and_then(|c| ultron8_proto::convert::command_from_wire(Some(c)).ok())
                .map(|c| c.program.display())
                .unwrap_or_default(),
            created_at: time(j.created_at_ms),
            executions: j.executions.iter().map(ExecutionView::from).collect(),
            offline_drones: j.offline_drones.clone(),
        }
    }
}

/// One host's result, as `run` and `job get` print it: a header line, then
/// the output indented.
pub fn print_execution_result(e: &v1::Execution) {
    let terminal = status_from_wire(e.status).is_ok_and(|s| s.is_terminal());
    if terminal {
        let exit = e
            .exit_code
            .map(|c| format!("exit {c}"))
            .unwrap_or_else(|| "no exit code".into());
        println!(
            "{}  {}  {}  {}",
            e.drone_id,
            status_name(e.status),
            exit,
            seconds(e.duration_ms)
        );
    } else {
        println!(
            "{}  {}  {}",
            e.drone_id,
            status_name(e.status),
            running_for(e.started_at_ms, Utc::now())
        );
    }
    for (bytes, truncated, label) in [
        (&e.stdout, e.stdout_truncated, "stdout"),
        (&e.stderr, e.stderr_truncated, "stderr"),
    ] {
        if bytes.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            if label == "stderr" {
                println!("  ! {line}");
            } else {
                println!("  | {line}");
            }
        }
        if truncated {
            println!("  ({label} truncated at the drone's output cap)");
        }
    }
    if !e.error.is_empty() {
        println!("  error: {}", e.error);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_running_execution_shows_how_long_it_has_run() {
        let now = Utc
            .with_ymd_and_hms(2026, 12, 2, 12, 0, 0)
            .single()
            .expect("time");
        let started = (now - chrono::Duration::milliseconds(12_300)).timestamp_millis();
        assert_eq!(running_for(started, now), "12.30s so far");
        assert_eq!(running_for(0, now), "not started");
    }
}
