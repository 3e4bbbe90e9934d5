//! Drone checks as the hive hands them out and the drone runs them: the
//! signed check set, what one check runs, and the bounded line of output a
//! check reports. Pure; the state machine is [`crate::health`].
//!
//! The hive signs the JSON of a [`CheckSet`] with its request-signing key,
//! prefixed by [`CHECK_SET_DOMAIN`] so that no signature over a check set
//! can ever pass for one over an action request (or the reverse). The set
//! names its drone and its version, so one drone's set cannot be replayed
//! to another, nor an old version passed off as the one announced.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::health::{CheckState, Thresholds, Transition};
use crate::model::Program;

/// What a signature over a check set covers before the set's bytes.
pub const CHECK_SET_DOMAIN: &[u8] = b"ultron8 check set v1\n";

/// The shortest interval a check may have: short enough for tests and
/// demonstrations, long enough that a typo (`1ms`) cannot busy-loop a host.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The most output a check reports (its last line, or the end of it).
pub const MAX_OUTPUT_BYTES: usize = 2048;

/// One check as a drone runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// `pack.name`.
    pub reference: String,
    pub program: Program,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub thresholds: Thresholds,
}

/// Every check one drone runs, as signed by the hive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSet {
    pub drone_id: String,
    /// Lowercase hex SHA-256 of the JSON of `checks`: what the heartbeat
    /// announces; the same checks always have the same version.
    pub version: String,
    /// Sorted by reference.
    pub checks: Vec<CheckSpec>,
}

/// The bytes a check-set signature covers.
pub fn signed_bytes(check_set_json: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(CHECK_SET_DOMAIN.len() + check_set_json.len());
    bytes.extend_from_slice(CHECK_SET_DOMAIN);
    bytes.extend_from_slice(check_set_json);
    bytes
}

/// The last non-empty line of `output` (lossy UTF-8, trailing whitespace
/// trimmed), cut to its last `max` bytes on a character boundary: what a
/// check says when it fails is usually at its end.
pub fn last_line(output: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text
        .lines()
        .map(str::trim_end)
        .rfind(|line| !line.is_empty())
        .unwrap_or_default();
    if line.len() <= max {
        return line.to_string();
    }
    let mut start = line.len() - max;
    while !line.is_char_boundary(start) {
        start += 1;
    }
    line[start..].to_string()
}

/// One transition as the drone spools and reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckTransition {
    /// Made by the drone (uuid v7), unique: the hive stores each id once.
    pub id: String,
    /// `pack.name`.
    pub check: String,
    pub state: Transition,
    pub consecutive: u32,
    pub output: String,
    /// Unix ms, drone clock.
    pub at_ms: i64,
}

/// The payload of the `drone.check` event a transition becomes.
pub fn transition_payload(
    drone_id: &str,
    labels: &BTreeMap<String, String>,
    transition: &CheckTransition,
) -> Value {
    json!({
        "check": transition.check,
        "drone": drone_id,
        "state": transition.state.as_str(),
        "consecutive": transition.consecutive,
        "output": transition.output,
        "labels": labels,
        "at_ms": transition.at_ms,
    })
}

/// Where one check stands on one drone: what the periodic summary carries
/// and `ultronctl check list` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    /// `pack.name`.
    pub check: String,
    pub state: CheckState,
    /// Unix ms of the last change of state; None before the first.
    pub since_ms: Option<i64>,
    /// Unix ms of the last run; None before the first.
    pub last_run_ms: Option<i64>,
    pub last_output: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_is_the_last_non_empty_one_bounded_on_a_character() {
        assert_eq!(last_line(b"", 10), "");
        assert_eq!(last_line(b"one\ntwo\n\n  \n", 10), "two");
        assert_eq!(last_line(b"one\r\ntwo  \r\n", 10), "two");
        assert_eq!(last_line(b"abcdefghij", 4), "ghij");
        // "é" is two bytes: cutting inside it moves the cut forward.
        assert_eq!(last_line("aéé".as_bytes(), 3), "é");
        assert_eq!(last_line(b"\xff\xfeok", 10), "\u{fffd}\u{fffd}ok");
    }

    #[test]
    fn the_signed_bytes_carry_the_domain_first() {
        let bytes = signed_bytes(b"{}");
        assert!(bytes.starts_with(CHECK_SET_DOMAIN));
        assert!(bytes.ends_with(b"{}"));
    }

    #[test]
    fn a_transition_payload_has_the_documented_fields() {
        let labels = BTreeMap::from([("role".to_string(), "k8s-node".to_string())]);
        let transition = CheckTransition {
            id: "t1".into(),
            check: "k8s.node_ok".into(),
            state: Transition::Failing,
            consecutive: 4,
            output: "kubelet down".into(),
            at_ms: 5,
        };
        let payload = transition_payload("node-1", &labels, &transition);
        assert_eq!(payload["check"], "k8s.node_ok");
        assert_eq!(payload["drone"], "node-1");
        assert_eq!(payload["state"], "failing");
        assert_eq!(payload["consecutive"], 4);
        assert_eq!(payload["output"], "kubelet down");
        assert_eq!(payload["labels"]["role"], "k8s-node");
        let fields: Vec<&str> = payload
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let declared = crate::triggers::built_in(crate::triggers::DRONE_CHECK)
            .and_then(|t| t.payload_fields)
            .unwrap_or_default();
        for field in fields {
            assert!(declared.contains(&field), "{field} is not declared");
        }
    }
}
