//! `ultron8-hive dev`: the README's first command and its tour, as a new
//! user runs them, with no Postgres and no RabbitMQ involved.
//!
//! The README uses the default ports and directories; the test passes its
//! own so that tests can run in parallel. Every other step is the README's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ultron8_e2e::{DEADLINE, Proc, bin, free_port, http_get, stderr, stdout, wait_for};

struct DevHive {
    dir: PathBuf,
    grpc_port: u16,
    http_port: u16,
    proc: Option<Proc>,
    runs: u32,
    logs: PathBuf,
}

impl DevHive {
    fn new(root: &Path) -> DevHive {
        DevHive {
            dir: root.join("dev"),
            grpc_port: free_port(),
            http_port: free_port(),
            proc: None,
            runs: 0,
            logs: root.to_path_buf(),
        }
    }

    fn start(&mut self, extra: &[&str]) {
        self.runs += 1;
        let mut command = Command::new(bin("ultron8-hive"));
        command
            .args(["dev", "--no-user-config", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.grpc_port)])
            .args(["--http-listen", &format!("127.0.0.1:{}", self.http_port)])
            .args(extra);
        let proc = Proc::spawn(
            "dev",
            command,
            self.logs.join(format!("dev-{}.log", self.runs)),
        );
        self.proc = Some(proc);
        wait_for("the dev hive's banner", DEADLINE, || {
            let log = self.proc.as_ref().map(Proc::log_text).unwrap_or_default();
            if log.contains("Ultron8 dev hive is up") {
                Ok(())
            } else {
                Err(log)
            }
        });
    }

    /// Ctrl-C, as a user stops it.
    fn interrupt(&mut self) -> String {
        let mut proc = self.proc.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(proc.pid());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        wait_for("the dev hive to exit", DEADLINE, || {
            if proc.is_running() {
                Err("running".into())
            } else {
                Ok(())
            }
        });
        proc.log_text()
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("ultronctl"))
            .args(args)
            .env("ULTRONCTL_CONFIG", self.dir.join("ultronctl.toml"))
            .stdin(Stdio::null())
            .output()
            .expect("run ultronctl")
    }

    fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.ctl(args);
        assert!(
            output.status.success(),
            "ultronctl {args:?}: {}",
            stderr(&output)
        );
        serde_json::from_slice(&output.stdout).expect("json")
    }
}

fn temp_root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ultron8-e2e-{name}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

#[test]
fn the_dev_tour_works_without_postgres_or_rabbitmq() {
    let root = temp_root("dev-tour");
    let mut hive = DevHive::new(&root);
    hive.start(&[]);

    // ultronctl drone list: the built-in local drone.
    let drones = hive.ctl_json(&["drone", "list", "-o", "json"]);
    assert_eq!(drones[0]["id"], "local", "{drones}");
    assert_eq!(drones[0]["online"], true, "{drones}");

    // ultronctl run -t '*' -- uname -a
    let output = hive.ctl(&["run", "-t", "*", "--", "uname", "-a"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("local  succeeded  exit 0"),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("| Linux"), "{}", stdout(&output));

    // A failing command, a timeout: the same executor as production.
    let output = hive.ctl(&["run", "-t", "local", "--timeout", "1s", "--", "sleep", "30"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stdout(&output).contains("timed_out"), "{}", stdout(&output));

    let (status, _) = http_get(hive.http_port, "/readyz").expect("readyz");
    assert_eq!(status, 200);

    // Packs, an action by name, and the webhook -> rule -> action loop.
    for pack in ["linux", "hello"] {
        let path = ultron8_e2e::packs_dir().join(pack);
        let output = hive.ctl(&["pack", "install", &path.display().to_string()]);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let output = hive.ctl(&["run", "linux.disk_usage", "path=/", "top=3", "-t", "local"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let token = std::fs::read_to_string(hive.dir.join("demo-webhook-token")).expect("token");
    let (status, answer) = ultron8_e2e::http_post(
        hive.http_port,
        "/v1/webhooks/demo",
        &[("Authorization", &format!("Bearer {}", token.trim()))],
        br#"{"name": "Ada", "target": "local"}"#,
    )
    .expect("webhook");
    assert_eq!(status, 202, "{answer}");
    let event_id = serde_json::from_str::<serde_json::Value>(&answer).expect("json")["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let chain = wait_for("the rule's job to finish", DEADLINE, || {
        let chain = hive.ctl_json(&["audit", "show", &event_id, "-o", "json"]);
        let kinds: Vec<String> = chain["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["kind"].as_str().map(String::from))
            .collect();
        if kinds == ["rule.fired", "execution.finished"] {
            Ok(chain)
        } else {
            Err(chain.to_string())
        }
    });
    assert_eq!(chain["event"]["state"], "processed", "{chain}");
    let job_id = chain["records"][0]["job_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let job = hive.ctl_json(&["job", "get", &job_id, "-o", "json"]);
    assert!(
        job["executions"][0]["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("Hello, Ada"),
        "{job}"
    );

    // ultronctl job logs <job-id>: the output, prefixed by the host.
    let output = hive.ctl(&["job", "logs", &job_id]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("local | Hello, Ada"),
        "{}",
        stdout(&output)
    );

    // ultronctl status: the hive's health on one screen.
    let output = hive.ctl(&["status"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let screen = stdout(&output);
    assert!(screen.starts_with("Hive:        ready\n"), "{screen}");
    assert!(
        screen.contains("Drones:      1 online, 0 offline"),
        "{screen}"
    );

    // Ctrl-C stops cleanly and keeps what was stored.
    let log = hive.interrupt();
    assert!(log.contains("dev hive stopped; state kept"), "{log}");
    hive.start(&[]);
    let jobs = hive.ctl_json(&["job", "list", "-o", "json"]);
    assert_eq!(jobs.as_array().map(Vec::len), Some(4), "{jobs}");
    hive.ctl_json(&["drone", "list", "-o", "json"]);
    let output = hive.ctl(&["run", "-t", "local", "--", "true"]);
    assert!(
        output.status.success(),
        "after a restart: {}",
        stderr(&output)
    );

    // --fresh starts over.
    hive.interrupt();
    hive.start(&["--fresh"]);
    let jobs = hive.ctl_json(&["job", "list", "-o", "json"]);
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");
    hive.interrupt();
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_remote_drone_joining_a_dev_hive_is_told_it_needs_a_production_hive() {
    let root = temp_root("dev-remote");
    let mut hive = DevHive::new(&root);
    hive.start(&[]);
    // A dev hive makes no join tokens, saying where remote drones belong.
    let output = hive.ctl(&["drone", "token", "create"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("ultron8-hive serve"),
        "{}",
        stderr(&output)
    );
    // A drone that joins anyway, with a token written into the hive's
    // store behind its back, is told at registration.
    let token = mint_join_token(&hive.dir);

    let drone_dir = root.join("remote");
    let join = Command::new(bin("ultron8-drone"))
        .args([
            "join",
            "--hive",
            &format!("127.0.0.1:{}", hive.grpc_port),
            "--token",
            &token,
            "--name",
            "remote-1",
        ])
        .arg("--data-dir")
        .arg(&drone_dir)
        .output()
        .expect("join");
    assert!(
        join.status.success(),
        "joining a dev hive works: {}",
        stderr(&join)
    );

    let run = Command::new(bin("ultron8-drone"))
        .args(["run", "--data-dir"])
        .arg(&drone_dir)
        .output()
        .expect("run");
    assert!(!run.status.success());
    let message = stderr(&run);
    assert!(
        message.contains("embedded in-process broker") && message.contains("ultron8-hive serve"),
        "{message}"
    );
    hive.interrupt();
    let _ = std::fs::remove_dir_all(&root);
}

/// A join token written straight into a dev hive's SQLite store, as `dev`
/// does for its own drone: what `drone token create` refuses to make.
fn mint_join_token(data_dir: &Path) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use ultron8_store::Store;
        let ca = std::fs::read_to_string(data_dir.join("ca.pem")).expect("ca.pem");
        let ca = ultron8_pki::pem_to_der_certs(&ca)
            .expect("PEM")
            .into_iter()
            .next()
            .expect("a certificate");
        let token =
            ultron8_pki::JoinToken::generate(&ultron8_pki::fingerprint(&ca)).expect("token");
        let store = ultron8_store::sqlite::SqliteStore::open(&data_dir.join("ultron8.db"))
            .await
            .expect("the dev hive's store");
        let now = chrono::Utc::now();
        store
            .create_join_token(&ultron8_store::NewJoinToken {
                id: token.id.clone(),
                secret_sha256: token.secret_sha256(),
                labels: Default::default(),
                created_by: "test".into(),
                created_at: now,
                expires_at: now + chrono::Duration::minutes(5),
                drone_id: None,
                replaces: false,
            })
            .await
            .expect("store the token");
        store.close().await;
        token.encode()
    })
}

#[test]
fn dev_refuses_a_directory_it_did_not_create() {
    let root = temp_root("dev-refuse");
    let precious = root.join("precious");
    std::fs::create_dir_all(&precious).expect("mkdir");
    std::fs::write(precious.join("data.txt"), "keep me").expect("write");
    let output = Command::new(bin("ultron8-hive"))
        .args(["dev", "--fresh", "--no-user-config", "--data-dir"])
        .arg(&precious)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .expect("dev");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("was not created by `ultron8-hive dev`"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_to_string(precious.join("data.txt")).expect("still there"),
        "keep me"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn ctrl_c_on_a_dev_hive_with_a_watcher_and_a_long_command_stops_within_the_grace() {
    let root = temp_root("dev-stop");
    let mut hive = DevHive::new(&root);
    hive.start(&["--shutdown-grace", "10s"]);

    let watcher = Command::new(bin("ultronctl"))
        .args(["run", "-t", "local", "--", "sleep", "600"])
        .env("ULTRONCTL_CONFIG", hive.dir.join("ultronctl.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ultronctl");
    wait_for("the command to run", DEADLINE, || {
        let jobs = hive.ctl_json(&["job", "list", "-o", "json"]);
        let job_id = jobs[0]["id"].as_str().unwrap_or_default().to_string();
        if job_id.is_empty() {
            return Err("no job yet".into());
        }
        let job = hive.ctl_json(&["job", "get", &job_id, "-o", "json"]);
        if job["executions"][0]["status"] == "running" {
            Ok(())
        } else {
            Err(job.to_string())
        }
    });

    let asked = std::time::Instant::now();
    let log = hive.interrupt();
    let took = asked.elapsed();
    eprintln!("the dev hive stopped {took:?} after SIGINT");
    assert!(log.contains("dev hive stopped; state kept"), "{log}");
    assert!(
        log.contains("stopping: running commands get SIGTERM, then SIGKILL"),
        "{log}"
    );

    // The watcher was told why its stream ended, and that the job goes on.
    let output = watcher.wait_with_output().expect("the watcher exits");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        said.contains("the hive is shutting down; the job goes on: ultronctl job get"),
        "{said}"
    );

    // At the next start the execution is canceled, not left running.
    hive.start(&[]);
    let jobs = hive.ctl_json(&["job", "list", "-o", "json"]);
    let job_id = jobs[0]["id"].as_str().unwrap_or_default().to_string();
    let job = wait_for("the canceled result to be delivered", DEADLINE, || {
        let job = hive.ctl_json(&["job", "get", &job_id, "-o", "json"]);
        if job["executions"][0]["status"] == "canceled" {
            Ok(job)
        } else {
            Err(job.to_string())
        }
    });
    assert!(
        job["executions"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("the drone was stopped while the command ran")),
        "{job}"
    );
    hive.interrupt();
    let _ = std::fs::remove_dir_all(&root);
}
