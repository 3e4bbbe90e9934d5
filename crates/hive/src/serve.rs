//! Wires a hive together and runs it until shutdown, on the store and
//! broker its caller chose: Postgres and RabbitMQ for `ultron8-hive serve`,
//! SQLite and the in-process broker for `dev`.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tracing::info;
use ultron8_broker::ActionPublisher;
use ultron8_proto::v1::control_service_server::ControlServiceServer;
use ultron8_proto::v1::drone_service_server::DroneServiceServer;
use ultron8_store::Store;

use crate::caller::Admit;
use crate::config::HiveConfig;
use crate::control_service::ControlApi;
use crate::drone_service::DroneApi;
use crate::hive::{BuildInfo, Hive, every};
use crate::identity::{DataDir, HiveIdentity};

/// Serves with the given store and broker until `shutdown` is cancelled.
pub async fn run(
    config: HiveConfig,
    build: BuildInfo,
    store: Arc<dyn Store>,
    publisher: Arc<dyn ActionPublisher>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let identity = HiveIdentity::load(&DataDir::new(&config.data_dir))?;
    let ca_fingerprint = identity.ca.fingerprint();
    let key_path = config.secrets_key_path();
    let (secrets_key, created) = crate::keys::FileKey::load_or_create(&key_path)?;
    if created {
        info!(path = %key_path.display(), "created the key that seals secrets; back it up with the CA (losing it loses every stored secret)");
    }
    let hive = Arc::new(
        Hive::new(config, store, publisher, identity.ca, identity.signing_key)?
            .with_secrets_key(Arc::new(secrets_key))
            .with_build(build)
            .stopping_on(shutdown.clone()),
    );
    // Before listening: no revoked certificate gets in during start-up.
    hive.load_revocations().await;
    if let Err(e) = hive.ensure_drones_source().await {
        tracing::warn!(error = %e, "cannot add the built-in drones source; the fleet views miss the drones until a restart adds it");
    }
    let tls = ultron8_transport::server_config(
        hive.ca.cert_der(),
        &identity.server_cert_der,
        &identity.server_key_pem,
        hive.revoked.clone(),
    )?;
    let grpc_listener = TcpListener::bind(hive.config.grpc_listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", hive.config.grpc_listen))?;
    let http_listener = TcpListener::bind(hive.config.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", hive.config.http_listen))?;
    info!(grpc = %grpc_listener.local_addr()?, http = %http_listener.local_addr()?, %ca_fingerprint,
        "hive listening");

    let health = HealthReporter::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        hive.clone()
            .watch_readiness(health.clone(), shutdown.clone()),
    );
    let heartbeat = hive.config.heartbeat_interval;
    tasks.spawn(hive.clone().run_rules_engine(shutdown.clone()));
    tasks.spawn(hive.clone().run_timers(shutdown.clone()));
    tasks.spawn(hive.clone().run_discovery(shutdown.clone()));
    tasks.spawn(hive.clone().run_probes(shutdown.clone()));
    let h = hive.clone();
    tasks.spawn(every(heartbeat, shutdown.clone(), async move || {
        h.mark_silent_drones_offline().await;
        h.mark_lost_executions().await
    }));
    let h = hive.clone();
    tasks.spawn(every(
        crate::revocation::REFRESH_INTERVAL,
        shutdown.clone(),
        async move || h.refresh_revocations_logged().await,
    ));
    let h = hive.clone();
    tasks.spawn(every(
        std::time::Duration::from_secs(1),
        shutdown.clone(),
        async move || h.expire_overdue().await,
    ));
    let h = hive.clone();
    tasks.spawn(every(
        std::time::Duration::from_secs(5),
        shutdown.clone(),
        async move || h.redispatch_stale().await,
    ));

    let http = crate::http::serve(http_listener, hive.clone(), shutdown.clone());
    let grpc = grpc_services(&hive, health)?.serve_with_incoming_shutdown(
        ultron8_transport::tls_incoming(grpc_listener, tls),
        shutdown.clone().cancelled_owned(),
    );
    let (http, grpc) = tokio::join!(http, grpc);
    http.context("HTTP server failed")?;
    grpc.context("gRPC server failed")?;
    tasks.shutdown().await;
    info!("hive stopped");
    Ok(())
}

/// The drone and control services, each behind the caller check of
/// [`crate::caller`], `grpc.health.v1.Health` for anyone (probes carry no
/// certificate), and server reflection for operators: what `run` serves
/// over mutual TLS, and what tests serve over an in-memory connection.
pub fn grpc_services(
    hive: &Arc<Hive>,
    health: HealthReporter,
) -> anyhow::Result<tonic::transport::server::Router> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ultron8_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    Ok(tonic::transport::Server::builder()
        .add_service(
            Admit::drones(DroneServiceServer::new(DroneApi { hive: hive.clone() }))
                .auditing(hive.clone()),
        )
        .add_service(
            Admit::operators(ControlServiceServer::new(ControlApi { hive: hive.clone() }))
                .auditing(hive.clone()),
        )
        .add_service(HealthServer::new(HealthService::from_health_reporter(
            health,
        )))
        .add_service(Admit::operators(reflection).auditing(hive.clone())))
}
