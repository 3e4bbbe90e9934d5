//! The hive's gRPC and HTTP APIs, served in-process (see `common`): jobs,
//! watching, packs, who may call what, enrollment and event intake.

mod common;

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{OPERATOR, TestHive};
use futures::StreamExt;
use tonic::Code;
use tower::ServiceExt;
use ultron8_core::ExecutionStatus;
use ultron8_hive::actor::Actor;
use ultron8_hive::caller::Caller;
use ultron8_hive::config::{HiveConfig, WebhookConfig};
use ultron8_hive::error::{ErrorCode, ErrorDetail};
use ultron8_hive::ops::jobs::{JobSpec, Work};
use ultron8_proto::convert::status_from_wire;
use ultron8_proto::v1;

/// No test waits longer than this for anything.
const PATIENCE: Duration = Duration::from_secs(10);

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

fn packs_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../packs"))
}

#[tokio::test]
async fn a_target_matching_only_offline_drones_is_refused_naming_them() {
    let test = TestHive::start().await;
    test.add_offline_drone("web-1", &[("role", "web")]).await;
    test.add_offline_drone("web-2", &[("role", "web")]).await;
    test.add_online_drone("db-1", &[("role", "db")]).await;
    let mut control = test.control().await;

    let refused = control
        .submit_job(echo("label:role=web"))
        .await
        .expect_err("no web drone is online");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(
        refused.message(),
        "target \"label:role=web\" matches no online drone (offline: web-1, web-2); see `ultronctl drone list`"
    );

    // The operation itself carries the offline drones as a typed detail.
    let spec = JobSpec {
        work: Work::Command(ultron8_core::CommandSpec {
            program: ultron8_core::Program::Argv(vec!["true".into()]),
            env: Default::default(),
            working_dir: None,
            timeout_ms: None,
            output_limit_bytes: None,
            redact: Vec::new(),
        }),
        target: "label:role=web".into(),
        ttl: None,
    };
    let error = test
        .hive
        .submit(&Actor::Operator(OPERATOR.into()), spec)
        .await
        .expect_err("no web drone is online");
    assert_eq!(error.code(), ErrorCode::FailedPrecondition);
    assert_eq!(
        error.detail(),
        Some(&ErrorDetail::OfflineDrones {
            target: "label:role=web".into(),
            offline: vec!["web-1".into(), "web-2".into()],
        })
    );

    // A pack action takes the same path and is refused the same way.
    ultronctl::automation::pack(
        &mut control,
        ultronctl::automation::PackCommand::Install {
            path: packs_dir().join("hello"),
        },
        &ultronctl::output::Output::plain(ultronctl::output::Format::Json),
    )
    .await
    .expect("install the hello pack");
    let refused = control
        .run_action(v1::RunActionRequest {
            action: "hello.greet".into(),
            parameters_json: r#"{"name": "Ada"}"#.into(),
            target: "label:role=web".into(),
            ttl_ms: 0,
        })
        .await
        .expect_err("no web drone is online");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("(offline: web-1, web-2)"),
        "{refused:?}"
    );

    // Nothing was written.
    let jobs = control
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .expect("list jobs")
        .into_inner()
        .jobs;
    assert!(jobs.is_empty(), "{jobs:?}");
}

#[tokio::test]
async fn a_malformed_target_or_an_overlong_ttl_is_an_invalid_argument() {
    let test = TestHive::start().await;
    test.add_online_drone("web-1", &[]).await;
    let mut control = test.control().await;
    let refused = control
        .submit_job(echo("web-1 and (db-1"))
        .await
        .expect_err("unbalanced parenthesis");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("column"), "{refused:?}");

    let mut request = echo("web-1");
    request.ttl_ms = 8 * 24 * 3600 * 1000;
    let refused = control.submit_job(request).await.expect_err("8 days");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("is too long"), "{refused:?}");
}

#[tokio::test]
async fn a_job_is_watched_from_submission_to_its_end() {
    let test = TestHive::start().await;
    test.add_online_drone("web-1", &[("role", "web")]).await;
    test.add_online_drone("web-2", &[("role", "web")]).await;
    let mut control = test.control().await;

    let job = control
        .submit_job(echo("label:role=web"))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(job.requester, format!("operator:{OPERATOR}"));
    assert_eq!(job.executions.len(), 2);
    let mut watch = control
        .watch_job(v1::WatchJobRequest {
            job_id: job.id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();

    // Each drone finds its signed request on its queue and reports on it,
    // as a drone does.
    for drone_id in ["web-1", "web-2"] {
        let request = tokio::time::timeout(PATIENCE, test.next_request(drone_id))
            .await
            .expect("the hive publishes the request");
        assert_eq!(request.drone_id, drone_id);
        assert_eq!(request.job_id, job.id);
        let mut drone = test.drone(drone_id).await;
        let running = v1::ExecutionReport {
            execution_id: request.execution_id.clone(),
            status: v1::ExecutionStatus::Running as i32,
            started_at_ms: chrono::Utc::now().timestamp_millis(),
            ..Default::default()
        };
        let applied = drone.report_result(running).await.expect("report running");
        assert!(applied.into_inner().applied);
        let finished = v1::ExecutionReport {
            execution_id: request.execution_id.clone(),
            status: v1::ExecutionStatus::Succeeded as i32,
            exit_code: Some(0),
            stdout: b"hi\n".to_vec(),
            finished_at_ms: chrono::Utc::now().timestamp_millis(),
            ..Default::default()
        };
        drone.report_result(finished.clone()).await.expect("report");
        // A duplicate report changes nothing.
        let again = drone.report_result(finished).await.expect("report again");
        assert!(!again.into_inner().applied);
    }

    let mut last = std::collections::BTreeMap::new();
    let watched = async {
        while let Some(execution) = watch.next().await {
            let execution = execution.expect("an execution");
            let status = status_from_wire(execution.status).expect("a status");
            last.insert(execution.drone_id.clone(), (status, execution.stdout));
        }
    };
    tokio::time::timeout(PATIENCE, watched)
        .await
        .expect("the watch ends once every execution is terminal");
    for drone_id in ["web-1", "web-2"] {
        assert_eq!(
            last.get(drone_id),
            Some(&(ExecutionStatus::Succeeded, b"hi\n".to_vec())),
            "{last:?}"
        );
    }
    let audit = control
        .list_audit(v1::ListAuditRequest {
            job: job.id.clone(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .entries;
    let kinds: Vec<&str> = audit.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "execution.finished").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"job.submitted"), "{kinds:?}");
}

#[tokio::test]
async fn watching_an_unknown_job_is_not_found() {
    let test = TestHive::start().await;
    let refused = test
        .control()
        .await
        .watch_job(v1::WatchJobRequest {
            job_id: "nope".into(),
        })
        .await
        .expect_err("no such job");
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(refused.message(), "no job nope; see `ultronctl job list`");
}

/// A pack whose every action file is malformed: `count` problems.
fn broken_pack(dir: &Path, count: usize) {
    std::fs::create_dir_all(dir.join("actions")).expect("mkdir");
    std::fs::write(
        dir.join("pack.yaml"),
        "name: broken\nversion: 1.0.0\ndescription: x\nauthor: x\n",
    )
    .expect("write pack.yaml");
    for i in 0..count {
        std::fs::write(
            dir.join("actions").join(format!("a{i:03}.yaml")),
            format!("name: a{i:03}\nrunner: [unclosed\n"),
        )
        .expect("write an action");
    }
}

#[tokio::test]
async fn a_pack_with_500_problems_reaches_ultronctl_whole() {
    let test = TestHive::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("broken");
    broken_pack(&pack, 500);
    let mut control = test.control().await;

    let error = ultronctl::automation::pack(
        &mut control,
        ultronctl::automation::PackCommand::Install { path: pack.clone() },
        &ultronctl::output::Output::plain(ultronctl::output::Format::Table),
    )
    .await
    .expect_err("the pack is refused");
    let text = format!("{error:#}");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("the pack has 500 problems; nothing was installed:")
    );
    let problems: Vec<&str> = lines.collect();
    assert_eq!(problems.len(), 500, "{text}");
    for i in 0..500 {
        let file = format!("actions/a{i:03}.yaml:");
        assert!(
            problems.iter().any(|p| p.starts_with(&file)),
            "{file} missing"
        );
    }

    // A client that does not ask for the list in the response (an older
    // ultronctl) gets the status as before, cut to fit, not a broken call.
    let tarball = ultronctl::automation::pack_tarball(&pack).expect("tarball");
    let refused = control
        .install_pack(v1::InstallPackRequest {
            tarball,
            problems_in_response: false,
        })
        .await
        .expect_err("the pack is refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with("the pack has 500 problems; nothing was installed:\nactions/a000.yaml:"),
        "{}",
        refused.message()
    );
    assert!(
        refused
            .message()
            .ends_with("more problems; an ultronctl as new as this hive lists them all"),
        "{}",
        refused.message()
    );

    let packs = control
        .list_packs(v1::ListPacksRequest {})
        .await
        .expect("list packs")
        .into_inner()
        .packs;
    assert!(packs.is_empty(), "nothing was installed: {packs:?}");
}

#[tokio::test]
async fn a_pack_with_few_problems_is_refused_the_same_way_for_every_client() {
    let test = TestHive::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("broken");
    broken_pack(&pack, 2);
    let tarball = ultronctl::automation::pack_tarball(&pack).expect("tarball");
    let mut control = test.control().await;
    let refused = control
        .install_pack(v1::InstallPackRequest {
            tarball: tarball.clone(),
            problems_in_response: false,
        })
        .await
        .expect_err("refused");
    let response = control
        .install_pack(v1::InstallPackRequest {
            tarball,
            problems_in_response: true,
        })
        .await
        .expect("refusal in the response")
        .into_inner();
    assert!(response.pack.is_none());
    let refusal = response.refusal.expect("a refusal");
    assert_eq!(refusal.problems.len(), 2);
    assert_eq!(
        refused.message(),
        format!("{}:\n{}", refusal.message, refusal.problems.join("\n"))
    );
}

#[tokio::test]
async fn a_drone_identity_is_refused_on_the_control_service_and_an_operator_on_the_drone_service() {
    let test = TestHive::start().await;
    let refused = test
        .control_as(Caller::Drone { id: "web-1".into() })
        .await
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .expect_err("a drone may not call the control service");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "drone:web-1 may not call the control service; only operator certificates may"
    );

    let refused = test
        .drone_service_as(Caller::Operator {
            name: "admin".into(),
            role: "admin".into(),
        })
        .await
        .heartbeat(v1::HeartbeatRequest::default())
        .await
        .expect_err("an operator may not act as a drone");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("operator:admin"), "{refused:?}");
}

#[tokio::test]
async fn an_anonymous_caller_is_refused_everywhere_but_enroll() {
    let test = TestHive::start().await;
    let refused = test
        .control_as(Caller::Anonymous)
        .await
        .list_drones(v1::ListDronesRequest::default())
        .await
        .expect_err("anonymous");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.message(),
        "this call needs an operator certificate; point ultronctl at the one `ultron8-hive init` wrote"
    );

    let mut drones = test.drone_service_as(Caller::Anonymous).await;
    let refused = drones
        .heartbeat(v1::HeartbeatRequest::default())
        .await
        .expect_err("anonymous");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.message(),
        "this call needs a drone certificate; join the hive first"
    );

    // Enroll is open: its credential is the token, judged by the handler.
    let refused = drones
        .enroll(v1::EnrollRequest {
            token: "u8join1.nope".into(),
            drone_id: "web-1".into(),
            csr_der: Vec::new(),
        })
        .await
        .expect_err("a malformed token");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("malformed join token"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_drone_joins_with_a_token_registers_and_comes_online() {
    let test = TestHive::start().await;
    let token = test
        .control()
        .await
        .create_join_token(v1::CreateJoinTokenRequest {
            labels: [("role".to_string(), "web".to_string())].into(),
            ttl_ms: 0,
        })
        .await
        .expect("token")
        .into_inner();
    let (_key, csr) = ultron8_pki::generate_key_and_csr("web-7").expect("csr");
    let mut anonymous = test.drone_service_as(Caller::Anonymous).await;
    let enroll = v1::EnrollRequest {
        token: token.token.clone(),
        drone_id: "web-7".into(),
        csr_der: csr.clone(),
    };
    let enrolled = anonymous
        .enroll(enroll.clone())
        .await
        .expect("enroll")
        .into_inner();
    assert_eq!(enrolled.labels.get("role").map(String::as_str), Some("web"));
    let reused = anonymous.enroll(enroll).await.expect_err("one-time token");
    assert_eq!(reused.code(), Code::PermissionDenied);
    assert!(reused.message().contains("already used"), "{reused:?}");

    let registered = test
        .drone("web-7")
        .await
        .register(v1::RegisterRequest {
            facts: Some(v1::DroneFacts {
                hostname: "web-7.example".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(registered.queue, "ultron8.drone.web-7");
    let drone = test
        .control()
        .await
        .get_drone(v1::GetDroneRequest { id: "web-7".into() })
        .await
        .expect("drone")
        .into_inner();
    assert!(drone.online);
    let audit = test
        .hive
        .list_audit(&ultron8_store::AuditFilter {
            drone_id: Some("web-7".into()),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.action.as_str() == "drone.enrolled" && a.actor.to_string() == "drone:web-7"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn webhooks_are_stored_or_refused_with_the_status_that_says_why() {
    let config = HiveConfig {
        webhooks: [(
            "deploy".to_string(),
            WebhookConfig {
                token: Some("s3cret".into()),
                hmac_secret: None,
                headers: vec!["X-Source".into()],
            },
        )]
        .into(),
        max_event_bytes: 1024,
        ..HiveConfig::default()
    };
    let test = TestHive::start_with(config).await;
    let router = ultron8_hive::http::router(test.hive.clone());
    let post = |path: &str, token: Option<&str>, body: String| {
        let mut request = Request::post(path).header("x-source", "ci");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Body::from(body)).expect("request")
    };
    let call = |request: Request<Body>| async {
        let response = router.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
        (status, body)
    };

    let (status, body) = call(post(
        "/v1/webhooks/deploy",
        Some("s3cret"),
        r#"{"v": 1}"#.into(),
    ))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["event_id"].as_str().expect("event id");
    let event = test.hive.get_event(&id.into()).await.expect("stored");
    assert_eq!(event.payload["body"]["v"], 1);
    assert_eq!(event.payload["headers"]["x-source"], "ci");
    assert_eq!(event.source, "webhook:deploy");

    let refusals = [
        (
            post("/v1/webhooks/nope", Some("s3cret"), "{}".into()),
            StatusCode::NOT_FOUND,
            "no webhook named \"nope\"",
        ),
        (
            post("/v1/webhooks/deploy", Some("wrong"), "{}".into()),
            StatusCode::UNAUTHORIZED,
            "needs `Authorization: Bearer <token>`",
        ),
        (
            post("/v1/webhooks/deploy", Some("s3cret"), "{".into()),
            StatusCode::BAD_REQUEST,
            "body is not valid JSON",
        ),
        (
            post(
                "/v1/webhooks/deploy",
                Some("s3cret"),
                format!("\"{}\"", "x".repeat(2048)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceeds the limit of 1024 bytes",
        ),
        (
            post(
                "/v1/alertmanager",
                None,
                r#"{"version": "3", "alerts": []}"#.into(),
            ),
            StatusCode::BAD_REQUEST,
            "version \"3\" is not supported",
        ),
        // Postgres cannot store a NUL character in JSON: a body holding one
        // is refused as the sender's mistake (a 4xx it will not retry), on
        // every store, before anything of it is stored.
        (
            post(
                "/v1/webhooks/deploy",
                Some("s3cret"),
                r#"{"path": "/tmp/x\u0000y"}"#.into(),
            ),
            StatusCode::BAD_REQUEST,
            "body.path holds a NUL character",
        ),
        (
            post(
                "/v1/alertmanager",
                None,
                r#"{"version": "4", "alerts": [
                    {"status": "firing", "labels": {"alertname": "A"}},
                    {"status": "firing", "labels": {"alertname": "B\u0000"}}
                ]}"#
                .into(),
            ),
            StatusCode::BAD_REQUEST,
            "alerts.1.labels.alertname holds a NUL character",
        ),
    ];
    for (request, expected, message) in refusals {
        let (status, body) = call(request).await;
        assert_eq!(status, expected, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(message)),
            "{body}"
        );
    }
    let events = test
        .hive
        .list_events(&Default::default())
        .await
        .expect("events");
    assert_eq!(
        events.len(),
        1,
        "refused events are never stored: {events:?}"
    );

    // An unauthenticated caller learns nothing of the webhooks configured.
    let (status, body) = call(post("/v1/webhooks/nope", None, "{}".into())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        !body.to_string().contains("deploy"),
        "the refusal names a configured webhook: {body}"
    );
}

#[tokio::test]
async fn a_rejection_never_changes_an_execution_it_names() {
    // Anyone who can publish to a drone's queue can put a message there
    // that names a real execution's id. The drone refuses it (the signature
    // does not verify) and reports the refusal with the id it claimed; the
    // real request goes on running. The hive must only audit that refusal.
    let test = TestHive::start().await;
    test.add_online_drone("web-1", &[]).await;
    let mut control = test.control().await;
    let job = control
        .submit_job(echo("web-1"))
        .await
        .expect("submit")
        .into_inner();
    let request = tokio::time::timeout(PATIENCE, test.next_request("web-1"))
        .await
        .expect("the hive publishes the request");
    let mut drone = test.drone("web-1").await;
    let running = v1::ExecutionReport {
        execution_id: request.execution_id.clone(),
        status: v1::ExecutionStatus::Running as i32,
        started_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    drone.report_result(running).await.expect("report running");

    let refusal = v1::ExecutionReport {
        execution_id: request.execution_id.clone(),
        status: v1::ExecutionStatus::Rejected as i32,
        error: "signature does not verify: forged or corrupted".into(),
        finished_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    let answer = drone.report_result(refusal).await.expect("report refusal");
    assert!(!answer.into_inner().applied, "the refusal changed nothing");
    let execution = control
        .get_execution(v1::GetExecutionRequest {
            id: request.execution_id.clone(),
        })
        .await
        .expect("get execution")
        .into_inner();
    assert_eq!(
        status_from_wire(execution.status).expect("a status"),
        ExecutionStatus::Running
    );
    let refused = control
        .list_audit(v1::ListAuditRequest {
            drone: "web-1".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .entries;
    let refusal = refused
        .iter()
        .find(|a| a.kind == "drone.refused_request")
        .expect("the refusal is audited");
    assert!(
        refusal.detail_json.contains(&request.execution_id)
            && refusal.detail_json.contains("signature does not verify"),
        "{}",
        refusal.detail_json
    );

    // The real result still lands.
    let finished = v1::ExecutionReport {
        execution_id: request.execution_id.clone(),
        status: v1::ExecutionStatus::Succeeded as i32,
        exit_code: Some(0),
        finished_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    let answer = drone.report_result(finished).await.expect("report result");
    assert!(answer.into_inner().applied);
    let job = control
        .get_job(v1::GetJobRequest { id: job.id })
        .await
        .expect("get job")
        .into_inner();
    assert_eq!(
        status_from_wire(job.executions[0].status).expect("a status"),
        ExecutionStatus::Succeeded
    );
}

#[tokio::test]
async fn anyone_may_ask_the_grpc_health_service_and_only_operators_may_reflect() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let test = TestHive::start().await;
    let answer = HealthClient::new(test.channel(Caller::Anonymous).await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("an anonymous health check is answered")
        .into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);

    let list = || {
        futures::stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    let refused = ServerReflectionClient::new(test.channel(Caller::Anonymous).await)
        .server_reflection_info(list())
        .await
        .expect_err("reflection is for operators");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let operator = Caller::Operator {
        name: OPERATOR.into(),
        role: "admin".into(),
    };
    let mut answers = ServerReflectionClient::new(test.channel(operator).await)
        .server_reflection_info(list())
        .await
        .expect("an operator may reflect")
        .into_inner();
    let answer = answers.next().await.expect("an answer").expect("a listing");
    let Some(MessageResponse::ListServicesResponse(listing)) = answer.message_response else {
        panic!("not a listing: {answer:?}");
    };
    let names: Vec<String> = listing.service.into_iter().map(|s| s.name).collect();
    for service in [
        "ultron8.v1.ControlService",
        "ultron8.v1.DroneService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == service), "{names:?}");
    }
}

#[tokio::test]
async fn status_reports_readiness_the_backlog_the_fleet_and_recent_failures() {
    let test = TestHive::start().await;
    test.add_online_drone("web-1", &[]).await;
    test.add_online_drone("web-2", &[]).await;
    test.add_offline_drone("db-1", &[]).await;
    // Two events wait for the engine (it does not run in this harness).
    for _ in 0..2 {
        test.hive
            .ingest_event("core.webhook", serde_json::json!({ "n": 1 }), "test")
            .await
            .expect("event stored");
    }
    let status = test
        .control()
        .await
        .get_status(v1::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert!(status.store.as_ref().is_some_and(|s| s.up), "{status:?}");
    assert!(status.broker.as_ref().is_some_and(|s| s.up), "{status:?}");
    assert_eq!(status.figures_error, "");
    assert_eq!(status.pending_events, 2);
    assert!(status.oldest_pending_event_at_ms > 0);
    assert_eq!((status.drones_online, status.drones_offline), (2, 1));
    assert_eq!(status.executions_running, 0);
    assert_eq!(status.recent_window_s, 3600);
    assert!(ultronctl::status::ready(&status));
    let screen = ultronctl::status::render_status(&status, chrono::Utc::now());
    assert!(
        screen.contains("Drones:      2 online, 1 offline"),
        "{screen}"
    );
    assert!(screen.contains("Engine:      2 events waiting"), "{screen}");
}

#[tokio::test]
async fn metrics_are_served_in_the_format_the_scraper_asked_for() {
    let test = TestHive::start().await;
    let router = ultron8_hive::http::router(test.hive.clone());
    let scrape = |accept: Option<&'static str>| {
        let router = router.clone();
        async move {
            let mut request = Request::get("/metrics");
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            let response = router
                .oneshot(request.body(Body::empty()).expect("request"))
                .await
                .expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            let content_type = response.headers()["content-type"]
                .to_str()
                .expect("content type")
                .to_string();
            let body = axum::body::to_bytes(response.into_body(), 1 << 22)
                .await
                .expect("body");
            (
                content_type,
                String::from_utf8(body.to_vec()).expect("utf-8"),
            )
        }
    };

    // What Prometheus sends.
    let (content_type, body) = scrape(Some(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ))
    .await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE ultron8_events_received counter\n"));

    // What curl sends, and no header at all.
    for accept in [Some("*/*"), None] {
        let (content_type, body) = scrape(accept).await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!body.contains("# EOF"));
        assert!(body.contains("# TYPE ultron8_events_received_total counter\n"));
        assert!(body.contains("ultron8_build_info{version=\""));
        assert!(body.contains("# TYPE process_resident_memory_bytes gauge\n"));
    }
}

#[tokio::test]
async fn a_canceled_execution_is_never_started_and_a_running_one_gets_a_signed_cancel() {
    let test = TestHive::start().await;
    test.add_online_drone("web-1", &[]).await;
    test.add_online_drone("web-2", &[]).await;
    let mut control = test.control().await;
    let job = control
        .submit_job(echo("web-*"))
        .await
        .expect("submit")
        .into_inner();
    // Both requests are on their drones' queues; web-2 starts its own.
    let on_web1 = test.next_request("web-1").await;
    let on_web2 = test.next_request("web-2").await;
    let mut web2 = test.drone("web-2").await;
    let started = web2
        .report_result(v1::ExecutionReport {
            execution_id: on_web2.execution_id.clone(),
            status: v1::ExecutionStatus::Running as i32,
            started_at_ms: chrono::Utc::now().timestamp_millis(),
            ..Default::default()
        })
        .await
        .expect("report running")
        .into_inner();
    assert!(started.applied && !started.canceled);

    let answer = control
        .cancel_job(v1::CancelJobRequest {
            job_id: job.id.clone(),
            drone_id: String::new(),
        })
        .await
        .expect("cancel")
        .into_inner();
    let outcome = |drone: &str| {
        answer
            .executions
            .iter()
            .find(|e| e.drone_id == drone)
            .map(|e| e.outcome)
    };
    assert_eq!(outcome("web-1"), Some(v1::CancelOutcome::Canceled as i32));
    assert_eq!(outcome("web-2"), Some(v1::CancelOutcome::Signalled as i32));

    // web-1 got its request before the cancel: reporting the start, it is
    // told not to run it.
    let mut web1 = test.drone("web-1").await;
    let refused = web1
        .report_result(v1::ExecutionReport {
            execution_id: on_web1.execution_id.clone(),
            status: v1::ExecutionStatus::Running as i32,
            started_at_ms: chrono::Utc::now().timestamp_millis(),
            ..Default::default()
        })
        .await
        .expect("report running")
        .into_inner();
    assert!(!refused.applied && refused.canceled, "{refused:?}");
    // Both drones were sent a signed cancel naming their execution.
    let cancel = test.next_request("web-1").await;
    assert!(cancel.cancel && cancel.execution_id == on_web1.execution_id);
    let cancel = test.next_request("web-2").await;
    assert!(cancel.cancel && cancel.execution_id == on_web2.execution_id);
    assert!(cancel.command.is_none());

    let job = control
        .get_job(v1::GetJobRequest { id: job.id.clone() })
        .await
        .expect("job")
        .into_inner();
    let status = |drone: &str| {
        job.executions
            .iter()
            .find(|e| e.drone_id == drone)
            .map(|e| status_from_wire(e.status).expect("status"))
    };
    assert_eq!(status("web-1"), Some(ExecutionStatus::Canceled));
    // Running until its drone reports the command stopped.
    assert_eq!(status("web-2"), Some(ExecutionStatus::Running));

    // Canceling only one drone's execution of an unknown drone is refused.
    let refused = control
        .cancel_job(v1::CancelJobRequest {
            job_id: job.id.clone(),
            drone_id: "db-9".into(),
        })
        .await
        .expect_err("no such execution");
    assert_eq!(refused.code(), Code::NotFound);
}
