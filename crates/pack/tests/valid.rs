//! Valid packs load into exactly the model they describe.

// Test code: a failed setup step should panic where it happened.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{Fake, files};
use serde_json::{Map, json};
use sha2::{Digest, Sha256};
use ultron8_core::criteria::{Criterion, Operator};
use ultron8_core::params::{ParamSchema, ParamSpec, ParamType};
use ultron8_core::policy::{BlastRadius, Cooldown, Policy};
use ultron8_core::schedule::Schedule;
use ultron8_pack::{
    Action, Manifest, NothingInstalled, Pack, Rule, RuleAction, Runner, Script, ShellProgram, load,
    read_dir,
};

const CLEANUP_SH: &str = "#!/bin/sh\nfind /tmp -mtime +\"$1\" -delete\n";

fn full_pack() -> ultron8_pack::PackFiles {
    files(&[
        (
            "pack.yaml",
            "\
name: linux
version: 1.2.0-rc.1
description: Linux host remediation
author: SRE <sre@example.com>
dependencies: [chatops]
",
        ),
        ("README.md", "# linux\nNot installed, and not a problem.\n"),
        (
            "actions/restart_service.yaml",
            "\
name: restart_service
description: Restart a systemd service
runner: shell
command: [\"systemctl\", \"restart\", \"{{ service }}\"]
env: {SYSTEMD_COLORS: \"0\", LEVEL: \"{{ level }}\"}
timeout: 60s
parameters:
  service: { type: string, required: true, description: Unit name }
  force:   { type: boolean, default: false }
  token:   { type: string, secret: true }
  level:   { type: string, enum: [low, high], default: low }
",
        ),
        (
            "actions/reload.yaml",
            "\
name: reload
runner: shell
shell: |
  systemctl reload {{ unit | shell_quote }} || systemctl restart {{ unit | shell_quote }}
parameters:
  unit: {type: string, required: true}
",
        ),
        (
            "actions/cleanup.yaml",
            "\
name: cleanup
runner: script
script: scripts/cleanup.sh
args: [\"{{ days }}\"]
env: {DRY_RUN: \"{{ dry_run }}\"}
parameters:
  days: {type: integer, default: 7}
  dry_run: {type: boolean, default: true}
",
        ),
        (
            "actions/page.yaml",
            "\
name: page
runner: http
http:
  method: post
  url: https://hooks.example/{{ channel }}
  headers: {Content-Type: application/json}
  body: '{\"text\": {{ message | tojson }}}'
  expect_status: [200, 204]
timeout: 10s
parameters:
  channel: {type: string, required: true}
  message: {type: string, default: help}
",
        ),
        (
            "actions/record.yaml",
            "name: record\nrunner: noop\ndescription: Only records the firing\n",
        ),
        ("scripts/cleanup.sh", CLEANUP_SH),
        ("scripts/lib/common.sh", "# shared\n"),
        (
            "rules/restart_on_probe_failure.yaml",
            "\
name: restart_on_probe_failure
description: Restart the unit behind a failing probe
enabled: true
trigger: alertmanager.alert
trigger_parameters: {}
criteria:
  - {path: status, op: equals, value: firing}
  - {path: labels.alertname, op: equals, value: ProbeFailed}
  - any:
      - {path: labels.severity, op: in, value: [critical, page]}
      - all:
          - {path: annotations.runbook, op: exists}
  - not: {path: labels.env, op: equals, value: dev}
action:
  ref: linux.restart_service
  target: \"{{ labels.instance }}\"
  parameters:
    service: \"{{ labels.service }}\"
    force: true
    level: high
policy:
  cooldown: {key: \"{{ labels.instance }}\", period: 10m}
  max_concurrent: 2
  blast_radius: {max_hosts: 3, max_percent: 20, window: 1h}
",
        ),
        (
            "rules/nightly_cleanup.yaml",
            "\
name: nightly_cleanup
enabled: false
trigger: core.cron
trigger_parameters: {schedule: \"0 3 * * *\", timezone: Europe/Paris}
action:
  ref: linux.cleanup
  target: label:role=web and not web-3
  parameters: {days: 3}
",
        ),
        (
            "rules/heartbeat.yaml",
            "\
name: heartbeat
trigger: core.interval
trigger_parameters:
  every: 5m
action:
  ref: chatops.notify
  parameters:
    channel: ops
    message: \"alive at {{ fired_at }}\"
",
        ),
    ])
}

fn spec(kind: ParamType) -> ParamSpec {
    ParamSpec {
        kind,
        required: false,
        default: None,
        allowed: None,
        secret: false,
        description: String::new(),
    }
}

fn schema(entries: Vec<(&str, ParamSpec)>) -> ParamSchema {
    entries
        .into_iter()
        .map(|(name, spec)| (name.to_string(), spec))
        .collect()
}

fn object(value: serde_json::Value) -> Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn expected_pack() -> Pack {
    let sha = |text: &str| hex::encode(Sha256::digest(text.as_bytes()));
    let action = |name: &str, runner: Runner, parameters: ParamSchema| Action {
        pack: "linux".into(),
        name: name.into(),
        description: String::new(),
        runner,
        parameters,
        timeout: None,
    };
    let matches = |path: &str, op: Operator, value: Option<serde_json::Value>| Criterion::Match {
        path: path.into(),
        op,
        value,
    };
    Pack {
        manifest: Manifest {
            name: "linux".into(),
            version: semver::Version::parse("1.2.0-rc.1").unwrap(),
            description: "Linux host remediation".into(),
            author: "SRE <sre@example.com>".into(),
            dependencies: vec!["chatops".into()],
        },
        actions: vec![
            action(
                "cleanup",
                Runner::Script {
                    path: "scripts/cleanup.sh".into(),
                    sha256: sha(CLEANUP_SH),
                    args: vec!["{{ days }}".into()],
                    env: BTreeMap::from([("DRY_RUN".into(), "{{ dry_run }}".into())]),
                },
                schema(vec![
                    ("days", ParamSpec { default: Some(json!(7)), ..spec(ParamType::Integer) }),
                    ("dry_run", ParamSpec { default: Some(json!(true)), ..spec(ParamType::Boolean) }),
                ]),
            ),
            Action {
                timeout: Some(Duration::from_secs(10)),
                ..action(
                    "page",
                    Runner::Http {
                        method: "POST".into(),
                        url: "https://hooks.example/{{ channel }}".into(),
                        headers: BTreeMap::from([("Content-Type".into(), "application/json".into())]),
                        body: Some("{\"text\": {{ message | tojson }}}".into()),
                        expect_status: vec![200, 204],
                    },
                    schema(vec![
                        ("channel", ParamSpec { required: true, ..spec(ParamType::String) }),
                        ("message", ParamSpec { default: Some(json!("help")), ..spec(ParamType::String) }),
                    ]),
                )
            },
            Action {
                description: "Only records the firing".into(),
                ..action("record", Runner::Noop, ParamSchema::new())
            },
            action(
                "reload",
                Runner::Shell {
                    program: ShellProgram::Script(
                        "systemctl reload {{ unit | shell_quote }} || systemctl restart {{ unit | shell_quote }}\n".into(),
                    ),
                    env: BTreeMap::new(),
                },
                schema(vec![("unit", ParamSpec { required: true, ..spec(ParamType::String) })]),
            ),
            Action {
                description: "Restart a systemd service".into(),
                timeout: Some(Duration::from_secs(60)),
                ..action(
                    "restart_service",
                    Runner::Shell {
                        program: ShellProgram::Argv(vec![
                            "systemctl".into(),
                            "restart".into(),
                            "{{ service }}".into(),
                        ]),
                        env: BTreeMap::from([
                            ("LEVEL".into(), "{{ level }}".into()),
                            ("SYSTEMD_COLORS".into(), "0".into()),
                        ]),
                    },
                    schema(vec![
                        (
                            "service",
                            ParamSpec {
                                required: true,
                                description: "Unit name".into(),
                                ..spec(ParamType::String)
                            },
                        ),
                        ("force", ParamSpec { default: Some(json!(false)), ..spec(ParamType::Boolean) }),
                        ("token", ParamSpec { secret: true, ..spec(ParamType::String) }),
                        (
                            "level",
                            ParamSpec {
                                default: Some(json!("low")),
                                allowed: Some(vec![json!("low"), json!("high")]),
                                ..spec(ParamType::String)
                            },
                        ),
                    ]),
                )
            },
        ],
        rules: vec![
            Rule {
                pack: "linux".into(),
                name: "heartbeat".into(),
                description: String::new(),
                enabled: true,
                trigger: "core.interval".into(),
                trigger_parameters: object(json!({"every": "5m"})),
                schedule: Some(Schedule::Interval(Duration::from_secs(300))),
                criteria: vec![],
                action: RuleAction {
                    reference: "chatops.notify".into(),
                    target: None,
                    parameters: object(json!({"channel": "ops", "message": "alive at {{ fired_at }}"})),
                },
                policy: Policy::default(),
            },
            Rule {
                pack: "linux".into(),
                name: "nightly_cleanup".into(),
                description: String::new(),
                enabled: false,
                trigger: "core.cron".into(),
                trigger_parameters: object(json!({"schedule": "0 3 * * *", "timezone": "Europe/Paris"})),
                schedule: Some(Schedule::Cron {
                    expression: "0 3 * * *".into(),
                    timezone: Some("Europe/Paris".into()),
                }),
                criteria: vec![],
                action: RuleAction {
                    reference: "linux.cleanup".into(),
                    target: Some("label:role=web and not web-3".into()),
                    parameters: object(json!({"days": 3})),
                },
                policy: Policy::default(),
            },
            Rule {
                pack: "linux".into(),
                name: "restart_on_probe_failure".into(),
                description: "Restart the unit behind a failing probe".into(),
                enabled: true,
                trigger: "alertmanager.alert".into(),
                trigger_parameters: Map::new(),
                schedule: None,
                criteria: vec![
                    matches("status", Operator::Equals, Some(json!("firing"))),
                    matches("labels.alertname", Operator::Equals, Some(json!("ProbeFailed"))),
                    Criterion::Any(vec![
                        matches("labels.severity", Operator::In, Some(json!(["critical", "page"]))),
                        Criterion::All(vec![matches("annotations.runbook", Operator::Exists, None)]),
                    ]),
                    Criterion::Not(Box::new(matches("labels.env", Operator::Equals, Some(json!("dev"))))),
                ],
                action: RuleAction {
                    reference: "linux.restart_service".into(),
                    target: Some("{{ labels.instance }}".into()),
                    parameters: object(json!({
                        "service": "{{ labels.service }}",
                        "force": true,
                        "level": "high",
                    })),
                },
                policy: Policy {
                    cooldown: Some(Cooldown {
                        key: "{{ labels.instance }}".into(),
                        period: Duration::from_secs(600),
                    }),
                    max_concurrent: Some(2),
                    blast_radius: Some(BlastRadius {
                        max_hosts: Some(3),
                        max_percent: Some(20.0),
                        window: Duration::from_secs(3600),
                    }),
                },
            },
        ],
        scripts: vec![
            Script {
                path: "scripts/cleanup.sh".into(),
                sha256: sha(CLEANUP_SH),
                content: CLEANUP_SH.as_bytes().to_vec(),
            },
            Script {
                path: "scripts/lib/common.sh".into(),
                sha256: sha("# shared\n"),
                content: b"# shared\n".to_vec(),
            },
        ],
        probes: Vec::new(),
        checks: Vec::new(),
        sources: vec![],
    }
}

#[test]
fn a_full_pack_loads_into_the_expected_model() {
    let pack = load(&full_pack(), &Fake::with_chatops()).unwrap_or_else(|problems| {
        panic!(
            "{}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(pack, expected_pack());
    assert_eq!(
        pack.action("restart_service")
            .map(Action::reference)
            .as_deref(),
        Some("linux.restart_service")
    );
    assert_eq!(
        pack.rule("heartbeat").map(Rule::reference).as_deref(),
        Some("linux.heartbeat")
    );
}

#[test]
fn the_model_round_trips_through_json() {
    let pack = expected_pack();
    let json = serde_json::to_value(&pack).unwrap();
    // Durations and script contents are stored readably.
    assert_eq!(json["actions"][1]["timeout"], json!("10s"));
    assert_eq!(json["actions"][1]["runner"]["type"], json!("http"));
    assert_eq!(json["scripts"][1]["content"], json!("IyBzaGFyZWQK"));
    let back: Pack = serde_json::from_value(json).unwrap();
    assert_eq!(back, pack);
}

#[test]
fn a_pack_loads_the_same_whatever_order_its_files_come_in() {
    // Rules are decoded after every action, so a rule whose file sorts
    // before its action's file still resolves.
    let pack = files(&[
        ("pack.yaml", common::MANIFEST),
        (
            "actions/zz_stop.yaml",
            &common::STOP_SERVICE.replace("stop_service", "zz_stop"),
        ),
        (
            "rules/aa.yaml",
            "name: aa\ntrigger: core.event\naction: {ref: linux.zz_stop, target: '*', parameters: {service: x}}\n",
        ),
    ]);
    let loaded = load(&pack, &NothingInstalled).unwrap();
    assert_eq!(loaded.rules[0].action.reference, "linux.zz_stop");
}

#[test]
fn a_pack_may_depend_on_itself_and_an_empty_pack_is_valid() {
    let pack = files(&[(
        "pack.yaml",
        "name: linux\nversion: 0.1.0\ndependencies: [linux]\n",
    )]);
    let loaded = load(&pack, &NothingInstalled).unwrap();
    assert_eq!(loaded.manifest.dependencies, ["linux"]);
    assert!(loaded.actions.is_empty() && loaded.rules.is_empty() && loaded.scripts.is_empty());
}

#[test]
fn free_form_payloads_accept_any_variable() {
    // core.event's payload is whatever the operator fired: nothing to check.
    let pack = files(&[
        ("pack.yaml", common::MANIFEST),
        ("actions/stop_service.yaml", common::STOP_SERVICE),
        (
            "rules/manual.yaml",
            "\
name: manual
trigger: core.event
criteria: [{path: anything.at.all, op: exists}]
action: {ref: linux.stop_service, target: '{{ host }}', parameters: {service: '{{ whatever }}'}}
",
        ),
    ]);
    load(&pack, &NothingInstalled).unwrap();
}

fn fixture(name: &str) -> ultron8_pack::PackFiles {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    read_dir(&dir).unwrap()
}

#[test]
fn the_example_packs_load_in_dependency_order() {
    let chatops = load(&fixture("chatops"), &NothingInstalled).unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(chatops.manifest.name, "chatops");
    let installed = vec![chatops];
    let linux = load(&fixture("linux"), &installed).unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(linux.manifest.dependencies, ["chatops"]);
    assert!(
        linux
            .rules
            .iter()
            .any(|r| r.action.reference == "chatops.notify")
    );
    assert!(
        linux
            .actions
            .iter()
            .any(|a| matches!(a.runner, Runner::Script { .. }))
    );

    // Without chatops installed, linux is refused, saying why.
    let problems = load(&fixture("linux"), &NothingInstalled).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.file == "pack.yaml"
                && p.message.contains("`chatops`, which is not installed")),
        "{problems:#?}"
    );
}
