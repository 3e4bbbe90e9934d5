//! `ultron8-hive dev`: a working hive and one local drone in one process,
//! on an embedded SQLite store and an in-process broker, so a first command
//! runs without Postgres, RabbitMQ or a key ceremony.
//!
//! Everything else is the production path: the same gRPC services over
//! mutual TLS, the same signed requests, the drone joins with a one-time
//! token through `Enroll`, and ultronctl talks to it like to any hive.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use ultron8_broker::inproc::InProcessBroker;
use ultron8_broker::{ActionConsumer, ActionPublisher};
use ultron8_core::ids::DroneId;
use ultron8_drone::config::DroneDir;
use ultron8_drone::join::JoinOptions;
use ultron8_hive::config::{HiveConfig, WebhookConfig};
use ultron8_hive::identity::{self, CtlConfigFile, DataDir, InitOptions, write_secret};
use ultron8_pki::JoinToken;
use ultron8_store::{NewJoinToken, Store};

/// The broker URL drones of a dev hive are given. A remote drone receiving
/// it says clearly that it needs a production hive.
pub const INPROC_BROKER_URL: &str = "inproc:";

/// Name of the built-in drone.
pub const LOCAL_DRONE: &str = "local";

/// Marks a directory as created by `dev`, so `--fresh` never deletes
/// anything else.
const MARKER: &str = ".ultron8-dev";

pub struct DevOptions {
    pub data_dir: Option<PathBuf>,
    pub fresh: bool,
    pub listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    /// Also write the ultronctl config to the user's default location
    /// (unless one that `dev` did not write is already there).
    pub write_user_config: bool,
    /// Webhooks to serve besides `demo`, each with a bearer token kept in
    /// `<data-dir>/<name>-webhook-token`.
    pub webhooks: Vec<String>,
}

/// The webhook every dev hive serves, for `packs/hello`.
const DEMO_WEBHOOK: &str = "demo";

pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    Ok(dirs::data_dir()
        .context("cannot find the user's data directory; pass --data-dir")?
        .join("ultron8")
        .join("dev"))
}

pub async fn run(options: DevOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let root = match &options.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    prepare_dir(&root, options.fresh)?;
    let grpc_listen = options
        .listen
        .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 7443)));
    let http_listen = options
        .http_listen
        .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 7080)));
    for (flag, addr) in [("--listen", grpc_listen), ("--http-listen", http_listen)] {
        if !addr.ip().is_loopback() {
            warn!(
                "{flag} {addr} exposes the dev hive beyond this machine; it has no production hardening \
                 and its drones can only be the built-in one"
            );
        }
    }

    let dir = DataDir::new(&root);
    let hive_address =
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), grpc_listen.port()).to_string();
    if !dir.ca_cert().exists() {
        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        if !grpc_listen.ip().is_loopback() && !grpc_listen.ip().is_unspecified() {
            ips.push(grpc_listen.ip());
        }
        identity::init(
            &dir,
            &InitOptions {
                names: vec!["localhost".into()],
                ips,
                admin_name: "admin".into(),
                hive_address: hive_address.clone(),
                force: false,
            },
        )?;
    }
    // The port may differ from the last run; keep the config pointing here.
    let ctl = CtlConfigFile {
        hive: hive_address.clone(),
        server_name: "127.0.0.1".into(),
        ca: dir.ca_cert(),
        cert: dir.operator_cert("admin"),
        key: dir.operator_key("admin"),
    };
    write_secret(&dir.ultronctl_config(), ctl.render().as_bytes())?;
    let user_config = if options.write_user_config {
        install_user_config(&ctl)
    } else {
        None
    };

    let store = Arc::new(
        ultron8_store::sqlite::SqliteStore::open(&root.join("ultron8.db"))
            .await
            .with_context(|| format!("cannot open the embedded store in {}", root.display()))?,
    );
    let broker = InProcessBroker::new();
    let mut names = vec![DEMO_WEBHOOK.to_string()];
    for name in &options.webhooks {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut webhooks = Vec::new();
    for name in names {
        let token = webhook_token(&root, &name)?;
        webhooks.push((name, token));
    }
    let config = HiveConfig {
        webhooks: webhooks
            .iter()
            .map(|(name, token)| {
                (
                    name.clone(),
                    WebhookConfig {
                        token: Some(token.clone()),
                        ..WebhookConfig::default()
                    },
                )
            })
            .collect(),
        data_dir: root.clone(),
        grpc_listen,
        http_listen,
        drone_amqp_url: Some(INPROC_BROKER_URL.into()),
        heartbeat_interval: Duration::from_secs(2),
        offline_after: Duration::from_secs(10),
        dev: true,
        ..HiveConfig::default()
    };

    let mut hive = tokio::spawn(ultron8_hive::serve::run(
        config,
        crate::build_info(),
        store.clone() as Arc<dyn Store>,
        Arc::new(broker.clone()) as Arc<dyn ActionPublisher>,
        shutdown.clone(),
    ));
    tokio::select! {
        result = &mut hive => {
            return Err(hive_ended(result).context("the dev hive could not start"));
        }
        reachable = wait_until_listening(grpc_listen.port()) => reachable?,
    }

    let drone_dir = DroneDir::new(root.join("drone"));
    join_local_drone(&drone_dir, store.as_ref(), &dir, &hive_address).await?;
    let inproc = broker.clone();
    let consumers: ultron8_drone::runtime::ConsumerFactory = Arc::new(move |url: &str| {
        if url == INPROC_BROKER_URL {
            Ok(Arc::new(inproc.clone()) as Arc<dyn ActionConsumer>)
        } else {
            (ultron8_drone::runtime::amqp_consumer_factory())(url)
        }
    });
    let drone = tokio::spawn(ultron8_drone::runtime::run(
        drone_dir,
        consumers,
        shutdown.clone(),
    ));
    wait_until_online(store.as_ref(), &DroneId::new(LOCAL_DRONE)).await;

    print_banner(
        &root,
        grpc_listen,
        http_listen,
        &dir.ultronctl_config(),
        user_config.as_deref(),
        &webhooks,
    );

    let result = tokio::select! {
        // On Ctrl-C the hive may finish before this select sees the
        // cancellation; that is a clean stop, not a failure.
        result = &mut hive => match result {
            Ok(Ok(())) if shutdown.is_cancelled() => Ok(()),
            other => Err(hive_ended(other)),
        },
        _ = shutdown.cancelled() => Ok(()),
    };
    // Let the drone and the hive finish what they are doing, then close
    // the database cleanly so nothing stored is lost.
    if let Ok(Err(e)) = drone.await {
        warn!(error = %e, "local drone stopped with an error");
    }
    if !hive.is_finished() {
        let _ = hive.await;
    }
    store.close().await;
    info!("dev hive stopped; state kept in {}", root.display());
    result
}

fn hive_ended(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match result {
        Ok(Ok(())) => anyhow::anyhow!("the hive stopped unexpectedly"),
        Ok(Err(e)) => e,
        Err(e) => anyhow::anyhow!("the hive task failed: {e}"),
    }
}

fn prepare_dir(root: &Path, fresh: bool) -> anyhow::Result<()> {
    let is_ours = root.join(MARKER).exists();
    if root.exists()
        && !is_ours
        && std::fs::read_dir(root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        bail!(
            "{} is not empty and was not created by `ultron8-hive dev`; choose another --data-dir",
            root.display()
        );
    }
    if fresh && is_ours {
        std::fs::remove_dir_all(root)
            .with_context(|| format!("cannot remove {}", root.display()))?;
    }
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    std::fs::write(
        root.join(MARKER),
        "created by ultron8-hive dev; --fresh may delete this directory\n",
    )
    .with_context(|| format!("cannot write to {}", root.display()))?;
    Ok(())
}

async fn wait_until_listening(port: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the hive did not start listening on port {port} within 30 s")
}

/// So that the first `ultronctl drone list` after the banner shows it.
async fn wait_until_online(store: &dyn Store, drone_id: &DroneId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(drone)) = store.get_drone(drone_id).await
            && drone.online
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    warn!("the built-in drone has not registered yet; see the log above");
}

/// Joins the built-in drone through the real enrollment path, the first
/// time or whenever the store no longer knows it.
async fn join_local_drone(
    drone_dir: &DroneDir,
    store: &dyn Store,
    dir: &DataDir,
    hive_address: &str,
) -> anyhow::Result<()> {
    let known = store.get_drone(&DroneId::new(LOCAL_DRONE)).await?.is_some();
    let joined = drone_dir.config().exists();
    if known && joined {
        // Keep the drone pointed at this run's port.
        let mut file = drone_dir.load()?;
        if file.hive != hive_address {
            file.hive = hive_address.to_string();
            let text = toml::to_string_pretty(&file).context("cannot render drone.toml")?;
            write_secret(&drone_dir.config(), text.as_bytes())?;
        }
        return Ok(());
    }
    let ca_pem = std::fs::read_to_string(dir.ca_cert())
        .with_context(|| format!("cannot read {}", dir.ca_cert().display()))?;
    let ca_der = ultron8_pki::pem_to_der_certs(&ca_pem)?
        .into_iter()
        .next()
        .context("ca.pem holds no certificate")?;
    let token = JoinToken::generate(&ultron8_pki::fingerprint(&ca_der))?;
    let now = Utc::now();
    store
        .create_join_token(&NewJoinToken {
            id: token.id.clone(),
            secret_sha256: token.secret_sha256(),
            labels: [("ultron8.dev".to_string(), "local".to_string())].into(),
            created_by: "dev".into(),
            created_at: now,
            expires_at: now + chrono::Duration::minutes(5),
            // The built-in drone joins again whenever its identity is gone;
            // its name may still be in the store from the last run.
            drone_id: Some(LOCAL_DRONE.into()),
            replaces: true,
        })
        .await?;
    ultron8_drone::join::join(
        drone_dir,
        JoinOptions {
            hive: hive_address.to_string(),
            server_name: Some("127.0.0.1".into()),
            token: token.encode(),
            name: LOCAL_DRONE.into(),
            labels: Default::default(),
            force: true,
        },
    )
    .await
    .context("the built-in drone could not join the dev hive")?;
    Ok(())
}

/// Writes the ultronctl config where ultronctl looks by default, unless
/// an operator's own config is there. Returns where it was written.
fn install_user_config(ctl: &CtlConfigFile) -> Option<PathBuf> {
    let path = dirs::config_dir()?.join("ultron8").join("ultronctl.toml");
    let rendered = format!("# written by ultron8-hive dev\n{}", ctl.render());
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.starts_with("# written by ultron8-hive dev")
    {
        warn!(
            "{} belongs to another hive; leaving it alone",
            path.display()
        );
        return None;
    }
    let written = path
        .parent()
        .map(std::fs::create_dir_all)
        .transpose()
        .ok()
        .and_then(|_| write_secret(&path, rendered.as_bytes()).ok());
    written.map(|()| path)
}

/// A webhook's bearer token: made once, kept in the data dir as
/// `<name>-webhook-token`.
fn webhook_token(root: &Path, name: &str) -> anyhow::Result<String> {
    let path = root.join(format!("{name}-webhook-token"));
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let mut secret = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let token = hex::encode(secret);
    write_secret(&path, token.as_bytes())?;
    Ok(token)
}

fn print_banner(
    root: &Path,
    grpc: SocketAddr,
    http: SocketAddr,
    ctl_config: &Path,
    user_config: Option<&Path>,
    webhooks: &[(String, String)],
) {
    let ultronctl = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("ultronctl")))
        .filter(|path| path.exists())
        .map(|path| path.display().to_string());
    let mut text = String::new();
    text.push_str("\nUltron8 dev hive is up: embedded SQLite store, in-process broker, one built-in drone (\"local\").\n\n");
    text.push_str(&format!("  data dir    {}\n", root.display()));
    text.push_str(&format!("  gRPC        {grpc} (mutual TLS)\n"));
    text.push_str(&format!(
        "  HTTP        http://{http}/readyz  http://{http}/metrics\n"
    ));
    match user_config {
        Some(path) => text.push_str(&format!(
            "  ultronctl   config written to {} (no flags needed)\n",
            path.display()
        )),
        None => text.push_str(&format!(
            "  ultronctl   export ULTRONCTL_CONFIG={}\n",
            ctl_config.display()
        )),
    }
    if ultronctl.is_none() {
        text.push_str(
            "\nBuild ultronctl in another terminal: cargo build --release --bin ultronctl\n",
        );
    }
    let cmd = ultronctl.unwrap_or_else(|| "ultronctl".into());
    text.push_str(&format!(
        "\nTry, in another terminal:\n  {cmd} drone list\n  {cmd} run -t '*' -- uname -a\n  {cmd} job list\n"
    ));
    for (name, token) in webhooks {
        if name == DEMO_WEBHOOK {
            text.push_str(&format!(
                "\nThe webhook `demo` is ready for packs/hello (see the README's tour):\n  \
                 curl -H 'Authorization: Bearer {token}' -d '{{\"name\": \"Ada\", \"target\": \"local\"}}' http://{http}/v1/webhooks/demo\n"
            ));
        } else {
            text.push_str(&format!(
                "\nThe webhook `{name}` (token in {}):\n  \
                 curl -H 'Authorization: Bearer {token}' -d '{{}}' http://{http}/v1/webhooks/{name}\n",
                root.join(format!("{name}-webhook-token")).display()
            ));
        }
    }
    text.push_str(
        "\nThis hive's one drone is the built-in one; remote drones need `ultron8-hive serve`.\n\
         Ctrl-C stops the hive; everything stored stays in the data dir (--fresh starts over).\n",
    );
    eprintln!("{text}");
}
