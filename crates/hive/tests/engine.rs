//! The rules engine on the real hive, in-process (see `common`): what fires,
//! what a policy holds, what a miss costs (nothing), what survives a crash
//! between firing and finishing, and that a catalog change reaches the
//! engine without a restart. The engine is driven step by step
//! (`Hive::process_pending_events`), so nothing here waits on a timer.

mod common;

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use common::TestHive;
use serde_json::{Value, json};
use ultron8_core::ExecutionStatus;
use ultron8_core::ids::EventId;
use ultron8_hive::actor::Actor;
use ultron8_hive::hive::Hive;
use ultron8_hive::metrics::Exposition;
use ultron8_store::{AuditFilter, EventFilter, EventRecord, EventState, ExecutionUpdate};

/// The operator every catalog change here is made by.
fn operator() -> Actor {
    Actor::Operator(common::OPERATOR.into())
}

/// Writes a pack named `web` with a `restart` action (on drones) and the
/// given rules, as files, and installs it through the hive's install path.
async fn install_web_pack(hive: &Hive, version: &str, rules: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        root,
        "pack.yaml",
        &format!("name: web\nversion: {version}\ndescription: web fleet\nauthor: tests\n"),
    );
    write(
        root,
        "actions/restart.yaml",
        "name: restart\ndescription: restart a service\nrunner: shell\n\
         command: [systemctl, restart, \"{{ service }}\"]\n\
         parameters:\n  service: {type: string, required: true}\n",
    );
    for (name, body) in rules {
        write(
            root,
            &format!("rules/{name}.yaml"),
            &format!(
                "name: {name}\ndescription: test rule\nenabled: true\ntrigger: alertmanager.alert\n{body}"
            ),
        );
    }
    let tarball = ultronctl::automation::pack_tarball(root).expect("tarball");
    hive.install_pack(&operator(), &tarball)
        .await
        .expect("the pack installs");
}

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

/// A rule restarting the alert's service on the alert's instance when
/// `alertname` fires, with `policy` (YAML lines, may be empty).
fn restart_rule(alertname: &str, policy: &str) -> String {
    format!(
        "criteria:\n  - {{path: status, op: equals, value: firing}}\n  - {{path: labels.alertname, op: equals, value: {alertname}}}\n\
         action:\n  ref: web.restart\n  target: \"{{{{ labels.instance }}}}\"\n  parameters:\n    service: \"{{{{ labels.service }}}}\"\n{policy}"
    )
}

fn alert(alertname: &str, instance: &str) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": alertname, "instance": instance, "service": "nginx"},
    })
}

async fn fire(hive: &Hive, payload: Value) -> EventRecord {
    hive.fire_event(&operator(), "alertmanager.alert", payload)
        .await
        .expect("the event is stored")
}

async fn process(hive: &Arc<Hive>) -> usize {
    hive.process_pending_events()
        .await
        .expect("the engine processes the pending events")
}

async fn event(hive: &Hive, id: &EventId) -> EventRecord {
    hive.get_event(id).await.expect("the event exists")
}

/// The audit kinds recorded for an event, oldest first, as stored.
async fn audit_kinds(hive: &Hive, event_id: &EventId) -> Vec<String> {
    let mut records = hive
        .list_audit(&AuditFilter {
            event_id: Some(event_id.clone()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    records.reverse();
    records.into_iter().map(|r| r.action.to_string()).collect()
}

async fn job_count(hive: &Hive) -> i64 {
    hive.store.count_jobs().await.expect("count jobs")
}

/// Escalations the engine raised, newest first.
async fn escalations(hive: &Hive) -> Vec<EventRecord> {
    hive.store
        .list_events(&EventFilter {
            trigger: Some("core.escalation".into()),
            ..EventFilter::default()
        })
        .await
        .expect("list events")
}

/// A hive with online `drones` and the `web` pack whose one rule,
/// `web.restart_on_down`, restarts the service of a firing `ServiceDown`
/// alert's instance, under `policy`.
async fn hive_with_restart_rule(drones: &[&str], policy: &str) -> TestHive {
    let test = TestHive::start().await;
    for id in drones {
        test.add_online_drone(id, &[]).await;
    }
    install_web_pack(
        &test.hive,
        "1.0.0",
        &[("restart_on_down", &restart_rule("ServiceDown", policy))],
    )
    .await;
    test
}

#[tokio::test]
async fn a_matching_rule_fires_and_the_rules_that_miss_write_nothing() {
    let test = TestHive::start().await;
    let hive = &test.hive;
    test.add_online_drone("web-1", &[]).await;
    install_web_pack(
        hive,
        "1.0.0",
        &[
            ("restart_on_down", &restart_rule("ServiceDown", "")),
            ("restart_on_oom", &restart_rule("OutOfMemory", "")),
            ("restart_on_disk", &restart_rule("DiskFull", "")),
        ],
    )
    .await;

    let stored = fire(hive, alert("ServiceDown", "web-1")).await;
    assert_eq!(process(hive).await, 1);

    let processed = event(hive, &stored.id).await;
    assert_eq!(processed.state, EventState::Processed);
    assert_eq!(processed.error, None);
    assert_eq!(processed.matched_rules, ["web.restart_on_down"]);
    // One record for the firing; the two rules that missed left none.
    assert_eq!(audit_kinds(hive, &stored.id).await, ["rule.fired"]);
    let request = test.next_request("web-1").await;
    let command = format!("{:?}", request.command);
    assert!(command.contains("nginx"), "{command}");
    assert_eq!(job_count(hive).await, 1);

    // An event no rule matches is processed with nothing written for it.
    let unmatched = fire(hive, alert("Unknown", "web-1")).await;
    assert_eq!(process(hive).await, 1);
    let processed = event(hive, &unmatched.id).await;
    assert_eq!(processed.state, EventState::Processed);
    assert!(processed.matched_rules.is_empty());
    assert!(audit_kinds(hive, &unmatched.id).await.is_empty());
    assert_eq!(job_count(hive).await, 1);

    // The reasons of a miss are there on demand, from the same evaluation.
    let plans = hive
        .test_rules("alertmanager.alert", None, &unmatched.payload)
        .await
        .expect("test rules");
    assert_eq!(plans.len(), 3);
    assert!(plans.iter().all(|p| !p.matched));
    let reasons: Vec<&String> = plans.iter().flat_map(|p| &p.reasons).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("labels.alertname") && r.contains("Unknown")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_cooldown_holds_the_same_key_and_raises_an_escalation() {
    let test = hive_with_restart_rule(
        &["web-1", "web-2"],
        "policy:\n  cooldown: {key: \"{{ labels.instance }}\", period: 10m}\n",
    )
    .await;
    let hive = &test.hive;

    let first = fire(hive, alert("ServiceDown", "web-1")).await;
    let again = fire(hive, alert("ServiceDown", "web-1")).await;
    let other_host = fire(hive, alert("ServiceDown", "web-2")).await;
    // The three alerts, then the escalation the hold raised: an event like
    // any other, processed in the next batch.
    assert_eq!(process(hive).await, 4);

    assert_eq!(audit_kinds(hive, &first.id).await, ["rule.fired"]);
    assert_eq!(audit_kinds(hive, &again.id).await, ["rule.held"]);
    assert_eq!(audit_kinds(hive, &other_host.id).await, ["rule.fired"]);
    assert_eq!(job_count(hive).await, 2);
    // A held firing is still a match, and the event is processed, not failed.
    let held = event(hive, &again.id).await;
    assert_eq!(held.state, EventState::Processed);
    assert_eq!(held.matched_rules, ["web.restart_on_down"]);

    let escalations = escalations(hive).await;
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    assert_eq!(escalations[0].payload["event_id"], json!(again.id));
    assert_eq!(escalations[0].payload["rule"], json!("web.restart_on_down"));
    assert!(
        escalations[0].payload["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cooldown")),
        "{}",
        escalations[0].payload
    );
    assert_eq!(escalations[0].state, EventState::Processed);
}

#[tokio::test]
async fn max_concurrent_holds_until_the_running_job_finishes() {
    let test = hive_with_restart_rule(&["web-1"], "policy:\n  max_concurrent: 1\n").await;
    let hive = &test.hive;

    let first = fire(hive, alert("ServiceDown", "web-1")).await;
    assert_eq!(process(hive).await, 1);
    let second = fire(hive, alert("ServiceDown", "web-1")).await;
    assert_eq!(
        process(hive).await,
        2,
        "the second alert and its escalation"
    );
    assert_eq!(audit_kinds(hive, &first.id).await, ["rule.fired"]);
    assert_eq!(audit_kinds(hive, &second.id).await, ["rule.held"]);

    // The drone reports the first job finished; the rule has room again.
    let request = test.next_request("web-1").await;
    let finished = ExecutionUpdate {
        status: ExecutionStatus::Succeeded,
        at: Utc::now(),
        started_at: Some(Utc::now()),
        result: Some(Default::default()),
    };
    hive.store
        .transition_execution(&request.execution_id.into(), &finished, None)
        .await
        .expect("record the result");
    let third = fire(hive, alert("ServiceDown", "web-1")).await;
    assert_eq!(process(hive).await, 1);
    assert_eq!(audit_kinds(hive, &third.id).await, ["rule.fired"]);
    assert_eq!(job_count(hive).await, 2);
}

#[tokio::test]
async fn a_blast_radius_holds_hosts_past_its_limit() {
    let test = hive_with_restart_rule(
        &["web-1", "web-2", "web-3"],
        "policy:\n  blast_radius: {max_hosts: 2, window: 1h}\n",
    )
    .await;
    let hive = &test.hive;

    let events = [
        fire(hive, alert("ServiceDown", "web-1")).await,
        fire(hive, alert("ServiceDown", "web-2")).await,
        fire(hive, alert("ServiceDown", "web-1")).await,
        fire(hive, alert("ServiceDown", "web-3")).await,
    ];
    assert_eq!(process(hive).await, 5, "four alerts and one escalation");
    let mut kinds = Vec::new();
    for event in &events {
        kinds.push(audit_kinds(hive, &event.id).await);
    }
    // web-1 again is inside the two hosts already acted on; web-3 is a
    // third host, past the limit.
    assert_eq!(
        kinds,
        [
            vec!["rule.fired"],
            vec!["rule.fired"],
            vec!["rule.fired"],
            vec!["rule.held"]
        ]
    );
    assert_eq!(escalations(hive).await.len(), 1);
}

#[tokio::test]
async fn a_reclaimed_event_never_fires_a_rule_twice() {
    let test = hive_with_restart_rule(&["web-1"], "").await;
    let hive = &test.hive;
    let stored = fire(hive, alert("ServiceDown", "web-1")).await;

    // A replica claims the event with a lease that runs out at once, fires
    // the rule, and dies before recording the event's outcome.
    let claimed = hive
        .store
        .claim_pending_events("doomed-replica", 10, std::time::Duration::ZERO, Utc::now())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    hive.fire_without_finishing(&claimed).await;
    assert_eq!(job_count(hive).await, 1);
    assert_eq!(event(hive, &stored.id).await.state, EventState::Pending);

    // Another replica picks the event up and finishes it without firing
    // the rule again.
    assert_eq!(process(hive).await, 1);
    let processed = event(hive, &stored.id).await;
    assert_eq!(processed.state, EventState::Processed);
    assert_eq!(processed.matched_rules, ["web.restart_on_down"]);
    assert_eq!(job_count(hive).await, 1);
    assert_eq!(audit_kinds(hive, &stored.id).await, ["rule.fired"]);
}

#[tokio::test]
async fn a_catalog_change_reaches_the_engine_without_a_restart() {
    let test = TestHive::start().await;
    let hive = &test.hive;
    test.add_online_drone("web-1", &[]).await;

    let before = fire(hive, alert("ServiceDown", "web-1")).await;
    assert_eq!(process(hive).await, 1);
    assert!(event(hive, &before.id).await.matched_rules.is_empty());

    install_web_pack(
        hive,
        "1.0.0",
        &[("restart_on_down", &restart_rule("ServiceDown", ""))],
    )
    .await;
    let installed = fire(hive, alert("ServiceDown", "web-1")).await;
    assert_eq!(process(hive).await, 1);
    assert_eq!(audit_kinds(hive, &installed.id).await, ["rule.fired"]);

    hive.set_rule_enabled(&operator(), "web.restart_on_down", false)
        .await
        .expect("disable");
    let disabled = fire(hive, alert("ServiceDown", "web-1")).await;
    assert_eq!(process(hive).await, 1);
    assert!(audit_kinds(hive, &disabled.id).await.is_empty());

    // An upgrade that changes the criteria is what the next event meets.
    install_web_pack(
        hive,
        "1.1.0",
        &[("restart_on_down", &restart_rule("OutOfMemory", ""))],
    )
    .await;
    hive.set_rule_enabled(&operator(), "web.restart_on_down", true)
        .await
        .expect("enable");
    let old_name = fire(hive, alert("ServiceDown", "web-1")).await;
    let new_name = fire(hive, alert("OutOfMemory", "web-1")).await;
    assert_eq!(process(hive).await, 2);
    assert!(audit_kinds(hive, &old_name.id).await.is_empty());
    assert_eq!(audit_kinds(hive, &new_name.id).await, ["rule.fired"]);
    assert_eq!(job_count(hive).await, 2);
}

#[tokio::test]
async fn a_rule_that_cannot_run_fails_its_event_with_the_reason() {
    let test = hive_with_restart_rule(&[], "").await;
    let hive = &test.hive;

    // No drone is called web-9: the target matches no online drone. The
    // alert, then the escalation its failure raised.
    let stored = fire(hive, alert("ServiceDown", "web-9")).await;
    assert_eq!(process(hive).await, 2);
    let failed = event(hive, &stored.id).await;
    assert_eq!(failed.state, EventState::Failed);
    assert_eq!(failed.matched_rules, ["web.restart_on_down"]);
    let error = failed.error.expect("an error");
    assert!(
        error.starts_with("web.restart_on_down: ") && error.contains("matches no online drone"),
        "{error}"
    );
    assert_eq!(audit_kinds(hive, &stored.id).await, ["rule.failed"]);
    assert_eq!(job_count(hive).await, 0);
    let raised = escalations(hive).await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].payload["cause"], json!("failed"));
    assert_eq!(raised[0].payload["event_id"], json!(stored.id));
    assert_eq!(raised[0].payload["rule"], json!("web.restart_on_down"));
    assert!(
        raised[0].payload["reason"]
            .as_str()
            .is_some_and(|r| r.contains("matches no online drone")),
        "{}",
        raised[0].payload
    );

    // A payload without the field a template needs fails the same way, but
    // the rule escalated a moment ago: a storm of failures pages once.
    let mut payload = alert("ServiceDown", "web-9");
    payload["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("service");
    let stored = fire(hive, payload).await;
    assert_eq!(process(hive).await, 1);
    assert_eq!(escalations(hive).await.len(), 1);

    // Both failures are counted; the one escalation too.
    let metrics = hive
        .metrics
        .render(hive.store.as_ref(), Exposition::Text, chrono::Utc::now())
        .await
        .expect("metrics");
    for sample in [
        "ultron8_rule_failures_total{rule=\"web.restart_on_down\"} 2",
        "ultron8_rule_evaluations_total{rule=\"web.restart_on_down\"} 2",
        "ultron8_rule_firings_total{rule=\"web.restart_on_down\"} 0",
        "ultron8_escalations_total{cause=\"failed\"} 1",
        "ultron8_events_processed_total{trigger=\"core.escalation\"} 1",
        "ultron8_engine_pending_events 0",
    ] {
        assert!(metrics.contains(sample), "no {sample} in\n{metrics}");
    }
    let failed = event(hive, &stored.id).await;
    assert_eq!(failed.state, EventState::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("parameters")),
        "{:?}",
        failed.error
    );
}

#[tokio::test]
async fn a_huge_rendered_target_is_recorded_shortened_wherever_the_failure_is() {
    let test = hive_with_restart_rule(&["web-1"], "").await;
    let hive = &test.hive;
    // The alert's instance label renders into the target: about 1 MB that
    // does not parse.
    let instance = format!("{}(web-1", "web-1 or ".repeat(110_000));
    let stored = fire(hive, alert("ServiceDown", &instance)).await;
    assert_eq!(process(hive).await, 2, "the alert, then its escalation");

    let failed = event(hive, &stored.id).await;
    assert_eq!(failed.state, EventState::Failed);
    let error = failed.error.expect("an error");
    assert!(
        error.len() < 2048,
        "the event's error is {} bytes",
        error.len()
    );
    assert!(error.contains("invalid target"), "{error:.300}");
    assert!(
        error.contains(&format!("({} bytes)", instance.len())),
        "{error}"
    );

    let audit = hive
        .list_audit(&AuditFilter {
            event_id: Some(stored.id.clone()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert_eq!(audit.len(), 1, "{audit:.300?}");
    let detail = audit[0].detail.to_string();
    assert!(
        detail.len() < 2048,
        "the audit record is {} bytes",
        detail.len()
    );

    let raised = escalations(hive).await;
    let reason = raised[0].payload["reason"].as_str().expect("a reason");
    assert!(
        reason.len() < 2048,
        "the escalation is {} bytes",
        reason.len()
    );
}

#[tokio::test]
async fn a_catalog_change_on_one_replica_reaches_the_engine_of_another() {
    // Two replicas share one store; each holds its own compiled rules.
    let test = TestHive::start().await;
    let first = &test.hive;
    test.add_online_drone("web-1", &[]).await;
    let ca = ultron8_pki::CertificateAuthority::from_pem(&first.ca.cert_pem(), &first.ca.key_pem())
        .expect("the same CA");
    let key = ultron8_pki::RequestSigningKey::from_pkcs8(
        &ultron8_pki::RequestSigningKey::generate_pkcs8().expect("key"),
    )
    .expect("signing key");
    let second = Arc::new(
        Hive::new(
            first.config.clone(),
            first.store.clone(),
            first.publisher.clone(),
            ca,
            key,
        )
        .expect("a second replica"),
    );

    // The second replica compiles its rules while there are none.
    let before = fire(first, alert("ServiceDown", "web-1")).await;
    assert_eq!(process(&second).await, 1);
    assert!(event(first, &before.id).await.matched_rules.is_empty());

    // A pack installed through the first reaches the second's next batch.
    install_web_pack(
        first,
        "1.0.0",
        &[("restart_on_down", &restart_rule("ServiceDown", ""))],
    )
    .await;
    let after = fire(first, alert("ServiceDown", "web-1")).await;
    assert_eq!(process(&second).await, 1);
    assert_eq!(audit_kinds(first, &after.id).await, ["rule.fired"]);

    // So does a rule disabled through the first.
    first
        .set_rule_enabled(&operator(), "web.restart_on_down", false)
        .await
        .expect("disable");
    let disabled = fire(first, alert("ServiceDown", "web-1")).await;
    assert_eq!(process(&second).await, 1);
    assert!(audit_kinds(first, &disabled.id).await.is_empty());
    assert_eq!(job_count(first).await, 1);
}
