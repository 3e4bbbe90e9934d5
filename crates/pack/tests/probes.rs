//! `sensors/*.yaml` with `kind: probe`: what loads, and every problem at
//! its position.

// Test code: a failed setup step should panic where it happened.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{MANIFEST, assert_problem, files, problems};
use ultron8_core::health::{FlapDetection, Thresholds};
use ultron8_core::probe::{HttpProbe, ProbeCheck, ProbeSpec, ProbeTargets, Scheme, TcpProbe};
use ultron8_pack::{NothingInstalled, PackFiles, Probe, load};

fn pack_with(extra: &[(&str, &str)]) -> PackFiles {
    let mut all = vec![("pack.yaml", MANIFEST)];
    all.extend_from_slice(extra);
    files(&all)
}

#[test]
fn an_http_and_a_tcp_probe_load_with_their_defaults() {
    let pack = load(
        &pack_with(&[
            (
                "sensors/api_health.yaml",
                "\
kind: probe
description: The API answers on /healthz.
targets: {source: cloud, service: UserService, static: [\"127.77.0.5:8080\", \"[::1]:9090\"]}
http: {port: 8080, path: /healthz, expect_status: [200, 204], body: '\"ok\"'}
interval: 10s
timeout: 2s
failure_threshold: 2
success_threshold: 2
flap: {max_changes: 4, window: 5m}
",
            ),
            (
                "sensors/ssh.yaml",
                "kind: probe\nname: ssh_port\ntargets: {service: bastion}\ntcp: {port: 22}\n",
            ),
        ]),
        &NothingInstalled,
    )
    .unwrap();
    assert_eq!(
        pack.probes,
        vec![
            Probe {
                pack: "linux".into(),
                name: "api_health".into(),
                description: "The API answers on /healthz.".into(),
                spec: ProbeSpec {
                    targets: ProbeTargets {
                        source: Some("cloud".into()),
                        service: Some("UserService".into()),
                        listed: vec!["127.77.0.5:8080".into(), "[::1]:9090".into()],
                    },
                    check: ProbeCheck::Http(HttpProbe {
                        scheme: Scheme::Http,
                        port: Some(8080),
                        path: "/healthz".into(),
                        expect_status: vec![200, 204],
                        body: Some("\"ok\"".into()),
                    }),
                    interval: Duration::from_secs(10),
                    timeout: Duration::from_secs(2),
                    thresholds: Thresholds {
                        failure_threshold: 2,
                        success_threshold: 2,
                        flap: Some(FlapDetection {
                            max_changes: 4,
                            window: Duration::from_secs(300),
                        }),
                    },
                },
            },
            Probe {
                pack: "linux".into(),
                name: "ssh_port".into(),
                description: String::new(),
                spec: ProbeSpec {
                    targets: ProbeTargets {
                        service: Some("bastion".into()),
                        ..ProbeTargets::default()
                    },
                    check: ProbeCheck::Tcp(TcpProbe { port: Some(22) }),
                    interval: Duration::from_secs(30),
                    timeout: Duration::from_secs(5),
                    thresholds: Thresholds::default(),
                },
            },
        ]
    );
    assert_eq!(pack.probes[0].reference(), "linux.api_health");
}

#[test]
fn every_probe_problem_is_reported_at_its_position() {
    let got = problems(
        &pack_with(&[
            (
                "sensors/web.yaml",
                "\
kind: probe
targets: {servce: web, static: [\"http://127.0.0.1/\"]}
http: {path: healthz, expect_status: [700], body: \"(\", port: 70000}
tcp: {port: 22}
interval: 50ms
failure_threshold: 0
flap: {max_changes: 3}
",
            ),
            (
                "sensors/nothing.yaml",
                "kind: probe\ntargets: {}\ninterval: 10s\ntimeout: 10s\n",
            ),
            ("sensors/typo.yaml", "kind: prob\n"),
            ("sensors/nokind.yaml", "targets: {service: web}\n"),
        ]),
        &NothingInstalled,
    );
    for expected in [
        "sensors/nokind.yaml:1:1: missing required key `kind`",
        "sensors/nothing.yaml:2:10: a probe needs targets",
        "sensors/nothing.yaml:1:1: a probe needs `http: {path, ...}` (an HTTP GET) or `tcp: {port}`",
        "sensors/nothing.yaml:4:10: `timeout` (10s) must be shorter than `interval` (10s)",
        "sensors/typo.yaml:1:7: unknown sensor kind `prob` (did you mean `probe`?)",
        "sensors/web.yaml:2:11: unknown key `servce` (did you mean `service`?)",
        "sensors/web.yaml:2:33: invalid address: address \"http://127.0.0.1/\" has an invalid port",
        "sensors/web.yaml:3:14: `path` must start with /",
        "sensors/web.yaml:3:39: 700 is not an HTTP status code",
        "sensors/web.yaml:3:51: `body` is not a valid regular expression",
        "sensors/web.yaml:3:62: `port` must be between 1 and 65535, not 70000",
        "sensors/web.yaml:4:1: give one of `http` or `tcp`, not both",
        "sensors/web.yaml:5:11: `interval` must be at least 100ms",
        "sensors/web.yaml:6:20: `failure_threshold` must be between 1 and 1000, not 0",
        "sensors/web.yaml:7:7: missing required key `window`",
    ] {
        assert_problem(&got, expected);
    }
}

#[test]
fn two_sensors_cannot_share_a_name() {
    let got = problems(
        &pack_with(&[
            (
                "sensors/a.yaml",
                "kind: probe\nname: web\ntargets: {service: w}\ntcp: {port: 1}\n",
            ),
            (
                "sensors/b.yaml",
                "kind: probe\nname: web\ntargets: {service: w}\ntcp: {port: 1}\n",
            ),
        ]),
        &NothingInstalled,
    );
    assert_problem(
        &got,
        "sensors/b.yaml:2:7: sensor `web` is already defined in sensors/a.yaml",
    );
}
