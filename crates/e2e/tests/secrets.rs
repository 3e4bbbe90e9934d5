//! Secrets end to end: set with ultronctl, used by a pack action as
//! `{{ secret.NAME }}`, delivered to the drone over mutual TLS just before
//! the command starts, and nowhere in clear on the way: not in the message
//! through the broker, not in the process table of the drone's host, not in
//! the live output (even written in two pieces), not in the database.

use std::io::Write;
use std::process::{Command, Stdio};

use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use prost::Message;
use ultron8_e2e::{DEADLINE, Hive, TestEnv, bin, start_drones, stderr, stdout, wait_for};
use ultron8_proto::v1;

/// 23 characters: the script prints its first 11, then its last 12.
const VALUE: &str = "S3cr3t-Value-0123456789";

const ACTION: &str = r#"name: show
description: Uses a secret in its script and its environment.
runner: shell
timeout: 60s
parameters:
  dir: {type: string, required: true}
env:
  TOKEN: "{{ secret.api_token }}"
shell: |
  S={{ secret.api_token }}
  echo $$ > {{ dir }}/pid
  while [ ! -e {{ dir }}/go ]; do sleep 0.05; done
  printf 'begin:'
  printf %s "${S%????????????}"
  sleep 0.3
  printf %s "${S#???????????}"
  printf ':end\n'
  printf 'sha256:%s\n' "$(printf %s "$S" | sha256sum | cut -d' ' -f1)"
  [ "$TOKEN" = "$S" ] && echo env-ok
"#;

fn ctl_with_stdin(hive: &Hive, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(bin("ultronctl"))
        .args(args)
        .env("ULTRONCTL_CONFIG", hive.ctl_config())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ultronctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("ultronctl output")
}

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every row of every table of the hive's database, as Postgres prints
/// rows (bytea in hex).
fn whole_database(env: &TestEnv) -> String {
    let tables = env.query_strings(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    );
    assert!(tables.iter().any(|t| t == "secrets"), "{tables:?}");
    tables
        .iter()
        .map(|table| {
            env.query_strings(&format!(
                "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {table} t"
            ))
            .join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_secret_reaches_the_command_and_nowhere_else_in_clear() {
    let env = TestEnv::new("secrets");
    let hive = Hive::start(&env);
    let _drones = start_drones(&env, &hive, &["s-1"]);

    // A copy of every message published in this test's vhost.
    let output = Command::new("rabbitmqctl")
        .args(["trace_on", "-p", &env.vhost])
        .output()
        .expect("rabbitmqctl trace_on");
    assert!(output.status.success(), "{}", stderr(&output));
    let (_connection, channel) = env.block_on(async {
        let connection =
            lapin::Connection::connect(&env.amqp_url, lapin::ConnectionProperties::default())
                .await
                .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .queue_declare(
                "firehose".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare");
        channel
            .queue_bind(
                "firehose".into(),
                "amq.rabbitmq.trace".into(),
                "publish.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        (connection, channel)
    });

    // Set it the way an admin does: piped in, never on the command line.
    let output = ctl_with_stdin(&hive, &["secret", "set", "api_token"], VALUE);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "secret api_token created");
    let listed = hive.ctl_json(&["secret", "list", "-o", "json"]);
    assert_eq!(listed[0]["name"], "api_token", "{listed}");
    assert!(!listed.to_string().contains(VALUE), "{listed}");

    let pack = env.dir.join("vault");
    std::fs::create_dir_all(pack.join("actions")).expect("pack dir");
    std::fs::write(pack.join("pack.yaml"), "name: vault\nversion: 1.0.0\n").expect("pack.yaml");
    std::fs::write(pack.join("actions/show.yaml"), ACTION).expect("action");
    let output = hive.ctl(&["pack", "install", &pack.display().to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));

    let work = env.dir.join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let dir = format!("dir={}", work.display());
    let output = hive.ctl(&["run", "vault.show", &dir, "-t", "s-1", "--async"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let job_id = stdout(&output).trim().to_string();

    // While the command runs: its process table entry holds a reference
    // to the variable, not the value.
    let pid: i32 = wait_for("the command to start", DEADLINE, || {
        std::fs::read_to_string(work.join("pid"))
            .map_err(|e| e.to_string())?
            .trim()
            .parse()
            .map_err(|e| format!("{e}"))
    });
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(
        cmdline.contains("\"$ULTRON8_SECRET_api_token\""),
        "{cmdline}"
    );
    assert!(!cmdline.contains(VALUE), "{cmdline}");
    std::fs::write(work.join("go"), "").expect("go");

    let job = hive.wait_for_job(&job_id);
    let execution = &job["executions"][0];
    assert_eq!(execution["status"], "succeeded", "{job}");
    let out = execution["stdout"].as_str().expect("stdout");
    // It worked: the command had the value, whole, in its script and env.
    assert!(
        out.contains(&format!("sha256:{}", sha256_hex(VALUE))),
        "{out}"
    );
    assert!(out.contains("env-ok"), "{out}");
    // And printed in two writes, it is masked in the result.
    assert!(out.contains("begin:********:end"), "{out}");
    assert!(!job.to_string().contains(VALUE), "{job}");

    // The live chunks, as stored: each masked, and whole only masked.
    let chunks = env.query_strings(
        "SELECT convert_from(data, 'UTF8') FROM execution_output WHERE stream = 'stdout' ORDER BY byte_offset",
    );
    assert!(chunks.len() >= 2, "written in several chunks: {chunks:?}");
    let streamed = chunks.concat();
    assert!(streamed.contains("begin:********:end"), "{chunks:?}");
    assert!(
        !streamed.contains(VALUE) && !streamed.contains(&VALUE[..11]),
        "{chunks:?}"
    );

    // The message through the broker names the secret, never its value.
    let messages = env.block_on(async {
        let mut bodies = Vec::new();
        while let Some(message) = channel
            .basic_get("firehose".into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            bodies.push(message.delivery.data);
        }
        bodies
    });
    let requests: Vec<v1::ActionRequest> = messages
        .iter()
        .filter_map(|body| v1::SignedActionRequest::decode(body.as_slice()).ok())
        .filter_map(|signed| v1::ActionRequest::decode(signed.request.as_slice()).ok())
        .filter(|request| request.job_id == job_id)
        .collect();
    assert!(
        !requests.is_empty(),
        "{} messages, none of the job",
        messages.len()
    );
    for body in &messages {
        assert!(
            !body.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()),
            "a message holds the value"
        );
    }
    let command = requests[0].command.as_ref().expect("command");
    assert_eq!(
        command.secret_env.get("TOKEN").map(String::as_str),
        Some("api_token")
    );
    assert_eq!(
        command
            .secret_env
            .get("ULTRON8_SECRET_api_token")
            .map(String::as_str),
        Some("api_token")
    );
    assert!(command.redact.is_empty(), "{:?}", command.redact);

    // The audit trail says who set it and which drone got it, never what.
    let audit = hive.ctl_json(&["audit", "list", "-o", "json"]);
    let text = audit.to_string();
    assert!(text.contains("secret.set"), "{text}");
    assert!(text.contains("secret.delivered"), "{text}");
    assert!(!text.contains(VALUE), "{text}");

    // The database holds it nowhere in clear: not in the secrets table, the
    // job's command, the output or the audit trail.
    let database = whole_database(&env);
    let hex: String = VALUE.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!database.contains(VALUE), "the value is in the database");
    assert!(
        !database.contains(&hex),
        "the value is in the database (bytea)"
    );
    assert!(database.contains("api_token"));

    // An admin may read it back, on purpose, and that is audited.
    let output = hive.ctl(&["secret", "get", "api_token", "--reveal"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), VALUE);
    let audit = hive.ctl_json(&["audit", "list", "-o", "json"]);
    assert!(audit.to_string().contains("secret.revealed"), "{audit}");

    // Without the secret, the action is refused before anything runs.
    let output = hive.ctl(&["secret", "delete", "api_token"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = hive.ctl(&["run", "vault.show", &dir, "-t", "s-1", "--async"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("needs secret api_token, which is not set"),
        "{}",
        stderr(&output)
    );
}
