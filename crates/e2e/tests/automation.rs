//! Event-driven remediation end to end: packs, actions, webhooks, the real
//! Prometheus Alertmanager, rules with policies, timers and the audit
//! trail, on Postgres and RabbitMQ with real drone processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use ultron8_e2e::{
    DEADLINE, Drone, Hive, Proc, Receiver, TestEnv, free_port, http_post, packs_dir, stderr,
    stdout, wait_for,
};

fn install(hive: &Hive, pack: &Path) {
    let output = hive.ctl(&["pack", "install", &pack.display().to_string()]);
    assert!(
        output.status.success(),
        "install {}: {}",
        pack.display(),
        stderr(&output)
    );
}

fn install_reference_packs(hive: &Hive) {
    for pack in ["core", "linux", "alertmanager", "hello"] {
        install(hive, &packs_dir().join(pack));
    }
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

fn audit(hive: &Hive, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["audit", "list", "-o", "json", "--limit", "500"];
    all.extend_from_slice(args);
    hive.ctl_json(&all).as_array().cloned().unwrap_or_default()
}

fn kinds(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r["kind"].as_str().map(String::from))
        .collect()
}

#[test]
fn packs_install_atomically_upgrade_with_history_and_refuse_broken_content() {
    let env = TestEnv::new("packs");
    let hive = Hive::start(&env);
    install_reference_packs(&hive);
    let packs = hive.ctl_json(&["pack", "list", "-o", "json"]);
    let names: Vec<&str> = packs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, vec!["alertmanager", "core", "hello", "linux"]);

    // A broken pack: several problems in several files, all reported with
    // their positions, and nothing installed.
    let broken = env.dir.join("broken");
    copy_dir(&packs_dir().join("hello"), &broken);
    std::fs::write(
        broken.join("pack.yaml"),
        "name: broken\nversion: 1.0.0\ndescription: x\nauthor: x\n",
    )
    .expect("write");
    let rule = std::fs::read_to_string(broken.join("rules/greet_on_webhook.yaml")).expect("read");
    std::fs::write(
        broken.join("rules/greet_on_webhook.yaml"),
        rule.replace("ref: hello.greet", "ref: broken.gret"),
    )
    .expect("write");
    std::fs::write(
        broken.join("actions/extra.yaml"),
        "name: extra\nrunner: script\nscript: scripts/missing.sh\n",
    )
    .expect("write");
    std::fs::write(
        broken.join("actions/bad.yaml"),
        "name: bad\nrunner: [unclosed\n",
    )
    .expect("write");
    let output = hive.ctl(&["pack", "install", &broken.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("nothing was installed"), "{message}");
    for file in [
        "rules/greet_on_webhook.yaml:",
        "actions/extra.yaml:",
        "actions/bad.yaml:",
    ] {
        assert!(message.contains(file), "{file} missing from:\n{message}");
    }
    assert!(message.contains("no action `gret`"), "{message}");
    let after = hive.ctl_json(&["pack", "list", "-o", "json"]);
    assert_eq!(after.as_array().map(Vec::len), Some(4), "{after}");
    let rules = hive.ctl_json(&["rule", "list", "-o", "json"]);
    assert!(!rules.to_string().contains("broken."), "{rules}");

    // An upgrade keeps the previous version in history.
    let newer = env.dir.join("hello-1.1");
    copy_dir(&packs_dir().join("hello"), &newer);
    let manifest = std::fs::read_to_string(newer.join("pack.yaml")).expect("read");
    std::fs::write(
        newer.join("pack.yaml"),
        manifest.replace("version: 1.0.0", "version: 1.1.0"),
    )
    .expect("write");
    let output = hive.ctl(&["pack", "install", &newer.display().to_string()]);
    assert!(
        stdout(&output).contains("upgraded hello 1.0.0 -> 1.1.0"),
        "{}",
        stdout(&output)
    );
    let shown = hive.ctl_json(&["pack", "show", "hello", "-o", "json"]);
    assert_eq!(shown["version"], "1.1.0");
    assert_eq!(shown["previous_versions"], serde_json::json!(["1.0.0"]));
    // A downgrade is refused.
    let output = hive.ctl(&[
        "pack",
        "install",
        &packs_dir().join("hello").display().to_string(),
    ]);
    assert!(
        !output.status.success() && stderr(&output).contains("refusing to downgrade"),
        "{}",
        stderr(&output)
    );

    // An upgrade keeps an operator's enable/disable choice...
    let rule = "alertmanager.restart_on_service_down";
    assert!(hive.ctl(&["rule", "disable", rule]).status.success());
    install(&hive, &packs_dir().join("alertmanager"));
    assert_eq!(
        hive.ctl_json(&["rule", "get", rule, "-o", "json"])["enabled"],
        false
    );
    assert!(hive.ctl(&["rule", "enable", rule]).status.success());
    // ...and may not drop an action another pack's rules use.
    let thinner = env.dir.join("linux-1.1");
    copy_dir(&packs_dir().join("linux"), &thinner);
    let manifest = std::fs::read_to_string(thinner.join("pack.yaml")).expect("read");
    std::fs::write(
        thinner.join("pack.yaml"),
        manifest.replace("version: 1.0.0", "version: 1.1.0"),
    )
    .expect("write");
    std::fs::remove_file(thinner.join("actions/restart_service.yaml")).expect("remove");
    let output = hive.ctl(&["pack", "install", &thinner.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(rule), "{}", stderr(&output));
    assert_eq!(
        hive.ctl_json(&["pack", "show", "linux", "-o", "json"])["version"],
        "1.0.0"
    );

    // A pack others depend on cannot be removed; a leaf can.
    let output = hive.ctl(&["pack", "remove", "core"]);
    assert!(
        !output.status.success() && stderr(&output).contains("alertmanager"),
        "{}",
        stderr(&output)
    );
    let output = hive.ctl(&["pack", "remove", "alertmanager"]);
    assert!(output.status.success(), "{}", stderr(&output));

    // Who installed and removed what is on record.
    let records = audit(&hive, &[]);
    let installs = records
        .iter()
        .filter(|r| r["kind"] == "pack.installed")
        .count();
    assert_eq!(installs, 6, "4 installs, 1 upgrade and 1 reinstall");
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "pack.removed" && r["actor"] == "operator:admin")
    );
}

#[test]
fn actions_run_ad_hoc_with_their_schema_and_secrets_are_masked() {
    let env = TestEnv::new("actions");
    let hive = Hive::start(&env);
    let mut drone = Drone::join(&env, &hive, "box-1", &["role=web"]);
    drone.start();
    hive.wait_for_online(&["box-1"]);
    install_reference_packs(&hive);

    // A script action: the drone fetches the script by hash and runs it.
    let output = hive.ctl(&["run", "linux.disk_usage", "path=/", "top=1", "-t", "box-1"]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("Filesystem"),
        "{}",
        stdout(&output)
    );
    // A shell action with typed parameters.
    let output = hive.ctl(&[
        "run",
        "linux.top_processes",
        "count=2",
        "sort=pmem",
        "-t",
        "label:role=web",
    ]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );

    // Bad parameters are refused before anything runs, each named.
    let before = hive
        .ctl_json(&["job", "list", "-o", "json"])
        .as_array()
        .map(Vec::len);
    for (args, expected) in [
        (
            vec!["run", "linux.top_processes", "count=many", "-t", "box-1"],
            "count",
        ),
        (
            vec!["run", "linux.top_processes", "sort=name", "-t", "box-1"],
            "sort",
        ),
        (
            vec![
                "run",
                "linux.restart_service",
                "servce=nginx",
                "-t",
                "box-1",
            ],
            "servce",
        ),
        (vec!["run", "linux.reboot", "-t", "box-1"], "confirm"),
        (vec!["run", "linux.nope", "-t", "box-1"], "linux.nope"),
        (vec!["run", "linux.disk_usage"], "target"),
    ] {
        let output = hive.ctl(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert_eq!(
        hive.ctl_json(&["job", "list", "-o", "json"])
            .as_array()
            .map(Vec::len),
        before
    );

    // An http action runs from the hive; its secret parameter never shows.
    let receiver = Receiver::start();
    let secret = "Bearer sup3r-s3cret-t0ken";
    let output = hive.ctl(&[
        "run",
        "core.http",
        &format!("url={}", receiver.url("/hook")),
        "body={\"text\":\"hi\"}",
        &format!("authorization={secret}"),
        "-o",
        "json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].contains(secret),
        "the receiver gets the real header"
    );
    assert!(requests[0].contains("{\"text\":\"hi\"}"));
    let job: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(job["executions"][0]["drone"], "@hive");
    assert_eq!(job["executions"][0]["status"], "succeeded");
    let job_id = job["id"].as_str().unwrap_or_default().to_string();
    for shown in [
        stdout(&hive.ctl(&["job", "get", &job_id, "-o", "json"])),
        stdout(&hive.ctl(&["audit", "show", &job_id, "-o", "json"])),
    ] {
        assert!(!shown.contains("sup3r-s3cret"), "secret leaked: {shown}");
    }
    assert!(stdout(&hive.ctl(&["audit", "show", &job_id, "-o", "json"])).contains("********"));

    // A secret parameter echoed by a command on a drone is masked in the
    // output the drone reports, and in the command ultronctl shows.
    let pack = env.dir.join("vault");
    std::fs::create_dir_all(pack.join("actions")).expect("mkdir");
    std::fs::write(
        pack.join("pack.yaml"),
        "name: vault\nversion: 1.0.0\ndescription: secrets\nauthor: e2e\n",
    )
    .expect("write");
    std::fs::write(
        pack.join("actions/leak.yaml"),
        "name: leak\ndescription: prints its secret\nrunner: shell\ncommand: [\"echo\", \"token={{ token }}\"]\n\
         parameters:\n  token: {type: string, required: true, secret: true}\n",
    )
    .expect("write");
    install(&hive, &pack);
    let output = hive.ctl(&[
        "run",
        "vault.leak",
        "token=hunter2-hunter2",
        "-t",
        "box-1",
        "-o",
        "json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let shown = stdout(&output);
    assert!(shown.contains("token=********"), "{shown}");
    assert!(!shown.contains("hunter2"), "secret leaked: {shown}");
    let job: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let job_id = job["id"].as_str().unwrap_or_default().to_string();
    for view in [
        stdout(&hive.ctl(&["job", "get", &job_id, "-o", "json"])),
        stdout(&hive.ctl(&["job", "list", "-o", "json"])),
        stdout(&hive.ctl(&["audit", "show", &job_id, "-o", "json"])),
    ] {
        assert!(!view.contains("hunter2"), "secret leaked: {view}");
    }
}

const WEBHOOK_TOKEN: &str = "e2e-webhook-token";
const HMAC_SECRET: &str = "e2e-hmac-secret";

fn webhook_config() -> String {
    format!(
        "[webhooks.demo]\ntoken = \"{WEBHOOK_TOKEN}\"\nheaders = [\"X-Request-Id\"]\n\n\
         [webhooks.signed]\nhmac_secret = \"{HMAC_SECRET}\"\n"
    )
}

#[test]
fn a_webhook_fires_a_rule_whose_whole_story_is_in_the_audit_trail() {
    let env = TestEnv::new("webhook");
    let hive = Hive::start_with_config(&env, &webhook_config());
    let mut drone = Drone::join(&env, &hive, "greeter", &[]);
    drone.start();
    hive.wait_for_online(&["greeter"]);
    install_reference_packs(&hive);
    let bearer = format!("Bearer {WEBHOOK_TOKEN}");
    let body = br#"{"name": "Ada", "target": "greeter"}"#;
    // What an HMAC-signed request carries: the time, in unix seconds.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs()
        .to_string();

    // Refusals: each a 4xx naming the problem; none reaches the engine.
    // (path, headers, body, expected status, fragment of the message)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/v1/webhooks/demo", vec![], body.to_vec(), 401, "Bearer"),
        (
            "/v1/webhooks/demo",
            vec![("Authorization", "Bearer wrong")],
            body.to_vec(),
            401,
            "Bearer",
        ),
        (
            "/v1/webhooks/demo",
            vec![("Authorization", &bearer)],
            b"{not json".to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "/v1/webhooks/nosuch",
            vec![("Authorization", &bearer)],
            body.to_vec(),
            404,
            "nosuch",
        ),
        (
            "/v1/webhooks/demo",
            vec![("Authorization", &bearer)],
            vec![b' '; 2 * 1024 * 1024],
            413,
            "exceeds",
        ),
        (
            "/v1/webhooks/signed",
            vec![
                ("X-Ultron8-Timestamp", &now),
                ("X-Ultron8-Signature", "sha256=00"),
            ],
            body.to_vec(),
            401,
            "Signature",
        ),
    ];
    for (path, headers, payload, status, fragment) in &cases {
        let (got, answer) = http_post(hive.http_port, path, headers, payload).expect("post");
        assert_eq!(got, *status, "{path}: {answer}");
        assert!(answer.contains(fragment), "{path}: {answer}");
    }
    assert_eq!(
        hive.ctl_json(&["event", "list", "-o", "json"])
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let (_, metrics) = ultron8_e2e::http_get(hive.http_port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("ultron8_events_refused_total{reason=\"unauthorized\"} 3"),
        "{metrics}"
    );

    // A good one: stored, acknowledged, the rule fires on the drone.
    let (status, answer) = http_post(
        hive.http_port,
        "/v1/webhooks/demo",
        &[("Authorization", &bearer), ("X-Request-Id", "req-7")],
        body,
    )
    .expect("post");
    assert_eq!(status, 202, "{answer}");
    let event_id = serde_json::from_str::<serde_json::Value>(&answer).expect("json")["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let event = wait_for("the event to be processed", DEADLINE, || {
        let event = hive.ctl_json(&["event", "get", &event_id, "-o", "json"]);
        if event["state"] == "processed" {
            Ok(event)
        } else {
            Err(event.to_string())
        }
    });
    assert_eq!(event["payload"]["headers"]["x-request-id"], "req-7");
    let job_id = wait_for("the rule's job to finish", DEADLINE, || {
        let chain = hive.ctl_json(&["audit", "show", &event_id, "-o", "json"]);
        let records = chain["records"].as_array().cloned().unwrap_or_default();
        match records.iter().find(|r| r["kind"] == "execution.finished") {
            Some(done) => Ok(done["job_id"].as_str().unwrap_or_default().to_string()),
            None => Err(chain.to_string()),
        }
    });
    let job = hive.wait_for_job(&job_id);
    assert_eq!(job["executions"][0]["status"], "succeeded", "{job}");
    assert!(
        job["executions"][0]["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("Hello, Ada"),
        "{job}"
    );
    assert_eq!(job["requester"], "rule:hello.greet_on_webhook");
    let chain = hive.ctl_json(&["audit", "show", &event_id, "-o", "json"]);
    let story = kinds(
        chain["records"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
    );
    assert_eq!(story, vec!["rule.fired", "execution.finished"], "{chain}");

    // The same name again within the cooldown: held, recorded, escalated.
    let (status, answer) = http_post(
        hive.http_port,
        "/v1/webhooks/demo",
        &[("Authorization", &bearer)],
        body,
    )
    .expect("post");
    assert_eq!(status, 202);
    let second = serde_json::from_str::<serde_json::Value>(&answer).expect("json")["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let held = wait_for("the second firing to be held", DEADLINE, || {
        let records = audit(&hive, &["--event", &second]);
        match records.iter().find(|r| r["kind"] == "rule.held") {
            Some(held) => Ok(held.clone()),
            None => Err(format!("{records:?}")),
        }
    });
    assert!(
        held["detail"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("cooldown"),
        "{held}"
    );
    wait_for("an escalation event", DEADLINE, || {
        let escalations = hive.ctl_json(&[
            "event",
            "list",
            "--trigger",
            "core.escalation",
            "-o",
            "json",
        ]);
        let found = escalations
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["payload"]["event_id"] == second.as_str());
        if found {
            Ok(())
        } else {
            Err(escalations.to_string())
        }
    });

    // HMAC-signed webhooks are accepted with the right signature over a
    // fresh timestamp and the body.
    let signed = [now.as_bytes(), b".", body].concat();
    let header = format!("sha256={}", hmac_hex(HMAC_SECRET.as_bytes(), &signed));
    let (status, answer) = http_post(
        hive.http_port,
        "/v1/webhooks/signed",
        &[
            ("X-Ultron8-Timestamp", &now),
            ("X-Ultron8-Signature", &header),
        ],
        body,
    )
    .expect("post");
    assert_eq!(status, 202, "{answer}");

    // Filters on the audit trail.
    let fired = audit(&hive, &["--rule", "hello.greet_on_webhook"]);
    assert!(
        kinds(&fired).contains(&"rule.fired".to_string()),
        "{fired:?}"
    );
    let by_drone = audit(&hive, &["--drone", "greeter", "--status", "succeeded"]);
    assert!(!by_drone.is_empty() && by_drone.iter().all(|r| r["drone_id"] == "greeter"));
    let by_action = audit(&hive, &["--action", "hello.greet"]);
    assert!(!by_action.is_empty());
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn rule_test_explains_matches_and_runs_nothing() {
    let env = TestEnv::new("ruletest");
    let hive = Hive::start(&env);
    let mut drone = Drone::join(&env, &hive, "web-1", &[]);
    drone.start();
    hive.wait_for_online(&["web-1"]);
    install_reference_packs(&hive);
    let event = env.dir.join("alert.json");
    std::fs::write(
        &event,
        r#"{"trigger": "alertmanager.alert", "payload": {"status": "firing", "labels": {"alertname": "ServiceDown", "instance": "web-1", "service": "nginx"}, "annotations": {}, "starts_at": "", "ends_at": "", "fingerprint": "f1", "generator_url": "", "receiver": "ultron8", "group_labels": {}, "common_labels": {}, "external_url": ""}}"#,
    )
    .expect("write");
    let results = hive.ctl_json(&[
        "rule",
        "test",
        "--event",
        &event.display().to_string(),
        "-o",
        "json",
    ]);
    let results = results.as_array().cloned().unwrap_or_default();
    let restart = results
        .iter()
        .find(|r| r["rule"] == "alertmanager.restart_on_service_down")
        .expect("restart rule");
    assert_eq!(restart["matched"], true, "{restart}");
    assert_eq!(restart["drones"], serde_json::json!(["web-1"]));
    assert_eq!(restart["parameters"]["service"], "nginx");
    let notify = results
        .iter()
        .find(|r| r["rule"] == "alertmanager.notify_on_resolved")
        .expect("notify rule");
    assert_eq!(notify["matched"], false);
    assert!(notify["reasons"].to_string().contains("status"), "{notify}");
    assert_eq!(
        hive.ctl_json(&["job", "list", "-o", "json"])
            .as_array()
            .map(Vec::len),
        Some(0),
        "rule test ran something"
    );

    // A match whose action cannot run says why, as the engine would record it.
    let nobody = std::fs::read_to_string(&event)
        .expect("read")
        .replace("\"instance\": \"web-1\"", "\"instance\": \"web-9\"");
    std::fs::write(&event, nobody).expect("write");
    let results = hive.ctl_json(&[
        "rule",
        "test",
        "--event",
        &event.display().to_string(),
        "-o",
        "json",
    ]);
    let restart = results
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["rule"] == "alertmanager.restart_on_service_down")
        .cloned()
        .expect("restart rule");
    assert_eq!(restart["matched"], true);
    assert!(
        restart["error"]
            .as_str()
            .unwrap_or("")
            .contains("matches no online drone"),
        "{restart}"
    );

    // Only known trigger types can be fired by hand.
    let output = hive.ctl(&["event", "fire", "core.evnt", "--payload", "{}"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("unknown trigger type") && stderr(&output).contains("core.event"),
        "{}",
        stderr(&output)
    );
}

/// The real Prometheus Alertmanager routes an alert to the hive; the rule
/// restarts the (test) service through a drone; the resolved alert is an
/// event of its own and sends the notification.
#[test]
fn alertmanager_alerts_drive_a_restart_and_the_resolution_notifies() {
    let env = TestEnv::new("alertmanager");
    let hive = Hive::start(&env);
    install_reference_packs(&hive);

    // The drone's PATH starts with a fake systemctl that records restarts.
    let bin_dir = env.dir.join("fake-bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    let restarts = env.dir.join("restarts.log");
    let fake = bin_dir.join("systemctl");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", restarts.display()),
    )
    .expect("write");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut drone = Drone::join(&env, &hive, "web-1", &[]);
    drone.start_with_env(&[("PATH", &path)]);
    hive.wait_for_online(&["web-1"]);

    let receiver = Receiver::start();
    let alertmanager = start_alertmanager(&env, hive.http_port);
    let alert = |ends: Option<&str>| {
        let mut alert = serde_json::json!([{
            "labels": {"alertname": "ServiceDown", "instance": "web-1", "service": "demo-svc"},
            "annotations": {"notify_url": receiver.url("/notify")},
        }]);
        if let Some(ends) = ends {
            alert[0]["endsAt"] = serde_json::json!(ends);
        }
        alert.to_string()
    };
    let (status, answer) = http_post(
        alertmanager.port,
        "/api/v2/alerts",
        &[],
        alert(None).as_bytes(),
    )
    .expect("post alert");
    assert_eq!(status, 200, "{answer}");
    wait_for("the drone to restart demo-svc", DEADLINE, || {
        let log = std::fs::read_to_string(&restarts).unwrap_or_default();
        if log.contains("restart demo-svc") {
            Ok(())
        } else {
            Err(log)
        }
    });

    let ended = "2000-01-01T00:00:00Z";
    let (status, answer) = http_post(
        alertmanager.port,
        "/api/v2/alerts",
        &[],
        alert(Some(ended)).as_bytes(),
    )
    .expect("resolve");
    assert_eq!(status, 200, "{answer}");
    let notification = wait_for("the resolution to be notified", DEADLINE, || match receiver
        .requests()
        .into_iter()
        .find(|r| r.contains("/notify"))
    {
        Some(request) => Ok(request),
        None => Err(alertmanager.proc.log_text()),
    });
    assert!(
        notification.contains("ServiceDown on web-1 resolved"),
        "{notification}"
    );

    // Both alert states are events, each with its own audit chain.
    let events = hive.ctl_json(&[
        "event",
        "list",
        "--trigger",
        "alertmanager.alert",
        "-o",
        "json",
    ]);
    let statuses: Vec<&str> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["payload"]["status"].as_str())
        .collect();
    assert!(
        statuses.contains(&"firing") && statuses.contains(&"resolved"),
        "{events}"
    );
    let notified = audit(&hive, &["--rule", "alertmanager.notify_on_resolved"]);
    assert!(
        kinds(&notified).contains(&"rule.fired".to_string()),
        "{notified:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&restarts)
            .unwrap_or_default()
            .matches("restart demo-svc")
            .count(),
        1
    );
}

struct Alertmanager {
    port: u16,
    proc: Proc,
}

fn start_alertmanager(env: &TestEnv, hive_http_port: u16) -> Alertmanager {
    let binary = ["/usr/bin/prometheus-alertmanager", "/usr/local/bin/alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Prometheus Alertmanager is not installed (Debian: apt-get install prometheus-alertmanager; .ci/run does)");
    let dir = env.dir.join("alertmanager");
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: ultron8\n  group_by: [alertname, instance]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: ultron8\n    webhook_configs:\n      - url: http://127.0.0.1:{hive_http_port}/v1/alertmanager\n        send_resolved: true\n"
        ),
    )
    .expect("write config");
    let port = free_port();
    let mut command = Command::new(binary);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=");
    let mut proc = Proc::spawn("alertmanager", command, env.dir.join("alertmanager.log"));
    wait_for("Alertmanager to be ready", DEADLINE, || {
        if !proc.is_running() {
            panic!("Alertmanager exited:\n{}", proc.log_text());
        }
        match ultron8_e2e::http_get(port, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    Alertmanager { port, proc }
}

#[test]
fn a_timer_fires_once_per_tick_with_two_hive_replicas() {
    let env = TestEnv::new("timers");
    let hive = Hive::start(&env);
    install(&hive, &packs_dir().join("core"));
    let pack = env.dir.join("ticker");
    std::fs::create_dir_all(pack.join("rules")).expect("mkdir");
    std::fs::write(
        pack.join("pack.yaml"),
        "name: ticker\nversion: 1.0.0\ndescription: ticks\nauthor: e2e\ndependencies: [core]\n",
    )
    .expect("write");
    std::fs::write(
        pack.join("rules/tick.yaml"),
        "name: tick\ndescription: every second\nenabled: true\ntrigger: core.interval\ntrigger_parameters: {every: 1s}\n\
         criteria: []\naction:\n  ref: core.noop\n  parameters: {}\n",
    )
    .expect("write");
    let _replica = hive.replica();
    install(&hive, &pack);
    let ticks = wait_for("five ticks", DEADLINE, || {
        let events = hive.ctl_json(&[
            "event",
            "list",
            "--trigger",
            "core.interval",
            "--limit",
            "500",
            "-o",
            "json",
        ]);
        let ticks: Vec<String> = events
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["payload"]["fired_at"].as_str().map(String::from))
            .collect();
        if ticks.len() >= 5 {
            Ok(ticks)
        } else {
            Err(format!("{ticks:?}"))
        }
    });
    let mut unique = ticks.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    // Each tick ran the action once.
    let fired = audit(&hive, &["--rule", "ticker.tick"]);
    assert!(kinds(&fired).iter().filter(|k| *k == "rule.fired").count() >= 5);
}
