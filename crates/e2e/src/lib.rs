//! A harness that runs Ultron8 the way an operator does: the compiled
//! `ultron8-hive`, `ultron8-drone` and `ultronctl` binaries as separate
//! processes, against the Postgres and RabbitMQ on this machine.
//!
//! Each [`TestEnv`] gets its own Postgres database, its own RabbitMQ vhost,
//! its own ports and its own directories, so tests run in parallel.
//! Processes are killed when their handles drop. Waits poll a condition
//! until a deadline, never sleep and hope.
//!
//! Environment: `ULTRON8_TEST_DATABASE_URL` (admin URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `ULTRON8_TEST_AMQP_HOST`
//! (default `127.0.0.1:5672`, user guest/guest).

pub mod cloud;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, or panics after `deadline` with
/// `what` and the last observation.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < deadline {
        match check() {
            Ok(value) => return value,
            Err(observed) => last = observed,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {deadline:?} waiting for {what}; last observed: {last}");
}

/// A compiled binary of this workspace, next to the test executable's
/// directory (`target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace && cargo nextest run --workspace)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Proc {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let err = out.try_clone().expect("clone log");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: as if the host lost power.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct TestEnv {
    pub dir: PathBuf,
    pub database_url: String,
    pub database_name: String,
    pub amqp_url: String,
    pub vhost: String,
    admin_database_url: String,
    runtime: tokio::runtime::Runtime,
    _tmp: TempDir,
}

/// A directory removed on drop unless the test failed (kept for its logs).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed; logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestEnv {
    pub fn new(name: &str) -> TestEnv {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let short = &id[id.len() - 12..];
        let dir = std::env::temp_dir().join(format!("ultron8-e2e-{name}-{short}"));
        std::fs::create_dir_all(&dir).expect("create test dir");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");

        let admin_database_url = std::env::var("ULTRON8_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let database_name = format!("u8e2e_{short}");
        runtime.block_on(async {
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(&admin_database_url)
                .await
                .expect("connect to Postgres");
            sqlx::query(&format!("CREATE DATABASE {database_name}"))
                .execute(&mut admin)
                .await
                .expect("create database");
        });
        let database_url = match admin_database_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{database_name}"),
            None => panic!("ULTRON8_TEST_DATABASE_URL has no database part"),
        };

        let vhost = format!("u8e2e-{short}");
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        let amqp_host = std::env::var("ULTRON8_TEST_AMQP_HOST")
            .unwrap_or_else(|_| "127.0.0.1:5672".to_string());
        let amqp_url = format!("amqp://guest:guest@{amqp_host}/{vhost}");

        TestEnv {
            _tmp: TempDir(dir.clone()),
            dir,
            database_url,
            database_name,
            amqp_url,
            vhost,
            admin_database_url,
            runtime,
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Runs a query against this test's database and returns the first
    /// column of every row as text.
    pub fn query_strings(&self, sql: &str) -> Vec<String> {
        self.block_on(async {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::PgConnection::connect(&self.database_url)
                .await
                .expect("connect");
            let rows = sqlx::query(sql)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter()
                .map(|row| row.try_get::<String, _>(0).expect("text column"))
                .collect()
        })
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let name = self.database_name.clone();
        let admin = self.admin_database_url.clone();
        let _ = self.runtime.block_on(async move {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
        });
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.vhost])
            .output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A hive process with its data directory.
pub struct Hive {
    pub data_dir: PathBuf,
    pub grpc_port: u16,
    pub http_port: u16,
    pub proc: Option<Proc>,
    database_url: String,
    amqp_url: String,
    logs: PathBuf,
    starts: u32,
}

impl Hive {
    /// `init` then `serve`, waiting until /readyz answers 200.
    pub fn start(env: &TestEnv) -> Hive {
        Hive::start_with_config(env, "")
    }

    /// Like [`Hive::start`], with extra settings in `<data-dir>/hive.toml`
    /// (webhooks, tokens: what only the file can hold).
    pub fn start_with_config(env: &TestEnv, toml: &str) -> Hive {
        Hive::start_as(env, &env.database_url, toml)
    }

    /// Like [`Hive::start_with_config`], serving with `database_url`: the
    /// test's database as another role.
    pub fn start_as(env: &TestEnv, database_url: &str, toml: &str) -> Hive {
        let data_dir = env.dir.join("hive");
        let grpc_port = free_port();
        let http_port = free_port();
        let init = Command::new(bin("ultron8-hive"))
            .args(["init", "--data-dir"])
            .arg(&data_dir)
            .args([
                "--ip",
                "127.0.0.1",
                "--name",
                "localhost",
                "--hive-address",
                &format!("127.0.0.1:{grpc_port}"),
            ])
            .output()
            .expect("run ultron8-hive init");
        assert!(
            init.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        std::fs::write(data_dir.join("hive.toml"), toml).expect("write hive.toml");
        let mut hive = Hive {
            data_dir,
            grpc_port,
            http_port,
            proc: None,
            database_url: database_url.to_string(),
            amqp_url: env.amqp_url.clone(),
            logs: env.dir.clone(),
            starts: 0,
        };
        hive.restart();
        hive
    }

    /// Starts the serve process (again), on the same ports and data.
    pub fn restart(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
        self.starts += 1;
        let log = self.logs.join(format!("hive-{}.log", self.starts));
        self.proc = Some(self.serve("hive", self.grpc_port, self.http_port, log));
    }

    /// A second hive process on the same data, database and broker, with
    /// ports of its own: another replica.
    pub fn replica(&self) -> Proc {
        self.serve(
            "hive-replica",
            free_port(),
            free_port(),
            self.logs.join("hive-replica.log"),
        )
    }

    /// Starts `serve` on these ports and waits until /readyz answers 200.
    fn serve(&self, name: &str, grpc_port: u16, http_port: u16, log: PathBuf) -> Proc {
        let mut command = Command::new(bin("ultron8-hive"));
        command
            .args(["serve", "--data-dir"])
            .arg(&self.data_dir)
            .args([
                "--database-url",
                &self.database_url,
                "--amqp-url",
                &self.amqp_url,
            ])
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(["--heartbeat-interval", "500ms", "--offline-after", "3s"])
            .args(["--lost-after", "5s"])
            .env("ULTRON8_LOG", "info,ultron8=debug");
        let mut proc = Proc::spawn(name, command, log);
        wait_for(&format!("{name} to be ready"), DEADLINE, || {
            if !proc.is_running() {
                panic!("{name} exited:\n{}", proc.log_text());
            }
            match http_get(http_port, "/readyz") {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => Err(format!("{status} {body}")),
                Err(e) => Err(e),
            }
        });
        proc
    }

    pub fn ctl_config(&self) -> PathBuf {
        self.data_dir.join("ultronctl.toml")
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// Runs ultronctl with this hive's admin config.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("ultronctl"))
            .args(args)
            .env("ULTRONCTL_CONFIG", self.ctl_config())
            .stdin(Stdio::null())
            .output()
            .expect("run ultronctl")
    }

    /// Runs ultronctl and parses its stdout as JSON, asserting success.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.ctl(args);
        assert!(
            output.status.success(),
            "ultronctl {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "ultronctl {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    pub fn join_token(&self, labels: &[&str]) -> String {
        let mut args = vec!["drone", "token", "create"];
        for label in labels {
            args.push("--label");
            args.push(label);
        }
        let output = self.ctl(&args);
        assert!(
            output.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    /// Runs `ultron8-drone join` into `data_dir` as `name` with `token`,
    /// for tests of what join answers.
    pub fn try_join(&self, data_dir: &Path, name: &str, token: &str) -> Output {
        Command::new(bin("ultron8-drone"))
            .args([
                "join",
                "--hive",
                &self.address(),
                "--token",
                token,
                "--name",
                name,
                "--data-dir",
            ])
            .arg(data_dir)
            .output()
            .expect("run ultron8-drone join")
    }

    /// Waits until `drone list` shows exactly these drones online.
    pub fn wait_for_online(&self, ids: &[&str]) {
        wait_for(&format!("drones {ids:?} to be online"), DEADLINE, || {
            let drones = self.ctl_json(&["drone", "list", "-o", "json"]);
            let online: Vec<String> = drones
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["online"] == true)
                .filter_map(|d| d["id"].as_str().map(String::from))
                .collect();
            if ids.iter().all(|id| online.iter().any(|o| o == id)) {
                Ok(())
            } else {
                Err(format!("online: {online:?}"))
            }
        });
    }

    /// The job as `ultronctl job get -o json` shows it, once every execution
    /// is in a terminal state.
    pub fn wait_for_job(&self, job_id: &str) -> serde_json::Value {
        wait_for(&format!("job {job_id} to finish"), DEADLINE, || {
            let output = self.ctl(&["job", "get", job_id, "-o", "json"]);
            let job: serde_json::Value =
                serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
            let pending = ["requested", "dispatched", "running"];
            let done = job["executions"].as_array().is_some_and(|es| {
                es.iter()
                    .all(|e| !pending.contains(&e["status"].as_str().unwrap_or("requested")))
            });
            if done { Ok(job) } else { Err(job.to_string()) }
        })
    }
}

/// A drone with its own data directory.
pub struct Drone {
    pub name: String,
    pub data_dir: PathBuf,
    pub proc: Option<Proc>,
    logs: PathBuf,
    starts: u32,
}

impl Drone {
    /// Joins `hive` with a fresh token and the given labels.
    pub fn join(env: &TestEnv, hive: &Hive, name: &str, labels: &[&str]) -> Drone {
        let token = hive.join_token(&[]);
        let data_dir = env.dir.join(format!("drone-{name}"));
        let mut command = Command::new(bin("ultron8-drone"));
        command
            .args([
                "join",
                "--hive",
                &hive.address(),
                "--token",
                &token,
                "--name",
                name,
                "--data-dir",
            ])
            .arg(&data_dir);
        for label in labels {
            command.args(["--label", label]);
        }
        let output = command.output().expect("run ultron8-drone join");
        assert!(
            output.status.success(),
            "join failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Drone::joined(env, name, data_dir)
    }

    /// A drone already joined into `data_dir`, not started.
    pub fn joined(env: &TestEnv, name: &str, data_dir: PathBuf) -> Drone {
        Drone {
            name: name.to_string(),
            data_dir,
            proc: None,
            logs: env.dir.clone(),
            starts: 0,
        }
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the drone with extra environment variables (e.g. a PATH with
    /// a fake `systemctl` first).
    pub fn start_with_env(&mut self, vars: &[(&str, &str)]) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
        self.starts += 1;
        let mut command = Command::new(bin("ultron8-drone"));
        command
            .args(["run", "--data-dir"])
            .arg(&self.data_dir)
            .env("ULTRON8_LOG", "info,ultron8=debug");
        for (key, value) in vars {
            command.env(key, value);
        }
        let log = self
            .logs
            .join(format!("drone-{}-{}.log", self.name, self.starts));
        self.proc = Some(Proc::spawn(&self.name, command, log));
    }

    pub fn kill(&mut self) {
        if let Some(proc) = self.proc.as_mut() {
            proc.kill();
        }
    }

    pub fn log_text(&self) -> String {
        self.proc.as_ref().map(Proc::log_text).unwrap_or_default()
    }
}

/// Joins each of `names` to `hive`, starts them, and waits until all are
/// online.
pub fn start_drones(env: &TestEnv, hive: &Hive, names: &[&str]) -> Vec<Drone> {
    let mut drones: Vec<Drone> = names
        .iter()
        .map(|name| Drone::join(env, hive, name, &[]))
        .collect();
    for drone in &mut drones {
        drone.start();
    }
    hive.wait_for_online(names);
    drones
}

/// A minimal HTTP/1.0 GET, enough for health endpoints.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("malformed response: {response}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A tiny HTTP server standing in for a chat or pager webhook: answers 200
/// to everything and keeps each request (head and body) for assertions.
pub struct Receiver {
    pub port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let request = read_http_request(&mut stream);
                if let Ok(mut seen) = seen.lock() {
                    seen.push(request);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        Receiver { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn read_http_request(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if data.len() >= head_end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&data).into_owned()
}

/// A POST with a JSON body and extra headers; returns status and body.
pub fn http_post(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    stream.write_all(body).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("malformed response: {response}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The workspace's `packs/` directory.
pub fn packs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packs")
}

/// A real terminal for ultronctl: a detached tmux server of its own (named
/// by `socket`), one window of the given size running `command` under a
/// shell. The server is killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(socket: &str, columns: u16, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: socket.to_string(),
        };
        let status = tmux
            .cmd(&[
                "new-session",
                "-d",
                "-x",
                &columns.to_string(),
                "-y",
                "40",
                command,
            ])
            .status()
            .expect("run tmux (install Debian's tmux)");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]).args(args);
        command
    }

    /// What the window shows, as text; a line the terminal wrapped is one
    /// line, as the program wrote it.
    pub fn screen(&self) -> String {
        self.capture(&[])
    }

    /// [`Tmux::screen`], with its colours as escape sequences.
    pub fn screen_with_colours(&self) -> String {
        self.capture(&["-e"])
    }

    /// Types `keys` (tmux key names: `C-c`, `Enter`, or text).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status().expect("send-keys").success());
    }

    fn capture(&self, extra: &[&str]) -> String {
        let mut args = vec!["capture-pane", "-p", "-J"];
        args.extend_from_slice(extra);
        let output = self.cmd(&args).output().expect("capture");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).status();
    }
}
