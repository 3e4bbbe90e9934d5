//! `ultronctl check`: the checks drones run and where each stands.

use clap::Subcommand;
use serde::Serialize;
use ultron8_proto::v1;

use crate::client::{Client, call_failed};
use crate::output::{self, Cell, Output, Table};

#[derive(Subcommand)]
pub enum CheckCommand {
    /// Every check on every drone: its state, since when, its last run and
    /// last line of output, as each drone last reported (with its heartbeat;
    /// -o wide adds when the hive last stored a change).
    ///
    /// States: pending (not enough runs yet), healthy, failing
    /// (failure_threshold unhealthy runs in a row), error (the check could
    /// not say: it timed out, could not start, or the drone's policy
    /// refused it), flapping (changing too often; nothing fires until it
    /// settles). A change of state is a `drone.check` event that rules act
    /// on: see `ultronctl event list --trigger drone.check`.
    ///
    ///   ultronctl check list
    ///   ultronctl check list --state failing
    ///   ultronctl check list -t 'label:role=k8s-node' -o wide
    ///   ultronctl check list -o json
    ///
    /// Checks come from packs (sensors/<name>.yaml with kind: check); see
    /// docs/checks.md.
    #[command(verbatim_doc_comment)]
    List {
        /// Only the drones this target expression selects (web-*, label:role=web, ...)
        #[arg(short, long, value_name = "TARGET")]
        target: Option<String>,
        /// Only checks in this state: pending, healthy, failing, flapping, error
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
    },
}

/// A check as `-o json` and `-o yaml` show it.
#[derive(Serialize)]
pub struct CheckView {
    pub drone: String,
    pub check: String,
    pub state: String,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub last_run: Option<chrono::DateTime<chrono::Utc>>,
    pub last_output: String,
    pub reported_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&v1::DroneCheckInfo> for CheckView {
    fn from(c: &v1::DroneCheckInfo) -> Self {
        CheckView {
            drone: c.drone_id.clone(),
            check: c.check.clone(),
            state: c.state.clone(),
            since: output::time(c.since_ms),
            last_run: output::time(c.last_run_ms),
            last_output: c.last_output.clone(),
            reported_at: output::time(c.reported_at_ms),
        }
    }
}

pub async fn check(client: &mut Client, command: CheckCommand, out: &Output) -> anyhow::Result<u8> {
    match command {
        CheckCommand::List { target, state } => {
            let filtered = target.is_some() || state.is_some();
            let checks = client
                .list_checks(v1::ListChecksRequest {
                    target: target.unwrap_or_default(),
                    state: state.unwrap_or_default(),
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .checks;
            if out.is_data() {
                out.data(&checks.iter().map(CheckView::from).collect::<Vec<_>>())?;
                return Ok(0);
            }
            if checks.is_empty() && filtered {
                eprintln!("No check matches.");
                return Ok(0);
            }
            if checks.is_empty() {
                eprintln!(
                    "No checks reported. Checks come from packs (sensors/<name>.yaml, kind: check); \
                     drones report theirs with each heartbeat."
                );
                return Ok(0);
            }
            let mut table = Table::new(&[
                "DRONE", "CHECK", "STATE", "SINCE", "LAST RUN", "OUTPUT", "UPDATED",
            ])
            .wide_only(&["UPDATED"]);
            for c in &checks {
                table.row(vec![
                    Cell::text(&c.drone_id),
                    Cell::text(&c.check),
                    Cell::state(&c.state),
                    Cell::text(output::ago(c.since_ms)),
                    Cell::text(output::ago(c.last_run_ms)),
                    Cell::text(&c.last_output),
                    Cell::text(output::ago(c.reported_at_ms)),
                ]);
            }
            out.table(&table);
            Ok(0)
        }
    }
}
