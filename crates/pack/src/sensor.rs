//! What every sensor (`sensors/*.yaml`) shares, whatever its `kind`: a
//! name, an interval with a timeout that ends before the next run, and the
//! thresholds of [`ultron8_core::health`].

use std::time::Duration;

use ultron8_core::health::{FlapDetection, Thresholds};

use crate::problem::{Pos, Sink};
use crate::text::check_name;
use crate::yaml::{Fields, Node, Value, duration, integer, string};

/// The shortest interval a sensor may have (the drone enforces it too).
use ultron8_core::checks::MIN_INTERVAL;

/// A sensor's `interval` when left out: every 30 s.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

const FLAP_KEYS: &[&str] = &["max_changes", "window"];

/// The sensor's name: `name`, or the file's stem. `what` names the kind
/// ("probe", "check").
pub(crate) fn name(
    fields: &Fields<'_>,
    stem: &str,
    what: &str,
    sink: &mut Sink<'_>,
) -> (Pos, Option<String>) {
    let pos = fields.get("name").map_or(fields.pos, |n| n.pos);
    let name = match fields.get("name") {
        Some(node) => string(node, sink).and_then(|name| match check_name(name) {
            Ok(()) => Some(name.to_string()),
            Err(why) => {
                sink.at(node.pos, format!("invalid {what} name {name:?}: {why}"));
                None
            }
        }),
        None => match check_name(stem) {
            Ok(()) => Some(stem.to_string()),
            Err(why) => {
                sink.at(
                    fields.pos,
                    format!(
                        "the file name gives the {what} the invalid name {stem:?} ({why}); rename the file or set `name`"
                    ),
                );
                None
            }
        },
    };
    (pos, name)
}

/// `interval` (at least [`MIN_INTERVAL`]; `default` when left out) and
/// `timeout` (shorter than the interval; `default_timeout` or half the
/// interval when left out).
pub(crate) fn schedule(
    fields: &Fields<'_>,
    default: Duration,
    default_timeout: Duration,
    what: &str,
    sink: &mut Sink<'_>,
) -> (Option<Duration>, Option<Duration>) {
    let interval = match fields.get("interval") {
        Some(node) => duration(node, sink).and_then(|interval| {
            if interval < MIN_INTERVAL {
                sink.at(
                    node.pos,
                    format!(
                        "`interval` must be at least {}",
                        humantime::format_duration(MIN_INTERVAL)
                    ),
                );
                None
            } else {
                Some(interval)
            }
        }),
        None => Some(default),
    };
    let timeout = match (fields.get("timeout"), interval) {
        (Some(node), interval) => duration(node, sink).and_then(|timeout| match interval {
            Some(interval) if timeout >= interval => {
                sink.at(
                    node.pos,
                    format!(
                        "`timeout` ({}) must be shorter than `interval` ({}): a {what} must end before its next run",
                        humantime::format_duration(timeout),
                        humantime::format_duration(interval)
                    ),
                );
                None
            }
            _ => Some(timeout),
        }),
        (None, Some(interval)) => Some(default_timeout.min(interval / 2)),
        (None, None) => None,
    };
    (interval, timeout)
}

/// `failure_threshold`, `success_threshold` and `flap`, each defaulting to
/// [`Thresholds::default`]'s.
pub(crate) fn thresholds(fields: &Fields<'_>, sink: &mut Sink<'_>) -> Option<Thresholds> {
    let defaults = Thresholds::default();
    let failure_threshold = threshold(
        fields,
        "failure_threshold",
        defaults.failure_threshold,
        sink,
    );
    let success_threshold = threshold(
        fields,
        "success_threshold",
        defaults.success_threshold,
        sink,
    );
    let flap = match fields.entry("flap") {
        None => Some(defaults.flap),
        Some(entry) => flap(&entry.value, sink),
    };
    Some(Thresholds {
        failure_threshold: failure_threshold?,
        success_threshold: success_threshold?,
        flap: flap?,
    })
}

fn threshold(fields: &Fields<'_>, key: &str, default: u32, sink: &mut Sink<'_>) -> Option<u32> {
    let Some(node) = fields.get(key) else {
        return Some(default);
    };
    match integer(node, sink)? {
        n @ 1..=1000 => Some(n as u32),
        n => {
            sink.at(
                node.pos,
                format!("`{key}` must be between 1 and 1000, not {n}"),
            );
            None
        }
    }
}

/// `flap: {max_changes, window}`, or `flap: false` for no flap detection.
fn flap(node: &Node, sink: &mut Sink<'_>) -> Option<Option<FlapDetection>> {
    if node.value == Value::Bool(false) {
        return Some(None);
    }
    let fields = Fields::new(
        node,
        "flap detection ({max_changes, window}, or false)",
        FLAP_KEYS,
        sink,
    )?;
    let max_changes =
        fields
            .required("max_changes", sink)
            .and_then(|node| match integer(node, sink)? {
                n @ 1..=1000 => Some(n as u32),
                n => {
                    sink.at(
                        node.pos,
                        format!("`max_changes` must be between 1 and 1000, not {n}"),
                    );
                    None
                }
            });
    let window = fields
        .required("window", sink)
        .and_then(|node| duration(node, sink));
    Some(Some(FlapDetection {
        max_changes: max_changes?,
        window: window?,
    }))
}
