//! Discovery and the fleet views, end to end: a cloud API served by the
//! test (`GET /servers`, `GET /{id}`, on 127.0.0.1) with healthy,
//! unhealthy, malformed, failing and slow instances feeds `ultronctl fleet
//! summary|services|health`; sources survive a hive restart; a targets file
//! is read again when it changes; `fleet top` draws in a real terminal and
//! gives it back.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use ultron8_e2e::cloud::{Answer, FakeCloud, report};
use ultron8_e2e::{DEADLINE, Hive, TestEnv, Tmux, bin, http_get, stderr, wait_for};

/// The instances of `fleet summary -o json`, by name.
fn summary(hive: &Hive) -> BTreeMap<String, Value> {
    hive.ctl_json(&["fleet", "summary", "-o", "json"])
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| (i["name"].as_str().expect("a name").to_string(), i.clone()))
        .collect()
}

fn services(hive: &Hive) -> BTreeMap<String, Value> {
    hive.ctl_json(&["fleet", "services", "-o", "json"])
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["service"].as_str().expect("a service").to_string(),
                s.clone(),
            )
        })
        .collect()
}

fn close(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-6)
}

#[test]
fn a_discovery_api_feeds_summary_services_health_events_and_metrics() {
    let env = TestEnv::new("fleet");
    let mut hive = Hive::start(&env);
    let cloud = FakeCloud::start(&[
        ("127.0.1.1", report("AuthService", 10, 20)),
        ("127.0.1.2", report("AuthService", 30, 40)),
        ("127.0.1.3", report("AuthService", 90, 10)),
        ("127.0.2.1", report("UserService", 50, 50)),
        ("127.0.2.2", report("UserService", 20, 20)),
        ("127.0.2.3", report("UserService", 30, 30)),
        ("127.0.2.4", report("UserService", 40, 40)),
    ]);
    let added = hive.ctl_json(&[
        "source",
        "add",
        "cloud",
        "--http",
        &cloud.url,
        "--timeout",
        "1s",
        "--concurrency",
        "4",
        "--interval",
        "1s",
        "-o",
        "json",
    ]);
    assert_eq!(added["kind"], "http");

    let fleet = wait_for("the first refresh", DEADLINE, || {
        let fleet = summary(&hive);
        if fleet.len() == 7 {
            Ok(fleet)
        } else {
            Err(format!("{fleet:?}"))
        }
    });
    assert_eq!(
        fleet["127.0.1.3"]["status"], "unhealthy",
        "cpu 90 % >= 80 %"
    );
    assert_eq!(fleet["127.0.1.1"]["status"], "healthy");
    assert!(close(&fleet["127.0.1.1"]["cpu"], 10.0));
    assert_eq!(fleet["127.0.1.1"]["address"], "127.0.1.1");
    assert_eq!(fleet["127.0.2.4"]["service"], "UserService");

    // Three instances go wrong, each its own way; the others keep updating.
    cloud.set("127.0.2.2", Answer::Malformed);
    cloud.set("127.0.2.3", Answer::Fails);
    cloud.set("127.0.2.4", Answer::Slow);
    cloud.set("127.0.2.1", report("UserService", 55, 45));
    let fleet = wait_for("the failures to show", DEADLINE, || {
        let fleet = summary(&hive);
        let unknown = ["127.0.2.2", "127.0.2.3", "127.0.2.4"]
            .iter()
            .all(|id| fleet.get(*id).is_some_and(|i| i["status"] == "unknown"));
        if unknown && close(&fleet["127.0.2.1"]["cpu"], 55.0) {
            Ok(fleet)
        } else {
            Err(format!("{fleet:?}"))
        }
    });
    let error = |id: &str| fleet[id]["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error("127.0.2.2").contains("malformed report"),
        "{}",
        error("127.0.2.2")
    );
    assert!(error("127.0.2.3").contains("500"), "{}", error("127.0.2.3"));
    assert!(
        error("127.0.2.4").contains("timed out"),
        "{}",
        error("127.0.2.4")
    );
    for id in ["127.0.2.2", "127.0.2.3", "127.0.2.4"] {
        assert_eq!(fleet[id]["cpu"], Value::Null, "{id} has no figures");
        assert_eq!(
            fleet[id]["service"], "UserService",
            "{id} keeps its service"
        );
    }

    let by_service = services(&hive);
    let auth = &by_service["AuthService"];
    assert_eq!(
        (auth["instances"].as_u64(), auth["healthy"].as_u64()),
        (Some(3), Some(2))
    );
    assert!(
        close(&auth["avg_cpu"], (10.0 + 30.0 + 90.0) / 3.0),
        "{auth}"
    );
    assert!(
        close(&auth["avg_memory"], (20.0 + 40.0 + 10.0) / 3.0),
        "{auth}"
    );
    assert_eq!(auth["status"], "degraded");
    let users = &by_service["UserService"];
    assert_eq!(
        (
            users["instances"].as_u64(),
            users["healthy"].as_u64(),
            users["unknown"].as_u64()
        ),
        (Some(4), Some(1), Some(3))
    );
    assert!(
        close(&users["avg_cpu"], 55.0),
        "only instances with figures count: {users}"
    );
    assert_eq!(
        users["not_healthy"],
        json!(["127.0.2.2", "127.0.2.3", "127.0.2.4"])
    );

    // Sorting and filtering.
    let busiest = hive.ctl_json(&["fleet", "summary", "--sort", "cpu", "--desc", "-o", "json"]);
    assert_eq!(busiest[0]["name"], "127.0.1.3");
    let unhealthy = hive.ctl_json(&["fleet", "summary", "--status", "unhealthy", "-o", "json"]);
    assert_eq!(unhealthy.as_array().map(Vec::len), Some(1));
    let csv = hive.ctl(&["fleet", "summary", "--service", "AuthService", "-o", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout).to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[0].starts_with("name,address,service,cpu,memory,status"),
        "{csv}"
    );

    // Health: exit 1 with a service below the minimum, 0 without.
    let flagged = hive.ctl(&["fleet", "health", "--min-healthy", "2", "-o", "json"]);
    assert_eq!(flagged.status.code(), Some(1), "{}", stderr(&flagged));
    let views: Value = serde_json::from_slice(&flagged.stdout).expect("json");
    let flagged_names: Vec<&str> = views
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["flagged"] == true)
        .map(|s| s["service"].as_str().expect("a service"))
        .collect();
    assert_eq!(flagged_names, ["UserService"]);
    let fine = hive.ctl(&["fleet", "health", "--min-healthy", "1"]);
    assert_eq!(fine.status.code(), Some(0), "{}", stderr(&fine));
    let strict = hive.ctl(&["fleet", "health", "--min-healthy", "3"]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(
        stderr(&strict).contains("2 of 2 services have fewer than 3"),
        "{}",
        stderr(&strict)
    );

    // A rule could act on this: UserService went from 4 healthy to 1.
    let events = wait_for("a fleet.service event", DEADLINE, || {
        let events = hive.ctl_json(&["event", "list", "--trigger", "fleet.service", "-o", "json"]);
        let found = events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["payload"]["service"] == "UserService" && e["payload"]["healthy"] == 1);
        if found {
            Ok(events)
        } else {
            Err(events.to_string())
        }
    });
    let event = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["payload"]["service"] == "UserService" && e["payload"]["healthy"] == 1)
        .unwrap();
    assert_eq!(event["payload"]["instances"], 4);
    assert_eq!(
        event["payload"]["unhealthy"],
        json!(["127.0.2.2", "127.0.2.3", "127.0.2.4"])
    );

    let (status, metrics) = http_get(hive.http_port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("ultron8_fleet_service_healthy{service=\"UserService\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ultron8_fleet_service_instances{service=\"AuthService\"} 3"),
        "{metrics}"
    );

    // The source and its inventory survive a restart, and it goes on.
    hive.restart();
    let sources = hive.ctl_json(&["source", "list", "-o", "json"]);
    assert_eq!(sources[0]["name"], "cloud");
    // And the hive's own source of the drones (none joined this hive).
    assert_eq!(sources[1]["name"], "drones", "{sources}");
    assert_eq!(sources[1]["origin"], "hive");
    assert_eq!(summary(&hive).len(), 7);
    cloud.set("127.0.2.2", report("UserService", 5, 5));
    wait_for("refreshes after the restart", DEADLINE, || {
        let fleet = summary(&hive);
        if fleet["127.0.2.2"]["status"] == "healthy" {
            Ok(())
        } else {
            Err(format!("{fleet:?}"))
        }
    });

    // Removing it takes its instances away; a viewer cannot add one.
    let removed = hive.ctl(&["source", "remove", "cloud"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(summary(&hive).is_empty());
    let again = hive.ctl(&["source", "remove", "cloud"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no source named"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_targets_file_is_read_again_when_it_changes() {
    let env = TestEnv::new("fleet-file");
    // Without the built-in drones source: this hive's only source is the file.
    let hive = Hive::start_with_config(&env, "[fleet]\ndrones = false\n");
    let path = env.dir.join("targets.txt");
    std::fs::write(
        &path,
        "# racks\nweb-1 127.0.3.1 service=web\nweb-2 127.0.3.2 service=web\n",
    )
    .expect("write");
    let path_text = path.to_str().unwrap();
    // An hour's interval: only the change can make it read the file again.
    let added = hive.ctl(&[
        "source",
        "add",
        "racks",
        "--file",
        path_text,
        "--interval",
        "1h",
    ]);
    assert!(added.status.success(), "{}", stderr(&added));
    let names = |hive: &Hive| -> Vec<String> {
        hive.ctl_json(&["target", "list", "--source", "racks", "-o", "json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for("the file's targets", DEADLINE, || {
        let listed = names(&hive);
        if listed == ["web-1", "web-2"] {
            Ok(())
        } else {
            Err(format!("{listed:?}"))
        }
    });
    let first = hive.ctl_json(&["target", "list", "-o", "json"]);
    assert_eq!(first[0]["service"], "web");
    assert_eq!(first[0]["status"], "unknown", "a file gives no figures");

    std::fs::write(
        &path,
        "web-1 127.0.3.1 service=web\ndb-1 127.0.3.9 service=db\n",
    )
    .expect("rewrite");
    wait_for("the changed file's targets", DEADLINE, || {
        let listed = names(&hive);
        if listed == ["db-1", "web-1"] {
            Ok(())
        } else {
            Err(format!("{listed:?}"))
        }
    });

    // A broken file keeps the last good inventory and says why on the source.
    std::fs::write(&path, "web-1\nweb-1\n").expect("break");
    let sources = wait_for("the error on the source", DEADLINE, || {
        let sources = hive.ctl_json(&["source", "list", "-o", "json"]);
        if sources[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("line 2"))
        {
            Ok(sources)
        } else {
            Err(sources.to_string())
        }
    });
    assert_eq!(sources[0]["instances"], 2, "{sources}");
    assert_eq!(names(&hive), ["db-1", "web-1"]);

    // Bad input is refused, naming it, and nothing is added.
    let relative = hive.ctl(&["source", "add", "rel", "--file", "targets.txt"]);
    assert_eq!(relative.status.code(), Some(2), "{}", stderr(&relative));
    let bad_url = hive.ctl(&["source", "add", "bad", "--http", "ftp://127.0.0.1"]);
    assert!(!bad_url.status.success());
    assert!(
        stderr(&bad_url).contains("not an http:// or https:// URL"),
        "{}",
        stderr(&bad_url)
    );
    assert_eq!(
        hive.ctl_json(&["source", "list", "-o", "json"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn fleet_top_draws_redraws_and_gives_the_terminal_back() {
    let env = TestEnv::new("fleet-top");
    let hive = Hive::start(&env);
    let cloud = FakeCloud::start(&[
        ("127.0.4.1", report("AuthService", 10, 20)),
        ("127.0.4.2", report("AuthService", 85, 30)),
        ("127.0.4.3", report("OtherService", 1, 1)),
    ]);
    cloud.add_source(&hive, "cloud");
    wait_for("the inventory", DEADLINE, || {
        let n = summary(&hive).len();
        if n == 3 { Ok(()) } else { Err(n.to_string()) }
    });

    let top = format!(
        "env ULTRONCTL_CONFIG='{}' '{}' fleet top --service AuthService --interval 1s",
        hive.ctl_config().display(),
        bin("ultronctl").display()
    );
    let tmux = Tmux::start(
        &format!("u8t-{}", env.vhost),
        120,
        "bash --norc --noprofile",
    );
    for (round, quit_key) in [(1, "q"), (2, "C-c")] {
        tmux.keys(&[&top, "Enter"]);
        let screen = wait_for("fleet top to draw", DEADLINE, || {
            let screen = tmux.screen();
            if screen.contains("fleet top: AuthService") && screen.contains("127.0.4.2") {
                Ok(screen)
            } else {
                Err(screen)
            }
        });
        assert!(screen.contains("2 instances, 1 healthy"), "{screen}");
        assert!(
            !screen.contains("127.0.4.3"),
            "another service's instance: {screen}"
        );
        // The unhealthy instance is highlighted (red).
        let coloured = tmux.screen_with_colours();
        let line = coloured
            .lines()
            .find(|l| l.contains("127.0.4.2"))
            .unwrap_or_default();
        // tmux writes red as 31 or as colour 1 of 256.
        assert!(line.contains("31m") || line.contains("38;5;1m"), "{line:?}");
        let healthy = coloured
            .lines()
            .find(|l| l.contains("127.0.4.1"))
            .unwrap_or_default();
        assert!(
            !healthy.contains("38;5;1m") && !healthy.contains("31m"),
            "{healthy:?}"
        );

        // New figures are drawn.
        let cpu = 40 + round;
        cloud.set("127.0.4.1", report("AuthService", cpu, 20));
        wait_for("fleet top to redraw", DEADLINE, || {
            let screen = tmux.screen();
            if screen.contains(&format!("{cpu}.0%")) {
                Ok(())
            } else {
                Err(screen)
            }
        });

        tmux.keys(&[quit_key]);
        // Keys typed before ultronctl has exited would be its to read.
        wait_for("fleet top to leave the screen", DEADLINE, || {
            let screen = tmux.screen();
            if screen.contains("fleet top: AuthService") {
                Err(screen)
            } else {
                Ok(())
            }
        });
        let marker = format!("back-{}", round * 1000 + 1);
        tmux.keys(&[&format!("echo back-$(({round} * 1000 + 1))"), "Enter"]);
        let screen = wait_for("the shell prompt after fleet top", DEADLINE, || {
            let screen = tmux.screen();
            if screen.lines().any(|l| l.trim() == marker) {
                Ok(screen)
            } else {
                Err(screen)
            }
        });
        assert!(
            !screen.contains("fleet top: AuthService"),
            "the main screen is back: {screen}"
        );
        assert!(
            screen.contains("fleet top --service AuthService"),
            "the command line is there again: {screen}"
        );
    }
}

#[test]
fn a_pack_declares_sources_that_come_and_go_with_it() {
    let env = TestEnv::new("fleet-pack");
    let hive = Hive::start_with_config(&env, "[fleet]\ndrones = false\n");
    let pack = env.dir.join("inventory");
    std::fs::create_dir_all(pack.join("sensors")).expect("mkdir");
    let write = |file: &str, text: &str| std::fs::write(pack.join(file), text).expect("write");
    write("pack.yaml", "name: inventory\nversion: 1.0.0\n");
    write(
        "sensors/core.yaml",
        "name: core\nkind: source\ninterval: 1s\nstatic: [127.0.5.1, 127.0.5.2]\n",
    );
    let pack_dir = pack.to_str().expect("utf-8");
    let installed = hive.ctl(&["pack", "install", pack_dir]);
    assert!(installed.status.success(), "{}", stderr(&installed));
    let sources = hive.ctl_json(&["source", "list", "-o", "json"]);
    assert_eq!(sources[0]["name"], "inventory.core", "{sources}");
    assert_eq!(sources[0]["origin"], "pack:inventory");
    let names = |hive: &Hive| -> Vec<String> {
        hive.ctl_json(&["target", "list", "-o", "json"])
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect()
    };
    wait_for("the pack's source to list its targets", DEADLINE, || {
        let listed = names(&hive);
        if listed == ["127.0.5.1", "127.0.5.2"] {
            Ok(())
        } else {
            Err(format!("{listed:?}"))
        }
    });

    // An upgrade that changes the source replaces it.
    write("pack.yaml", "name: inventory\nversion: 1.1.0\n");
    write(
        "sensors/core.yaml",
        "name: core\nkind: source\ninterval: 1s\nstatic: [127.0.5.3]\n",
    );
    let upgraded = hive.ctl(&["pack", "install", pack_dir]);
    assert!(upgraded.status.success(), "{}", stderr(&upgraded));
    wait_for("the upgraded source's targets", DEADLINE, || {
        let listed = names(&hive);
        if listed == ["127.0.5.3"] {
            Ok(())
        } else {
            Err(format!("{listed:?}"))
        }
    });

    let removed = hive.ctl(&["pack", "remove", "inventory"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(hive.ctl_json(&["source", "list", "-o", "json"]), json!([]));
    assert!(names(&hive).is_empty());
}
