//! The hive watched by the tools operators already run: `promtool` checks
//! its live `/metrics`, a real Prometheus scrapes it and fires the shipped
//! alerting rules, and `grpc.health.v1` follows whether the store answers.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool`), which
//! `.ci/run` installs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use ultron8_e2e::{
    DEADLINE, Drone, Hive, Proc, TestEnv, free_port, http_get, packs_dir, stderr, stdout, wait_for,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The metric families `docs/operations.md` documents: its table rows
/// start with the name in backticks, then the type.
fn documented_families() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join("docs/operations.md"))
        .expect("read docs/operations.md");
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name.to_string()))
        .filter(|name| name.starts_with("ultron8_") || name.starts_with("process_"))
        .collect()
}

#[test]
fn live_metrics_pass_promtool_with_every_documented_family_present() {
    let env = TestEnv::new("promtool");
    let hive = Hive::start(&env);
    // A pack with rules: the per-rule families have a series per rule, so
    // they exist once a rule does.
    for pack in ["core", "linux", "alertmanager"] {
        let pack = packs_dir().join(pack);
        let installed = hive.ctl(&["pack", "install", &pack.display().to_string()]);
        assert!(installed.status.success(), "{}", stderr(&installed));
    }
    // Likewise the per-probe families once a probe is installed, and the
    // per-service ones once discovery knows a service.
    let watch = env.dir.join("watch");
    std::fs::create_dir_all(watch.join("sensors")).expect("mkdir");
    std::fs::write(
        watch.join("pack.yaml"),
        "name: watch\nversion: 1.0.0\ndescription: a probe\nauthor: e2e\n",
    )
    .expect("write");
    // Nothing listens on port 1 of this loopback address.
    std::fs::write(
        watch.join("sensors/closed.yaml"),
        "kind: probe\ntargets: {static: [\"127.77.0.9:1\"]}\ntcp: {}\ninterval: 1s\n",
    )
    .expect("write");
    let installed = hive.ctl(&["pack", "install", &watch.display().to_string()]);
    assert!(installed.status.success(), "{}", stderr(&installed));
    let targets = env.dir.join("targets.txt");
    std::fs::write(&targets, "web-1 127.77.0.9 service=web\n").expect("write targets");
    let added = hive.ctl(&[
        "source",
        "add",
        "racks",
        "--file",
        &targets.display().to_string(),
    ]);
    assert!(added.status.success(), "{}", stderr(&added));
    let body = wait_for("the engine to load the rules", DEADLINE, || {
        let (status, body) = http_get(hive.http_port, "/metrics")?;
        if status == 200
            && body.contains("ultron8_rule_evaluations_total{rule=")
            && body.contains("ultron8_probe_targets{")
            && body.contains("ultron8_fleet_service_instances{")
        {
            Ok(body)
        } else {
            Err(format!("{status}"))
        }
    });

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (install Debian's prometheus package)");
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("feed promtool");
    }
    let checked = promtool.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool check metrics found problems:\n{said}"
    );

    // Every family the operations guide documents is exported before
    // anything happened: no event, no job, no drone.
    let families = documented_families();
    assert!(families.len() > 20, "{families:?}");
    let missing: Vec<&String> = families
        .iter()
        .filter(|family| !body.contains(&format!("# TYPE {family} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}\n{body}"
    );
}

/// The shipped rules with every `for:` set to 0s, so the test sees an
/// alert fire without waiting minutes.
fn rules_without_delays(dir: &Path) -> PathBuf {
    let shipped =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/ultron8-hive.rules.yml"))
            .expect("read the shipped rules");
    let rewritten: String = shipped
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("for: ") {
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}for: 0s\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert_ne!(rewritten, shipped, "the rules have `for:` lines");
    let path = dir.join("rules.yml");
    std::fs::write(&path, rewritten).expect("write rules");
    path
}

/// Prometheus on loopback, scraping `http_port` every second.
fn start_prometheus(env: &TestEnv, http_port: u16) -> (Proc, u16) {
    let dir = env.dir.join("prometheus");
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let rules = rules_without_delays(&dir);
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: ultron8-hive\n    static_configs:\n      - targets: [\"127.0.0.1:{http_port}\"]\n",
            rules.display()
        ),
    )
    .expect("write prometheus.yml");
    let port = free_port();
    let mut command = Command::new("prometheus");
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let mut prometheus = Proc::spawn("prometheus", command, env.dir.join("prometheus.log"));
    wait_for("Prometheus to be ready", DEADLINE, || {
        if !prometheus.is_running() {
            panic!("prometheus exited:\n{}", prometheus.log_text());
        }
        match http_get(port, "/-/ready") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    (prometheus, port)
}

fn prometheus_api(port: u16, path: &str) -> Result<Value, String> {
    let (status, body) = http_get(port, path)?;
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// The value of an instant query with one series, if it has one.
fn query(port: u16, expression: &str) -> Result<f64, String> {
    let path = format!("/api/v1/query?query={}", encode(expression));
    let answer = prometheus_api(port, &path)?;
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no value: {answer}"))
}

/// Percent-encodes a query string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_fires_the_bulk_offline_alert_when_drones_stop() {
    let env = TestEnv::new("prometheus");
    let hive = Hive::start(&env);
    let mut drones: Vec<Drone> = ["mon-1", "mon-2", "mon-3"]
        .iter()
        .map(|name| Drone::join(&env, &hive, name, &[]))
        .collect();
    for drone in &mut drones {
        drone.start();
    }
    hive.wait_for_online(&["mon-1", "mon-2", "mon-3"]);
    let (_prometheus, port) = start_prometheus(&env, hive.http_port);

    // Prometheus has seen three drones online, and nothing fires.
    wait_for(
        "Prometheus to scrape 3 drones online",
        DEADLINE,
        || match query(port, "ultron8_drones{state=\"online\"}") {
            Ok(3.0) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let firing = |answer: &Value| -> Vec<String> {
        answer["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .filter_map(|a| a["labels"]["alertname"].as_str().map(String::from))
            .collect()
    };
    let before = prometheus_api(port, "/api/v1/alerts").expect("alerts");
    assert!(
        !firing(&before).contains(&"Ultron8DronesOfflineInBulk".to_string()),
        "{before}"
    );

    for drone in &mut drones {
        drone.kill();
    }
    // The hive marks them offline after 3 s of silence; the next scrape
    // and evaluation fire the alert.
    let alert = wait_for("Ultron8DronesOfflineInBulk to fire", DEADLINE, || {
        let answer = prometheus_api(port, "/api/v1/alerts")?;
        let alerts = answer["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        alerts
            .into_iter()
            .find(|a| {
                a["labels"]["alertname"] == "Ultron8DronesOfflineInBulk" && a["state"] == "firing"
            })
            .ok_or_else(|| format!("firing: {:?}", firing(&answer)))
    });
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    // Nothing else is wrong with this hive.
    let answer = prometheus_api(port, "/api/v1/alerts").expect("alerts");
    let others: Vec<String> = firing(&answer)
        .into_iter()
        .filter(|name| name != "Ultron8DronesOfflineInBulk")
        .collect();
    assert!(others.is_empty(), "unexpected alerts firing: {others:?}");
}

/// A gRPC health client with no client certificate: what a probe is.
fn anonymous_health_client(env: &TestEnv, hive: &Hive) -> HealthClient<tonic::transport::Channel> {
    let ca_pem = std::fs::read_to_string(hive.data_dir.join("ca.pem")).expect("read ca.pem");
    let ca_der = ultron8_pki::pem_to_der_certs(&ca_pem)
        .expect("CA certificate")
        .into_iter()
        .next()
        .expect("one certificate");
    let tls = ultron8_transport::enrollment_client_config(&ultron8_pki::fingerprint(&ca_der))
        .expect("TLS without a client certificate");
    let channel = env
        .block_on(ultron8_transport::connect(
            &hive.address(),
            "localhost",
            tls,
        ))
        .expect("connect without a certificate");
    HealthClient::new(channel)
}

fn health(
    env: &TestEnv,
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<i32, String> {
    env.block_on(client.check(HealthCheckRequest {
        service: service.to_string(),
    }))
    .map(|answer| answer.into_inner().status)
    .map_err(|e| e.to_string())
}

fn set_connections(env: &TestEnv, allowed: bool) {
    env.block_on(async {
        use sqlx::Connection;
        let admin_url = std::env::var("ULTRON8_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect as admin");
        sqlx::query(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS {allowed}",
            env.database_name
        ))
        .execute(&mut admin)
        .await
        .expect("alter database");
        if !allowed {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&env.database_name)
            .execute(&mut admin)
            .await
            .expect("terminate the hive's connections");
        }
    });
}

#[test]
fn grpc_health_follows_whether_the_store_answers() {
    let env = TestEnv::new("grpc-health");
    let hive = Hive::start(&env);
    let mut client = anonymous_health_client(&env, &hive);
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    for service in ["", "ultron8.v1.ControlService", "ultron8.v1.DroneService"] {
        wait_for(
            &format!("{service:?} to be SERVING"),
            DEADLINE,
            || match health(&env, &mut client, service) {
                Ok(status) if status == serving => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }

    // The store refuses the hive: its database takes no connections.
    set_connections(&env, false);
    for service in ["", "ultron8.v1.ControlService", "ultron8.v1.DroneService"] {
        wait_for(
            &format!("{service:?} to be NOT_SERVING"),
            DEADLINE,
            || match health(&env, &mut client, service) {
                Ok(status) if status == not_serving => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    let (status, body) = http_get(hive.http_port, "/readyz").expect("readyz");
    assert_eq!(status, 503, "{body}");
    // ultronctl status names the store, and says the hive is not ready.
    let output = hive.ctl(&["status"]);
    let screen = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{screen}");
    assert!(screen.contains("NOT READY"), "{screen}");
    assert!(screen.contains("Store:       UNREACHABLE"), "{screen}");
    assert!(screen.contains("Broker:      ok"), "{screen}");

    set_connections(&env, true);
    wait_for("the hive to be SERVING again", DEADLINE, || {
        match health(&env, &mut client, "") {
            Ok(status) if status == serving => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let output = hive.ctl(&["status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let version = hive.ctl(&["version"]);
    let text = stdout(&version);
    assert!(version.status.success(), "{text}");
    assert!(text.starts_with("ultronctl: "), "{text}");
    assert!(text.contains("\nhive:      "), "{text}");
}
