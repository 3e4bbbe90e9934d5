//! The spine, end to end: a real hive process on Postgres and RabbitMQ,
//! drone processes with their own data directories, all driven through
//! `ultronctl` the way an operator would.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use prost::Message;
use ultron8_broker::ActionPublisher;
use ultron8_e2e::{DEADLINE, Drone, Hive, TestEnv, bin, http_get, stderr, stdout, wait_for};
use ultron8_proto::v1;

fn executions(job: &serde_json::Value) -> Vec<serde_json::Value> {
    job["executions"].as_array().cloned().unwrap_or_default()
}

fn by_drone<'a>(job: &'a serde_json::Value, drone: &str) -> &'a serde_json::Value {
    job["executions"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["drone"] == drone))
        .unwrap_or_else(|| panic!("no execution on {drone} in {job}"))
}

fn start_fleet(env: &TestEnv, hive: &Hive, drones: &[(&str, &[&str])]) -> Vec<Drone> {
    let mut fleet: Vec<Drone> = drones
        .iter()
        .map(|(name, labels)| Drone::join(env, hive, name, labels))
        .collect();
    for drone in &mut fleet {
        drone.start();
    }
    let names: Vec<&str> = drones.iter().map(|(name, _)| *name).collect();
    hive.wait_for_online(&names);
    fleet
}

#[test]
fn run_fans_out_to_the_targeted_drones_and_reports_each_result() {
    let env = TestEnv::new("fanout");
    let hive = Hive::start(&env);
    let _fleet = start_fleet(
        &env,
        &hive,
        &[
            ("web-1", &["role=web"]),
            ("web-2", &["role=web"]),
            ("db-1", &["role=db", "service=IdService"]),
        ],
    );

    // Facts and labels arrive with registration.
    let db = hive.ctl_json(&["drone", "show", "db-1", "-o", "json"]);
    assert_eq!(db["labels"]["service"], "IdService");
    assert!(db["cpus"].as_u64().unwrap_or(0) > 0, "{db}");
    assert!(!db["kernel"].as_str().unwrap_or("").is_empty(), "{db}");

    // Synchronous run: every web drone, printed per host, exit 0.
    let output = hive.ctl(&[
        "run",
        "-t",
        "label:role=web",
        "--",
        "echo",
        "hello from $HOSTNAME",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.contains("web-1  succeeded  exit 0"), "{printed}");
    assert!(printed.contains("web-2  succeeded  exit 0"), "{printed}");
    assert!(!printed.contains("db-1"), "{printed}");
    // No shell by default: the argument is passed literally.
    assert!(printed.contains("| hello from $HOSTNAME"), "{printed}");

    // Boolean targets; JSON output for scripts.
    let job = hive.ctl_json(&[
        "run",
        "-t",
        "label:role=web and not web-2",
        "-o",
        "json",
        "--",
        "true",
    ]);
    let ran: Vec<_> = executions(&job)
        .iter()
        .map(|e| e["drone"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ran, vec!["web-1"]);

    // A host that fails makes the whole run exit non-zero, with its exit code shown.
    let output = hive.ctl(&[
        "run",
        "-t",
        "*",
        "--shell",
        "--",
        "test $(hostname) = never || exit 7",
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).matches("failed  exit 7").count(),
        3,
        "{}",
        stdout(&output)
    );

    // --async returns the job id at once; job get shows the results later.
    let output = hive.ctl(&["run", "-t", "db-*", "--async", "--", "uname", "-s"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let job_id = stdout(&output).trim().to_string();
    let job = hive.wait_for_job(&job_id);
    let execution = by_drone(&job, "db-1");
    assert_eq!(execution["status"], "succeeded");
    assert_eq!(execution["stdout"], "Linux\n");
    let exec = hive.ctl_json(&[
        "exec",
        "get",
        execution["id"].as_str().unwrap_or_default(),
        "-o",
        "json",
    ]);
    assert_eq!(exec["stdout"], "Linux\n");
    let listed = hive.ctl_json(&["job", "list", "-o", "json"]);
    assert!(
        listed
            .as_array()
            .is_some_and(|jobs| jobs.iter().any(|j| j["id"] == job_id.as_str())),
        "{listed}"
    );

    // A target nobody matches creates nothing and says so.
    let before = hive
        .ctl_json(&["job", "list", "-o", "json"])
        .as_array()
        .map(Vec::len);
    let output = hive.ctl(&["run", "-t", "label:role=cache", "--", "true"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("matches no online drone"),
        "{}",
        stderr(&output)
    );
    // A syntax error points at the column.
    let output = hive.ctl(&["run", "-t", "web-1 and (db-1", "--", "true"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("column"), "{}", stderr(&output));
    assert_eq!(
        hive.ctl_json(&["job", "list", "-o", "json"])
            .as_array()
            .map(Vec::len),
        before
    );

    // Who ran what where is in the audit trail.
    let actions = env.query_strings(&format!(
        "SELECT action FROM audit_log WHERE job_id = '{job_id}' ORDER BY id"
    ));
    assert_eq!(actions, vec!["job.submitted", "execution.finished"]);
    let actors = env.query_strings(&format!(
        "SELECT actor FROM audit_log WHERE job_id = '{job_id}' ORDER BY id"
    ));
    assert_eq!(actors, vec!["operator:admin", "drone:db-1"]);

    // Metrics count what happened.
    let (status, metrics) = http_get(hive.http_port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("ultron8_drones{state=\"online\"} 3"),
        "{metrics}"
    );
    let succeeded: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ultron8_executions_finished_total{status=\"succeeded\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(succeeded >= 1.0, "{metrics}");
    assert!(
        metrics.contains("ultron8_executions{status=\"succeeded\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ultron8_dispatch_latency_seconds_count"),
        "{metrics}"
    );
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let env = TestEnv::new("timeout");
    let hive = Hive::start(&env);
    let _fleet = start_fleet(&env, &hive, &[("solo", &[])]);
    let pid_file = env.dir.join("grandchild.pid");
    let script = format!(
        "sleep 300 & echo $! > {}; echo started; sleep 300",
        pid_file.display()
    );
    let output = hive.ctl(&[
        "run",
        "-t",
        "solo",
        "--timeout",
        "1s",
        "-o",
        "json",
        "--shell",
        "--",
        &script,
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let job: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let execution = by_drone(&job, "solo");
    assert_eq!(execution["status"], "timed_out", "{job}");
    assert_eq!(execution["stdout"], "started\n");
    assert!(
        execution["error"]
            .as_str()
            .unwrap_or("")
            .contains("timed out"),
        "{job}"
    );

    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    wait_for("the backgrounded grandchild to be killed", DEADLINE, || {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting to be reaped by init: either way not running.
        let fields: Vec<&str> = state
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if state.is_empty() || fields.first() == Some(&"Z") {
            Ok(())
        } else {
            Err(state.clone())
        }
    });
}

#[test]
fn a_drone_killed_mid_run_reports_the_execution_lost_and_never_runs_it_again() {
    let env = TestEnv::new("lost");
    let hive = Hive::start(&env);
    let mut fleet = start_fleet(&env, &hive, &[("victim", &[])]);
    let marker = env.dir.join("runs.txt");
    // The command outlives the drone killed under it (it runs in its own
    // process group); it stops at the end of the test, or after a minute
    // if the test fails first, so nothing is left behind either way.
    let stop = env.dir.join("stop");
    let script = format!(
        "echo ran >> {}; i=0; while [ ! -e {} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
        marker.display(),
        stop.display()
    );
    let output = hive.ctl(&["run", "-t", "victim", "--async", "--shell", "--", &script]);
    assert!(output.status.success(), "{}", stderr(&output));
    let job_id = stdout(&output).trim().to_string();
    wait_for("the command to start", DEADLINE, || {
        if marker.exists() {
            Ok(())
        } else {
            Err("no marker yet".into())
        }
    });

    fleet[0].kill();
    fleet[0].start();
    let job = hive.wait_for_job(&job_id);
    let execution = by_drone(&job, "victim");
    assert_eq!(execution["status"], "lost", "{job}");
    assert!(
        execution["error"]
            .as_str()
            .unwrap_or("")
            .contains("not run again"),
        "{job}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker"),
        "ran\n",
        "the command ran twice"
    );
    // The restarted drone is healthy and takes new work.
    let output = hive.ctl(&["run", "-t", "victim", "--", "true"]);
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::write(&stop, "").expect("stop the orphaned command");
}

#[test]
fn results_spooled_while_the_hive_is_down_all_arrive_exactly_once() {
    let env = TestEnv::new("spool");
    let mut hive = Hive::start(&env);
    let fleet = start_fleet(&env, &hive, &[("a", &[]), ("b", &[]), ("c", &[])]);
    let release = env.dir.join("release");
    let script = format!(
        // Bounded, so a failing test leaves no command looping behind it.
        "i=0; while [ ! -e {} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; echo done",
        release.display()
    );
    let output = hive.ctl(&["run", "-t", "*", "--async", "--shell", "--", &script]);
    assert!(output.status.success(), "{}", stderr(&output));
    let job_id = stdout(&output).trim().to_string();

    // Wait until every drone has started the command, then take the hive
    // away before any of them can report.
    wait_for("all three executions to be running", DEADLINE, || {
        let job = hive.ctl_json(&["job", "get", &job_id, "-o", "json"]);
        let running = executions(&job)
            .iter()
            .filter(|e| e["status"] == "running")
            .count();
        if running == 3 {
            Ok(())
        } else {
            Err(job.to_string())
        }
    });
    hive.proc.as_mut().expect("hive").kill();
    std::fs::write(&release, "").expect("release");

    let spooled = |drone: &Drone| {
        std::fs::read_dir(drone.data_dir.join("spool"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    wait_for("every drone to spool its result", DEADLINE, || {
        let counts: Vec<usize> = fleet.iter().map(spooled).collect();
        if counts.iter().all(|c| *c >= 1) {
            Ok(())
        } else {
            Err(format!("{counts:?}"))
        }
    });

    hive.restart();
    let job = hive.wait_for_job(&job_id);
    for name in ["a", "b", "c"] {
        let execution = by_drone(&job, name);
        assert_eq!(execution["status"], "succeeded", "{job}");
        assert_eq!(execution["stdout"], "done\n");
    }
    wait_for("spools to empty", DEADLINE, || {
        let counts: Vec<usize> = fleet.iter().map(spooled).collect();
        if counts.iter().all(|c| *c == 0) {
            Ok(())
        } else {
            Err(format!("{counts:?}"))
        }
    });
    let finished = env.query_strings(&format!(
        "SELECT execution_id FROM audit_log WHERE job_id = '{job_id}' AND action = 'execution.finished'"
    ));
    assert_eq!(
        finished.len(),
        3,
        "each result recorded exactly once: {finished:?}"
    );
}

/// Publishes straight onto a drone's queue, bypassing the hive, as an
/// attacker with broker access could.
fn publish_raw(env: &TestEnv, drone: &str, body: Vec<u8>) {
    env.block_on(async {
        let publisher = ultron8_broker::amqp::AmqpPublisher::connect(&env.amqp_url)
            .await
            .expect("connect");
        publisher
            .publish(drone, body, Duration::from_secs(60))
            .await
            .expect("publish");
    });
}

fn request(
    execution_id: &str,
    drone: &str,
    expires_in_ms: i64,
    marker: &Path,
) -> v1::ActionRequest {
    let now = chrono_now_ms();
    v1::ActionRequest {
        job_id: "00000000-0000-0000-0000-000000000000".into(),
        execution_id: execution_id.into(),
        drone_id: drone.into(),
        issued_at_ms: now,
        expires_at_ms: now + expires_in_ms,
        command: Some(v1::Command {
            program: Some(v1::command::Program::Argv(v1::Argv {
                args: vec!["touch".into(), marker.display().to_string()],
            })),
            ..Default::default()
        }),
        requester: "attacker".into(),
        cancel: false,
        action: String::new(),
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn sign(key: &ultron8_pki::RequestSigningKey, request: &v1::ActionRequest) -> Vec<u8> {
    let bytes = request.encode_to_vec();
    v1::SignedActionRequest {
        signature: key.sign(&bytes),
        key_id: key.key_id(),
        request: bytes,
    }
    .encode_to_vec()
}

#[test]
fn forged_misaddressed_and_expired_requests_are_refused_and_audited() {
    let env = TestEnv::new("forged");
    let hive = Hive::start(&env);
    let _fleet = start_fleet(&env, &hive, &[("target", &[])]);
    let hive_key = ultron8_pki::RequestSigningKey::from_pkcs8(
        &std::fs::read(hive.data_dir.join("request-signing.pk8")).expect("signing key"),
    )
    .expect("key");
    let rogue_key = ultron8_pki::RequestSigningKey::from_pkcs8(
        &ultron8_pki::RequestSigningKey::generate_pkcs8().expect("generate"),
    )
    .expect("key");

    let forged_marker = env.dir.join("forged");
    let misaddressed_marker = env.dir.join("misaddressed");
    let expired_marker = env.dir.join("expired");
    let stale_marker = env.dir.join("stale");
    // Signed by another key, but claiming the hive's key id.
    let forged = {
        let bytes = request("forged-1", "target", 60_000, &forged_marker).encode_to_vec();
        v1::SignedActionRequest {
            signature: rogue_key.sign(&bytes),
            key_id: hive_key.key_id(),
            request: bytes,
        }
        .encode_to_vec()
    };
    publish_raw(&env, "target", forged);
    publish_raw(
        &env,
        "target",
        sign(
            &hive_key,
            &request(
                "misaddressed-1",
                "someone-else",
                60_000,
                &misaddressed_marker,
            ),
        ),
    );
    publish_raw(
        &env,
        "target",
        sign(
            &hive_key,
            &request("expired-1", "target", -1_000, &expired_marker),
        ),
    );
    // Genuine, unexpired, addressed to this name, but signed an hour before
    // this drone enrolled: meant for an earlier holder of the name.
    let mut stale = request("stale-1", "target", 60_000, &stale_marker);
    stale.issued_at_ms -= 3_600_000;
    publish_raw(&env, "target", sign(&hive_key, &stale));
    publish_raw(&env, "target", b"not even protobuf".to_vec());

    wait_for(
        "the drone's refusals to reach the audit trail",
        DEADLINE,
        || {
            let claimed = env.query_strings(
                "SELECT detail->>'claimed_execution_id' || ':' || status FROM audit_log \
             WHERE action = 'drone.refused_request' AND drone_id = 'target' ORDER BY 1",
            );
            let expected = [
                "expired-1:expired",
                "forged-1:rejected",
                "misaddressed-1:rejected",
                "stale-1:rejected",
            ];
            if claimed == expected {
                Ok(())
            } else {
                Err(format!("{claimed:?}"))
            }
        },
    );
    let reasons = env.query_strings(
        "SELECT detail->>'reason' FROM audit_log WHERE action = 'drone.refused_request' ORDER BY detail->>'claimed_execution_id'",
    );
    assert!(reasons[0].contains("expiry"), "{reasons:?}");
    assert!(
        reasons[1].contains("signature does not verify"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("someone-else"), "{reasons:?}");
    assert!(
        reasons[3].contains("before this drone enrolled"),
        "{reasons:?}"
    );
    for marker in [
        &forged_marker,
        &misaddressed_marker,
        &expired_marker,
        &stale_marker,
    ] {
        assert!(!marker.exists(), "{} was run", marker.display());
    }
    // The drone is unharmed by garbage and still runs genuine work.
    let output = hive.ctl(&["run", "-t", "target", "--", "true"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_drone_offline_past_the_ttl_gets_no_late_execution() {
    let env = TestEnv::new("expired");
    let hive = Hive::start(&env);
    let mut fleet = start_fleet(&env, &hive, &[("sleepy", &[])]);
    // Gone, but the hive has not noticed yet: the job is accepted.
    fleet[0].kill();
    let marker = env.dir.join("late");
    let output = hive.ctl(&[
        "run",
        "-t",
        "sleepy",
        "--async",
        "--ttl",
        "1s",
        "--",
        "touch",
        &marker.display().to_string(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let job_id = stdout(&output).trim().to_string();
    let job = hive.wait_for_job(&job_id);
    assert_eq!(by_drone(&job, "sleepy")["status"], "expired", "{job}");

    fleet[0].start();
    hive.wait_for_online(&["sleepy"]);
    // A genuine job after the restart runs, proving the queue was consumed...
    let output = hive.ctl(&["run", "-t", "sleepy", "--", "true"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // ...and the expired one never did.
    assert!(!marker.exists(), "the expired request ran late");
    assert_eq!(
        by_drone(
            &hive.ctl_json(&["job", "get", &job_id, "-o", "json"]),
            "sleepy"
        )["status"],
        "expired"
    );
}

#[test]
fn foreign_certificates_and_operators_on_the_drone_service_are_refused() {
    let env = TestEnv::new("foreign");
    let hive = Hive::start(&env);
    let ca_pem = std::fs::read_to_string(hive.data_dir.join("ca.pem")).expect("ca");
    let ca_der = ultron8_pki::pem_to_der_certs(&ca_pem)
        .expect("ca der")
        .remove(0);

    // A drone whose certificate comes from another CA, pointed at this hive.
    let rogue_ca = ultron8_pki::CertificateAuthority::generate("rogue").expect("rogue ca");
    let (key_pem, csr) = ultron8_pki::generate_key_and_csr("rogue-1").expect("csr");
    let cert = rogue_ca
        .sign_drone_csr(&csr, "rogue-1", Duration::from_secs(3600))
        .expect("sign");
    let rogue_dir = env.dir.join("drone-rogue");
    std::fs::create_dir_all(&rogue_dir).expect("dir");
    std::fs::write(rogue_dir.join("drone-key.pem"), &key_pem).expect("key");
    std::fs::write(rogue_dir.join("drone.pem"), &cert.cert_pem).expect("cert");
    std::fs::write(rogue_dir.join("ca.pem"), &ca_pem).expect("ca");
    std::fs::write(
        rogue_dir.join("drone.toml"),
        format!(
            "id = \"rogue-1\"\nhive = \"{}\"\nserver_name = \"127.0.0.1\"\n",
            hive.address()
        ),
    )
    .expect("drone.toml");
    let log = env.dir.join("drone-rogue.log");
    let mut command = Command::new(bin("ultron8-drone"));
    command.args(["run", "--data-dir"]).arg(&rogue_dir);
    let rogue = ultron8_e2e::Proc::spawn("rogue", command, log);
    wait_for("the rogue drone to be refused", DEADLINE, || {
        let text = rogue.log_text();
        if text.contains("cannot register") {
            Ok(())
        } else {
            Err(text)
        }
    });
    let hive_log = hive.proc.as_ref().map(|p| p.log_text()).unwrap_or_default();
    assert!(!hive_log.contains("rogue-1 registered"), "{hive_log}");
    let drones = hive.ctl_json(&["drone", "list", "-o", "json"]);
    assert_eq!(drones.as_array().map(Vec::len), Some(0), "{drones}");

    // The same, in-process, to see the exact refusal; and an operator
    // certificate calling the drone service.
    env.block_on(async {
        let rogue_tls =
            ultron8_transport::client_config(&ca_der, &cert.cert_der, &key_pem).expect("tls");
        let channel = ultron8_transport::connect_lazy(&hive.address(), "127.0.0.1", rogue_tls)
            .expect("channel");
        let err = v1::drone_service_client::DroneServiceClient::new(channel)
            .register(v1::RegisterRequest {
                facts: Some(Default::default()),
            })
            .await
            .expect_err("a foreign certificate must be refused");
        // The TLS layer refuses it, so no handler ever answers. With TLS 1.3
        // the server's UnknownCA alert can arrive after the client considers
        // the handshake done, so the client-side code varies with timing.
        assert!(
            matches!(
                err.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
            ),
            "{err:?}"
        );

        let admin_cert =
            std::fs::read_to_string(hive.data_dir.join("admin.pem")).expect("admin cert");
        let admin_key =
            std::fs::read_to_string(hive.data_dir.join("admin-key.pem")).expect("admin key");
        let admin_der = ultron8_pki::pem_to_der_certs(&admin_cert)
            .expect("der")
            .remove(0);
        let tls = ultron8_transport::client_config(&ca_der, &admin_der, &admin_key).expect("tls");
        let channel = ultron8_transport::connect(&hive.address(), "127.0.0.1", tls)
            .await
            .expect("connect");
        let err = v1::drone_service_client::DroneServiceClient::new(channel)
            .register(v1::RegisterRequest {
                facts: Some(Default::default()),
            })
            .await
            .expect_err("an operator may not act as a drone");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("operator:admin"), "{err:?}");
    });
}

#[test]
fn join_tokens_are_single_use_and_bad_tokens_are_explained() {
    let env = TestEnv::new("tokens");
    let hive = Hive::start(&env);
    let token = hive.join_token(&["role=web"]);
    let join = |name: &str, token: &str| {
        hive.try_join(&env.dir.join(format!("drone-{name}")), name, token)
    };
    let first = join("first", &token);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = join("second", &token);
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("already used"),
        "{}",
        stderr(&second)
    );
    let garbage = join("third", "u8join1.nope");
    assert!(!garbage.status.success());
    assert!(
        stderr(&garbage).contains("malformed"),
        "{}",
        stderr(&garbage)
    );

    // The token's labels stick to the drone that used it.
    let mut command = Command::new(bin("ultron8-drone"));
    command
        .args(["run", "--data-dir"])
        .arg(env.dir.join("drone-first"));
    let _first = ultron8_e2e::Proc::spawn("first", command, env.dir.join("drone-first.log"));
    hive.wait_for_online(&["first"]);
    let shown = hive.ctl_json(&["drone", "show", "first", "-o", "json"]);
    assert_eq!(shown["labels"]["role"], "web", "{shown}");
}
