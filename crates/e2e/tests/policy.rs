//! A drone's own policy, against real processes: what its `[policy]`
//! denies never runs, whatever the hive asks, and the refusal is reported
//! with its rule in `ultronctl job get` and in the audit trail; what it
//! allows runs, as the user it names; refusals leave the drone responsive
//! and survive a hive outage in the spool; a policy that cannot be
//! enforced stops the drone at start.

use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ultron8_e2e::{DEADLINE, Drone, Hive, TestEnv, bin, packs_dir, stderr, stdout, wait_for};

/// Sets `max_concurrent` and appends `policy` (TOML) to the drone's
/// drone.toml, as its host's owner would before starting it.
fn configure(drone: &Drone, max_concurrent: u16, policy: &str) {
    let path = drone.data_dir.join("drone.toml");
    let text = std::fs::read_to_string(&path).expect("read drone.toml");
    assert!(text.contains("max_concurrent = 8"), "{text}");
    let text = text.replace(
        "max_concurrent = 8",
        &format!("max_concurrent = {max_concurrent}"),
    );
    std::fs::write(&path, format!("{text}\n{policy}\n")).expect("write drone.toml");
}

/// Submits with `--async` and returns the job id.
fn submit(hive: &Hive, args: &[&str]) -> String {
    let mut all = vec!["run", "--async"];
    all.extend_from_slice(args);
    let output = hive.ctl(&all);
    assert!(
        output.status.success(),
        "ultronctl {all:?}: {}",
        stderr(&output)
    );
    stdout(&output).trim().to_string()
}

/// The job's one execution, once finished.
fn finished(hive: &Hive, job_id: &str) -> serde_json::Value {
    hive.wait_for_job(job_id)["executions"][0].clone()
}

fn audit_of(hive: &Hive, job_id: &str) -> Vec<serde_json::Value> {
    hive.ctl_json(&["audit", "list", "--job", job_id, "-o", "json"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_drone_refuses_what_its_policy_denies_reports_why_and_runs_the_rest() {
    let env = TestEnv::new("policy");
    let hive = Hive::start(&env);
    let output = hive.ctl(&[
        "pack",
        "install",
        &packs_dir().join("linux").display().to_string(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut drone = Drone::join(&env, &hive, "guarded", &[]);
    // One slot: the broker hands it at most 1 + 16 requests at a time, so
    // 20 refusals would starve it if a refusal held its delivery.
    configure(
        &drone,
        1,
        r#"[policy]
deny_commands = ["touch"]
deny_actions = ["linux.top_*", "linux.reboot"]
allow_shell = false"#,
    );
    drone.start();
    hive.wait_for_online(&["guarded"]);
    let log = drone.log_text();
    assert!(
        log.contains(r#"deny_commands=["touch"]"#) && log.contains("policy in force"),
        "the drone does not log its policy:\n{log}"
    );

    // A denied command does not run: it would have created the marker.
    let marker = env.dir.join("denied-marker");
    let marker_arg = marker.display().to_string();
    let job_id = submit(&hive, &["-t", "guarded", "--", "touch", &marker_arg]);
    let execution = finished(&hive, &job_id);
    assert_eq!(execution["status"], "failed", "{execution}");
    let error = execution["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(r#"matches deny_commands "touch""#) && error.contains("program `touch`"),
        "{error}"
    );
    assert!(!marker.exists(), "the denied command ran");
    let shown = hive.ctl(&["job", "get", &job_id]);
    assert!(
        stdout(&shown).contains(r#"deny_commands "touch""#),
        "job get does not show the refusal:\n{}",
        stdout(&shown)
    );
    // The audit trail names the drone, the rule and what was refused.
    let records = audit_of(&hive, &job_id);
    let refused = records
        .iter()
        .find(|r| r["kind"] == "execution.refused")
        .unwrap_or_else(|| panic!("no execution.refused record: {records:?}"));
    assert_eq!(refused["drone_id"], "guarded", "{refused}");
    assert_eq!(refused["actor"], "drone:guarded", "{refused}");
    let detail = refused["detail"].to_string();
    assert!(
        detail.contains(r#"deny_commands \"touch\""#) && detail.contains("program `touch`"),
        "{refused}"
    );

    // A shell command is refused as a whole.
    let job_id = submit(
        &hive,
        &[
            "-t",
            "guarded",
            "--shell",
            "--",
            &format!("touch {marker_arg}"),
        ],
    );
    let execution = finished(&hive, &job_id);
    assert!(
        execution["error"]
            .as_str()
            .is_some_and(|e| e.contains("allow_shell = false")),
        "{execution}"
    );
    assert!(!marker.exists(), "the denied shell command ran");

    // Actions are matched by name: a denied one is refused, naming it...
    let job_id = submit(&hive, &["linux.top_processes", "-t", "guarded"]);
    let execution = finished(&hive, &job_id);
    assert_eq!(execution["status"], "failed", "{execution}");
    let error = execution["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("action `linux.top_processes`")
            && error.contains(r#"deny_actions "linux.top_*""#),
        "{error}"
    );
    // ...and another runs (a pack script, fetched by hash).
    let job_id = submit(
        &hive,
        &["linux.disk_usage", "path=/", "top=1", "-t", "guarded"],
    );
    let execution = finished(&hive, &job_id);
    assert_eq!(execution["status"], "succeeded", "{execution}");

    // An allowed command runs.
    let allowed = env.dir.join("allowed");
    let job_id = submit(
        &hive,
        &[
            "-t",
            "guarded",
            "--",
            "mkdir",
            &allowed.display().to_string(),
        ],
    );
    assert_eq!(finished(&hive, &job_id)["status"], "succeeded");
    assert!(allowed.is_dir());

    // More refusals than the broker hands over at once, then an allowed
    // command: every refusal was acknowledged, so it still arrives.
    let refused_jobs: Vec<String> = (0..20)
        .map(|_| submit(&hive, &["-t", "guarded", "--", "touch", &marker_arg]))
        .collect();
    for job_id in &refused_jobs {
        assert_eq!(finished(&hive, job_id)["status"], "failed");
    }
    let job_id = submit(&hive, &["-t", "guarded", "--", "echo", "still here"]);
    let execution = finished(&hive, &job_id);
    assert_eq!(execution["status"], "succeeded", "{execution}");
    assert!(!marker.exists(), "a denied command ran");
}

#[test]
fn a_refusal_waits_in_the_spool_while_the_hive_is_down() {
    let env = TestEnv::new("policy-spool");
    let mut hive = Hive::start(&env);
    let mut drone = Drone::join(&env, &hive, "spooler", &[]);
    configure(&drone, 8, "[policy]\ndeny_commands = [\"touch\"]");
    drone.start();
    hive.wait_for_online(&["spooler"]);

    // Freeze the drone, queue a denied request for it (the hive still
    // counts it online for a few seconds), then take the hive away: the
    // drone refuses the request with nobody to tell.
    let pid = Pid::from_raw(drone.proc.as_ref().expect("running").pid());
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    let marker = env.dir.join("marker");
    let job_id = submit(
        &hive,
        &[
            "-t",
            "spooler",
            "--",
            "touch",
            &marker.display().to_string(),
        ],
    );
    hive.proc.as_mut().expect("hive").kill();
    kill(pid, Signal::SIGCONT).expect("SIGCONT");

    let spool = drone.data_dir.join("spool");
    let spooled = wait_for("the refusal in the spool", DEADLINE, || {
        spooled_reports(&spool)
            .into_iter()
            .find(|text| text.contains("policy_rule"))
            .ok_or_else(|| format!("{:?}", spooled_reports(&spool)))
    });
    assert!(spooled.contains(r#"deny_commands \"touch\""#), "{spooled}");
    assert!(!marker.exists(), "the denied command ran");

    // The hive comes back; the refusal arrives, once.
    hive.restart();
    let execution = finished(&hive, &job_id);
    assert_eq!(execution["status"], "failed", "{execution}");
    assert!(
        execution["error"]
            .as_str()
            .is_some_and(|e| e.contains(r#"deny_commands "touch""#)),
        "{execution}"
    );
    wait_for("the spool to empty", DEADLINE, || {
        let left = spooled_reports(&spool);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    let refusals = audit_of(&hive, &job_id)
        .iter()
        .filter(|r| r["kind"] == "execution.refused")
        .count();
    assert_eq!(refusals, 1);
}

fn spooled_reports(spool: &Path) -> Vec<String> {
    std::fs::read_dir(spool)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn commands_run_as_the_policys_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "skipped: running a command as another user needs root, and this test runs as uid {}",
            nix::unistd::geteuid()
        );
        return;
    }
    let env = TestEnv::new("policy-run-as");
    let hive = Hive::start(&env);
    let mut drone = Drone::join(&env, &hive, "as-nobody", &[]);
    configure(&drone, 8, "[policy]\nrun_as = \"nobody\"");
    drone.start();
    hive.wait_for_online(&["as-nobody"]);

    let output = hive.ctl(&[
        "run",
        "-t",
        "as-nobody",
        "--shell",
        "--",
        "id -un; echo \"$USER $LOGNAME\"; id -G",
    ]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let lines: Vec<String> = stdout(&output)
        .lines()
        .filter_map(|l| l.strip_prefix("as-nobody | ").map(String::from))
        .collect();
    assert_eq!(lines[0], "nobody", "{lines:?}");
    assert_eq!(lines[1], "nobody nobody", "{lines:?}");
    // Root's groups are dropped with its uid.
    let groups: Vec<&str> = lines[2].split_whitespace().collect();
    assert!(!groups.contains(&"0"), "still in root's group: {lines:?}");
}

#[test]
fn a_policy_the_drone_cannot_enforce_stops_it_at_start() {
    let env = TestEnv::new("policy-bad");
    let hive = Hive::start(&env);
    let drone = Drone::join(&env, &hive, "misconfigured", &[]);
    let check = |policy: &str| {
        configure(&drone, 8, policy);
        let checked = std::process::Command::new(bin("ultron8-drone"))
            .args(["check-config", "--data-dir"])
            .arg(&drone.data_dir)
            .output()
            .expect("run check-config");
        let ran = std::process::Command::new(bin("ultron8-drone"))
            .args(["run", "--data-dir"])
            .arg(&drone.data_dir)
            .output()
            .expect("run the drone");
        // Undo for the next case.
        let path = drone.data_dir.join("drone.toml");
        let text = std::fs::read_to_string(&path).expect("read");
        let text = text
            .split("\n[policy]")
            .next()
            .unwrap_or_default()
            .to_string();
        std::fs::write(&path, text).expect("write");
        (checked, ran)
    };

    let (checked, ran) = check("[policy]\nrun_as = \"no-such-user-u8\"");
    for output in [&checked, &ran] {
        assert!(!output.status.success());
        let message = stderr(output);
        assert!(
            message.contains("drone.toml")
                && message.contains("[policy] run_as")
                && message.contains("no user \"no-such-user-u8\""),
            "{message}"
        );
    }
    let (checked, ran) = check("[policy]\ndeny_commands = [\"rm\", \"[x\"]");
    for output in [&checked, &ran] {
        assert!(!output.status.success());
        let message = stderr(output);
        assert!(message.contains("[policy] deny_commands[1]"), "{message}");
    }

    // A valid policy is printed as in force.
    configure(&drone, 8, "[policy]\nallow_actions = [\"linux.*\"]");
    let checked = std::process::Command::new(bin("ultron8-drone"))
        .args(["check-config", "--data-dir"])
        .arg(&drone.data_dir)
        .output()
        .expect("run check-config");
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(
        stdout(&checked).contains(r#"allow_actions=["linux.*"]"#),
        "{}",
        stdout(&checked)
    );
}
