//! What an operator looks things up by, served in-process (see `common`):
//! ids by a unique prefix and shortened for printing, the installed actions
//! and their parameters, names that match nothing answered with the
//! closest, job listings filtered in the store, drones taken out of the
//! fleet, and rules shown as their packs wrote them.

mod common;

use std::path::Path;

use common::TestHive;
use tonic::Code;
use ultron8_core::audit::AuditVerb;
use ultron8_hive::config::HiveConfig;
use ultron8_proto::v1;
use ultron8_proto::v1::control_service_client::ControlServiceClient;

type Control = ControlServiceClient<tonic::transport::Channel>;

fn echo(target: &str) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        target: target.into(),
        command: Some(v1::Command {
            program: Some(v1::command::Program::Argv(v1::Argv {
                args: vec!["echo".into(), "hi".into()],
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn submit(control: &mut Control, target: &str) -> v1::Job {
    control
        .submit_job(echo(target))
        .await
        .expect("submit")
        .into_inner()
}

/// A pack with an action of every kind of parameter and a rule, written
/// into `dir`.
fn tools_pack(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("tools");
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write(
        "pack.yaml",
        "name: tools\nversion: 1.0.0\ndescription: Tools for the tests\n",
    );
    write(
        "actions/notify.yaml",
        r#"name: notify
description: Tell someone something
runner: shell
command: ["echo", "{{ message }}"]
timeout: 30s
parameters:
  message: {type: string, required: true, description: What to say}
  level: {type: string, enum: [low, high], default: low}
  token: {type: string, secret: true, description: Where to say it}
"#,
    );
    write(
        "actions/nothing.yaml",
        "name: nothing\ndescription: Does nothing\nrunner: noop\n",
    );
    write(
        "rules/notify_on_event.yaml",
        r#"# Say hello to whoever an event names.
name: notify_on_event
enabled: true
trigger: core.event
criteria:
  - {path: who, op: exists}
action:
  ref: tools.notify
  target: "{{ host }}"
  parameters:
    message: "hello {{ who }}"   # as written, comments and all
"#,
    );
    root
}

async fn install(control: &mut Control, pack: &Path) {
    let tarball = ultronctl::automation::pack_tarball(pack).expect("tarball");
    let response = control
        .install_pack(v1::InstallPackRequest {
            tarball,
            problems_in_response: true,
        })
        .await
        .expect("install")
        .into_inner();
    assert!(response.refusal.is_none(), "{:?}", response.refusal);
}

#[tokio::test]
async fn jobs_executions_and_events_are_found_by_any_unique_prefix() {
    let test = TestHive::start().await;
    test.add_online_drone("web-1", &[]).await;
    let mut control = test.control().await;
    let first = submit(&mut control, "web-1").await;
    let second = submit(&mut control, "web-1").await;

    // The shortest prefix the hive prints stands for the job everywhere.
    let short = control
        .shorten_ids(v1::ShortenIdsRequest {
            kind: v1::IdKind::Job as i32,
            ids: vec![first.id.clone(), second.id.clone()],
        })
        .await
        .expect("shorten")
        .into_inner()
        .short_ids;
    assert_eq!(short.len(), 2);
    assert_ne!(short[0], short[1]);
    for (short, full) in short.iter().zip([&first.id, &second.id]) {
        assert!(
            full.starts_with(short.as_str()) && short.len() >= 8,
            "{short}"
        );
        let job = control
            .get_job(v1::GetJobRequest { id: short.clone() })
            .await
            .expect("get job by its short id")
            .into_inner();
        assert_eq!(&job.id, full);
    }

    // A prefix both start with is refused, naming them.
    let both = &first.id[..4];
    let refused = control
        .get_job(v1::GetJobRequest { id: both.into() })
        .await
        .expect_err("ambiguous");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("is the start of several job ids")
            && refused.message().contains(&first.id)
            && refused.message().contains(&second.id),
        "{refused:?}"
    );

    // `%` and `_` are characters, never wildcards.
    for pattern in ["%", "_", "%0", "0193_"] {
        let missing = control
            .get_job(v1::GetJobRequest { id: pattern.into() })
            .await
            .expect_err("no job starts with it");
        assert_eq!(missing.code(), Code::NotFound, "{pattern}: {missing:?}");
    }

    // Executions and events too, and the calls that take a job id.
    let execution = &first.executions[0].id;
    let found = control
        .get_execution(v1::GetExecutionRequest {
            id: execution[..execution.len() - 3].into(),
        })
        .await
        .expect("get execution by prefix")
        .into_inner();
    assert_eq!(&found.id, execution);
    let canceled = control
        .cancel_job(v1::CancelJobRequest {
            job_id: short[1].clone(),
            drone_id: String::new(),
        })
        .await
        .expect("cancel by prefix")
        .into_inner();
    assert_eq!(canceled.executions.len(), 1);
    let mut follow = control
        .follow_job(v1::FollowJobRequest {
            job_id: short[1].clone(),
            drone_id: String::new(),
            follow: false,
        })
        .await
        .expect("follow by prefix")
        .into_inner();
    assert!(follow.message().await.expect("an event").is_some());

    let event = control
        .fire_event(v1::FireEventRequest {
            trigger: "core.event".into(),
            payload_json: "{}".into(),
        })
        .await
        .expect("fire")
        .into_inner();
    let found = control
        .get_event(v1::GetEventRequest {
            id: event.id[..event.id.len() - 4].into(),
        })
        .await
        .expect("get event by prefix")
        .into_inner();
    assert_eq!(found.id, event.id);
    // A job's prefix is no event's.
    let refused = control
        .get_event(v1::GetEventRequest {
            id: short[0].clone(),
        })
        .await
        .expect_err("not an event");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");

    let refused = control
        .shorten_ids(v1::ShortenIdsRequest {
            kind: v1::IdKind::Unspecified as i32,
            ids: vec![first.id.clone()],
        })
        .await
        .expect_err("a kind is needed");
    assert_eq!(refused.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn actions_are_listed_and_described_with_their_parameters() {
    let test = TestHive::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut control = test.control().await;
    install(&mut control, &tools_pack(dir.path())).await;

    let actions = control
        .list_actions(v1::ListActionsRequest {
            pack: "tools".into(),
        })
        .await
        .expect("list actions")
        .into_inner()
        .actions;
    let references: Vec<&str> = actions.iter().map(|a| a.reference.as_str()).collect();
    assert_eq!(references, ["tools.nothing", "tools.notify"]);
    assert!(!actions[0].runs_on_drones && actions[0].runner == "noop");

    let notify = control
        .get_action(v1::GetActionRequest {
            reference: "tools.notify".into(),
        })
        .await
        .expect("get action")
        .into_inner();
    assert_eq!(notify.runner, "shell");
    assert!(notify.runs_on_drones);
    assert_eq!(notify.timeout_ms, 30_000);
    assert_eq!(notify.description, "Tell someone something");
    let parameter = |name: &str| {
        notify
            .parameters
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .expect("the parameter")
    };
    let message = parameter("message");
    assert!(message.required && message.r#type == "string" && message.default_json.is_empty());
    assert_eq!(message.description, "What to say");
    let level = parameter("level");
    assert_eq!(level.default_json, r#""low""#);
    assert_eq!(level.allowed_json, [r#""low""#, r#""high""#]);
    let token = parameter("token");
    assert!(token.secret && !token.required && token.default_json.is_empty());

    let missing = control
        .list_actions(v1::ListActionsRequest {
            pack: "nosuch".into(),
        })
        .await
        .expect_err("no such pack");
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn misspelt_actions_and_drones_are_answered_with_the_closest() {
    let test = TestHive::start().await;
    test.add_online_drone("web-1", &[]).await;
    test.add_online_drone("web-2", &[]).await;
    test.add_online_drone("db-1", &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut control = test.control().await;
    install(&mut control, &tools_pack(dir.path())).await;

    for (asked, offered) in [
        ("tools.notfy", "did you mean tools.notify?"),
        ("tool.notify", "did you mean tools.notify?"),
        ("notify", "did you mean tools.notify?"),
    ] {
        let refused = control
            .run_action(v1::RunActionRequest {
                action: asked.into(),
                parameters_json: "{}".into(),
                target: "web-1".into(),
                ttl_ms: 0,
            })
            .await
            .expect_err("no such action");
        assert_eq!(refused.code(), Code::NotFound);
        assert!(refused.message().contains(offered), "{asked}: {refused:?}");
    }
    let refused = control
        .get_action(v1::GetActionRequest {
            reference: "tools.nothinng".into(),
        })
        .await
        .expect_err("no such action");
    assert!(
        refused.message().contains("did you mean tools.nothing?"),
        "{refused:?}"
    );

    let refused = control
        .submit_job(echo("web1"))
        .await
        .expect_err("no drone is called web1");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        "target \"web1\" matches no online drone; did you mean web-1? (see `ultronctl drone list`)"
    );
    let refused = control
        .submit_job(echo("web-3,db-1x"))
        .await
        .expect_err("neither exists");
    assert!(
        refused
            .message()
            .contains("did you mean web-1, web-2 or db-1?"),
        "{refused:?}"
    );
    // Nothing close: no guess.
    let refused = control
        .submit_job(echo("mailserver"))
        .await
        .expect_err("no such drone");
    assert!(!refused.message().contains("did you mean"), "{refused:?}");
}

#[tokio::test]
async fn jobs_are_listed_by_status_drone_and_time() {
    let test = TestHive::start().await;
    test.add_online_drone("web-1", &[]).await;
    test.add_online_drone("web-2", &[]).await;
    let mut control = test.control().await;
    let on_web_1 = submit(&mut control, "web-1").await;
    let on_both = submit(&mut control, "web-1,web-2").await;
    control
        .cancel_job(v1::CancelJobRequest {
            job_id: on_web_1.id.clone(),
            drone_id: String::new(),
        })
        .await
        .expect("cancel");

    let list = |request: v1::ListJobsRequest| {
        let mut control = control.clone();
        async move {
            control.list_jobs(request).await.map(|r| {
                r.into_inner()
                    .jobs
                    .into_iter()
                    .map(|j| j.id)
                    .collect::<Vec<_>>()
            })
        }
    };
    assert_eq!(
        list(v1::ListJobsRequest::default()).await.expect("all"),
        [on_both.id.clone(), on_web_1.id.clone()]
    );
    assert_eq!(
        list(v1::ListJobsRequest {
            drone: "web-2".into(),
            ..Default::default()
        })
        .await
        .expect("on web-2"),
        [on_both.id.as_str()]
    );
    assert_eq!(
        list(v1::ListJobsRequest {
            statuses: vec!["canceled".into()],
            ..Default::default()
        })
        .await
        .expect("canceled"),
        [on_web_1.id.as_str()]
    );
    assert_eq!(
        list(v1::ListJobsRequest {
            statuses: vec!["succeeded,canceled".into()],
            drone: "web-1".into(),
            ..Default::default()
        })
        .await
        .expect("canceled on web-1"),
        [on_web_1.id.as_str()]
    );
    assert_eq!(
        list(v1::ListJobsRequest {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("newest"),
        [on_both.id.as_str()]
    );
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(
        list(v1::ListJobsRequest {
            since_ms: later.timestamp_millis(),
            ..Default::default()
        })
        .await
        .expect("since")
        .is_empty()
    );
    let refused = list(v1::ListJobsRequest {
        statuses: vec!["broken".into()],
        ..Default::default()
    })
    .await
    .expect_err("no such status");
    assert_eq!(refused.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_removed_drone_leaves_the_fleet_and_is_refused_until_it_joins_again() {
    let test = TestHive::start().await;
    test.add_online_drone("web-1", &[]).await;
    test.add_offline_drone("web-2", &[]).await;
    let mut control = test.control().await;
    let job = submit(&mut control, "web-1").await;

    // Online: only with --force.
    let refused = control
        .remove_drone(v1::RemoveDroneRequest {
            id: "web-1".into(),
            force: false,
        })
        .await
        .expect_err("online");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("--force"), "{refused:?}");

    let removed = control
        .remove_drone(v1::RemoveDroneRequest {
            id: "web-2".into(),
            force: false,
        })
        .await
        .expect("an offline drone is removed")
        .into_inner();
    assert!(removed.removed_at_ms > 0);
    assert_eq!(removed.removed_by, "operator:alice");
    control
        .remove_drone(v1::RemoveDroneRequest {
            id: "web-1".into(),
            force: true,
        })
        .await
        .expect("forced");

    // Out of the listings and the targets; history stays.
    let fleet = control
        .list_drones(v1::ListDronesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .drones;
    assert!(fleet.is_empty(), "{fleet:?}");
    let refused = control
        .get_drone(v1::GetDroneRequest { id: "web-2".into() })
        .await
        .expect_err("removed");
    assert_eq!(refused.code(), Code::NotFound);
    assert!(
        refused
            .message()
            .contains("was removed from the fleet by operator:alice"),
        "{refused:?}"
    );
    let refused = control
        .submit_job(echo("web-*"))
        .await
        .expect_err("no drone left");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let kept = control
        .get_job(v1::GetJobRequest { id: job.id.clone() })
        .await
        .expect("the job stays")
        .into_inner();
    assert_eq!(kept.executions[0].drone_id, "web-1");
    let audit = test
        .hive
        .list_audit(&ultron8_store::AuditFilter {
            action: Some(AuditVerb::DroneRemoved),
            ..Default::default()
        })
        .await
        .expect("audit");
    let removed: Vec<String> = audit
        .iter()
        .filter_map(|a| a.drone_id.as_ref().map(|d| d.to_string()))
        .collect();
    assert_eq!(removed, ["web-1", "web-2"]);
    assert_eq!(audit[0].detail["forced"], true);

    // Its heartbeats, registrations and reports are refused, saying why.
    let mut drone = test.drone("web-1").await;
    let refused = drone
        .heartbeat(v1::HeartbeatRequest::default())
        .await
        .expect_err("removed");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("drone web-1 was removed")
            && refused
                .message()
                .contains("ultron8-drone join --name web-1"),
        "{refused:?}"
    );
    let refused = drone
        .register(v1::RegisterRequest {
            facts: Some(v1::DroneFacts::default()),
        })
        .await
        .expect_err("removed");
    assert!(refused.message().contains("was removed"), "{refused:?}");
    let refused = drone
        .report_result(v1::ExecutionReport {
            execution_id: job.executions[0].id.clone(),
            status: v1::ExecutionStatus::Succeeded as i32,
            ..Default::default()
        })
        .await
        .expect_err("removed");
    assert!(refused.message().contains("was removed"), "{refused:?}");

    // Joining again with a new token brings it back.
    let token = control
        .create_join_token(v1::CreateJoinTokenRequest::default())
        .await
        .expect("token")
        .into_inner();
    let (_key, csr) = ultron8_pki::generate_key_and_csr("web-1").expect("csr");
    test.drone_service_as(ultron8_hive::caller::Caller::Anonymous)
        .await
        .enroll(v1::EnrollRequest {
            token: token.token,
            drone_id: "web-1".into(),
            csr_der: csr,
        })
        .await
        .expect("join again");
    drone
        .register(v1::RegisterRequest {
            facts: Some(v1::DroneFacts::default()),
        })
        .await
        .expect("registered again");
    drone
        .heartbeat(v1::HeartbeatRequest::default())
        .await
        .expect("heartbeats again");
    let fleet = control
        .list_drones(v1::ListDronesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .drones;
    assert_eq!(fleet.len(), 1);
    assert!(fleet[0].online);
}

#[tokio::test]
async fn a_rule_is_shown_as_its_pack_wrote_it() {
    let test = TestHive::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut control = test.control().await;
    let pack = tools_pack(dir.path());
    install(&mut control, &pack).await;
    let rule = control
        .get_rule(v1::GetRuleRequest {
            name: "tools.notify_on_event".into(),
        })
        .await
        .expect("rule")
        .into_inner();
    let written =
        std::fs::read_to_string(pack.join("rules/notify_on_event.yaml")).expect("the file");
    assert_eq!(rule.source, written);
    let shown = ultronctl::automation::describe_rule(&rule).expect("describe");
    assert!(
        shown.starts_with(
            "# tools.notify_on_event: enabled; pack tools, rules/notify_on_event.yaml\n# Say hello"
        ),
        "{shown}"
    );
    assert!(shown.contains("# as written, comments and all"), "{shown}");
}

#[tokio::test]
async fn a_dev_hive_makes_no_join_tokens() {
    let test = TestHive::start_with(HiveConfig {
        dev: true,
        ..HiveConfig::default()
    })
    .await;
    let refused = test
        .control()
        .await
        .create_join_token(v1::CreateJoinTokenRequest::default())
        .await
        .expect_err("a dev hive refuses");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("ultron8-hive serve") && refused.message().contains("dev hive"),
        "{refused:?}"
    );
}
