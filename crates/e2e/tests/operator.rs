//! The operator's day against real processes: live output, cancel (by
//! command and by Ctrl-C in a real terminal), offline hosts reported, and a
//! frozen drone's execution declared lost.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use ultron8_e2e::{DEADLINE, Hive, TestEnv, Tmux, bin, start_drones, stderr, stdout, wait_for};

/// The process group ids the shell commands wrote into `dir` (each command
/// leads its own group, so `$$` is its group id).
fn group_ids(dir: &Path) -> Vec<Pid> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|text| text.trim().parse::<i32>().ok())
                .map(Pid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}

fn group_is_gone(pgid: Pid) -> bool {
    matches!(killpg(pgid, None), Err(nix::errno::Errno::ESRCH))
}

fn execution_statuses(hive: &Hive, job_id: &str) -> Vec<String> {
    let job = hive.ctl_json(&["job", "get", job_id, "-o", "json"]);
    job["executions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["status"].as_str().map(String::from))
        .collect()
}

#[test]
fn run_prints_each_line_while_the_command_runs() {
    let env = TestEnv::new("live-output");
    let hive = Hive::start(&env);
    let _drones = start_drones(&env, &hive, &["live-1"]);

    // Five lines, one a second; the first must be on screen long before
    // the last is printed.
    let mut child = Command::new(bin("ultronctl"))
        .args([
            "run",
            "-t",
            "live-1",
            "--shell",
            "--",
            "for i in 1 2 3 4 5; do echo line $i; sleep 1; done",
        ])
        .env("ULTRONCTL_CONFIG", hive.ctl_config())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ultronctl");
    let started = Instant::now();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("read");
    let first_at = started.elapsed();
    assert_eq!(first, "live-1 | line 1");
    // The command was still running when its first line arrived.
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "ultronctl had already finished when the first line arrived"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    eprintln!(
        "first line after {first_at:?}, all done after {:?}",
        started.elapsed()
    );
    assert!(status.success());
    assert_eq!(
        &rest[..4],
        [
            "live-1 | line 2",
            "live-1 | line 3",
            "live-1 | line 4",
            "live-1 | line 5"
        ]
    );
    assert!(
        rest[4].starts_with("live-1  succeeded  exit 0  "),
        "{rest:?}"
    );

    // job logs shows the same lines afterwards.
    let listed = hive.ctl_json(&["job", "list", "-o", "json"]);
    let job_id = listed[0]["id"].as_str().expect("job id").to_string();
    let logs = hive.ctl(&["job", "logs", &job_id]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert_eq!(
        stdout(&logs).lines().collect::<Vec<_>>(),
        [
            "live-1 | line 1",
            "live-1 | line 2",
            "live-1 | line 3",
            "live-1 | line 4",
            "live-1 | line 5"
        ]
    );
}

#[test]
fn job_cancel_stops_a_long_command_on_three_drones() {
    let env = TestEnv::new("cancel");
    let hive = Hive::start(&env);
    let _drones = start_drones(&env, &hive, &["c-1", "c-2", "c-3"]);
    let pids = env.dir.join("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");

    let script = format!(
        "echo $$ > \"$(mktemp {}/pid.XXXXXX)\"; sleep 600 & sleep 600",
        pids.display()
    );
    let output = hive.ctl(&["run", "-t", "c-*", "--async", "--shell", "--", &script]);
    assert!(output.status.success(), "{}", stderr(&output));
    let job_id = stdout(&output).trim().to_string();
    wait_for("3 commands running", DEADLINE, || {
        let statuses = execution_statuses(&hive, &job_id);
        if group_ids(&pids).len() == 3 && statuses.iter().all(|s| s == "running") {
            Ok(())
        } else {
            Err(format!("{statuses:?}"))
        }
    });
    let groups = group_ids(&pids);

    let asked = Instant::now();
    let output = hive.ctl(&["job", "cancel", &job_id]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output)
            .matches("stopping (SIGTERM, then SIGKILL)")
            .count(),
        3,
        "{}",
        stdout(&output)
    );
    let job = hive.wait_for_job(&job_id);
    eprintln!(
        "3 executions canceled {:?} after the cancel",
        asked.elapsed()
    );
    for execution in job["executions"].as_array().expect("executions") {
        assert_eq!(execution["status"], "canceled", "{execution}");
        assert!(
            execution["error"]
                .as_str()
                .is_some_and(|e| e.contains("canceled; sent SIGTERM")),
            "{execution}"
        );
    }
    for pgid in groups {
        wait_for(
            &format!("process group {pgid} to be gone"),
            DEADLINE,
            || {
                if group_is_gone(pgid) {
                    Ok(())
                } else {
                    Err("alive".into())
                }
            },
        );
    }
    // Audited: who asked.
    let audit = hive.ctl_json(&["audit", "list", "--job", &job_id, "-o", "json"]);
    assert!(
        audit.to_string().contains("job.cancel_requested"),
        "{audit}"
    );
}

#[test]
fn a_target_naming_an_offline_drone_names_it_and_exits_3() {
    let env = TestEnv::new("offline-named");
    let hive = Hive::start(&env);
    let mut drones = start_drones(&env, &hive, &["o-1", "o-2"]);
    drones[1].kill();
    wait_for("o-2 to be offline", DEADLINE, || {
        let drones = hive.ctl_json(&["drone", "list", "-o", "json"]);
        let offline = drones
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["id"] == "o-2" && d["online"] == false);
        if offline {
            Ok(())
        } else {
            Err(drones.to_string())
        }
    });

    let output = hive.ctl(&["run", "-t", "o-*", "--", "true"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("o-2  offline, not run"),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("o-1  succeeded  exit 0"));
    assert!(
        stderr(&output).contains("1 succeeded, 0 did not, 1 offline (not run)"),
        "{}",
        stderr(&output)
    );

    let output = hive.ctl(&["run", "-t", "o-*", "--online-only", "--", "true"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn a_frozen_drone_has_its_running_execution_declared_lost() {
    let env = TestEnv::new("frozen");
    let hive = Hive::start(&env);
    let drones = start_drones(&env, &hive, &["f-1"]);
    let output = hive.ctl(&["run", "-t", "f-1", "--async", "--", "sleep", "600"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let job_id = stdout(&output).trim().to_string();
    wait_for(
        "the command to run",
        DEADLINE,
        || match execution_statuses(&hive, &job_id).as_slice() {
            [s] if s == "running" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let pid = Pid::from_raw(drones[0].proc.as_ref().expect("running").pid());
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    // The hive runs with --offline-after 3s --lost-after 5s.
    let job = hive.wait_for_job(&job_id);
    let execution = &job["executions"][0];
    assert_eq!(execution["status"], "lost", "{execution}");
    assert!(
        execution["error"].as_str().is_some_and(
            |e| e.contains("stopped heartbeating") && e.contains("may still be running")
        ),
        "{execution}"
    );
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
}

#[test]
fn ctrl_c_in_run_asks_then_cancels_and_exits_130() {
    let env = TestEnv::new("ctrl-c");
    let hive = Hive::start(&env);
    let _drones = start_drones(&env, &hive, &["t-1"]);
    let rc = env.dir.join("rc");
    let command = format!(
        "ULTRONCTL_CONFIG='{}' '{}' run -t t-1 -- sleep 600; echo $? > '{}'; sleep 600",
        hive.ctl_config().display(),
        bin("ultronctl").display(),
        rc.display()
    );
    let tmux = Tmux::start(&format!("u8-{}", env.vhost), 160, &command);
    wait_for("the command to run", DEADLINE, || {
        let jobs = hive.ctl_json(&["job", "list", "-o", "json"]);
        let job_id = jobs[0]["id"].as_str().unwrap_or_default().to_string();
        if !job_id.is_empty() && execution_statuses(&hive, &job_id) == ["running"] {
            Ok(())
        } else {
            Err(tmux.screen())
        }
    });
    // The status line is drawn on the terminal.
    wait_for("the status line", DEADLINE, || {
        let screen = tmux.screen();
        if screen.contains("1 running, 0 done") {
            Ok(())
        } else {
            Err(screen)
        }
    });
    tmux.keys(&["C-c"]);
    wait_for("the cancel question", DEADLINE, || {
        let screen = tmux.screen();
        if screen.contains("on its unfinished hosts? [y/N]") {
            Ok(())
        } else {
            Err(screen)
        }
    });
    tmux.keys(&["y", "Enter"]);
    let code = wait_for("ultronctl to exit", DEADLINE, || {
        std::fs::read_to_string(&rc)
            .map(|text| text.trim().to_string())
            .map_err(|_| tmux.screen())
    });
    let screen = tmux.screen();
    assert_eq!(code, "130", "{screen}");
    assert!(screen.contains("t-1  canceled"), "{screen}");
    let jobs = hive.ctl_json(&["job", "list", "-o", "json"]);
    let job_id = jobs[0]["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(execution_statuses(&hive, &job_id), ["canceled"]);
}

#[test]
fn a_viewer_reads_but_may_not_run_and_the_refusal_is_audited() {
    let env = TestEnv::new("roles");
    let hive = Hive::start(&env);
    let _drones = start_drones(&env, &hive, &["r-1"]);
    let created = Command::new(bin("ultron8-hive"))
        .args([
            "operator",
            "create",
            "bob",
            "--role",
            "viewer",
            "--data-dir",
        ])
        .arg(&hive.data_dir)
        .output()
        .expect("run ultron8-hive operator create");
    assert!(created.status.success(), "{}", stderr(&created));
    let bob = |args: &[&str]| {
        Command::new(bin("ultronctl"))
            .args(args)
            .env("ULTRONCTL_CONFIG", hive.data_dir.join("ultronctl-bob.toml"))
            .stdin(Stdio::null())
            .output()
            .expect("run ultronctl as bob")
    };
    let listed = bob(&["drone", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("r-1"));

    let refused = bob(&["run", "-t", "r-1", "--", "true"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("operator bob has the viewer role; SubmitJob needs operator"),
        "{}",
        stderr(&refused)
    );
    let audit = hive.ctl_json(&["audit", "list", "-o", "json"]);
    let denied = audit
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == "operator.denied" || r["action"] == "operator.denied")
        .cloned();
    let denied = denied.unwrap_or_else(|| panic!("no operator.denied record in {audit}"));
    assert!(denied.to_string().contains("SubmitJob"), "{denied}");
    assert!(denied.to_string().contains("operator:bob"), "{denied}");

    // The same name twice is refused.
    let again = Command::new(bin("ultron8-hive"))
        .args(["operator", "create", "bob", "--role", "admin", "--data-dir"])
        .arg(&hive.data_dir)
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already has a certificate"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_drone_that_cannot_journal_fails_each_request_clearly_and_stays_responsive() {
    let env = TestEnv::new("no-journal");
    let hive = Hive::start(&env);
    let drones = start_drones(&env, &hive, &["j-1"]);
    // As if the disk were full: the journal cannot take an entry.
    let journal = drones[0].data_dir.join("journal");
    std::fs::rename(&journal, drones[0].data_dir.join("journal.saved")).expect("move journal");
    std::fs::write(&journal, b"not a directory").expect("block the journal");

    // More requests than the drone's prefetch window: a drone that held
    // them unacknowledged would go deaf after the first few.
    let mut jobs = Vec::new();
    for _ in 0..30 {
        let output = hive.ctl(&["run", "-t", "j-1", "--async", "--ttl", "30s", "--", "true"]);
        assert!(output.status.success(), "{}", stderr(&output));
        jobs.push(stdout(&output).trim().to_string());
    }
    for job_id in &jobs {
        let job = hive.wait_for_job(job_id);
        let execution = &job["executions"][0];
        assert_eq!(execution["status"], "failed", "{execution}");
        assert!(
            execution["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot journal") && e.contains("not run")),
            "{execution}"
        );
    }

    // Space again: the very next request runs.
    std::fs::remove_file(&journal).expect("unblock");
    std::fs::rename(drones[0].data_dir.join("journal.saved"), &journal).expect("restore");
    let output = hive.ctl(&["run", "-t", "j-1", "--", "true"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_restarted_drone_stops_the_command_it_died_running() {
    let env = TestEnv::new("leftover");
    let hive = Hive::start(&env);
    let mut drones = start_drones(&env, &hive, &["k-1"]);
    let pids = env.dir.join("pids");
    std::fs::create_dir_all(&pids).expect("pids dir");
    let script = format!(
        "echo $$ > \"$(mktemp {}/pid.XXXXXX)\"; sleep 600",
        pids.display()
    );
    let output = hive.ctl(&[
        "run",
        "-t",
        "k-1",
        "--async",
        "--shell",
        "--timeout",
        "20m",
        "--",
        &script,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let job_id = stdout(&output).trim().to_string();
    let pgid = wait_for("the command to run", DEADLINE, || {
        match (
            group_ids(&pids).as_slice(),
            execution_statuses(&hive, &job_id).as_slice(),
        ) {
            ([pgid], [status]) if status == "running" => Ok(*pgid),
            other => Err(format!("{other:?}")),
        }
    });
    // The drone dies; its command, in its own process group, lives on
    // with nobody to enforce its timeout.
    drones[0].kill();
    assert!(!group_is_gone(pgid), "the command died with its drone");

    drones[0].start();
    let job = hive.wait_for_job(&job_id);
    let execution = &job["executions"][0];
    assert_eq!(execution["status"], "lost", "{execution}");
    assert!(
        execution["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("leftover process group {pgid} got SIGTERM"))),
        "{execution}"
    );
    wait_for("the leftover group to be gone", DEADLINE, || {
        if group_is_gone(pgid) {
            Ok(())
        } else {
            Err("alive".into())
        }
    });
}
