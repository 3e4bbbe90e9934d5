//! Credentials end to end, over real mutual TLS: a join token cannot take
//! over a drone's name, a replaced or removed drone's certificate is
//! refused, and operators are issued, listed and revoked with ultronctl.

use std::process::{Command, Stdio};
use std::time::Duration;

use ultron8_e2e::{Drone, Hive, TestEnv, bin, start_drones, stderr, stdout, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);

fn token(hive: &Hive, args: &[&str]) -> String {
    let mut all = vec!["drone", "token", "create"];
    all.extend_from_slice(args);
    let output = hive.ctl(&all);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output).trim().to_string()
}

fn run_ok(hive: &Hive, target: &str) -> serde_json::Value {
    let job = hive.ctl_json(&[
        "run",
        "-t",
        target,
        "--async",
        "-o",
        "json",
        "--",
        "cat",
        "/proc/self/cgroup",
    ]);
    let id = job["id"].as_str().expect("job id").to_string();
    let done = hive.wait_for_job(&id);
    assert_eq!(done["executions"][0]["status"], "succeeded", "{done}");
    done
}

#[test]
fn a_join_token_cannot_take_over_a_drone_and_a_replaced_one_is_refused() {
    let env = TestEnv::new("takeover");
    let hive = Hive::start(&env);
    let mut drones = start_drones(&env, &hive, &["c-1"]);

    // A host with a fresh token asks for c-1's name: refused, and c-1 goes on.
    let intruder_dir = env.dir.join("intruder");
    let stolen = token(&hive, &[]);
    let refused = hive.try_join(&intruder_dir, "c-1", &stolen);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("already in the fleet")
            && stderr(&refused).contains("ultronctl drone token create --replace c-1"),
        "{}",
        stderr(&refused)
    );
    run_ok(&hive, "c-1");
    let listed = hive.ctl_json(&["drone", "list", "-o", "json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // The host is rebuilt: an admin makes a replace token, the new host
    // joins as c-1, and the old identity is refused from then on.
    drones[0].kill();
    let replace = token(&hive, &["--replace", "c-1"]);
    let rebuilt_dir = env.dir.join("rebuilt");
    let joined = hive.try_join(&rebuilt_dir, "c-1", &replace);
    assert!(joined.status.success(), "{}", stderr(&joined));
    let mut rebuilt = Drone::joined(&env, "c-1", rebuilt_dir);
    rebuilt.start();
    hive.wait_for_online(&["c-1"]);
    run_ok(&hive, "c-1");

    // The old drone comes back with its old certificate: the handshake
    // refuses it, so it never registers or consumes.
    drones[0].start();
    wait_for("the old drone to be refused", DEADLINE, || {
        let log = drones[0].log_text();
        if log.to_lowercase().contains("revoked") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let audit = hive.ctl_json(&["audit", "list", "--drone", "c-1", "-o", "json"]);
    assert!(
        audit.to_string().contains("replaced_certificate"),
        "{audit}"
    );

    // Removing the drone revokes the new certificate too.
    let removed = hive.ctl(&["drone", "remove", "c-1", "--force"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    wait_for("the removed drone to be refused", DEADLINE, || {
        let log = rebuilt.log_text();
        if log.to_lowercase().contains("revoked") {
            Ok(())
        } else {
            Err(log)
        }
    });
}

#[test]
fn operators_are_issued_listed_and_revoked() {
    let env = TestEnv::new("operators");
    let hive = Hive::start(&env);
    let bob_dir = env.dir.join("bob");
    let created = hive.ctl(&[
        "operator",
        "create",
        "bob",
        "--role",
        "operator",
        "--out",
        bob_dir.to_str().expect("utf8"),
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let bob = |args: &[&str]| {
        Command::new(bin("ultronctl"))
            .args(args)
            .env("ULTRONCTL_CONFIG", bob_dir.join("ultronctl.toml"))
            .stdin(Stdio::null())
            .output()
            .expect("run ultronctl as bob")
    };
    let status = bob(&["drone", "list"]);
    assert!(status.status.success(), "{}", stderr(&status));
    // The key never left: it is in bob's directory, readable by its owner only.
    let key = std::fs::metadata(bob_dir.join("bob-key.pem")).expect("bob's key");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    // Operators may not issue operators.
    let denied = bob(&[
        "operator",
        "create",
        "eve",
        "--role",
        "admin",
        "--out",
        env.dir.join("eve").to_str().expect("utf8"),
    ]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("needs admin"),
        "{}",
        stderr(&denied)
    );

    // The list holds bob (issued here) and the admin from `init` (offline,
    // recorded when first presented).
    wait_for("both certificates to be listed", DEADLINE, || {
        let listed = hive.ctl_json(&["operator", "list", "-o", "json"]);
        let rows: Vec<(String, String, bool)> = listed
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["state"].as_str().unwrap_or_default().to_string(),
                    c["issued_by"].is_null(),
                )
            })
            .collect();
        if rows.len() == 2
            && rows.iter().any(|r| r.0 == "bob" && r.1 == "valid" && !r.2)
            && rows.iter().any(|r| r.0 != "bob" && r.2)
        {
            Ok(())
        } else {
            Err(listed.to_string())
        }
    });

    let revoked = hive.ctl(&["operator", "revoke", "bob", "--reason", "left the team"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let after = bob(&["drone", "list"]);
    assert!(!after.status.success(), "a revoked operator is refused");
    assert!(
        stderr(&after).to_lowercase().contains("revoked"),
        "{}",
        stderr(&after)
    );
    let table = hive.ctl(&["operator", "list", "-o", "wide"]);
    assert!(
        stdout(&table).contains("revoked") && stdout(&table).contains("left the team"),
        "{}",
        stdout(&table)
    );
    let audit = hive.ctl_json(&["audit", "list", "-o", "json"]);
    assert!(audit.to_string().contains("operator.revoked"), "{audit}");
}

#[test]
fn revoking_an_operator_ends_the_job_they_are_following() {
    let env = TestEnv::new("revoke-follow");
    let hive = Hive::start(&env);
    let _drones = start_drones(&env, &hive, &["f-1"]);
    let carol_dir = env.dir.join("carol");
    let created = hive.ctl(&[
        "operator",
        "create",
        "carol",
        "--role",
        "operator",
        "--out",
        carol_dir.to_str().expect("utf8"),
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    // carol runs a long command and watches it.
    let mut run = Command::new(bin("ultronctl"))
        .args(["run", "-t", "f-1", "--", "sleep", "60"])
        .env("ULTRONCTL_CONFIG", carol_dir.join("ultronctl.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ultronctl as carol");
    wait_for("carol's command to run", DEADLINE, || {
        let jobs = hive.ctl_json(&["job", "list", "-o", "json"]);
        if jobs.to_string().contains("running") {
            Ok(())
        } else {
            Err(jobs.to_string())
        }
    });
    let revoked = hive.ctl(&["operator", "revoke", "carol"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    // Her open stream ends (well before the command's 60 s), saying why.
    let ended = wait_for("carol's follow to end", DEADLINE, || {
        match run.try_wait().map_err(|e| e.to_string())? {
            Some(status) => Ok(status),
            None => Err("still following".into()),
        }
    });
    let output = run.wait_with_output().expect("output");
    assert!(!ended.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
