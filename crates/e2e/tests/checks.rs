//! Drone checks end to end: a pack's checks delivered signed to the drones
//! their targets match, run there, their transitions firing rules once
//! each, flapping silenced, the hive's absence survived, and `check list`,
//! on Postgres and RabbitMQ with real hive and drone processes.

use std::path::{Path, PathBuf};

use ultron8_e2e::{DEADLINE, Drone, Hive, TestEnv, stderr, stdout, wait_for};

/// How often the node check runs.
const INTERVAL_MS: i64 = 400;

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// The `nodes` pack: the node check of seed 001 (a file the test removes
/// stands for the node's health), a rule that "cordons" a node when its
/// check fails and its twin that undoes it on recovery, and `extra`
/// sensors.
fn nodes_pack(dir: &Path, extra: &[(&str, String)]) -> PathBuf {
    let pack = dir.join("nodes");
    write(
        &pack.join("pack.yaml"),
        "name: nodes\nversion: 1.0.0\ndescription: Node checks and their remediation\n",
    );
    write(
        &pack.join("actions/cordon.yaml"),
        "\
name: cordon
runner: shell
shell: \"echo cordoned {{ node | shell_quote }}\"
parameters:
  node: {type: string, required: true}
",
    );
    write(
        &pack.join("actions/uncordon.yaml"),
        "\
name: uncordon
runner: shell
shell: \"echo uncordoned {{ node | shell_quote }}\"
parameters:
  node: {type: string, required: true}
",
    );
    write(
        &pack.join("sensors/node_ok.yaml"),
        &format!(
            "\
kind: check
description: The node's health script (here, a file the test removes).
targets: \"label:role=k8s-node\"
shell: 'if test -f \"$NODE_OK_FILE\"; then echo ok; else echo \"node not ok: $NODE_OK_FILE is missing\"; exit 1; fi'
interval: {INTERVAL_MS}ms
timeout: 350ms
failure_threshold: 3
success_threshold: 2
flap: false
"
        ),
    );
    write(
        &pack.join("rules/cordon_on_failing.yaml"),
        "\
name: cordon_on_failing
trigger: drone.check
criteria:
  - {path: state, op: equals, value: failing}
action:
  ref: nodes.cordon
  target: \"{{ drone }}\"
  parameters: {node: \"{{ drone }}\"}
",
    );
    write(
        &pack.join("rules/uncordon_on_recovered.yaml"),
        "\
name: uncordon_on_recovered
trigger: drone.check
criteria:
  - {path: state, op: equals, value: recovered}
action:
  ref: nodes.uncordon
  target: \"{{ drone }}\"
  parameters: {node: \"{{ drone }}\"}
",
    );
    for (name, text) in extra {
        write(&pack.join("sensors").join(name), text);
    }
    pack
}

fn install(hive: &Hive, pack: &Path) {
    let output = hive.ctl(&["pack", "install", &pack.display().to_string()]);
    assert!(output.status.success(), "install: {}", stderr(&output));
}

/// A drone labelled as a Kubernetes node whose check reads `ok_file`.
fn node(env: &TestEnv, hive: &Hive, name: &str, ok_file: &Path) -> Drone {
    write(ok_file, "");
    let mut drone = Drone::join(env, hive, name, &["role=k8s-node"]);
    drone.start_with_env(&[("NODE_OK_FILE", &ok_file.display().to_string())]);
    drone
}

fn start_node(drone: &mut Drone, ok_file: &Path) {
    drone.start_with_env(&[("NODE_OK_FILE", &ok_file.display().to_string())]);
}

/// `check list -o json`, as (drone, check) -> the row.
fn checks(hive: &Hive) -> Vec<serde_json::Value> {
    hive.ctl_json(&["check", "list", "-o", "json"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn state_of(hive: &Hive, drone: &str, check: &str) -> Option<String> {
    checks(hive)
        .into_iter()
        .find(|c| c["drone"] == drone && c["check"] == check)
        .and_then(|c| c["state"].as_str().map(String::from))
}

fn wait_for_state(hive: &Hive, drone: &str, check: &str, state: &str) {
    wait_for(
        &format!("{check} on {drone} to be {state}"),
        DEADLINE,
        || match state_of(hive, drone, check) {
            Some(s) if s == state => Ok(()),
            other => Err(format!("{other:?}; all: {:?}", checks(hive))),
        },
    );
}

/// The drone.check events, oldest first, as (drone, check, state).
fn check_events(hive: &Hive) -> Vec<(String, String, String)> {
    let mut events: Vec<(String, String, String)> = hive
        .ctl_json(&[
            "event",
            "list",
            "--trigger",
            "drone.check",
            "--limit",
            "500",
            "-o",
            "json",
        ])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let field = |name: &str| e["payload"][name].as_str().unwrap_or_default().to_string();
            (field("drone"), field("check"), field("state"))
        })
        .collect();
    events.reverse();
    events
}

/// Jobs a rule started.
fn jobs_of(hive: &Hive, rule: &str) -> usize {
    hive.ctl_json(&["job", "list", "-o", "json", "--limit", "500"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|j| j["requester"] == format!("rule:{rule}"))
        .count()
}

fn wait_for_jobs(hive: &Hive, rule: &str, count: usize) {
    wait_for(
        &format!("{count} job(s) of {rule}"),
        DEADLINE,
        || match jobs_of(hive, rule) {
            n if n == count => Ok(()),
            n => Err(format!("{n} jobs; events: {:?}", check_events(hive))),
        },
    );
}

/// The last run of a check on a drone, as the drone reported it (its
/// clock, which is this host's).
fn last_run_ms(hive: &Hive, drone: &str, check: &str) -> i64 {
    checks(hive)
        .into_iter()
        .find(|c| c["drone"] == drone && c["check"] == check)
        .and_then(|c| c["last_run"].as_str().map(String::from))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map_or(0, |t| t.timestamp_millis())
}

/// Waits until the check has run at least `runs` more times on `drone`.
fn wait_for_runs(hive: &Hive, drone: &str, check: &str, runs: i64) {
    let from = last_run_ms(hive, drone, check);
    wait_for(
        &format!("{runs} more runs of {check} on {drone}"),
        DEADLINE,
        || match last_run_ms(hive, drone, check) {
            at if at >= from + runs * INTERVAL_MS => Ok(()),
            at => Err(format!("last run at {at}, from {from}")),
        },
    );
}

#[test]
fn a_failing_check_fires_its_rule_once_and_its_twin_undoes_it_on_recovery() {
    let env = TestEnv::new("checks");
    let hive = Hive::start(&env);
    let installed = hive.ctl(&[
        "pack",
        "install",
        &nodes_pack(&env.dir, &[]).display().to_string(),
    ]);
    assert_eq!(
        stdout(&installed),
        "installed nodes 1.0.0 (2 actions, 2 rules, 1 check)\n",
        "{}",
        stderr(&installed)
    );
    let shown = stdout(&hive.ctl(&["pack", "show", "nodes"]));
    assert!(
        shown.contains("checks:\n  nodes.node_ok  every 400ms on label:role=k8s-node\n"),
        "{shown}"
    );
    let ok1 = env.dir.join("ok/node-1");
    let ok2 = env.dir.join("ok/node-2");
    let _node1 = node(&env, &hive, "node-1", &ok1);
    let _node2 = node(&env, &hive, "node-2", &ok2);
    // A drone the check's targets do not match runs no check.
    let mut other = Drone::join(&env, &hive, "web-1", &["role=web"]);
    other.start();
    hive.wait_for_online(&["node-1", "node-2", "web-1"]);

    wait_for_state(&hive, "node-1", "nodes.node_ok", "healthy");
    wait_for_state(&hive, "node-2", "nodes.node_ok", "healthy");
    assert!(
        checks(&hive).iter().all(|c| c["drone"] != "web-1"),
        "{:?}",
        checks(&hive)
    );
    // Healthy from the start is no recovery: nothing fired.
    assert_eq!(check_events(&hive), vec![]);

    // node-1's health goes: three failed runs make it failing, once.
    std::fs::remove_file(&ok1).expect("remove");
    wait_for_jobs(&hive, "nodes.cordon_on_failing", 1);
    wait_for_state(&hive, "node-1", "nodes.node_ok", "failing");
    let row = checks(&hive)
        .into_iter()
        .find(|c| c["drone"] == "node-1")
        .expect("node-1's check");
    assert!(
        row["last_output"]
            .as_str()
            .is_some_and(|o| o.starts_with("node not ok:") && o.ends_with("is missing")),
        "{row}"
    );
    // It keeps failing, run after run; nothing more fires.
    wait_for_runs(&hive, "node-1", "nodes.node_ok", 5);
    assert_eq!(jobs_of(&hive, "nodes.cordon_on_failing"), 1);
    assert_eq!(
        check_events(&hive),
        vec![("node-1".into(), "nodes.node_ok".into(), "failing".into())]
    );
    let failing = hive.ctl_json(&["check", "list", "--state", "failing", "-o", "json"]);
    assert_eq!(failing.as_array().map(Vec::len), Some(1), "{failing}");
    let (_, metrics) = ultron8_e2e::http_get(hive.http_port, "/metrics").expect("metrics");
    for line in [
        "ultron8_checks{state=\"failing\"} 1",
        "ultron8_checks{state=\"healthy\"} 1",
        "ultron8_checks{state=\"flapping\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    let selected = hive.ctl_json(&["check", "list", "-t", "node-2", "-o", "json"]);
    assert_eq!(selected[0]["drone"], "node-2", "{selected}");
    assert_eq!(selected.as_array().map(Vec::len), Some(1));

    // The file is back: two healthy runs, and the twin undoes it, once.
    write(&ok1, "");
    wait_for_jobs(&hive, "nodes.uncordon_on_recovered", 1);
    wait_for_state(&hive, "node-1", "nodes.node_ok", "healthy");
    wait_for_runs(&hive, "node-1", "nodes.node_ok", 3);
    assert_eq!(jobs_of(&hive, "nodes.cordon_on_failing"), 1);
    assert_eq!(jobs_of(&hive, "nodes.uncordon_on_recovered"), 1);
    assert_eq!(
        check_events(&hive),
        vec![
            ("node-1".into(), "nodes.node_ok".into(), "failing".into()),
            ("node-1".into(), "nodes.node_ok".into(), "recovered".into()),
        ]
    );

    // The table, for people.
    let table = hive.ctl(&["check", "list"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.contains("DRONE") && text.contains("STATE"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("node-1")
            && l.contains("nodes.node_ok")
            && l.contains("healthy")),
        "{text}"
    );
    // A bad state is refused, naming the states.
    let bad = hive.ctl(&["check", "list", "--state", "down"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("pending, healthy, failing, flapping or error"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn a_flapping_check_fires_nothing_where_the_same_runs_unwatched_would_fail_and_a_refused_one_is_an_error()
 {
    let env = TestEnv::new("checks-flap");
    let hive = Hive::start(&env);
    // The same script for both: healthy, unhealthy, healthy, then
    // unhealthy for good. Three changes, then a steady failure.
    let script = |counter: &Path| {
        format!(
            "n=$(cat {c} 2>/dev/null || echo 0); echo $((n + 1)) > {c}; \
             case $n in 0|2) echo ok;; *) echo \"bad run $n\"; exit 1;; esac",
            c = counter.display()
        )
    };
    let sensor = |counter: &Path, flap: &str| {
        format!(
            "kind: check\ntargets: node-1\nshell: '{}'\ninterval: 300ms\ntimeout: 250ms\n\
             failure_threshold: 3\nsuccess_threshold: 1\nflap: {flap}\n",
            script(counter)
        )
    };
    let extra = [
        (
            "flappy.yaml",
            sensor(
                &env.dir.join("flappy.count"),
                "{max_changes: 2, window: 1h}",
            ),
        ),
        (
            "unwatched.yaml",
            sensor(&env.dir.join("unwatched.count"), "false"),
        ),
        // The drone's policy refuses this one: an error, never a failure.
        (
            "refused.yaml",
            "kind: check\ntargets: node-1\nshell: \"true\"\ninterval: 300ms\ntimeout: 250ms\n"
                .to_string(),
        ),
    ];
    install(&hive, &nodes_pack(&env.dir, &extra));
    let ok = env.dir.join("ok/node-1");
    write(&ok, "");
    let mut node1 = Drone::join(&env, &hive, "node-1", &["role=k8s-node"]);
    let config = node1.data_dir.join("drone.toml");
    let text = std::fs::read_to_string(&config).expect("read drone.toml");
    write(
        &config,
        &format!("{text}\n[policy]\ndeny_actions = [\"nodes.refused\"]\n"),
    );
    start_node(&mut node1, &ok);
    hive.wait_for_online(&["node-1"]);

    // Without flap detection the steady failure fires once...
    wait_for_jobs(&hive, "nodes.cordon_on_failing", 1);
    wait_for_state(&hive, "node-1", "nodes.flappy", "flapping");
    // ...with it, the check is flapping and stays silent however long it
    // fails (its changes stay within the hour's window).
    wait_for_runs(&hive, "node-1", "nodes.flappy", 6);
    assert_eq!(jobs_of(&hive, "nodes.cordon_on_failing"), 1);
    let events = check_events(&hive);
    let of = |check: &str| -> Vec<String> {
        events
            .iter()
            .filter(|(_, c, _)| c == check)
            .map(|(_, _, s)| s.clone())
            .collect()
    };
    assert_eq!(of("nodes.unwatched"), vec!["failing".to_string()]);
    assert_eq!(of("nodes.flappy"), vec!["flapping".to_string()]);
    // The refused check is in error, saying why, and raised one `error`.
    assert_eq!(of("nodes.refused"), vec!["error".to_string()]);
    let refused = checks(&hive)
        .into_iter()
        .find(|c| c["check"] == "nodes.refused")
        .expect("the refused check is listed");
    assert_eq!(refused["state"], "error", "{refused}");
    assert!(
        refused["last_output"].as_str().is_some_and(|o| o
            .contains("refused by this drone's policy")
            && o.contains("deny_actions")),
        "{refused}"
    );
    assert_eq!(
        state_of(&hive, "node-1", "nodes.flappy").as_deref(),
        Some("flapping")
    );
}

#[test]
fn checks_run_while_the_hive_is_down_and_their_transitions_arrive_once() {
    let env = TestEnv::new("checks-away");
    let mut hive = Hive::start(&env);
    install(&hive, &nodes_pack(&env.dir, &[]));
    let ok = env.dir.join("ok/node-1");
    let mut node1 = node(&env, &hive, "node-1", &ok);
    hive.wait_for_online(&["node-1"]);
    wait_for_state(&hive, "node-1", "nodes.node_ok", "healthy");

    let spooled = node1.data_dir.join("checks/transitions");
    let spooled_count = || {
        std::fs::read_dir(&spooled)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    };

    // The hive goes away.
    hive.proc.as_mut().expect("hive runs").stop();
    // The node fails: the transition waits on the drone's disk.
    std::fs::remove_file(&ok).expect("remove");
    wait_for(
        "the failing transition spooled",
        DEADLINE,
        || match spooled_count() {
            1 => Ok(()),
            n => Err(format!("{n} spooled")),
        },
    );
    // The drone restarts meanwhile: it runs the set it verified before,
    // and remembers the check is failing (no second `failing`).
    node1.kill();
    start_node(&mut node1, &ok);
    wait_for("the drone to run its checks again", DEADLINE, || {
        let log = node1.log_text();
        if log.contains("loaded the last verified check set") && log.contains("check started") {
            Ok(())
        } else {
            Err(log.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
        }
    });
    // Four more failed runs: a count reset by the restart would cross the
    // threshold of three again and spool a second `failing`.
    let state = node1.data_dir.join("checks/state.json");
    let last_run = || -> i64 {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["nodes.node_ok"]["last_run_ms"].as_i64())
            .unwrap_or(0)
    };
    let restarted_at = last_run();
    wait_for(
        "four more runs after the restart",
        DEADLINE,
        || match last_run() {
            at if at >= restarted_at + 4 * INTERVAL_MS => Ok(()),
            at => Err(format!("last run at {at}, from {restarted_at}")),
        },
    );
    assert_eq!(
        spooled_count(),
        1,
        "the restart must not fail the check again"
    );
    write(&ok, "");
    wait_for(
        "the recovered transition spooled",
        DEADLINE,
        || match spooled_count() {
            2 => Ok(()),
            n => Err(format!("{n} spooled")),
        },
    );

    // The hive returns: each transition arrives once, and fires once.
    hive.restart();
    wait_for("the spool to empty", DEADLINE, || match spooled_count() {
        0 => Ok(()),
        n => Err(format!("{n} spooled")),
    });
    wait_for_jobs(&hive, "nodes.cordon_on_failing", 1);
    wait_for_jobs(&hive, "nodes.uncordon_on_recovered", 1);
    wait_for_state(&hive, "node-1", "nodes.node_ok", "healthy");
    wait_for_runs(&hive, "node-1", "nodes.node_ok", 3);
    assert_eq!(
        check_events(&hive),
        vec![
            ("node-1".into(), "nodes.node_ok".into(), "failing".into()),
            ("node-1".into(), "nodes.node_ok".into(), "recovered".into()),
        ]
    );
    assert_eq!(jobs_of(&hive, "nodes.cordon_on_failing"), 1);
    assert_eq!(jobs_of(&hive, "nodes.uncordon_on_recovered"), 1);
}
