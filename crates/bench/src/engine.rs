//! `ultron8-bench engine`: the rules engine's throughput on a real store.
//!
//! One run, on a database of its own:
//!
//! 1. Installs a pack through the hive's real install path: one action that
//!    runs on drones and `--rules` rules on `alertmanager.alert`, of which
//!    exactly one matches the events below (the others differ in
//!    `labels.alertname`, so every one of them is evaluated and misses).
//! 2. Enrolls and registers `--drones` drones (online; no process behind
//!    them: the engine's work ends at dispatch, and the requests wait in
//!    the broker until they expire).
//! 3. Optionally stores `--history` processed events, finished jobs and
//!    executions of the matching rule, and audit records, as months of
//!    operation would leave them.
//! 4. For each of `--rounds` rounds: stores `--events` pending events, then
//!    starts the real rules engine (`Hive::run_rules_engine`) and times it
//!    until no event is pending, with Postgres's own counters (transactions,
//!    rows fetched and inserted) read before and after.
//!
//! Prints one line per round and min/median/max of the rate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Parser;
use serde_json::json;
use sqlx::postgres::PgPool;
use tokio_util::sync::CancellationToken;
use ultron8_broker::ActionPublisher;
use ultron8_core::ids::DroneId;
use ultron8_hive::config::HiveConfig;
use ultron8_hive::hive::Hive;
use ultron8_hive::ids::new_event_id;
use ultron8_store::postgres::PgStore;
use ultron8_store::{DroneEnrollment, NewEvent, Store};

#[derive(Parser, Debug)]
#[command(
    name = "ultron8-bench engine",
    about = "Rules-engine throughput on Postgres: events processed per second with N rules on the trigger, one of which matches",
    after_help = "Example: cargo run --release -p ultron8-bench -- engine --rules 100 --events 2000 --history 1000000"
)]
pub struct EngineArgs {
    /// Postgres server (a database of its own is created on it and dropped
    /// afterwards)
    #[arg(
        long,
        env = "ULTRON8_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Rules on the trigger; exactly one matches each event
    #[arg(long, default_value_t = 100)]
    rules: usize,
    /// Events per round
    #[arg(long, default_value_t = 2000)]
    events: usize,
    /// Rounds, each with fresh pending events on the same database
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Online drones in the fleet
    #[arg(long, default_value_t = 10)]
    drones: usize,
    /// Processed events, finished executions and audit records stored before
    /// the first round
    #[arg(long, default_value_t = 0)]
    history: u64,
    /// Publish to RabbitMQ at this URL instead of the in-process broker.
    /// Give it a vhost of its own (`rabbitmqctl add_vhost ultron8-bench`,
    /// `set_permissions -p ultron8-bench guest '.*' '.*' '.*'`): the
    /// drones' queues are declared there and keep the requests until they
    /// expire
    #[arg(long, value_name = "URL")]
    amqp_url: Option<String>,
    /// Keep the database afterwards (to look at it)
    #[arg(long)]
    keep: bool,
}

/// What Postgres counted for the benchmark's database.
#[derive(Debug, Clone, Copy)]
struct Counters {
    transactions: i64,
    fetched: i64,
    returned: i64,
    inserted: i64,
}

async fn counters(admin: &PgPool, database: &str) -> anyhow::Result<Counters> {
    let (transactions, fetched, returned, inserted): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT xact_commit + xact_rollback, tup_fetched, tup_returned, tup_inserted \
         FROM pg_stat_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_one(admin)
    .await?;
    Ok(Counters {
        transactions,
        fetched,
        returned,
        inserted,
    })
}

/// The counters once every backend has reported. A Postgres backend
/// publishes its statistics at the end of a transaction at most once a
/// second, and otherwise after ten idle seconds, so they are read until
/// they have not moved for twelve seconds (bounded to a minute).
async fn settled_counters(admin: &PgPool, database: &str) -> anyhow::Result<Counters> {
    let mut last = counters(admin, database).await?;
    let mut unchanged = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Each read in a fresh snapshot. The reads are transactions of the
        // admin database, not of the measured one.
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(admin)
            .await?;
        let now = counters(admin, database).await?;
        if (now.transactions, now.fetched, now.inserted)
            == (last.transactions, last.fetched, last.inserted)
        {
            unchanged += 1;
            if unchanged == 8 {
                return Ok(now);
            }
        } else {
            unchanged = 0;
        }
        last = now;
    }
    bail!("Postgres's statistics for {database} did not settle")
}

pub async fn run(args: EngineArgs) -> anyhow::Result<()> {
    if args.rules == 0 || args.events == 0 || args.rounds == 0 {
        bail!("--rules, --events and --rounds must be at least 1");
    }
    let admin = PgPool::connect(&args.database_url)
        .await
        .with_context(|| format!("cannot connect to {}", args.database_url))?;
    let database = format!("ultron8_bench_{}", std::process::id());
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&admin)
        .await
        .context("cannot create the benchmark's database")?;
    let url = database_url_for(&args.database_url, &database)?;
    let result = bench(&args, &admin, &database, &url).await;
    if !args.keep {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .execute(&admin)
            .await
            .context("cannot drop the benchmark's database")?;
    } else {
        eprintln!("kept database {database}");
    }
    result
}

pub(crate) fn database_url_for(server: &str, database: &str) -> anyhow::Result<String> {
    let (base, _) = server
        .rsplit_once('/')
        .context("--database-url has no database part")?;
    Ok(format!("{base}/{database}"))
}

async fn bench(args: &EngineArgs, admin: &PgPool, database: &str, url: &str) -> anyhow::Result<()> {
    let store = PgStore::connect(url).await?;
    let pool = store.pool().clone();
    let store: Arc<dyn Store> = Arc::new(store);
    let publisher: Arc<dyn ActionPublisher> = match &args.amqp_url {
        Some(url) => Arc::new(ultron8_broker::amqp::AmqpPublisher::connect(url).await?),
        None => Arc::new(ultron8_broker::inproc::InProcessBroker::new()),
    };
    let ca = ultron8_pki::CertificateAuthority::generate("ultron8 bench")?;
    let signing_key = ultron8_pki::RequestSigningKey::from_pkcs8(
        &ultron8_pki::RequestSigningKey::generate_pkcs8()?,
    )?;
    let hive = Arc::new(Hive::new(
        HiveConfig::default(),
        store.clone(),
        publisher.clone(),
        ca,
        signing_key,
    )?);

    let tarball = pack_tarball(args.rules)?;
    hive.install_pack(
        &ultron8_hive::actor::Actor::Operator("bench".into()),
        &tarball,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = Utc::now();
    for i in 0..args.drones {
        let id = DroneId::new(drone_id(i));
        store
            .record_enrollment(&DroneEnrollment {
                drone_id: id.clone(),
                certificate_fingerprint: format!("bench-{i}"),
                certificate_not_after: now + chrono::Duration::days(1),
                labels: BTreeMap::new(),
                token_id: format!("bench-{i}"),
                enrolled_at: now,
            })
            .await?;
        store
            .record_registration(&id, &facts(id.as_str()), now)
            .await?;
        publisher.ensure_drone_queue(id.as_str()).await?;
    }
    if args.history > 0 {
        let started = Instant::now();
        store_history(
            &pool,
            args.history,
            &format!("bench.rule_{:04}", args.rules - 1),
        )
        .await?;
        eprintln!(
            "stored {} events, jobs, executions and audit records of history in {:.1?}",
            args.history,
            started.elapsed()
        );
    }

    println!(
        "rules engine on Postgres, {} broker: {} rules on the trigger (1 matches), {} events a round, {} drones, {} history",
        if args.amqp_url.is_some() {
            "RabbitMQ"
        } else {
            "in-process"
        },
        args.rules,
        args.events,
        args.drones,
        args.history
    );
    let mut rates = Vec::new();
    let mut processed_target = 0;
    for round in 1..=args.rounds {
        for _ in 0..args.events {
            store.record_event(&event()).await?;
        }
        let before = settled_counters(admin, database).await?;
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let engine = tokio::spawn(hive.clone().run_rules_engine(shutdown.clone()));
        processed_target += args.events as u64;
        wait_until_processed(&hive, processed_target, Duration::from_secs(600)).await?;
        let elapsed = started.elapsed();
        shutdown.cancel();
        engine.await?;
        let after = settled_counters(admin, database).await?;
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE state = 'failed'")
            .fetch_one(&pool)
            .await?;
        if failed > 0 {
            bail!("{failed} events failed; the benchmark is measuring errors");
        }
        let n = args.events as f64;
        let rate = n / elapsed.as_secs_f64();
        rates.push(rate);
        println!(
            "round {round}: {} events in {:.2?}: {:>8.0} events/s; per event {:.1} transactions, {:.0} rows fetched, {:.0} returned, {:.1} inserted",
            args.events,
            elapsed,
            rate,
            (after.transactions - before.transactions) as f64 / n,
            (after.fetched - before.fetched) as f64 / n,
            (after.returned - before.returned) as f64 / n,
            (after.inserted - before.inserted) as f64 / n,
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "events/s: min {:.0}, median {:.0}, max {:.0}",
        rates[0],
        rates[rates.len() / 2],
        rates[rates.len() - 1]
    );
    pool.close().await;
    Ok(())
}

/// Waits on the engine's own counter, so the wait adds nothing to what
/// Postgres counts.
async fn wait_until_processed(hive: &Hive, target: u64, deadline: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let processed = hive.metrics.events_processed_total();
        if processed >= target {
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!(
                "{} events still pending after {deadline:?}",
                target - processed
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn drone_id(i: usize) -> String {
    format!("bench-{i}")
}

fn facts(id: &str) -> ultron8_core::DroneFacts {
    ultron8_core::DroneFacts {
        hostname: id.to_string(),
        ..Default::default()
    }
}

/// An alert the one matching rule fires on, for a host of the fleet.
fn event() -> NewEvent {
    NewEvent {
        id: new_event_id(),
        trigger: "alertmanager.alert".to_string(),
        payload: json!({
            "status": "firing",
            "labels": {
                "alertname": "ServiceDown",
                "instance": drone_id(0),
                "service": "nginx",
                "severity": "critical",
            },
            "annotations": {"summary": "nginx is down"},
        }),
        source: "bench".to_string(),
        received_at: Utc::now(),
        idempotency_key: None,
    }
}

/// The pack: one drone action and `rules` rules shaped like the
/// alertmanager pack's, all but the last on other alert names.
fn pack_tarball(rules: usize) -> anyhow::Result<Vec<u8>> {
    let mut files: Vec<(String, String)> = vec![
        (
            "pack.yaml".into(),
            "name: bench\nversion: 1.0.0\ndescription: rules-engine benchmark\nauthor: bench\n".into(),
        ),
        (
            "actions/restart.yaml".into(),
            "name: restart\ndescription: restart a service\nrunner: shell\ncommand: [/bin/true, \"{{ service }}\"]\nparameters:\n  service: {type: string, required: true}\n".into(),
        ),
    ];
    for i in 0..rules {
        let alertname = if i + 1 == rules {
            "ServiceDown".to_string()
        } else {
            format!("Other{i}")
        };
        files.push((
            format!("rules/rule_{i:04}.yaml"),
            format!(
                "name: rule_{i:04}\ndescription: benchmark rule\nenabled: true\ntrigger: alertmanager.alert\n\
                 criteria:\n  - {{path: status, op: equals, value: firing}}\n  - {{path: labels.alertname, op: equals, value: {alertname}}}\n  - {{path: labels.service, op: exists}}\n  - {{path: labels.instance, op: regex, value: \"^bench-[0-9]+$\"}}\n\
                 action:\n  ref: bench.restart\n  target: \"{{{{ labels.instance }}}}\"\n  parameters:\n    service: \"{{{{ labels.service }}}}\"\n"
            ),
        ));
    }
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, content.as_bytes())?;
    }
    Ok(builder.into_inner()?.finish()?)
}

/// Months of operation: processed events, the matching rule's finished jobs
/// with one execution each, and an audit record per job, written with set
/// operations (a million of each takes about a minute).
async fn store_history(pool: &PgPool, count: u64, rule: &str) -> anyhow::Result<()> {
    let count = i64::try_from(count).context("--history is too large")?;
    // Ids below any uuid v7 of today, so the history is older than the
    // rounds' events in every order the store uses.
    for statement in [
        "INSERT INTO events (id, trigger, payload, source, received_at, state, processed_at) \
         SELECT '0000-event-' || lpad(n::text, 12, '0'), 'alertmanager.alert', \
                jsonb_build_object('status', 'firing', 'rule', $2::text), 'history', \
                now() - interval '30 days', 'processed', now() - interval '30 days' \
         FROM generate_series(1, $1) AS n",
        "INSERT INTO jobs (id, target, requester, command, created_at, action_ref, rule, event_id) \
         SELECT '0000-job-' || lpad(n::text, 12, '0'), 'bench-0', 'rule:' || $2, \
                '{\"program\": {\"argv\": [\"/bin/true\"]}, \"env\": {}, \"working_dir\": null, \
                  \"timeout_ms\": null, \"output_limit_bytes\": null, \"redact\": []}'::jsonb, \
                now() - interval '30 days', 'bench.restart', $2, \
                '0000-event-' || lpad(n::text, 12, '0') \
         FROM generate_series(1, $1) AS n",
        "INSERT INTO executions (id, job_id, drone_id, status, created_at, expires_at, finished_at) \
         SELECT '0000-exec-' || lpad(n::text, 12, '0'), '0000-job-' || lpad(n::text, 12, '0'), \
                'bench-' || (n % 10), 'succeeded', now() - interval '30 days', \
                now() - interval '30 days', now() - interval '30 days' \
         FROM generate_series(1, $1) AS n",
        "INSERT INTO audit_log (id, at, actor, action, job_id, event_id, rule, action_ref, detail) \
         SELECT '0000-audit-' || lpad(n::text, 12, '0'), now() - interval '30 days', 'hive', \
                'rule.fired', '0000-job-' || lpad(n::text, 12, '0'), \
                '0000-event-' || lpad(n::text, 12, '0'), $2, 'bench.restart', '{}'::jsonb \
         FROM generate_series(1, $1) AS n",
    ] {
        sqlx::query(statement)
            .bind(count)
            .bind(rule)
            .execute(pool)
            .await
            .with_context(|| format!("storing history: {statement}"))?;
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}
