//! `sensors/<name>.yaml`: checks load into the model, and every mistake is
//! a problem at its position.

// Test code: a failed setup step should panic where it happened.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{MANIFEST, files, problems};
use sha2::{Digest, Sha256};
use ultron8_core::Program;
use ultron8_core::health::{FlapDetection, Thresholds};
use ultron8_pack::{NothingInstalled, load};

const SCRIPT: &str = "#!/bin/sh\ntest -f /run/ok\n";

fn check_problems(yaml: &str) -> Vec<String> {
    problems(
        &files(&[
            ("pack.yaml", MANIFEST),
            ("scripts/node_check.sh", SCRIPT),
            ("sensors/node_ok.yaml", yaml),
        ]),
        &NothingInstalled,
    )
}

fn load_checks(entries: &[(&str, &str)]) -> Vec<ultron8_pack::Check> {
    let mut all = vec![("pack.yaml", MANIFEST), ("scripts/node_check.sh", SCRIPT)];
    all.extend_from_slice(entries);
    load(&files(&all), &NothingInstalled)
        .unwrap_or_else(|p| panic!("{p:#?}"))
        .checks
}

#[test]
fn a_full_check_loads_with_every_field() {
    let checks = load_checks(&[(
        "sensors/node_ok.yaml",
        "\
kind: check
name: node_ok
description: The node's own health script.
targets: \"label:role=k8s-node\"
command: [\"/usr/local/bin/node-check\", \"--quick\"]
interval: 30s
timeout: 10s
failure_threshold: 4
success_threshold: 2
flap: {max_changes: 5, window: 10m}
",
    )]);
    assert_eq!(checks.len(), 1);
    let check = &checks[0];
    assert_eq!(check.reference(), "linux.node_ok");
    assert_eq!(check.targets, "label:role=k8s-node");
    assert_eq!(
        check.program,
        Program::Argv(vec!["/usr/local/bin/node-check".into(), "--quick".into()])
    );
    assert_eq!(check.interval, Duration::from_secs(30));
    assert_eq!(check.timeout, Duration::from_secs(10));
    assert_eq!(
        check.thresholds,
        Thresholds {
            failure_threshold: 4,
            success_threshold: 2,
            flap: Some(FlapDetection {
                max_changes: 5,
                window: Duration::from_secs(600)
            }),
        }
    );
}

#[test]
fn defaults_name_from_the_file_and_every_drone_and_the_core_thresholds() {
    let checks = load_checks(&[
        (
            "sensors/disk_ok.yaml",
            "kind: check\nshell: test -f /run/ok\n",
        ),
        (
            "sensors/fast.yaml",
            "kind: check\nshell: \"true\"\ninterval: 1s\nflap: false\n",
        ),
    ]);
    let disk = &checks[0];
    assert_eq!(disk.name, "disk_ok");
    assert_eq!(disk.targets, "*");
    assert_eq!(disk.program, Program::Shell("test -f /run/ok".into()));
    assert_eq!(disk.interval, Duration::from_secs(30));
    assert_eq!(disk.timeout, Duration::from_secs(10));
    assert_eq!(disk.thresholds, Thresholds::default());
    let fast = &checks[1];
    // Half the interval when 10 s would not end before the next run.
    assert_eq!(fast.timeout, Duration::from_millis(500));
    assert_eq!(fast.thresholds.flap, None);
}

#[test]
fn a_script_check_names_the_pack_file_by_hash() {
    let checks = load_checks(&[(
        "sensors/node_ok.yaml",
        "kind: check\nscript: node_check.sh\nargs: [--quick]\n",
    )]);
    assert_eq!(
        checks[0].program,
        Program::Script {
            sha256: hex::encode(Sha256::digest(SCRIPT)),
            name: "scripts/node_check.sh".into(),
            args: vec!["--quick".into()],
        }
    );
}

#[test]
fn every_mistake_is_a_problem_at_its_place() {
    let cases: &[(&str, &str)] = &[
        (
            "kind: check\nshell: x\nintervall: 5s\n",
            "sensors/node_ok.yaml:3:1: unknown key `intervall` (did you mean `interval`?)",
        ),
        (
            "kind: chekc\nshell: x\n",
            "sensors/node_ok.yaml:1:7: unknown sensor kind `chekc` (did you mean `check`?) (kinds: check, probe, source)",
        ),
        (
            "shell: x\n",
            "sensors/node_ok.yaml:1:1: missing required key `kind` (kinds: check, probe, source)",
        ),
        (
            "kind: check\nshell: x\nfailure_threshold: 0\n",
            "sensors/node_ok.yaml:3:20: `failure_threshold` must be between 1 and 1000, not 0",
        ),
        (
            "kind: check\nshell: x\nsuccess_threshold: 0\n",
            "sensors/node_ok.yaml:3:20: `success_threshold` must be between 1 and 1000, not 0",
        ),
        (
            "kind: check\nshell: x\ninterval: 10s\ntimeout: 10s\n",
            "sensors/node_ok.yaml:4:10: `timeout` (10s) must be shorter than `interval` (10s): a check must end before its next run",
        ),
        (
            "kind: check\nshell: x\ninterval: 10ms\n",
            "sensors/node_ok.yaml:3:11: `interval` must be at least 100ms",
        ),
        (
            "kind: check\nshell: x\ntargets: \"label:role=web and\"\n",
            "sensors/node_ok.yaml:3:10: invalid target expression: ",
        ),
        (
            "kind: check\nscript: missing.sh\n",
            "sensors/node_ok.yaml:2:9: scripts/missing.sh does not exist in the pack",
        ),
        (
            "kind: check\ncommand: [a]\nshell: b\n",
            "sensors/node_ok.yaml:3:1: give one of `command`, `shell` or `script`, not several (`command` is already set)",
        ),
        (
            "kind: check\n",
            "sensors/node_ok.yaml:1:1: a check needs one of `command` (argv, run without a shell), `shell` (run by /bin/sh -c) or `script` (a file of the pack under scripts/)",
        ),
        (
            "kind: check\ncommand: [a]\nargs: [b]\n",
            "sensors/node_ok.yaml:3:1: `args` go with `script`; a `command` lists its arguments itself",
        ),
        (
            "kind: check\nshell: x\nflap: {max_changes: 3}\n",
            "sensors/node_ok.yaml:3:7: missing required key `window`",
        ),
        (
            "kind: check\nname: Node-OK\nshell: x\n",
            "sensors/node_ok.yaml:2:7: invalid check name \"Node-OK\": ",
        ),
    ];
    for (yaml, want) in cases {
        let got = check_problems(yaml);
        assert!(
            got.iter().any(|p| p.starts_with(want)),
            "for\n{yaml}\nexpected a problem starting {want:?}, got {got:#?}"
        );
    }
}

#[test]
fn two_sensors_of_one_name_are_refused() {
    let got = problems(
        &files(&[
            ("pack.yaml", MANIFEST),
            ("sensors/a.yaml", "kind: check\nname: same\nshell: x\n"),
            ("sensors/b.yaml", "kind: check\nname: same\nshell: x\n"),
        ]),
        &NothingInstalled,
    );
    assert_eq!(
        got,
        vec!["sensors/b.yaml:2:7: sensor `same` is already defined in sensors/a.yaml".to_string()]
    );
}

#[test]
fn rules_on_drone_check_are_checked_against_its_payload_at_install() {
    let rule = |target: &str| {
        format!(
            "name: cordon\ntrigger: drone.check\ncriteria:\n  - {{path: state, op: equals, value: failing}}\n  - {{path: labels.role, op: equals, value: k8s-node}}\naction:\n  ref: linux.stop_service\n  target: \"{target}\"\n  parameters: {{service: \"{{{{ check }}}}\"}}\n"
        )
    };
    let pack = |target: &str| {
        files(&[
            ("pack.yaml", MANIFEST),
            ("actions/stop_service.yaml", common::STOP_SERVICE),
            ("rules/cordon.yaml", &rule(target)),
        ])
    };
    let loaded = load(&pack("{{ drone }}"), &NothingInstalled).unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(loaded.rules[0].trigger, "drone.check");
    let got = problems(&pack("{{ dron }}"), &NothingInstalled);
    assert!(
        got.iter()
            .any(|p| p.contains("`dron` is not in the payload of drone.check")),
        "{got:#?}"
    );
}
