//! `sensors/<name>.yaml` with `kind: source`: a discovery source the pack
//! declares (docs/fleet.md). Installing the pack adds it to the hive as
//! source `<pack>.<name>`, upgrading the pack replaces it, removing the pack
//! removes it.
//!
//! ```yaml
//! name: cloud
//! kind: source
//! description: The cloud provider's instances.
//! interval: 30s
//! http: {url: "http://127.0.0.1:9001", concurrency: 16, timeout: 5s}
//! # or: file: /etc/ultron8/targets.txt
//! # or: static: [db-1, db-2]
//! # or: drones: "label:role=web"      (service from the label `service`)
//! ```
//!
//! (This file is not `source.rs`: that name was taken by the reading of a
//! pack's files.)

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ultron8_core::discovery::{
    DEFAULT_HTTP_CONCURRENCY, DEFAULT_HTTP_TIMEOUT, DEFAULT_INTERVAL, SourceSpec,
};

use crate::manifest::optional_string;
use crate::problem::Sink;
use crate::text::check_name;
use crate::yaml::{Fields, Node, duration, integer, sequence, string};

/// A discovery source a pack declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDecl {
    pub name: String,
    pub description: String,
    pub spec: SourceSpec,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

const KEYS: &[&str] = &[
    "name",
    "kind",
    "description",
    "interval",
    "http",
    "file",
    "static",
    "drones",
];

/// Decodes a `kind: source` sensor file; every problem goes to `sink`.
pub(crate) fn decode(stem: &str, node: &Node, sink: &mut Sink<'_>) -> Option<SourceDecl> {
    let before = sink.count();
    let fields = Fields::new(node, "a sensor", KEYS, sink)?;
    let name = fields.required("name", sink).and_then(|node| {
        let name = string(node, sink)?;
        if let Err(why) = check_name(name) {
            sink.at(node.pos, format!("invalid sensor name {name:?}: {why}"));
            return None;
        }
        if name != stem {
            sink.at(
                node.pos,
                format!(
                    "the sensor is named `{name}` but its file is {}; they must match",
                    sink.file()
                ),
            );
        }
        Some(name.to_string())
    });
    let description = optional_string(&fields, "description", sink).unwrap_or_default();
    let interval = match fields.get("interval") {
        Some(node) => duration(node, sink).filter(|interval| {
            let ok = *interval >= Duration::from_secs(1);
            if !ok {
                sink.at(node.pos, "a source's interval is at least 1s");
            }
            ok
        }),
        None => Some(DEFAULT_INTERVAL),
    };
    let given: Vec<&str> = ["http", "file", "static", "drones"]
        .into_iter()
        .filter(|key| fields.get(key).is_some())
        .collect();
    let spec = match given.as_slice() {
        ["http"] => fields.get("http").and_then(|node| http(node, sink)),
        ["file"] => fields.get("file").and_then(|node| {
            string(node, sink).map(|path| SourceSpec::File {
                path: path.to_string(),
            })
        }),
        ["static"] => fields.get("static").and_then(|node| {
            let items = sequence(node, "a list of instance names", sink)?;
            let targets: Option<Vec<String>> = items
                .iter()
                .map(|item| string(item, sink).map(str::to_string))
                .collect();
            targets.map(|targets| SourceSpec::Static { targets })
        }),
        ["drones"] => fields.get("drones").and_then(|node| {
            string(node, sink).map(|target| SourceSpec::Drones {
                target: target.to_string(),
                service_label: "service".to_string(),
            })
        }),
        [] => {
            sink.at(
                fields.pos,
                "a source needs one of `http`, `file`, `static` or `drones`",
            );
            None
        }
        _ => {
            sink.at(
                fields.pos,
                format!(
                    "a source has one of `http`, `file`, `static` or `drones`, not {}",
                    given.join(" and ")
                ),
            );
            None
        }
    };
    if let (Some(spec), Some(node)) = (&spec, fields.get(given.first().copied().unwrap_or("")))
        && let Err(problem) = spec.check()
    {
        sink.at(node.pos, problem);
    }
    if sink.count() > before {
        return None;
    }
    Some(SourceDecl {
        name: name?,
        description,
        spec: spec?,
        interval: interval?,
    })
}

fn http(node: &Node, sink: &mut Sink<'_>) -> Option<SourceSpec> {
    let fields = Fields::new(
        node,
        "an http source",
        &["url", "concurrency", "timeout"],
        sink,
    )?;
    let url = fields
        .required("url", sink)
        .and_then(|n| string(n, sink))
        .map(str::to_string);
    let concurrency = match fields.get("concurrency") {
        Some(node) => integer(node, sink).and_then(|n| {
            let n = u32::try_from(n).ok();
            if n.is_none() {
                sink.at(node.pos, "concurrency is a positive number");
            }
            n
        }),
        None => Some(DEFAULT_HTTP_CONCURRENCY),
    };
    let timeout = match fields.get("timeout") {
        Some(node) => duration(node, sink),
        None => Some(DEFAULT_HTTP_TIMEOUT),
    };
    Some(SourceSpec::Http {
        url: url?,
        concurrency: concurrency?,
        timeout_ms: u64::try_from(timeout?.as_millis()).unwrap_or(u64::MAX),
    })
}
