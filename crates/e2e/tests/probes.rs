//! Probes end to end: a pack's HTTP probe watches a service served by the
//! test, a rule remediates when it fails and another says so when it
//! recovers; each transition fires once, however many runs it spans.
//! Real hive on Postgres and RabbitMQ; every address is loopback.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use ultron8_e2e::{
    DEADLINE, Hive, Receiver, TestEnv, http_get, packs_dir, stderr, stdout, wait_for,
};

/// A service whose health endpoint answers with the status the test sets.
struct Service {
    port: u16,
    status: Arc<AtomicU16>,
}

impl Service {
    fn start() -> Service {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind service");
        let port = listener.local_addr().expect("addr").port();
        let status = Arc::new(AtomicU16::new(200));
        let answer = status.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf);
                let status = answer.load(Ordering::SeqCst);
                let body = if status == 200 {
                    r#"{"status":"ok"}"#
                } else {
                    r#"{"status":"down"}"#
                };
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Service { port, status }
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

fn install(hive: &Hive, pack: &std::path::Path) {
    let output = hive.ctl(&["pack", "install", &pack.display().to_string()]);
    assert!(output.status.success(), "install: {}", stderr(&output));
}

fn write(path: std::path::PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// The probe's state on the service, from `probe list -o json`.
fn state_of(hive: &Hive, probe: &str) -> Option<serde_json::Value> {
    hive.ctl_json(&["probe", "list", "--probe", probe, "-o", "json"])
        .as_array()
        .and_then(|targets| targets.first().cloned())
}

fn events(hive: &Hive, trigger: &str) -> Vec<serde_json::Value> {
    hive.ctl_json(&["event", "list", "--trigger", trigger, "-o", "json"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The status `fleet summary` gives an instance.
fn fleet_status(hive: &Hive, name: &str) -> Option<String> {
    hive.ctl_json(&["fleet", "summary", "-o", "json"])
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == name)
        .and_then(|i| i["status"].as_str().map(str::to_string))
}

/// Waits until the probe has run `runs` more times in a row with the same
/// outcome as now, so a transition that should fire once has had the
/// chance to fire again.
fn wait_for_runs(hive: &Hive, probe: &str, state: &str, runs: u64) {
    wait_for(
        &format!("{probe} {state} for {runs} runs"),
        DEADLINE,
        || match state_of(hive, probe) {
            Some(s) if s["state"] == state && s["consecutive"].as_u64() >= Some(runs) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn a_failing_probe_fires_its_rule_once_and_its_recovery_once() {
    let env = TestEnv::new("probes");
    let hive = Hive::start(&env);
    install(&hive, &packs_dir().join("core"));
    let service = Service::start();
    let hooks = Receiver::start();

    let pack = env.dir.join("web");
    write(
        pack.join("pack.yaml"),
        "name: web\nversion: 1.0.0\ndescription: the web tier\nauthor: e2e\ndependencies: [core]\n",
    );
    write(
        pack.join("sensors/api.yaml"),
        &format!(
            "kind: probe\ndescription: the API's health endpoint\n\
             targets: {{static: [\"127.0.0.1:{}\"]}}\n\
             http: {{path: /healthz, body: '\"status\":\"ok\"'}}\n\
             interval: 300ms\ntimeout: 250ms\nfailure_threshold: 2\nsuccess_threshold: 2\nflap: false\n",
            service.port
        ),
    );
    // The same service as discovered: a targets file lists it as web-1.
    let targets = env.dir.join("targets.txt");
    std::fs::write(
        &targets,
        format!("web-1 127.0.0.1:{} service=api\n", service.port),
    )
    .expect("write targets");
    let added = hive.ctl(&[
        "source",
        "add",
        "racks",
        "--file",
        &targets.display().to_string(),
        "--interval",
        "1s",
    ]);
    assert!(added.status.success(), "{}", stderr(&added));
    write(
        pack.join("sensors/api_discovered.yaml"),
        "kind: probe\ntargets: {service: api}\nhttp: {path: /healthz}\ninterval: 300ms\nfailure_threshold: 1\n",
    );
    // Nothing listens on port 1 of this loopback address.
    write(
        pack.join("sensors/closed_port.yaml"),
        "kind: probe\ntargets: {static: [\"127.77.0.5:1\"]}\ntcp: {}\ninterval: 300ms\nfailure_threshold: 1\n",
    );
    write(
        pack.join("rules/restart_api.yaml"),
        &format!(
            "name: restart_api\ndescription: restart the API when its probe fails\nenabled: true\n\
             trigger: probe.failed\ncriteria:\n  - {{path: probe, op: equals, value: web.api}}\n\
             action:\n  ref: core.http\n  parameters:\n    url: \"{}\"\n    body: '{{{{ {{\"target\": target, \"detail\": detail}} | tojson }}}}'\n",
            hooks.url("/restart")
        ),
    );
    write(
        pack.join("rules/api_recovered.yaml"),
        &format!(
            "name: api_recovered\ndescription: say so when it is back\nenabled: true\n\
             trigger: probe.recovered\ncriteria:\n  - {{path: probe, op: equals, value: web.api}}\n\
             action:\n  ref: core.http\n  parameters:\n    url: \"{}\"\n    body: '{{{{ {{\"target\": target}} | tojson }}}}'\n",
            hooks.url("/recovered")
        ),
    );
    install(&hive, &pack);

    // Healthy: nothing fires.
    wait_for_runs(&hive, "web.api", "healthy", 3);
    assert!(
        events(&hive, "probe.failed")
            .iter()
            .all(|e| e["payload"]["probe"] != "web.api")
    );

    // The service fails: the rule fires once, however long it stays down.
    service.set(503);
    wait_for("the restart hook", DEADLINE, || {
        let restarts = hooks
            .requests()
            .iter()
            .filter(|r| r.contains("POST /restart"))
            .count();
        if restarts > 0 {
            Ok(())
        } else {
            Err(format!("{:?}", hooks.requests()))
        }
    });
    wait_for_runs(&hive, "web.api", "failing", 8);
    // The fleet views count the discovered instance unhealthy while its
    // probe fails.
    wait_for(
        "web-1 unhealthy in the fleet",
        DEADLINE,
        || match fleet_status(&hive, "web-1").as_deref() {
            Some("unhealthy") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let failed: Vec<_> = events(&hive, "probe.failed")
        .into_iter()
        .filter(|e| e["payload"]["probe"] == "web.api")
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "one probe.failed for one failure: {failed:?}"
    );
    assert_eq!(failed[0]["payload"]["detail"], "HTTP 503, expected 2xx");
    assert_eq!(failed[0]["payload"]["consecutive"], 2);
    let restarts: Vec<String> = hooks
        .requests()
        .into_iter()
        .filter(|r| r.contains("POST /restart"))
        .collect();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert!(
        restarts[0].contains(&format!("\"target\": \"127.0.0.1:{}\"", service.port)),
        "{}",
        restarts[0]
    );

    // Answers 200 without the body it must match: still failing.
    let listed = stdout(&hive.ctl(&["probe", "list", "--state", "failing"]));
    assert!(
        listed.contains("web.api") && listed.contains("HTTP 503"),
        "{listed}"
    );

    // Back: the recovery fires once.
    service.set(200);
    wait_for_runs(&hive, "web.api", "healthy", 8);
    let recovered: Vec<_> = events(&hive, "probe.recovered")
        .into_iter()
        .filter(|e| e["payload"]["probe"] == "web.api")
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    let recoveries = hooks
        .requests()
        .iter()
        .filter(|r| r.contains("POST /recovered"))
        .count();
    wait_for("the recovery hook", DEADLINE, || {
        let n = hooks
            .requests()
            .iter()
            .filter(|r| r.contains("POST /recovered"))
            .count();
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} ({recoveries} before)"))
        }
    });
    assert_eq!(
        hooks
            .requests()
            .iter()
            .filter(|r| r.contains("POST /restart"))
            .count(),
        1,
        "no second restart"
    );

    // The discovered instance is probed by its name, at its address.
    let discovered = state_of(&hive, "web.api_discovered").expect("a state");
    assert_eq!(discovered["target"], "web-1", "{discovered}");
    assert_eq!(
        discovered["address"],
        format!("http://127.0.0.1:{}/healthz", service.port)
    );
    assert_eq!(discovered["state"], "healthy", "{discovered}");
    // A targets file gives no figures: passing probes are what make it
    // healthy.
    wait_for(
        "web-1 healthy in the fleet again",
        DEADLINE,
        || match fleet_status(&hive, "web-1").as_deref() {
            Some("healthy") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // The closed port fails at once, and says why.
    wait_for_runs(&hive, "web.closed_port", "failing", 1);
    let closed = state_of(&hive, "web.closed_port").expect("a state");
    assert_eq!(closed["address"], "127.77.0.5:1");
    assert!(
        closed["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cannot connect"),
        "{closed}"
    );

    // Prometheus sees the runs and the states.
    let (code, metrics) = http_get(hive.http_port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("ultron8_probe_targets{probe=\"web.closed_port\",state=\"failing\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ultron8_probe_runs_total{probe=\"web.api\",outcome=\"unhealthy\"}"));

    // A probe that does not exist is named, with those that do.
    let missing = hive.ctl(&["probe", "list", "--probe", "web.nope"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains(
            "no probe \"web.nope\"; installed: web.api, web.api_discovered, web.closed_port"
        ),
        "{}",
        stderr(&missing)
    );
}
