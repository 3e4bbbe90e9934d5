//! Drone checks on the real hive, in-process (see `common`): which drones
//! a pack's checks reach, the signed set each drone gets and how its
//! version follows pack and fleet changes, transitions stored once however
//! often reported, and the summaries `check list` reads.

mod common;

use std::path::Path;

use common::TestHive;
use ultron8_core::checks::{CheckSet, signed_bytes};
use ultron8_hive::actor::Actor;
use ultron8_pki::RequestVerifier;
use ultron8_proto::v1;
use ultron8_store::EventFilter;

fn operator() -> Actor {
    Actor::Operator(common::OPERATOR.into())
}

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

/// Installs the `nodes` pack at `version` with `sensors` (name, YAML).
async fn install_nodes(test: &TestHive, version: &str, sensors: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        root,
        "pack.yaml",
        &format!("name: nodes\nversion: {version}\n"),
    );
    for (name, body) in sensors {
        write(root, &format!("sensors/{name}.yaml"), body);
    }
    let tarball = ultronctl::automation::pack_tarball(root).expect("tarball");
    test.hive
        .install_pack(&operator(), &tarball)
        .await
        .expect("the pack installs");
}

const NODE_OK: &str =
    "kind: check\ntargets: \"label:role=k8s-node\"\nshell: \"true\"\ninterval: 1s\n";
const DISK_OK: &str = "kind: check\nshell: \"df /\"\ninterval: 1m\n";

async fn heartbeat(test: &TestHive, drone: &str, checks: Vec<v1::CheckStatus>) -> String {
    test.drone(drone)
        .await
        .heartbeat(v1::HeartbeatRequest {
            checks,
            ..Default::default()
        })
        .await
        .expect("heartbeat")
        .into_inner()
        .check_set_version
}

async fn signed_set(test: &TestHive, drone: &str) -> CheckSet {
    let response = test
        .drone(drone)
        .await
        .get_checks(v1::GetChecksRequest {})
        .await
        .expect("get checks")
        .into_inner();
    let verifier = RequestVerifier::new(test.hive.signing_key.public_key());
    assert_eq!(response.key_id, verifier.key_id());
    verifier
        .verify(&signed_bytes(&response.check_set), &response.signature)
        .expect("signed by the hive's key under the check-set domain");
    serde_json::from_slice(&response.check_set).expect("a check set")
}

fn references(set: &CheckSet) -> Vec<&str> {
    set.checks.iter().map(|c| c.reference.as_str()).collect()
}

#[tokio::test]
async fn each_drone_gets_the_checks_its_labels_match_signed_and_versioned() {
    let test = TestHive::start().await;
    test.add_online_drone("node-1", &[("role", "k8s-node")])
        .await;
    test.add_online_drone("web-1", &[("role", "web")]).await;
    // No pack: no checks, an empty version.
    assert_eq!(heartbeat(&test, "node-1", vec![]).await, "");

    install_nodes(
        &test,
        "1.0.0",
        &[("node_ok", NODE_OK), ("disk_ok", DISK_OK)],
    )
    .await;
    let node = signed_set(&test, "node-1").await;
    let web = signed_set(&test, "web-1").await;
    assert_eq!(node.drone_id, "node-1");
    assert_eq!(references(&node), vec!["nodes.disk_ok", "nodes.node_ok"]);
    assert_eq!(references(&web), vec!["nodes.disk_ok"]);
    // The heartbeat announces the version of the set GetChecks hands out.
    let announced = heartbeat(&test, "node-1", vec![]).await;
    assert_eq!(announced, node.version);
    assert_ne!(node.version, web.version);
    // Asked again, the same set has the same version.
    assert_eq!(signed_set(&test, "node-1").await.version, node.version);

    // An upgrade that drops disk_ok changes both drones' versions; web-1
    // then runs nothing.
    install_nodes(&test, "1.1.0", &[("node_ok", NODE_OK)]).await;
    assert_ne!(heartbeat(&test, "node-1", vec![]).await, node.version);
    assert_eq!(heartbeat(&test, "web-1", vec![]).await, "");
    assert!(signed_set(&test, "web-1").await.checks.is_empty());

    // Removing the pack takes every check away.
    test.hive
        .remove_pack(&operator(), "nodes")
        .await
        .expect("remove");
    assert_eq!(heartbeat(&test, "node-1", vec![]).await, "");
}

fn transition(id: &str, state: &str) -> v1::CheckTransition {
    v1::CheckTransition {
        id: id.into(),
        check: "nodes.node_ok".into(),
        state: state.into(),
        consecutive: 3,
        output: "first line\nnode not ok\n".into(),
        at_ms: 1,
    }
}

#[tokio::test]
async fn a_transition_reported_twice_is_one_event() {
    let test = TestHive::start().await;
    test.add_online_drone("node-1", &[("role", "k8s-node")])
        .await;
    let mut drone = test.drone("node-1").await;
    let report =
        |transitions: Vec<v1::CheckTransition>| v1::ReportCheckTransitionsRequest { transitions };
    drone
        .report_check_transitions(report(vec![transition("t1", "failing")]))
        .await
        .expect("first report");
    // The hive went away before the drone heard the answer: the drone sends
    // it again, with the next one.
    drone
        .report_check_transitions(report(vec![
            transition("t1", "failing"),
            transition("t2", "recovered"),
        ]))
        .await
        .expect("second report");
    let events = test
        .hive
        .store
        .list_events(&EventFilter {
            trigger: Some("drone.check".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("events");
    let mut states: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let field = |name: &str| e.payload[name].as_str().unwrap_or_default().to_string();
            (field("drone"), field("state"), field("output"))
        })
        .collect();
    states.sort();
    assert_eq!(
        states,
        vec![
            ("node-1".into(), "failing".into(), "node not ok".into()),
            ("node-1".into(), "recovered".into(), "node not ok".into()),
        ]
    );
    assert_eq!(events[0].payload["labels"]["role"], "k8s-node");
    assert_eq!(events[0].source, "drone:node-1");

    // A state the machine does not have is refused, and nothing stored.
    let bad = drone
        .report_check_transitions(report(vec![transition("t3", "down")]))
        .await
        .expect_err("refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn check_list_shows_each_drones_last_summary_filtered_by_target_and_state() {
    let test = TestHive::start().await;
    test.add_online_drone("node-1", &[("role", "k8s-node")])
        .await;
    test.add_online_drone("node-2", &[("role", "k8s-node")])
        .await;
    let status = |state: &str, output: &str| v1::CheckStatus {
        check: "nodes.node_ok".into(),
        state: state.into(),
        since_ms: 5,
        last_run_ms: 6,
        last_output: output.into(),
    };
    heartbeat(&test, "node-1", vec![status("failing", "kubelet down")]).await;
    heartbeat(&test, "node-2", vec![status("healthy", "ok")]).await;
    let mut control = test.control().await;
    let list = |target: &str, state: &str| v1::ListChecksRequest {
        target: target.into(),
        state: state.into(),
    };
    let all = control
        .list_checks(list("", ""))
        .await
        .expect("list")
        .into_inner()
        .checks;
    let rows: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|c| {
            (
                c.drone_id.as_str(),
                c.state.as_str(),
                c.last_output.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("node-1", "failing", "kubelet down"),
            ("node-2", "healthy", "ok")
        ]
    );
    let failing = control
        .list_checks(list("", "failing"))
        .await
        .expect("list")
        .into_inner()
        .checks;
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].drone_id, "node-1");
    let node2 = control
        .list_checks(list("node-2", ""))
        .await
        .expect("list")
        .into_inner()
        .checks;
    assert_eq!(node2.len(), 1);
    assert_eq!(node2[0].drone_id, "node-2");
    let bad = control
        .list_checks(list("", "down"))
        .await
        .expect_err("refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // The next summary replaces the last: node-1 recovered.
    heartbeat(&test, "node-1", vec![status("healthy", "ok")]).await;
    let failing = control
        .list_checks(list("", "failing"))
        .await
        .expect("list")
        .into_inner()
        .checks;
    assert!(failing.is_empty());
}
