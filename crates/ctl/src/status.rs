//! `ultronctl version` and `ultronctl status`: what runs, and how it is.

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use ultron8_proto::v1;

use crate::client::{Client, call_failed};
use crate::output::{Output, status_name, time};

/// This ultronctl: its version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ULTRON8_COMMIT"), ")");

/// Exit status of `status` when the hive is not ready.
pub const EXIT_NOT_READY: u8 = 1;

/// Prints the client's version, then the hive's; `hive` is the status call's
/// answer, or why there is none.
pub fn print_version(
    hive: Result<v1::HiveStatus, anyhow::Error>,
    out: &Output,
) -> anyhow::Result<u8> {
    let client = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("ULTRON8_COMMIT"),
    });
    match out.is_data() {
        true => {
            let hive = match &hive {
                Ok(status) => json!({ "version": status.version, "commit": status.commit }),
                Err(e) => json!({ "error": format!("{e:#}") }),
            };
            out.data(&json!({ "client": client, "hive": hive }))?;
        }
        false => {
            println!("ultronctl: {VERSION}");
            match &hive {
                Ok(status) => println!("hive:      {} ({})", status.version, status.commit),
                Err(e) => println!("hive:      unknown: {e:#}"),
            }
        }
    }
    Ok(if hive.is_ok() { 0 } else { 1 })
}

pub async fn status(client: &mut Client) -> anyhow::Result<v1::HiveStatus> {
    Ok(client
        .get_status(v1::GetStatusRequest {})
        .await
        .map_err(call_failed)?
        .into_inner())
}

/// Whether the hive can take work: both dependencies answer.
pub fn ready(status: &v1::HiveStatus) -> bool {
    let up = |d: &Option<v1::DependencyStatus>| d.as_ref().is_some_and(|d| d.up);
    up(&status.store) && up(&status.broker)
}

pub fn print_status(status: &v1::HiveStatus, out: &Output) -> anyhow::Result<u8> {
    if out.is_data() {
        out.data(&status_json(status))?;
    } else {
        print!("{}", render_status(status, Utc::now()));
    }
    Ok(if ready(status) { 0 } else { EXIT_NOT_READY })
}

fn dependency_json(dependency: &Option<v1::DependencyStatus>) -> serde_json::Value {
    match dependency {
        Some(d) if d.up => json!({ "up": true }),
        Some(d) => json!({ "up": false, "error": d.error }),
        None => json!({ "up": false, "error": "not reported" }),
    }
}

fn status_json(status: &v1::HiveStatus) -> serde_json::Value {
    let figures = if status.figures_error.is_empty() {
        json!({
            "pending_events": status.pending_events,
            "oldest_pending_event_at": time(status.oldest_pending_event_at_ms),
            "drones_online": status.drones_online,
            "drones_offline": status.drones_offline,
            "executions_running": status.executions_running,
            "recent_window_seconds": status.recent_window_s,
            "recent_executions": status.recent_executions.iter()
                .map(|c| (status_name(c.status), c.count))
                .collect::<std::collections::BTreeMap<_, _>>(),
            "recent_failed_events": status.recent_failed_events,
        })
    } else {
        json!({ "error": status.figures_error })
    };
    json!({
        "ready": ready(status),
        "version": status.version,
        "commit": status.commit,
        "started_at": time(status.started_at_ms),
        "store": dependency_json(&status.store),
        "broker": dependency_json(&status.broker),
        "figures": figures,
    })
}

fn span(from: i64, now: DateTime<Utc>) -> String {
    match time(from) {
        Some(at) => {
            let secs = (now - at).to_std().unwrap_or_default().as_secs();
            humantime::format_duration(Duration::from_secs(secs)).to_string()
        }
        None => "unknown".into(),
    }
}

/// The one screen `ultronctl status` prints.
pub fn render_status(status: &v1::HiveStatus, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let dependency = |d: &Option<v1::DependencyStatus>| match d {
        Some(d) if d.up => "ok".to_string(),
        Some(d) => format!("UNREACHABLE: {}", d.error),
        None => "not reported".to_string(),
    };
    let verdict = if ready(status) {
        "ready"
    } else {
        "NOT READY: it cannot take jobs"
    };
    let _ = writeln!(out, "Hive:        {verdict}");
    let _ = writeln!(
        out,
        "Version:     {} ({}), up {}",
        status.version,
        status.commit,
        span(status.started_at_ms, now)
    );
    let _ = writeln!(out, "Store:       {}", dependency(&status.store));
    let _ = writeln!(out, "Broker:      {}", dependency(&status.broker));
    if !status.figures_error.is_empty() {
        let _ = writeln!(out, "Figures:     unknown: {}", status.figures_error);
        return out;
    }
    let backlog = if status.pending_events == 0 {
        "no events waiting".to_string()
    } else {
        format!(
            "{} events waiting, the oldest for {}",
            status.pending_events,
            span(status.oldest_pending_event_at_ms, now)
        )
    };
    let _ = writeln!(out, "Engine:      {backlog}");
    let _ = writeln!(
        out,
        "Drones:      {} online, {} offline",
        status.drones_online, status.drones_offline
    );
    let _ = writeln!(out, "Running:     {} executions", status.executions_running);
    let window = humantime::format_duration(Duration::from_secs(u64::from(status.recent_window_s)));
    let mut finished: Vec<(String, i64)> = status
        .recent_executions
        .iter()
        .map(|c| (status_name(c.status), c.count))
        .collect();
    finished.sort();
    let finished = if finished.is_empty() {
        "none".to_string()
    } else {
        finished
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "Last {window}: executions finished: {finished}");
    let _ = writeln!(
        out,
        "{:13}events that failed in the rules engine: {}",
        "", status.recent_failed_events
    );
    let unsuccessful: i64 = status
        .recent_executions
        .iter()
        .filter(|c| status_name(c.status) != "succeeded")
        .map(|c| c.count)
        .sum();
    if unsuccessful > 0 || status.recent_failed_events > 0 {
        let _ = writeln!(
            out,
            "\nSee: ultronctl job list; ultronctl event list; ultronctl audit list --since {window}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0)
            .single()
            .expect("time")
    }

    fn ms_ago(secs: i64) -> i64 {
        (now() - chrono::Duration::seconds(secs)).timestamp_millis()
    }

    fn healthy() -> v1::HiveStatus {
        v1::HiveStatus {
            version: "0.1.0".into(),
            commit: "abc123".into(),
            started_at_ms: ms_ago(3 * 3600 + 60),
            store: Some(v1::DependencyStatus {
                up: true,
                error: String::new(),
            }),
            broker: Some(v1::DependencyStatus {
                up: true,
                error: String::new(),
            }),
            pending_events: 0,
            drones_online: 12,
            drones_offline: 1,
            executions_running: 2,
            recent_window_s: 3600,
            ..Default::default()
        }
    }

    #[test]
    fn a_healthy_hive_fits_in_a_few_lines() {
        let text = render_status(&healthy(), now());
        assert_eq!(
            text,
            "Hive:        ready\n\
             Version:     0.1.0 (abc123), up 3h 1m\n\
             Store:       ok\n\
             Broker:      ok\n\
             Engine:      no events waiting\n\
             Drones:      12 online, 1 offline\n\
             Running:     2 executions\n\
             Last 1h: executions finished: none\n\
             \x20            events that failed in the rules engine: 0\n"
        );
        assert!(ready(&healthy()));
    }

    #[test]
    fn an_unreachable_broker_is_named_with_its_error_and_a_backlog_is_dated() {
        let mut status = healthy();
        status.broker = Some(v1::DependencyStatus {
            up: false,
            error: "the broker did not answer within 2s".into(),
        });
        status.pending_events = 340;
        status.oldest_pending_event_at_ms = ms_ago(95);
        status.recent_executions = vec![
            v1::StatusCount {
                status: v1::ExecutionStatus::Lost as i32,
                count: 2,
            },
            v1::StatusCount {
                status: v1::ExecutionStatus::Succeeded as i32,
                count: 40,
            },
        ];
        let text = render_status(&status, now());
        assert!(
            text.starts_with("Hive:        NOT READY: it cannot take jobs\n"),
            "{text}"
        );
        assert!(
            text.contains("Broker:      UNREACHABLE: the broker did not answer within 2s\n"),
            "{text}"
        );
        assert!(
            text.contains("Engine:      340 events waiting, the oldest for 1m 35s\n"),
            "{text}"
        );
        assert!(
            text.contains("executions finished: 2 lost, 40 succeeded\n"),
            "{text}"
        );
        assert!(text.contains("See: ultronctl job list"), "{text}");
        assert!(!ready(&status));
    }

    #[test]
    fn a_store_that_cannot_answer_leaves_the_figures_unknown() {
        let mut status = healthy();
        status.store = Some(v1::DependencyStatus {
            up: false,
            error: "connection refused".into(),
        });
        status.figures_error = "connection refused".into();
        let text = render_status(&status, now());
        assert!(
            text.ends_with("Figures:     unknown: connection refused\n"),
            "{text}"
        );
        assert!(!text.contains("Drones:"), "{text}");
        let json = status_json(&status);
        assert_eq!(json["ready"], false);
        assert_eq!(json["store"]["error"], "connection refused");
        assert_eq!(json["figures"]["error"], "connection refused");
    }
}
