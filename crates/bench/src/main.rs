//! `cargo run --release -p ultron8-bench`: times the pure hot paths of the
//! hive and drone and prints one line per benchmark.
//! `cargo run --release -p ultron8-bench -- engine`: the rules engine's
//! throughput on Postgres (see [`engine`]).
//! `cargo run --release -p ultron8-bench -- fleet`: discovery of 5,000
//! instances and the fleet views over them (see [`fleet`]). The method and the numbers of
//! record are in docs/benchmarks.md.
//!
//! Each benchmark runs a warm-up, then repeats its operation for a fixed
//! count and reports the median of five such rounds, so one noisy round on
//! a shared machine does not decide the result.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::json;
use ultron8_core::criteria::{self, Criterion, Operator};
use ultron8_core::target::{self, TargetSubject};
use ultron8_core::template;
use ultron8_proto::v1;

mod engine;
mod fleet;

const ROUNDS: usize = 5;

fn bench(name: &str, unit: &str, iterations: u64, mut operation: impl FnMut()) {
    for _ in 0..iterations.div_ceil(10) {
        operation();
    }
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                operation();
            }
            start.elapsed()
        })
        .collect();
    rounds.sort();
    let median = rounds[ROUNDS / 2];
    let per = median / iterations as u32;
    let rate = iterations as f64 / median.as_secs_f64();
    println!("{name:<48} {per:>12.2?} per {unit:<10} {rate:>14.0} {unit}s/s");
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("engine") {
        use clap::Parser;
        let args = engine::EngineArgs::parse_from(std::env::args().skip(1));
        let runtime = tokio::runtime::Runtime::new()?;
        return runtime.block_on(engine::run(args));
    }
    if std::env::args().nth(1).as_deref() == Some("fleet") {
        use clap::Parser;
        let args = fleet::FleetArgs::parse_from(std::env::args().skip(1));
        let runtime = tokio::runtime::Runtime::new()?;
        return runtime.block_on(fleet::run(args));
    }
    hot_paths();
    Ok(())
}

fn hot_paths() {
    println!("{:<48} {:>12} {:>25}", "benchmark", "median", "throughput");

    // Target resolution: every drone of a 10,000-drone fleet against one
    // boolean expression, as SubmitJob does.
    let fleet: Vec<(String, BTreeMap<String, String>)> = (0..10_000)
        .map(|i| {
            let role = ["web", "db", "cache", "batch"][i % 4];
            let labels = BTreeMap::from([
                ("role".to_string(), role.to_string()),
                ("zone".to_string(), format!("z{}", i % 3)),
            ]);
            (format!("{role}-{i}"), labels)
        })
        .collect();
    let expr = target::parse("label:role=web and not (web-3* or label:zone=z2)").expect("target");
    bench("target: match 10,000 drones", "fleet", 200, || {
        let matched = fleet
            .iter()
            .filter(|(id, labels)| {
                expr.matches(&TargetSubject {
                    id,
                    hostname: id,
                    labels,
                })
            })
            .count();
        black_box(matched);
    });
    bench("target: parse an expression", "parse", 100_000, || {
        black_box(
            target::parse(black_box(
                "label:role=web and not (web-3* or label:zone=z2)",
            ))
            .ok(),
        );
    });

    // Rule evaluation: the alertmanager pack's criteria on an alert.
    let alert = json!({
        "status": "firing",
        "labels": {"alertname": "ServiceDown", "instance": "web-1", "service": "nginx", "severity": "critical"},
        "annotations": {"summary": "nginx is down"},
        "starts_at": "2026-11-22T00:00:00Z",
    });
    let criteria = vec![
        Criterion::Match {
            path: "status".into(),
            op: Operator::Equals,
            value: Some(json!("firing")),
        },
        Criterion::Match {
            path: "labels.alertname".into(),
            op: Operator::In,
            value: Some(json!(["ServiceDown", "ProbeFailed"])),
        },
        Criterion::Match {
            path: "labels.service".into(),
            op: Operator::Exists,
            value: None,
        },
        Criterion::Match {
            path: "labels.instance".into(),
            op: Operator::Regex,
            value: Some(json!("^web-[0-9]+$")),
        },
    ];
    let now = chrono::Utc::now();
    bench("criteria: 4 criteria on an alert", "event", 200_000, || {
        black_box(criteria::evaluate(&criteria, black_box(&alert), now));
    });
    // What the rules engine does for a rule that misses: the second of four
    // criteria fails. With reasons (rule test), and without (the engine).
    let mut miss = criteria.clone();
    miss[1] = Criterion::Match {
        path: "labels.alertname".into(),
        op: Operator::Equals,
        value: Some(json!("DiskFull")),
    };
    bench("criteria: a miss, explained", "event", 200_000, || {
        black_box(criteria::evaluate(&miss, black_box(&alert), now));
    });
    bench("criteria: a miss, verdict only", "event", 200_000, || {
        black_box(criteria::matches(&miss, black_box(&alert), now));
    });

    // Rendering a rule's parameters and target from the payload.
    let parameters = json!({"service": "{{ labels.service }}", "message": "{{ labels.alertname }} on {{ labels.instance }}"});
    bench("template: render 2 parameters", "event", 50_000, || {
        black_box(template::render_value(&parameters, &alert).ok());
    });

    // Signing and verifying one ActionRequest: once per execution on the
    // hive, once per delivery on the drone.
    let pkcs8 = ultron8_pki::RequestSigningKey::generate_pkcs8().expect("key");
    let key = ultron8_pki::RequestSigningKey::from_pkcs8(&pkcs8).expect("key");
    let verifier = ultron8_pki::RequestVerifier::new(key.public_key());
    let request = v1::ActionRequest {
        job_id: "01a200cf-0c37-75ec-917b-fa18a8c8de89".into(),
        execution_id: "01a200cf-0c37-75ec-917b-fa18a8c8de8a".into(),
        drone_id: "web-1".into(),
        issued_at_ms: 1,
        expires_at_ms: 2,
        command: Some(v1::Command {
            program: Some(v1::command::Program::Argv(v1::Argv {
                args: vec!["systemctl".into(), "restart".into(), "nginx".into()],
            })),
            ..Default::default()
        }),
        requester: "operator:admin".into(),
        cancel: false,
        action: String::new(),
    }
    .encode_to_vec();
    bench("signing: sign an ActionRequest", "request", 20_000, || {
        black_box(key.sign(black_box(&request)));
    });
    let signature = key.sign(&request);
    bench(
        "signing: verify an ActionRequest",
        "request",
        20_000,
        || {
            black_box(verifier.verify(black_box(&request), &signature).is_ok());
        },
    );

    // Validating a whole pack, as `pack install` does before writing.
    let packs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packs");
    let linux = ultron8_pack::read_dir(&packs.join("linux")).expect("packs/linux");
    bench(
        "pack: validate packs/linux (6 actions)",
        "install",
        2_000,
        || {
            black_box(ultron8_pack::load(&linux, &ultron8_pack::NothingInstalled).is_ok());
        },
    );
}
