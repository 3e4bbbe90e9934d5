//! `ultron8-bench fleet`: discovery of a large fleet and the fleet views
//! over it, on Postgres.
//!
//! A cloud API in the same process (axum on 127.0.0.1, the seed-004 shape:
//! `GET /servers`, `GET /{id}`) lists `--instances` instances with ids
//! `127.x.y.z`. Each round times, apart:
//!
//! 1. **fetch**: the hive's `discovery::fetch_http`, the list and one
//!    request per instance, `--concurrency` in flight;
//! 2. **merge**: `core::discovery::merge` of that refresh into the previous
//!    inventory (histories grow to their bound over the rounds);
//! 3. **store**: claiming the source and `Store::finish_source_refresh`
//!    (every instance of the source replaced in one transaction);
//! 4. **services**: what `ultronctl fleet services` costs the hive:
//!    `Store::list_targets` and `core::discovery::summarize_services`;
//! 5. **summary**: `fleet summary --sort cpu --desc`: the same read and a
//!    sort.
//!
//! and prints min, median and max over the rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Parser;
use sqlx::PgPool;
use ultron8_core::discovery::{
    SortKey, SourceSpec, Thresholds, merge, sort_instances, summarize_services,
};
use ultron8_store::postgres::PgStore;
use ultron8_store::{NewAuditRecord, NewSource, SourceRefresh, Store, TargetFilter};

#[derive(Parser, Debug)]
#[command(name = "ultron8-bench fleet")]
pub struct FleetArgs {
    /// Postgres server (a database of its own is created and dropped)
    #[arg(
        long,
        env = "ULTRON8_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Instances the API lists
    #[arg(long, default_value_t = 5000)]
    instances: usize,
    /// Instance requests in flight
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    #[arg(long, default_value_t = 7)]
    rounds: usize,
}

const SERVICES: [&str; 10] = [
    "IdService",
    "RoleService",
    "StorageService",
    "AuthService",
    "MLService",
    "UserService",
    "GeoService",
    "TicketService",
    "TimeService",
    "PermissionsService",
];

/// Instance `i`'s id: `127.x.y.z`, loopback whatever `i`.
fn id(i: usize) -> String {
    format!(
        "127.{}.{}.{}",
        1 + i / 62_500 % 254,
        i / 250 % 250,
        1 + i % 250
    )
}

async fn serve_api(instances: usize) -> anyhow::Result<String> {
    use axum::extract::Path;
    let ids: Arc<Vec<String>> = Arc::new((0..instances).map(id).collect());
    let list = ids.clone();
    let app = axum::Router::new()
        .route(
            "/servers",
            axum::routing::get(move || {
                let list = list.clone();
                async move { axum::Json(list.as_ref().clone()) }
            }),
        )
        .route(
            "/{id}",
            axum::routing::get(|Path(id): Path<String>| async move {
                // Figures that vary with the id, as a real fleet's do.
                let seed = id
                    .bytes()
                    .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                axum::Json(serde_json::json!({
                    "cpu": format!("{}%", seed % 100),
                    "memory": format!("{}%", seed / 100 % 100),
                    "service": SERVICES[(seed / 10_000 % 10) as usize],
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    if args.instances == 0 || args.rounds == 0 {
        bail!("--instances and --rounds must be at least 1");
    }
    let admin = PgPool::connect(&args.database_url)
        .await
        .with_context(|| format!("cannot connect to {}", args.database_url))?;
    let database = format!("ultron8_bench_fleet_{}", std::process::id());
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&admin)
        .await
        .context("cannot create the benchmark's database")?;
    let url = crate::engine::database_url_for(&args.database_url, &database)?;
    let result = bench(&args, &url).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .execute(&admin)
        .await
        .context("cannot drop the benchmark's database")?;
    result
}

async fn bench(args: &FleetArgs, url: &str) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(url).await?);
    let api = serve_api(args.instances).await?;
    let client = ultron8_hive::discovery::http_client()?;
    let now = Utc::now();
    let audit = NewAuditRecord {
        id: ultron8_hive::ids::new_audit_id(),
        at: now,
        actor: ultron8_core::audit::Actor::Hive,
        action: ultron8_core::audit::AuditVerb::SourceAdded,
        job_id: None,
        execution_id: None,
        drone_id: None,
        status: None,
        event_id: None,
        rule: None,
        action_ref: None,
        detail: serde_json::json!({ "name": "cloud" }),
    };
    store
        .create_source(
            &NewSource {
                name: "cloud".to_string(),
                spec: SourceSpec::Http {
                    url: api.clone(),
                    concurrency: args.concurrency,
                    timeout_ms: 5000,
                },
                interval: Duration::from_secs(30),
                origin: "operator".to_string(),
                created_at: now,
                created_by: "hive".to_string(),
            },
            &audit,
        )
        .await?;
    println!(
        "fleet: {} instances, {} in flight, {} rounds",
        args.instances, args.concurrency, args.rounds
    );
    let mut timings: [Vec<Duration>; 5] = Default::default();
    let mut previous = Vec::new();
    for round in 0..args.rounds {
        let started = Instant::now();
        let observations = ultron8_hive::discovery::fetch_http(
            &client,
            &api,
            args.concurrency as usize,
            Duration::from_secs(5),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        timings[0].push(started.elapsed());
        if observations.len() != args.instances {
            bail!(
                "fetched {} instances of {}",
                observations.len(),
                args.instances
            );
        }

        let at = Utc::now();
        let started = Instant::now();
        let merged = merge(
            "cloud",
            &previous,
            observations,
            Thresholds::default(),
            &std::collections::HashMap::new(),
            at,
        );
        timings[1].push(started.elapsed());

        let started = Instant::now();
        if !store
            .claim_source("cloud", "bench", at, at + chrono::Duration::minutes(5))
            .await?
        {
            bail!("round {round}: the source could not be claimed");
        }
        let refresh = SourceRefresh {
            instances: merged.clone(),
            error: None,
            at,
            // Due again at once, for the next round's claim.
            next_due_at: at,
        };
        if !store
            .finish_source_refresh("cloud", "bench", &refresh)
            .await?
        {
            bail!("round {round}: the lease was lost");
        }
        timings[2].push(started.elapsed());
        previous = merged;

        let started = Instant::now();
        let inventory = store.list_targets(&TargetFilter::default()).await?;
        let services = summarize_services(&inventory);
        timings[3].push(started.elapsed());
        if services.iter().map(|s| s.instances).sum::<usize>() != args.instances {
            bail!("services count the wrong number of instances");
        }

        let started = Instant::now();
        let mut inventory = store.list_targets(&TargetFilter::default()).await?;
        sort_instances(&mut inventory, SortKey::Cpu, true);
        timings[4].push(started.elapsed());
    }
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "phase", "min", "median", "max"
    );
    for (name, samples) in [
        "fetch: GET /servers + one GET per instance",
        "merge: core::discovery::merge",
        "store: claim + finish_source_refresh",
        "fleet services: list_targets + summarize",
        "fleet summary --sort cpu: list_targets + sort",
    ]
    .iter()
    .zip(timings.iter_mut())
    {
        samples.sort();
        println!(
            "{name:<44} {:>10.1?} {:>10.1?} {:>10.1?}",
            samples[0],
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
    }
    Ok(())
}
