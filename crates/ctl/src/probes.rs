//! `ultronctl probe`: where the hive's probes stand on their targets.

use clap::Subcommand;
use serde::Serialize;
use ultron8_proto::v1;

use crate::client::{Client, call_failed};
use crate::output::{self, Cell, Output, Table};

#[derive(Subcommand)]
pub enum ProbeCommand {
    /// Every probe on each of its targets: state, since when, the last run
    /// and what it found.
    ///
    /// Probes come from packs (sensors/*.yaml with `kind: probe`): an HTTP
    /// GET or a TCP connect against discovered targets or listed
    /// addresses, every `interval`, judged with the thresholds of a check.
    /// States: pending (too few runs to say), healthy, failing (failed
    /// `failure_threshold` times in a row), flapping (changed too often;
    /// nothing fires until it settles), error (the probe could not judge,
    /// e.g. a bad address). Transitions raise probe.failed,
    /// probe.recovered, probe.flapping and probe.error events for rules.
    ///
    ///   ultronctl probe list
    ///   ultronctl probe list --state failing
    ///   ultronctl probe list --probe web.http_ok -o json
    #[command(verbatim_doc_comment)]
    List {
        /// Only this probe (pack.name)
        #[arg(long, value_name = "PROBE")]
        probe: Option<String>,
        /// Only targets in this state
        #[arg(long, value_parser = ["pending", "healthy", "failing", "flapping", "error"])]
        state: Option<String>,
    },
}

/// A probe's state on one target as `-o json` and `-o yaml` show it.
#[derive(Serialize)]
pub struct ProbeTargetView {
    pub probe: String,
    pub target: String,
    pub address: String,
    pub state: String,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub last_run: Option<chrono::DateTime<chrono::Utc>>,
    pub last_outcome: String,
    pub consecutive: u32,
    pub detail: String,
    pub latency_ms: f64,
}

impl From<&v1::ProbeTargetState> for ProbeTargetView {
    fn from(s: &v1::ProbeTargetState) -> Self {
        ProbeTargetView {
            probe: s.probe.clone(),
            target: s.target.clone(),
            address: s.address.clone(),
            state: s.state.clone(),
            since: (s.since_ms != 0)
                .then(|| output::time(s.since_ms))
                .flatten(),
            last_run: output::time(s.last_run_ms),
            last_outcome: s.last_outcome.clone(),
            consecutive: s.consecutive,
            detail: s.detail.clone(),
            latency_ms: s.latency_us as f64 / 1000.0,
        }
    }
}

pub async fn probe(client: &mut Client, command: ProbeCommand, out: &Output) -> anyhow::Result<u8> {
    match command {
        ProbeCommand::List { probe, state } => {
            let targets = client
                .list_probes(v1::ListProbesRequest {
                    probe: probe.unwrap_or_default(),
                    state: state.clone().unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .targets;
            if out.is_data() {
                out.data(
                    &targets
                        .iter()
                        .map(ProbeTargetView::from)
                        .collect::<Vec<_>>(),
                )?;
                return Ok(0);
            }
            if targets.is_empty() {
                match state {
                    Some(state) => eprintln!("No probe target is {state}."),
                    None => eprintln!(
                        "No probe has run yet. Probes come from packs: sensors/*.yaml with `kind: probe` (docs/checks.md)."
                    ),
                }
                return Ok(0);
            }
            let mut table = Table::new(&[
                "PROBE", "TARGET", "STATE", "SINCE", "LAST RUN", "LATENCY", "DETAIL", "ADDRESS",
            ])
            .wide_only(&["ADDRESS"]);
            for t in &targets {
                table.row(vec![
                    Cell::text(&t.probe),
                    Cell::text(&t.target),
                    Cell::state(&t.state),
                    Cell::text(if t.since_ms == 0 {
                        "-".to_string()
                    } else {
                        output::ago(t.since_ms)
                    }),
                    Cell::text(output::ago(t.last_run_ms)),
                    Cell::text(format!("{:.1}ms", t.latency_us as f64 / 1000.0)),
                    Cell::text(&t.detail),
                    Cell::text(&t.address),
                ]);
            }
            out.table(&table);
            Ok(0)
        }
    }
}
