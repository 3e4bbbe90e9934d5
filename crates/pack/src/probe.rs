//! `sensors/<name>.yaml` with `kind: probe`: an HTTP GET or a TCP connect
//! the hive runs against discovered targets (by source or service) or
//! listed addresses, every `interval`, judged with the thresholds of
//! [`ultron8_core::health`].

use std::time::Duration;

use ultron8_core::probe::{HttpProbe, ProbeCheck, ProbeSpec, ProbeTargets, Scheme, TcpProbe};

use crate::manifest::optional_string;
use crate::model::Probe;
use crate::problem::{Pos, Sink};
use crate::sensor;
use crate::yaml::{Fields, Node, integer, non_empty_string, sequence, string};

const KEYS: &[&str] = &[
    "kind",
    "name",
    "description",
    "targets",
    "http",
    "tcp",
    "interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "flap",
];
const TARGET_KEYS: &[&str] = &["source", "service", "static"];
const HTTP_KEYS: &[&str] = &["scheme", "port", "path", "expect_status", "body"];
const TCP_KEYS: &[&str] = &["port"];

/// Left out: 5 s, or half the interval when that is shorter.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Decoded {
    pub name_pos: Pos,
    pub name: Option<String>,
    pub probe: Option<Probe>,
}

pub(crate) fn decode(pack: Option<&str>, stem: &str, node: &Node, sink: &mut Sink<'_>) -> Decoded {
    let before = sink.count();
    let Some(fields) = Fields::new(node, "a probe", KEYS, sink) else {
        return Decoded {
            name_pos: node.pos,
            name: None,
            probe: None,
        };
    };
    let (name_pos, name) = sensor::name(&fields, stem, "probe", sink);
    let description = optional_string(&fields, "description", sink).unwrap_or_default();
    let targets = fields
        .required("targets", sink)
        .and_then(|node| targets(node, sink));
    let check = check(&fields, sink);
    let (interval, timeout) = sensor::schedule(
        &fields,
        sensor::DEFAULT_INTERVAL,
        DEFAULT_TIMEOUT,
        "probe",
        sink,
    );
    let thresholds = sensor::thresholds(&fields, sink);

    let probe = match (name.clone(), targets, check, interval, timeout, thresholds) {
        (
            Some(name),
            Some(targets),
            Some(check),
            Some(interval),
            Some(timeout),
            Some(thresholds),
        ) if sink.count() == before => Some(Probe {
            pack: pack.unwrap_or_default().to_string(),
            name,
            description,
            spec: ProbeSpec {
                targets,
                check,
                interval,
                timeout,
                thresholds,
            },
        }),
        _ => None,
    };
    Decoded {
        name_pos,
        name,
        probe,
    }
}

/// `targets: {source, service, static}`: at least one of them.
fn targets(node: &Node, sink: &mut Sink<'_>) -> Option<ProbeTargets> {
    let fields = Fields::new(
        node,
        "the probe's targets ({source, service, static})",
        TARGET_KEYS,
        sink,
    )?;
    let source = fields
        .get("source")
        .and_then(|node| non_empty_string(node, sink))
        .map(str::to_string);
    let service = fields
        .get("service")
        .and_then(|node| non_empty_string(node, sink))
        .map(str::to_string);
    let mut listed = Vec::new();
    if let Some(node) = fields.get("static") {
        for item in sequence(
            node,
            "a list of addresses (host, host:port, [::1]:port)",
            sink,
        )? {
            let address = non_empty_string(item, sink)?;
            if let Err(e) = ultron8_core::probe::endpoint(address, None, Some(1)) {
                sink.at(item.pos, format!("invalid address: {e}"));
                return None;
            }
            listed.push(address.trim().to_string());
        }
    }
    if source.is_none() && service.is_none() && listed.is_empty() {
        sink.at(
            fields.pos,
            "a probe needs targets: discovered ones (`source: NAME`, `service: NAME`) and/or listed ones (`static: [host:port, ...]`)",
        );
        return None;
    }
    Some(ProbeTargets {
        source,
        service,
        listed,
    })
}

/// Exactly one of `http` or `tcp`.
fn check(fields: &Fields<'_>, sink: &mut Sink<'_>) -> Option<ProbeCheck> {
    match (fields.entry("http"), fields.entry("tcp")) {
        (Some(http), None) => http_probe(&http.value, sink).map(ProbeCheck::Http),
        (None, Some(tcp)) => tcp_probe(&tcp.value, sink).map(ProbeCheck::Tcp),
        (Some(http), Some(tcp)) => {
            // Still read the first, so its problems come in the same round.
            let _ = http_probe(&http.value, sink);
            sink.at(
                tcp.key_pos,
                "give one of `http` or `tcp`, not both (`http` is already set)",
            );
            None
        }
        (None, None) => {
            sink.at(
                fields.pos,
                "a probe needs `http: {path, ...}` (an HTTP GET) or `tcp: {port}` (a TCP connect)",
            );
            None
        }
    }
}

fn port(fields: &Fields<'_>, sink: &mut Sink<'_>) -> Option<Option<u16>> {
    let Some(node) = fields.get("port") else {
        return Some(None);
    };
    match integer(node, sink)? {
        n @ 1..=65535 => Some(Some(n as u16)),
        n => {
            sink.at(
                node.pos,
                format!("`port` must be between 1 and 65535, not {n}"),
            );
            None
        }
    }
}

fn http_probe(node: &Node, sink: &mut Sink<'_>) -> Option<HttpProbe> {
    let fields = Fields::new(node, "an HTTP probe ({path, port, ...})", HTTP_KEYS, sink)?;
    let scheme = match fields.get("scheme") {
        None => Some(Scheme::Http),
        Some(node) => match string(node, sink)? {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            other => {
                sink.at(
                    node.pos,
                    format!("`scheme` is http or https, not {other:?}"),
                );
                None
            }
        },
    };
    let port = port(&fields, sink);
    let path = match fields.get("path") {
        None => Some("/".to_string()),
        Some(node) => string(node, sink).and_then(|path| {
            if path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c == '#') {
                Some(path.to_string())
            } else {
                sink.at(
                    node.pos,
                    format!("`path` must start with / and hold no spaces or #, not {path:?}"),
                );
                None
            }
        }),
    };
    let expect_status = match fields.get("expect_status") {
        None => Some(Vec::new()),
        Some(node) => {
            let mut codes = Vec::new();
            let mut ok = true;
            for item in sequence(node, "a list of HTTP status codes", sink)? {
                match integer(item, sink) {
                    Some(code @ 100..=599) => codes.push(code as u16),
                    Some(code) => {
                        sink.at(item.pos, format!("{code} is not an HTTP status code"));
                        ok = false;
                    }
                    None => ok = false,
                }
            }
            ok.then_some(codes)
        }
    };
    let body = match fields.get("body") {
        None => Some(None),
        Some(node) => {
            non_empty_string(node, sink).and_then(|pattern| match regex::Regex::new(pattern) {
                Ok(_) => Some(Some(pattern.to_string())),
                Err(e) => {
                    sink.at(
                        node.pos,
                        format!("`body` is not a valid regular expression: {e}"),
                    );
                    None
                }
            })
        }
    };
    Some(HttpProbe {
        scheme: scheme?,
        port: port?,
        path: path?,
        expect_status: expect_status?,
        body: body?,
    })
}

fn tcp_probe(node: &Node, sink: &mut Sink<'_>) -> Option<TcpProbe> {
    let fields = Fields::new(node, "a TCP probe ({port})", TCP_KEYS, sink)?;
    Some(TcpProbe {
        port: port(&fields, sink)?,
    })
}
