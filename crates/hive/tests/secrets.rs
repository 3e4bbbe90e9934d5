//! The hive's named secrets, served in-process (see `common`): who may set,
//! list, reveal and delete them, and that an execution's secrets go only
//! to the drone it is assigned to, only while it may run, audited, and
//! never inside the request published for it.

mod common;

use common::TestHive;
use tonic::Code;
use ultron8_core::audit::AuditVerb;
use ultron8_hive::caller::Caller;
use ultron8_proto::v1;

const VALUE: &str = "tok-0123456789-abcdef";

fn operator(role: &str) -> Caller {
    Caller::Operator {
        name: format!("{role}-person"),
        role: role.into(),
    }
}

fn set(name: &str, value: &str) -> v1::SetSecretRequest {
    v1::SetSecretRequest {
        name: name.into(),
        value: value.into(),
    }
}

#[tokio::test]
async fn admins_set_reveal_and_delete_operators_list_and_viewers_see_nothing() {
    let hive = TestHive::start().await;
    let mut admin = hive.control().await;
    let created = admin
        .set_secret(set("api_token", VALUE))
        .await
        .expect("set")
        .into_inner();
    assert!(created.created);
    assert_eq!(created.created_by, "operator:alice");
    let replaced = admin
        .set_secret(set("api_token", "tok-second-value"))
        .await
        .expect("replace")
        .into_inner();
    assert!(!replaced.created);

    let mut op = hive.control_as(operator("operator")).await;
    let listed = op
        .list_secrets(v1::ListSecretsRequest {})
        .await
        .expect("an operator lists")
        .into_inner();
    assert_eq!(listed.secrets.len(), 1);
    assert_eq!(listed.secrets[0].name, "api_token");
    for refused in [
        op.set_secret(set("other", VALUE)).await.map(|_| ()),
        op.get_secret(v1::GetSecretRequest {
            name: "api_token".into(),
        })
        .await
        .map(|_| ()),
        op.delete_secret(v1::DeleteSecretRequest {
            name: "api_token".into(),
        })
        .await
        .map(|_| ()),
    ] {
        let status = refused.expect_err("admins only");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let mut viewer = hive.control_as(operator("viewer")).await;
    let status = viewer
        .list_secrets(v1::ListSecretsRequest {})
        .await
        .expect_err("viewers do not list secrets");
    assert_eq!(status.code(), Code::PermissionDenied);

    let revealed = admin
        .get_secret(v1::GetSecretRequest {
            name: "api_token".into(),
        })
        .await
        .expect("reveal")
        .into_inner();
    assert_eq!(revealed.value, "tok-second-value");

    // Bad input is refused, and a refused value is never quoted.
    let status = admin
        .set_secret(set("db-password", VALUE))
        .await
        .expect_err("bad name");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = admin
        .set_secret(set("short", "abc"))
        .await
        .expect_err("too short");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(!status.message().contains("abc"), "{}", status.message());
    let status = admin
        .get_secret(v1::GetSecretRequest {
            name: "api_tokn".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("did you mean api_token?"),
        "{}",
        status.message()
    );

    admin
        .delete_secret(v1::DeleteSecretRequest {
            name: "api_token".into(),
        })
        .await
        .expect("delete");

    // Every change and the reveal are audited, by whom, without a value.
    let audit = hive
        .hive
        .store
        .list_audit(&Default::default())
        .await
        .expect("audit");
    let verbs: Vec<AuditVerb> = audit.iter().map(|r| r.action).rev().collect();
    assert_eq!(
        verbs
            .iter()
            .filter(|v| v.as_str().starts_with("secret."))
            .collect::<Vec<_>>(),
        [
            &AuditVerb::SecretSet,
            &AuditVerb::SecretSet,
            &AuditVerb::SecretRevealed,
            &AuditVerb::SecretDeleted
        ]
    );
    let text = format!("{audit:?}");
    assert!(
        !text.contains(VALUE) && !text.contains("tok-second-value"),
        "{text}"
    );

    // The store holds sealed values only.
    admin
        .set_secret(set("api_token", VALUE))
        .await
        .expect("set again");
    let stored = hive
        .hive
        .store
        .get_secret("api_token")
        .await
        .expect("get")
        .expect("stored");
    assert!(
        !stored
            .sealed
            .ciphertext
            .windows(VALUE.len())
            .any(|w| w == VALUE.as_bytes())
    );
}

#[tokio::test]
async fn an_executions_secrets_go_to_its_drone_only_while_it_may_run() {
    let hive = TestHive::start().await;
    hive.add_online_drone("d-1", &[]).await;
    hive.add_online_drone("d-2", &[]).await;
    let mut admin = hive.control().await;
    admin
        .set_secret(set("api_token", VALUE))
        .await
        .expect("set");

    let pack = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(pack.path().join("actions")).expect("actions");
    std::fs::write(
        pack.path().join("pack.yaml"),
        "name: vault\nversion: 1.0.0\n",
    )
    .expect("pack");
    std::fs::write(
        pack.path().join("actions/show.yaml"),
        "name: show\nrunner: shell\nenv:\n  TOKEN: \"{{ secret.api_token }}\"\nshell: printf %s {{ secret.api_token }}\n",
    )
    .expect("action");
    let tarball = ultronctl::automation::pack_tarball(pack.path()).expect("tarball");
    let installed = admin
        .install_pack(v1::InstallPackRequest {
            tarball,
            problems_in_response: true,
        })
        .await
        .expect("install")
        .into_inner();
    assert!(installed.refusal.is_none(), "{:?}", installed.refusal);

    let job = admin
        .run_action(v1::RunActionRequest {
            action: "vault.show".into(),
            parameters_json: "{}".into(),
            target: "d-1".into(),
            ttl_ms: 0,
        })
        .await
        .expect("run")
        .into_inner();
    let request = hive.next_request("d-1").await;
    assert_eq!(request.job_id, job.id);
    let command = request.command.as_ref().expect("command");
    assert_eq!(
        command.program,
        Some(v1::command::Program::Shell(
            "printf %s \"$ULTRON8_SECRET_api_token\"".into()
        ))
    );
    assert_eq!(command.secret_env.len(), 2, "{:?}", command.secret_env);
    assert!(!format!("{request:?}").contains(VALUE));

    let ask = |drone: &'static str| {
        let hive = &hive;
        let execution_id = request.execution_id.clone();
        async move {
            hive.drone(drone)
                .await
                .get_execution_secrets(v1::GetExecutionSecretsRequest { execution_id })
                .await
        }
    };
    // Another drone learns nothing, not even that the execution exists.
    let status = ask("d-2").await.expect_err("not its execution");
    assert_eq!(status.code(), Code::NotFound);
    // Its own drone gets every variable it needs.
    let env = ask("d-1").await.expect("its own").into_inner().env;
    assert_eq!(env.get("TOKEN").map(String::as_str), Some(VALUE));
    assert_eq!(
        env.get("ULTRON8_SECRET_api_token").map(String::as_str),
        Some(VALUE)
    );

    // Once it has finished, nobody does.
    let mut drone = hive.drone("d-1").await;
    drone
        .report_result(v1::ExecutionReport {
            execution_id: request.execution_id.clone(),
            status: v1::ExecutionStatus::Succeeded as i32,
            exit_code: Some(0),
            finished_at_ms: chrono::Utc::now().timestamp_millis(),
            ..Default::default()
        })
        .await
        .expect("report");
    let status = ask("d-1").await.expect_err("finished");
    assert_eq!(status.code(), Code::FailedPrecondition);

    // The one delivery is audited under the drone, naming the secret.
    let audit = hive
        .hive
        .store
        .list_audit(&Default::default())
        .await
        .expect("audit");
    let delivered: Vec<_> = audit
        .iter()
        .filter(|r| r.action == AuditVerb::SecretsDelivered)
        .collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].actor.to_string(), "drone:d-1");
    assert_eq!(
        delivered[0].detail["names"],
        serde_json::json!(["api_token"])
    );

    // A job needing a secret that is not set is refused before anything
    // is created.
    admin
        .delete_secret(v1::DeleteSecretRequest {
            name: "api_token".into(),
        })
        .await
        .expect("delete");
    let status = admin
        .run_action(v1::RunActionRequest {
            action: "vault.show".into(),
            parameters_json: "{}".into(),
            target: "d-1".into(),
            ttl_ms: 0,
        })
        .await
        .expect_err("no such secret");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("needs secret api_token, which is not set"),
        "{}",
        status.message()
    );
}
