//! The `cloud` pack end to end: a cloud API served by the test is
//! discovered by the hive; when a service falls below two healthy
//! instances, `fleet.service` fires the pack's rules, which raise one
//! `core.escalation` for a person and ask the API to scale the service out
//! once, the cooldown holding the second. Real hive on Postgres and
//! RabbitMQ; every address is loopback.

use std::path::Path;

use ultron8_e2e::cloud::{FakeCloud, report};
use ultron8_e2e::{DEADLINE, Hive, TestEnv, packs_dir, stderr, wait_for};

fn install(hive: &Hive, pack: &Path) {
    let output = hive.ctl(&["pack", "install", &pack.display().to_string()]);
    assert!(output.status.success(), "install: {}", stderr(&output));
}

fn events(hive: &Hive, trigger: &str) -> Vec<serde_json::Value> {
    hive.ctl_json(&["event", "list", "--trigger", trigger, "-o", "json"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn an_understaffed_service_escalates_once_and_scales_out_once() {
    let env = TestEnv::new("cloud");
    let hive = Hive::start(&env);
    let cloud = FakeCloud::start(&[
        ("127.77.1.1", report("UserService", 20, 30)),
        ("127.77.1.2", report("UserService", 35, 40)),
        ("127.77.1.3", report("UserService", 95, 40)),
        ("127.77.2.1", report("AuthService", 10, 10)),
        ("127.77.2.2", report("AuthService", 15, 10)),
    ]);

    // The pack as shipped, with the scale-out pointed at the test's API.
    install(&hive, &packs_dir().join("core"));
    let pack = env.dir.join("cloud");
    std::fs::create_dir_all(pack.join("rules")).expect("mkdir");
    std::fs::create_dir_all(pack.join("actions")).expect("mkdir");
    for file in [
        "pack.yaml",
        "actions/scale_out.yaml",
        "rules/escalate_understaffed_service.yaml",
        "rules/scale_out_understaffed_service.yaml",
    ] {
        let text = std::fs::read_to_string(packs_dir().join("cloud").join(file)).expect("read");
        let text = text.replace("http://127.0.0.1:9001", &cloud.url);
        std::fs::write(pack.join(file), text).expect("write");
    }
    install(&hive, &pack);
    let enabled = hive.ctl(&["rule", "enable", "cloud.scale_out_understaffed_service"]);
    assert!(enabled.status.success(), "{}", stderr(&enabled));

    cloud.add_source(&hive, "cloud");
    wait_for("UserService with 2 healthy of 3", DEADLINE, || {
        let services = hive.ctl_json(&["fleet", "services", "-o", "json"]);
        let user = services
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["service"] == "UserService")
            .cloned();
        match user {
            Some(s) if s["instances"] == 3 && s["healthy"] == 2 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(
        events(&hive, "core.escalation").is_empty(),
        "nothing is understaffed yet"
    );

    // A second instance goes hot: one healthy left.
    cloud.set("127.77.1.2", report("UserService", 92, 40));
    let escalation = wait_for("the escalation", DEADLINE, || {
        match events(&hive, "core.escalation").as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    let payload = &escalation["payload"];
    assert_eq!(payload["rule"], "cloud.escalate_understaffed_service");
    assert_eq!(payload["action"], "core.escalate");
    assert_eq!(payload["target"], "UserService");
    assert_eq!(
        payload["reason"],
        "UserService has 1 healthy of 3 instances; not healthy: 127.77.1.2, 127.77.1.3"
    );
    wait_for("one scale-out", DEADLINE, || {
        match cloud.scale_requests().as_slice() {
            [(service, body)] if service == "UserService" => Ok(body.clone()),
            other => Err(format!("{other:?}")),
        }
    });

    // The last one goes hot too: the cooldowns hold both rules, which
    // raises an escalation per held firing, and the API is asked nothing
    // more.
    cloud.set("127.77.1.1", report("UserService", 99, 40));
    wait_for("both firings held", DEADLINE, || {
        let held: Vec<_> = events(&hive, "core.escalation")
            .into_iter()
            .filter(|e| {
                e["payload"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("cooldown"))
            })
            .collect();
        if held.len() == 2 {
            Ok(())
        } else {
            Err(format!("{held:?}"))
        }
    });
    assert_eq!(
        cloud.scale_requests().len(),
        1,
        "{:?}",
        cloud.scale_requests()
    );
    let fleet_events = events(&hive, "fleet.service");
    assert!(
        fleet_events
            .iter()
            .any(|e| e["payload"]["service"] == "UserService" && e["payload"]["healthy"] == 0),
        "{fleet_events:?}"
    );
}
