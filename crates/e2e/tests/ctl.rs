//! ultronctl as an operator meets it, on real processes: short ids that
//! work where ids are asked for, completion scripts a shell loads, tables
//! that fit a real terminal (tmux) with coloured states and no colour in a
//! pipe, `pack validate` without a hive, `drone remove`, usage errors, and
//! what a dev hive refuses and serves.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ultron8_e2e::{
    DEADLINE, Hive, Proc, TestEnv, Tmux, bin, free_port, http_post, packs_dir, start_drones,
    stderr, stdout, wait_for,
};

/// ultronctl with no config anywhere: commands that need no hive must not
/// look for one.
fn ctl_without_config(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("ultronctl"))
        .args(args)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env_remove("ULTRONCTL_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run ultronctl")
}

/// A directory of its own under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ultron8-e2e-{name}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// The first column of a table's first row.
fn first_cell(table: &str) -> String {
    table
        .lines()
        .nth(1)
        .and_then(|row| row.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_short_id_from_a_table_works_in_job_get_and_wide_shows_it_whole() {
    let env = TestEnv::new("short-ids");
    let hive = Hive::start(&env);
    let _drones = start_drones(&env, &hive, &["short-1"]);
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let output = hive.ctl(&["run", "-t", "short-1", "--async", "--", "true"]);
        assert!(output.status.success(), "{}", stderr(&output));
        jobs.push(stdout(&output).trim().to_string());
    }
    let newest = jobs[1].clone();
    hive.wait_for_job(&newest);

    // Piped: no terminal, so no colour and nothing cut; ids shortened.
    let listed = hive.ctl(&["job", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let table = stdout(&listed);
    assert!(!table.contains('\x1b'), "no colour in a pipe: {table:?}");
    let short = first_cell(&table);
    assert!(
        newest.starts_with(&short) && short.len() >= 8 && short.len() < newest.len(),
        "{short} shortens {newest}:\n{table}"
    );

    let got = hive.ctl(&["job", "get", &short]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(
        stdout(&got).starts_with(&format!("job {newest} ")),
        "{}",
        stdout(&got)
    );
    let json = hive.ctl_json(&["job", "get", &short, "-o", "json"]);
    assert_eq!(json["id"], newest.as_str());
    let logs = hive.ctl(&["job", "logs", &short]);
    assert!(logs.status.success(), "{}", stderr(&logs));

    // A prefix both jobs share is refused, naming them.
    let both = hive.ctl(&["job", "get", &newest[..4]]);
    assert_eq!(both.status.code(), Some(1));
    assert!(
        stderr(&both).contains("is the start of several job ids")
            && stderr(&both).contains(&jobs[0]),
        "{}",
        stderr(&both)
    );

    // -o wide and -o yaml show whole ids.
    let wide = stdout(&hive.ctl(&["job", "list", "-o", "wide"]));
    assert_eq!(first_cell(&wide), newest, "{wide}");
    let yaml = stdout(&hive.ctl(&["-o", "yaml", "job", "list"]));
    assert!(yaml.starts_with("- "), "{yaml}");
    assert!(yaml.contains(&format!("id: {newest}")), "{yaml}");
}

#[test]
fn completion_for_bash_is_a_script_bash_loads() {
    let dir = temp_dir("completion");
    let output = ctl_without_config(&dir, &["completion", "bash"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let script = dir.join("ultronctl.bash");
    std::fs::write(&script, &output.stdout).expect("write");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash");
    assert!(syntax.status.success(), "bash -n: {}", stderr(&syntax));
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p ultronctl",
            script.display()
        ))
        .output()
        .expect("bash");
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    assert!(stdout(&loaded).contains("ultronctl"), "{}", stdout(&loaded));
    for shell in ["zsh", "fish"] {
        let output = ctl_without_config(&dir, &["completion", shell]);
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        assert!(stdout(&output).contains("ultronctl"), "{shell}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tables_fit_a_terminal_with_coloured_states_and_never_colour_a_pipe() {
    let env = TestEnv::new("terminal");
    let hive = Hive::start(&env);
    let _drones = start_drones(&env, &hive, &["tty-1"]);
    let long = "a-long-argument-that-no-terminal-has-room-for ".repeat(3);
    let output = hive.ctl(&["run", "-t", "tty-1", "--", "echo", long.trim()]);
    assert!(output.status.success(), "{}", stderr(&output));

    let ultronctl = format!(
        "env -u NO_COLOR -u COLUMNS ULTRONCTL_CONFIG='{}' '{}'",
        hive.ctl_config().display(),
        bin("ultronctl").display()
    );
    let tmux = Tmux::start(
        &format!("u8c-{}", env.vhost),
        80,
        &format!("{ultronctl} drone list; {ultronctl} job list; echo DONE; sleep 600"),
    );
    let screen = wait_for("both tables", DEADLINE, || {
        let screen = tmux.screen_with_colours();
        if screen.contains("DONE") {
            Ok(screen)
        } else {
            Err(screen)
        }
    });
    // The states are coloured: an escape sequence right before them.
    for state in ["online", "succeeded"] {
        let at = screen
            .find(state)
            .unwrap_or_else(|| panic!("{state}: {screen}"));
        assert!(
            screen[..at].ends_with('m') && screen[..at].rfind('\x1b').is_some(),
            "{state} is coloured: {screen:?}"
        );
    }
    // Every line fits the 80 columns (none was wrapped); the command was cut.
    let plain = tmux.screen();
    assert!(
        plain.contains("a-long-argument") && plain.contains('…'),
        "{plain}"
    );
    assert!(
        plain
            .lines()
            .all(|line| line.trim_end().chars().count() <= 80),
        "{plain}"
    );

    // NO_COLOR on a terminal: no colour.
    let no_colour = Tmux::start(
        &format!("u8n-{}", env.vhost),
        120,
        &format!(
            "NO_COLOR=1 ULTRONCTL_CONFIG='{}' '{}' drone list; echo DONE; sleep 600",
            hive.ctl_config().display(),
            bin("ultronctl").display()
        ),
    );
    let screen = wait_for("the table", DEADLINE, || {
        let screen = no_colour.screen_with_colours();
        if screen.contains("DONE") {
            Ok(screen)
        } else {
            Err(screen)
        }
    });
    let at = screen.find("online").unwrap_or_else(|| panic!("{screen}"));
    assert!(
        !screen[..at].ends_with('m'),
        "no colour with NO_COLOR: {screen:?}"
    );

    // A pipe: never.
    let piped = stdout(&hive.ctl(&["drone", "list"]));
    assert!(
        piped.contains("online") && !piped.contains('\x1b'),
        "{piped:?}"
    );
}

#[test]
fn pack_validate_names_every_problem_as_file_line_column_without_a_hive() {
    let dir = temp_dir("validate");
    let pack = dir.join("broken");
    std::fs::create_dir_all(pack.join("actions")).expect("mkdir");
    std::fs::write(pack.join("pack.yaml"), "name: broken\nversion: 1.0.0\n").expect("write");
    std::fs::write(
        pack.join("actions/restart.yaml"),
        "name: restart\nrunner: shell\ncommand: [systemctl, restart, nginx]\ntimeuot: 30s\n",
    )
    .expect("write");

    let output = ctl_without_config(&dir, &["pack", "validate", &pack.display().to_string()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let problems = stdout(&output);
    let expected = format!("{}/actions/restart.yaml:4:1: ", pack.display());
    assert!(problems.starts_with(&expected), "{problems}");
    assert!(problems.contains("timeout"), "did you mean: {problems}");
    assert!(stderr(&output).contains("1 problem"), "{}", stderr(&output));

    let json = ctl_without_config(
        &dir,
        &[
            "pack",
            "validate",
            &pack.display().to_string(),
            "-o",
            "json",
        ],
    );
    assert_eq!(json.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(json[0]["problems"][0]["line"], 4);

    // Valid packs, and one whose dependency sits beside it.
    for name in ["hello", "linux"] {
        let path = packs_dir().join(name);
        let output = ctl_without_config(&dir, &["pack", "validate", &path.display().to_string()]);
        assert!(
            output.status.success(),
            "{name}: {}{}",
            stdout(&output),
            stderr(&output)
        );
        assert!(stderr(&output).contains("is valid"), "{}", stderr(&output));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn drone_remove_refuses_an_online_drone_then_takes_it_out_of_the_fleet() {
    let env = TestEnv::new("drone-remove");
    let hive = Hive::start(&env);
    let drones = start_drones(&env, &hive, &["rm-1", "rm-2"]);

    let refused = hive.ctl(&["drone", "remove", "rm-1"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("is online") && stderr(&refused).contains("--force"),
        "{}",
        stderr(&refused)
    );

    let removed = hive.ctl(&["drone", "remove", "rm-1", "--force"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(stdout(&removed).trim(), "removed rm-1");
    let fleet = hive.ctl_json(&["drone", "list", "-o", "json"]);
    let ids: Vec<&str> = fleet
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, ["rm-2"]);
    let run = hive.ctl(&["run", "-t", "rm-1", "--", "true"]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));

    // The drone, still running, is refused (its certificate is revoked) and
    // told why and how to come back.
    wait_for("the drone to hear it was removed", DEADLINE, || {
        let log = drones[0].log_text();
        if log.contains("The hive revoked this drone's certificate: it was removed from the fleet")
        {
            Ok(())
        } else {
            Err(log)
        }
    });
    let audit = hive.ctl_json(&["audit", "list", "--drone", "rm-1", "-o", "json"]);
    assert_eq!(audit[0]["kind"], "drone.removed", "{audit}");
}

#[test]
fn usage_errors_exit_2_before_any_hive_is_asked() {
    let dir = temp_dir("usage");
    for args in [
        &["run"][..],
        &["run", "--", "uptime"][..],
        &["job", "list", "--status", "exploded"][..],
        &["job", "logs", "0193", "-o", "json"][..],
        &["event", "fire", "core.event", "--payload", "{not json"][..],
        &["no-such-command"][..],
    ] {
        let output = ctl_without_config(&dir, args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    // Help is no error.
    let help = ctl_without_config(&dir, &["run", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(
        stdout(&help).contains("ultronctl action get"),
        "{}",
        stdout(&help)
    );
    // Without a config, a command that needs the hive fails with 1.
    let output = ctl_without_config(&dir, &["job", "list"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dev_hive_refuses_join_tokens_and_serves_the_webhooks_it_declares() {
    let root = temp_dir("dev-webhooks");
    let data = root.join("dev");
    let (grpc, http) = (free_port(), free_port());
    let mut command = Command::new(bin("ultron8-hive"));
    command
        .args(["dev", "--no-user-config", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--webhook", "deploys", "--webhook", "pager"]);
    let hive = Proc::spawn("dev", command, root.join("dev.log"));
    wait_for("the dev hive's banner", DEADLINE, || {
        let log = hive.log_text();
        if log.contains("Ultron8 dev hive is up") {
            Ok(log)
        } else {
            Err(log)
        }
    });
    let ctl = |args: &[&str]| {
        Command::new(bin("ultronctl"))
            .args(args)
            .env("ULTRONCTL_CONFIG", data.join("ultronctl.toml"))
            .stdin(Stdio::null())
            .output()
            .expect("run ultronctl")
    };

    let refused = ctl(&["drone", "token", "create"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("dev hive") && stderr(&refused).contains("ultron8-hive serve"),
        "{}",
        stderr(&refused)
    );

    for name in ["demo", "deploys", "pager"] {
        let token = std::fs::read_to_string(data.join(format!("{name}-webhook-token")))
            .unwrap_or_else(|e| panic!("{name}'s token: {e}"));
        let bearer = format!("Bearer {}", token.trim());
        let (status, body) = http_post(
            http,
            &format!("/v1/webhooks/{name}"),
            &[("Authorization", &bearer)],
            br#"{"build": 7}"#,
        )
        .expect("post");
        assert_eq!(status, 202, "{name}: {body}");
        let (status, _) = http_post(
            http,
            &format!("/v1/webhooks/{name}"),
            &[("Authorization", "Bearer wrong")],
            b"{}",
        )
        .expect("post");
        assert_eq!(status, 401, "{name} needs its token");
    }
    assert!(
        hive.log_text().contains("The webhook `deploys`"),
        "{}",
        hive.log_text()
    );
    let events = ctl(&["event", "list", "-o", "json"]);
    let events: serde_json::Value = serde_json::from_slice(&events.stdout).expect("JSON");
    assert_eq!(events.as_array().map(Vec::len), Some(3), "{events}");
    drop(hive);
    let _ = std::fs::remove_dir_all(&root);
}
