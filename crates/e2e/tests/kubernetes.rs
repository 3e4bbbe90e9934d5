//! The `kubernetes` pack end to end: installed on a real hive (Postgres,
//! RabbitMQ), its actions run with `ultronctl run`, and by its rules when
//! the drone's runs of its node check fail or recover, on a real drone
//! whose `PATH` starts with `kubectl-standin` (`src/bin/kubectl-standin.rs`),
//! a recording stand-in for kubectl that keeps nodes in a JSON file. What
//! is asserted is what a cluster's operator would see on the node: cordon,
//! taints, the `ultron8.io/remediation` record, and the kubectl command
//! lines the drone ran. The stand-in is not a Kubernetes API: what needs a
//! real cluster is listed in docs/kubernetes.md.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};
use ultron8_e2e::{DEADLINE, Drone, Hive, TestEnv, packs_dir, stderr, stdout, wait_for};

const NODE: &str = "k8s-node-1";
const ANNOTATION: &str = "ultron8.io/remediation";

/// The stand-in's files: the node state and the argv log.
struct Cluster {
    state: PathBuf,
    log: PathBuf,
    bin_dir: PathBuf,
}

impl Cluster {
    fn new(env: &TestEnv) -> Cluster {
        let bin_dir = env.dir.join("k8s-bin");
        std::fs::create_dir_all(&bin_dir).expect("mkdir");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_kubectl-standin"),
            bin_dir.join("kubectl"),
        )
        .expect("symlink kubectl");
        Cluster {
            state: env.dir.join("cluster.json"),
            log: env.dir.join("kubectl.log"),
            bin_dir,
        }
    }

    fn set(&self, state: &Value) {
        std::fs::write(&self.state, state.to_string()).expect("write state");
    }

    fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(&self.state).expect("read state"))
            .expect("state is JSON")
    }

    fn node(&self) -> Value {
        self.state()["nodes"][NODE].clone()
    }

    /// What Ultron8 recorded on the node, parsed; `Null` when absent.
    fn record(&self) -> Value {
        match self.node()["metadata"]["annotations"][ANNOTATION].as_str() {
            Some(text) => serde_json::from_str(text).expect("the record is JSON"),
            None => Value::Null,
        }
    }

    /// Every kubectl command line run so far.
    fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("log line is a JSON array"))
            .collect()
    }

    /// The kubectl commands that change something (not `get`).
    fn changes(&self) -> Vec<Vec<String>> {
        self.calls().into_iter().filter(|c| c[0] != "get").collect()
    }
}

/// A hive with the pack, and the drone `node-a` on the node `k8s-node-1`
/// (its `NODE_NAME`, as the DaemonSet sets it), kubectl being the stand-in.
fn setup(name: &str, node: &Value) -> (TestEnv, Hive, Drone, Cluster) {
    setup_with_pack(name, node, |_| packs_dir().join("kubernetes"))
}

/// Like [`setup`], installing the pack `pack` returns (given the test's
/// directory).
fn setup_with_pack(
    name: &str,
    node: &Value,
    pack: impl FnOnce(&Path) -> PathBuf,
) -> (TestEnv, Hive, Drone, Cluster) {
    let env = TestEnv::new(name);
    let hive = Hive::start(&env);
    let output = hive.ctl(&["pack", "install", &pack(&env.dir).display().to_string()]);
    assert!(output.status.success(), "install: {}", stderr(&output));
    let cluster = Cluster::new(&env);
    cluster.set(&json!({"nodes": {NODE: node}}));
    let path = format!(
        "{}:{}",
        cluster.bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut drone = Drone::join(&env, &hive, "node-a", &["role=k8s-node", "node=k8s-node-1"]);
    drone.start_with_env(&[
        ("PATH", &path),
        (
            "KUBECTL_STANDIN_STATE",
            &cluster.state.display().to_string(),
        ),
        ("KUBECTL_STANDIN_LOG", &cluster.log.display().to_string()),
        ("NODE_NAME", NODE),
    ]);
    hive.wait_for_online(&["node-a"]);
    (env, hive, drone, cluster)
}

fn node(unschedulable: bool, taints: Value) -> Value {
    let mut node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "labels": {"kubernetes.io/hostname": NODE, "role": "k8s-node"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": "127.77.0.0/24"},
    });
    if unschedulable {
        node["spec"]["unschedulable"] = json!(true);
    }
    if taints.as_array().is_some_and(|t| !t.is_empty()) {
        node["spec"]["taints"] = taints;
    }
    node
}

/// `ultronctl run kubernetes.ACTION args... -t node-a`.
fn run(hive: &Hive, action: &str, args: &[&str]) -> Output {
    let action = format!("kubernetes.{action}");
    let mut all = vec!["run", action.as_str()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-t", "node-a"]);
    hive.ctl(&all)
}

fn ok(hive: &Hive, action: &str, args: &[&str]) -> String {
    let output = run(hive, action, args);
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "{action} {args:?} failed:\n{text}");
    text
}

fn taint(key: &str, value: &str, effect: &str) -> Value {
    json!({"key": key, "value": value, "effect": effect})
}

#[test]
fn cordon_and_taint_then_undo_restore_the_node_exactly() {
    let foreign = json!([taint("dedicated", "db", "NoSchedule")]);
    let original = node(false, foreign.clone());
    let (_env, hive, _drone, cluster) = setup("k8s-undo", &original);

    // No node= given: the drone's NODE_NAME.
    let out = ok(&hive, "cordon", &[]);
    assert!(out.contains("node/k8s-node-1 cordoned"), "{out}");
    assert_eq!(cluster.node()["spec"]["unschedulable"], true);
    let record = cluster.record();
    assert_eq!(record["cordoned"], true, "{record}");
    assert_eq!(record["taints"], json!([]), "{record}");
    assert_eq!(record["by"], "operator", "{record}");

    ok(
        &hive,
        "taint",
        &[
            "node=k8s-node-1",
            "key=ultron8.io/node-check-failed",
            "value=true",
            "effect=NoExecute",
            "by=alice",
        ],
    );
    assert_eq!(
        cluster.node()["spec"]["taints"],
        json!([
            taint("dedicated", "db", "NoSchedule"),
            taint("ultron8.io/node-check-failed", "true", "NoExecute")
        ])
    );
    let record = cluster.record();
    assert_eq!(record["cordoned"], true, "{record}");
    assert_eq!(
        record["taints"],
        json!(["ultron8.io/node-check-failed=true:NoExecute"])
    );
    assert_eq!(record["by"], "alice", "{record}");

    // Cordoning again changes nothing: it was Ultron8's cordon already.
    let before = cluster.changes().len();
    let out = ok(&hive, "cordon", &[]);
    assert!(out.contains("already cordoned by Ultron8"), "{out}");
    assert_eq!(cluster.changes().len(), before);

    let out = ok(&hive, "undo", &[]);
    assert!(out.contains("everything Ultron8 did is undone"), "{out}");
    assert_eq!(cluster.node(), original, "undo restores the node exactly");
    // Only our taint was removed, by key and effect.
    let changes = cluster.changes();
    assert!(
        changes.contains(&strings(&[
            "taint",
            "nodes",
            NODE,
            "ultron8.io/node-check-failed:NoExecute-"
        ])),
        "{changes:?}"
    );
    assert!(
        changes.contains(&strings(&["uncordon", NODE])),
        "{changes:?}"
    );

    // The status action says there is nothing left to undo.
    let out = ok(&hive, "status", &[]);
    assert!(out.contains("unschedulable: false"), "{out}");
    assert!(out.contains("dedicated=db:NoSchedule"), "{out}");
    assert!(out.contains("nothing to undo"), "{out}");

    // remediate, as the example rule runs it: drain (which cordons) and
    // taint, one record; undo takes all of it back.
    let out = ok(
        &hive,
        "remediate",
        &[
            "drain=true",
            "taint=true",
            "timeout=60",
            "by=rule:kubernetes.remediate_failing_node",
        ],
    );
    assert!(out.contains("node/k8s-node-1 drained"), "{out}");
    let record = cluster.record();
    assert_eq!(record["cordoned"], true, "{record}");
    assert_eq!(
        record["taints"],
        json!(["ultron8.io/node-check-failed=true:NoSchedule"])
    );
    assert_eq!(record["by"], "rule:kubernetes.remediate_failing_node");
    let changes = cluster.changes();
    let order: Vec<&str> = changes
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(|c| c[0].as_str())
        .collect();
    assert_eq!(
        order,
        ["cordon", "annotate", "drain", "taint", "annotate"],
        "{changes:?}"
    );
    ok(&hive, "undo", &[]);
    assert_eq!(cluster.node(), original);

    // Several taints of Ultron8's: one given a new value in place, one
    // removed by key, the rest by undo.
    ok(&hive, "taint", &["key=a", "value=1"]);
    ok(
        &hive,
        "taint",
        &["key=b", "value=2", "effect=PreferNoSchedule"],
    );
    ok(&hive, "taint", &["key=a", "value=3"]);
    assert_eq!(
        cluster.record()["taints"],
        json!(["b=2:PreferNoSchedule", "a=3:NoSchedule"])
    );
    ok(&hive, "untaint", &["key=b"]);
    assert_eq!(cluster.record()["taints"], json!(["a=3:NoSchedule"]));
    ok(&hive, "undo", &[]);
    assert_eq!(cluster.node(), original);
}

#[test]
fn undo_and_untaint_leave_the_cordon_and_taints_ultron8_did_not_make() {
    let original = node(true, json!([taint("dedicated", "db", "NoSchedule")]));
    let (_env, hive, _drone, cluster) = setup("k8s-foreign", &original);

    // Someone else cordoned the node: recorded as not Ultron8's.
    let out = ok(
        &hive,
        "cordon",
        &[
            "node=k8s-node-1",
            "by=rule:kubernetes.remediate_failing_node",
        ],
    );
    assert!(out.contains("already cordoned by someone else"), "{out}");
    let record = cluster.record();
    assert_eq!(record["cordoned"], false, "{record}");
    assert_eq!(record["by"], "rule:kubernetes.remediate_failing_node");
    assert!(!cluster.changes().iter().any(|c| c[0] == "cordon"));

    // A taint with the key and effect of someone else's is left alone.
    let out = ok(&hive, "taint", &["key=dedicated", "value=web"]);
    assert!(out.contains("that Ultron8 did not add"), "{out}");
    ok(
        &hive,
        "taint",
        &["key=ultron8.io/node-check-failed", "value=true"],
    );
    assert_eq!(
        cluster.node()["spec"]["taints"],
        json!([
            taint("dedicated", "db", "NoSchedule"),
            taint("ultron8.io/node-check-failed", "true", "NoSchedule")
        ])
    );
    assert_eq!(
        cluster.record()["taints"],
        json!(["ultron8.io/node-check-failed=true:NoSchedule"])
    );

    // untaint of the foreign key: nothing removed.
    let out = ok(&hive, "untaint", &["key=dedicated"]);
    assert!(out.contains("Ultron8 added no taint dedicated"), "{out}");
    assert_eq!(
        cluster.node()["spec"]["taints"].as_array().map(Vec::len),
        Some(2)
    );
    // untaint of everything Ultron8 added: only ours goes.
    ok(&hive, "untaint", &[]);
    assert_eq!(
        cluster.node()["spec"]["taints"],
        json!([taint("dedicated", "db", "NoSchedule")])
    );

    // uncordon does not lift a cordon Ultron8 did not make, nor does undo.
    ok(&hive, "cordon", &[]);
    let out = ok(&hive, "uncordon", &[]);
    assert!(out.contains("Ultron8 did not cordon it"), "{out}");
    assert_eq!(cluster.node()["spec"]["unschedulable"], true);
    ok(&hive, "cordon", &[]);
    ok(&hive, "taint", &["key=ultron8.io/node-check-failed"]);
    ok(&hive, "undo", &[]);
    assert_eq!(
        cluster.node(),
        original,
        "undo left the others' cordon and taint"
    );
    assert!(!cluster.changes().iter().any(|c| c[0] == "uncordon"));
}

#[test]
fn drain_respects_disruption_budgets_and_a_failing_kubectl_fails_the_execution() {
    let original = node(false, json!([]));
    let (_env, hive, _drone, cluster) = setup("k8s-drain", &original);

    let out = ok(&hive, "drain", &["timeout=120"]);
    assert!(out.contains("node/k8s-node-1 drained"), "{out}");
    let drains: Vec<Vec<String>> = cluster
        .calls()
        .into_iter()
        .filter(|c| c[0] == "drain")
        .collect();
    assert_eq!(
        drains,
        vec![strings(&[
            "drain",
            NODE,
            "--timeout=120s",
            "--ignore-daemonsets=true",
            "--delete-emptydir-data=false"
        ])]
    );
    // Drain cordoned first, recorded as Ultron8's: uncordon lifts it.
    assert_eq!(cluster.record()["cordoned"], true);
    ok(&hive, "uncordon", &[]);
    assert_eq!(cluster.node(), original);

    // A PodDisruptionBudget that forbids the eviction: the drain fails at
    // its timeout with kubectl's message, and the cordon stays, recorded.
    let mut state = cluster.state();
    state["pdb_blocks"] = json!({NODE: "shop/db-0"});
    cluster.set(&state);
    let output = run(&hive, "drain", &["timeout=45", "delete_emptydir_data=true"]);
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(
        text.contains("would violate the pod's disruption budget"),
        "{text}"
    );
    assert!(text.contains("global timeout reached: 45s"), "{text}");
    assert_eq!(cluster.node()["spec"]["unschedulable"], true);
    assert_eq!(cluster.record()["cordoned"], true);
    // Never the flags that bypass budgets.
    for call in cluster.calls() {
        assert!(
            !call
                .iter()
                .any(|a| a.starts_with("--disable-eviction") || a.starts_with("--force")),
            "{call:?}"
        );
    }
    ok(&hive, "undo", &[]);
    assert_eq!(cluster.node()["spec"].get("unschedulable"), None);

    // kubectl failing: the execution fails with kubectl's stderr, and the
    // node is unchanged.
    let mut state = cluster.state();
    state["pdb_blocks"] = Value::Null;
    state["fail"] = json!({
        "verbs": ["cordon"],
        "stderr": "error: You must be logged in to the server (Unauthorized)",
    });
    cluster.set(&state);
    let before = cluster.node();
    let output = run(&hive, "cordon", &[]);
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(
        text.contains("error: You must be logged in to the server (Unauthorized)"),
        "{text}"
    );
    assert_eq!(cluster.node(), before);
    let jobs = hive.ctl_json(&["job", "list", "-o", "json"]);
    let last = &jobs.as_array().expect("jobs")[0];
    let job = hive.wait_for_job(last["id"].as_str().expect("job id"));
    assert_eq!(job["executions"][0]["status"], "failed", "{job}");

    // A value kubectl would misread never reaches it.
    let calls = cluster.calls().len();
    let output = run(&hive, "taint", &["key=a b", "node=k8s-node-1"]);
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(text.contains("is not a taint key"), "{text}");
    let output = run(&hive, "taint", &["key=a", "effect=Sometimes"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("effect"), "{}", stderr(&output));
    assert_eq!(
        cluster.calls().len(),
        calls,
        "no kubectl call for bad input"
    );
}

/// The pack's check and rules, end to end: the drone labelled
/// role=k8s-node runs `kubernetes.node_check`, its transitions are real
/// `drone.check` events, and the rules run the actions on the stand-in
/// node. The test installs a copy of the pack whose check runs a script of
/// the test (the node is healthy while the file `node-healthy` exists; a
/// failed `test -f` exits 1 with no output, which is *unhealthy*) on short
/// intervals; the rules are installed exactly as shipped.
#[test]
fn the_pack_rules_remediate_a_failing_node_and_undo_it_on_recovery() {
    let original = node(false, json!([]));
    let mut healthy = PathBuf::new();
    let (_env, hive, _drone, cluster) = setup_with_pack("k8s-rules", &original, |dir| {
        healthy = dir.join("node-healthy");
        std::fs::write(&healthy, "").expect("write node-healthy");
        let pack = dir.join("kubernetes-pack");
        copy_dir(&packs_dir().join("kubernetes"), &pack);
        let sensor = pack.join("sensors/node_check.yaml");
        let shipped = std::fs::read_to_string(&sensor).expect("read the check");
        let mut text = shipped.clone();
        for (from, to) in [
            (
                "command: [\"/etc/ultron8/checks/node-check\"]".to_string(),
                format!(
                    "command: [\"/bin/sh\", \"-c\", \"test -f '{}'\"]",
                    healthy.display()
                ),
            ),
            ("interval: 30s".into(), format!("interval: {INTERVAL_MS}ms")),
            ("timeout: 10s".into(), "timeout: 200ms".into()),
            ("failure_threshold: 4".into(), "failure_threshold: 2".into()),
        ] {
            assert!(
                text.contains(&from),
                "{from} not in the shipped check:\n{shipped}"
            );
            text = text.replace(&from, &to);
        }
        assert!(text.contains("success_threshold: 2"), "{shipped}");
        std::fs::write(&sensor, text).expect("write the check");
        pack
    });
    let check = "kubernetes.node_check";
    let remediate = "kubernetes.remediate_failing_node";
    let undo = "kubernetes.undo_on_recovery";

    wait_for_check_state(&hive, "healthy");
    // Healthy from the start is no recovery: nothing fired.
    assert_eq!(check_events(&hive), Vec::<String>::new());
    assert_eq!(cluster.changes(), Vec::<Vec<String>>::new());

    // The node's health goes: two failed runs make the check failing, and
    // the node is drained and tainted, once.
    std::fs::remove_file(&healthy).expect("remove node-healthy");
    wait_for_jobs(&hive, remediate, 1);
    let job = hive.wait_for_job(&last_job_of(&hive, remediate));
    assert_eq!(job["executions"][0]["status"], "succeeded", "{job}");
    wait_for_check_state(&hive, "failing");
    let record = cluster.record();
    assert_eq!(record["cordoned"], true, "{record}");
    assert_eq!(
        record["taints"],
        json!(["ultron8.io/node-check-failed=true:NoSchedule"]),
        "{record}"
    );
    assert_eq!(record["by"], "rule:kubernetes.remediate_failing_node");
    assert_eq!(cluster.node()["spec"]["unschedulable"], true);
    assert_eq!(
        cluster.node()["spec"]["taints"],
        json!([taint("ultron8.io/node-check-failed", "true", "NoSchedule")])
    );
    // It keeps failing, run after run: nothing more fires or changes.
    wait_for_runs(&hive, 4);
    assert_eq!(jobs_of(&hive, remediate), 1);
    assert_eq!(check_events(&hive), vec!["failing"]);
    let verbs: Vec<String> = cluster
        .changes()
        .into_iter()
        .map(|c| c[0].clone())
        .collect();
    assert_eq!(
        verbs,
        ["cordon", "annotate", "drain", "taint", "annotate"],
        "{:?}",
        cluster.changes()
    );
    assert!(
        cluster.changes().contains(&strings(&[
            "drain",
            NODE,
            "--timeout=300s",
            "--ignore-daemonsets=true",
            "--delete-emptydir-data=false"
        ])),
        "{:?}",
        cluster.changes()
    );
    let row = check_row(&hive).expect("the check is listed");
    assert_eq!(row["state"], "failing", "{row}");
    // The event carries what the rules read: the drone and its labels.
    let event = &hive.ctl_json(&["event", "list", "--trigger", "drone.check", "-o", "json"])[0];
    assert_eq!(event["payload"]["drone"], "node-a", "{event}");
    assert_eq!(event["payload"]["check"], check, "{event}");
    assert_eq!(event["payload"]["labels"]["node"], NODE, "{event}");
    assert_eq!(event["payload"]["consecutive"], 2, "{event}");

    // The file is back: two healthy runs, recovered, and the node is as
    // it was before.
    std::fs::write(&healthy, "").expect("restore node-healthy");
    wait_for_jobs(&hive, undo, 1);
    let job = hive.wait_for_job(&last_job_of(&hive, undo));
    assert_eq!(job["executions"][0]["status"], "succeeded", "{job}");
    assert_eq!(cluster.node(), original, "undo restores the node exactly");
    wait_for_check_state(&hive, "healthy");
    assert_eq!(check_events(&hive), vec!["failing", "recovered"]);
    // Only what the remediation did is taken back.
    let changes = cluster.changes();
    for undone in [
        strings(&[
            "taint",
            "nodes",
            NODE,
            "ultron8.io/node-check-failed:NoSchedule-",
        ]),
        strings(&["uncordon", NODE]),
    ] {
        assert_eq!(
            changes.iter().filter(|c| **c == undone).count(),
            1,
            "{undone:?} in {changes:?}"
        );
    }

    // Failing again within the 30-minute cooldown: the firing is held and
    // the node left alone.
    let before = cluster.changes().len();
    std::fs::remove_file(&healthy).expect("remove node-healthy");
    wait_for("the second failure to be held", DEADLINE, || {
        let records = hive.ctl_json(&["audit", "list", "--rule", remediate, "-o", "json"]);
        let held = records
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["kind"] == "rule.held");
        if held {
            Ok(())
        } else {
            Err(records.to_string())
        }
    });
    wait_for_check_state(&hive, "failing");
    assert_eq!(check_events(&hive), vec!["failing", "recovered", "failing"]);
    wait_for_runs(&hive, 2);
    assert_eq!(jobs_of(&hive, remediate), 1);
    assert_eq!(jobs_of(&hive, undo), 1);
    assert_eq!(cluster.changes().len(), before, "{:?}", cluster.changes());
    assert_eq!(cluster.node(), original);
}

/// How often the test's node check runs.
const INTERVAL_MS: i64 = 300;

/// `check list -o json`'s row of the node check on node-a.
fn check_row(hive: &Hive) -> Option<Value> {
    hive.ctl_json(&["check", "list", "-o", "json"])
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["drone"] == "node-a" && c["check"] == "kubernetes.node_check")
        .cloned()
}

fn wait_for_check_state(hive: &Hive, state: &str) {
    wait_for(
        &format!("the node check to be {state}"),
        DEADLINE,
        || match check_row(hive) {
            Some(row) if row["state"] == state => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// The states of the node check's `drone.check` events, oldest first.
fn check_events(hive: &Hive) -> Vec<String> {
    let events = hive.ctl_json(&[
        "event",
        "list",
        "--trigger",
        "drone.check",
        "--limit",
        "500",
        "-o",
        "json",
    ]);
    let mut states: Vec<String> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["payload"]["check"] == "kubernetes.node_check" && e["payload"]["drone"] == "node-a"
        })
        .map(|e| {
            e["payload"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    states.reverse();
    states
}

/// The ids of the jobs a rule started, newest first.
fn jobs_of_rule(hive: &Hive, rule: &str) -> Vec<String> {
    hive.ctl_json(&["job", "list", "-o", "json", "--limit", "500"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["requester"] == format!("rule:{rule}"))
        .filter_map(|j| j["id"].as_str().map(String::from))
        .collect()
}

fn jobs_of(hive: &Hive, rule: &str) -> usize {
    jobs_of_rule(hive, rule).len()
}

fn last_job_of(hive: &Hive, rule: &str) -> String {
    jobs_of_rule(hive, rule)
        .into_iter()
        .next()
        .expect("the rule started a job")
}

fn wait_for_jobs(hive: &Hive, rule: &str, count: usize) {
    wait_for(
        &format!("{count} job(s) of {rule}"),
        DEADLINE,
        || match jobs_of(hive, rule) {
            n if n == count => Ok(()),
            n => Err(format!(
                "{n} jobs; drone.check events: {:?}",
                check_events(hive)
            )),
        },
    );
}

/// The node check's last run on node-a, as the drone reported it (its
/// clock, which is this host's).
fn last_run_ms(hive: &Hive) -> i64 {
    check_row(hive)
        .and_then(|c| c["last_run"].as_str().map(String::from))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map_or(0, |t| t.timestamp_millis())
}

/// Waits until the node check has run at least `runs` more times.
fn wait_for_runs(hive: &Hive, runs: i64) {
    let from = last_run_ms(hive);
    wait_for(
        &format!("{runs} more runs of the node check"),
        DEADLINE,
        || match last_run_ms(hive) {
            at if at >= from + runs * INTERVAL_MS => Ok(()),
            at => Err(format!("last run at {at}, from {from}")),
        },
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}
