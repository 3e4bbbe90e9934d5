//! `ultron8-drone`: parses flags and runs the drone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ultron8_drone::config::{DroneDir, parse_label};
use ultron8_drone::join::JoinOptions;

/// The Ultron8 drone: runs the actions the hive sends to this host and
/// reports host facts, stats and results.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Log format
    #[arg(long, global = true, env = "ULTRON8_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// After SIGINT/SIGTERM, how long running commands get to stop (SIGTERM, then SIGKILL to each process group; results spooled as canceled) before the drone exits anyway; a second signal exits at once
    #[arg(long, global = true, env = "ULTRON8_SHUTDOWN_GRACE", default_value = ultron8_host::DEFAULT_SHUTDOWN_GRACE, value_parser = humantime::parse_duration, value_name = "DURATION")]
    shutdown_grace: std::time::Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a hive with a one-time token from `ultronctl drone token create`.
    ///
    /// Generates this drone's private key (it never leaves the host), sends
    /// a certificate request, and writes the identity into --data-dir.
    ///
    /// Example: ultron8-drone join --hive hive.example:7443 --token u8join1... --label service=IdService
    Join {
        /// The hive's gRPC address, host:port
        #[arg(long, env = "ULTRON8_HIVE")]
        hive: String,
        /// The one-time join token
        #[arg(long, env = "ULTRON8_JOIN_TOKEN")]
        token: String,
        #[arg(
            long,
            env = "ULTRON8_DRONE_DATA_DIR",
            default_value = "/var/lib/ultron8-drone"
        )]
        data_dir: PathBuf,
        /// This drone's unique id [default: the hostname]
        #[arg(long)]
        name: Option<String>,
        /// A label to register with, key=value (repeatable)
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Name to check the hive's certificate against [default: the host part of --hive]
        #[arg(long)]
        server_name: Option<String>,
        /// Replace an existing identity in --data-dir
        #[arg(long)]
        force: bool,
    },
    /// Run the drone: register, heartbeat, and execute requests from the hive.
    ///
    /// Checks drone.toml first, [policy] included (see check-config), and
    /// logs the policy in force.
    Run {
        #[arg(
            long,
            env = "ULTRON8_DRONE_DATA_DIR",
            default_value = "/var/lib/ultron8-drone"
        )]
        data_dir: PathBuf,
    },
    /// Check drone.toml without running: its settings and [policy]
    /// (patterns, and that every run_as user exists and the drone may
    /// become it), then print the policy in force.
    ///
    /// Exits 0 when `run` would start with it, 1 naming the problem.
    ///
    /// Example: sudo ultron8-drone check-config --data-dir /var/lib/ultron8-drone
    CheckConfig {
        #[arg(
            long,
            env = "ULTRON8_DRONE_DATA_DIR",
            default_value = "/var/lib/ultron8-drone"
        )]
        data_dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    ultron8_host::init_logging(&cli.log_format);
    match run(cli.command, cli.shutdown_grace).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, shutdown_grace: std::time::Duration) -> anyhow::Result<()> {
    match command {
        Command::Join {
            hive,
            token,
            data_dir,
            name,
            labels,
            server_name,
            force,
        } => {
            let name = match name {
                Some(name) => name,
                None => sysinfo::System::host_name()
                    .ok_or_else(|| anyhow::anyhow!("cannot read the hostname; pass --name"))?,
            };
            let labels: BTreeMap<String, String> = labels.into_iter().collect();
            let dir = DroneDir::new(&data_dir);
            let file = ultron8_drone::join::join(
                &dir,
                JoinOptions {
                    hive,
                    server_name,
                    token,
                    name,
                    labels,
                    force,
                },
            )
            .await?;
            println!("Joined the hive at {} as drone {:?}.", file.hive, file.id);
            println!(
                "Start it with: ultron8-drone run --data-dir {}",
                data_dir.display()
            );
            Ok(())
        }
        Command::CheckConfig { data_dir } => {
            let dir = DroneDir::new(data_dir);
            let policy = ultron8_drone::policy::Policy::check(&dir)?;
            println!("{} is valid.", dir.config().display());
            println!("Policy in force: {}", policy.describe());
            Ok(())
        }
        Command::Run { data_dir } => {
            let shutdown = ultron8_host::shutdown_on_signal(shutdown_grace);
            ultron8_drone::runtime::run(
                DroneDir::new(data_dir),
                ultron8_drone::runtime::amqp_consumer_factory(),
                shutdown,
            )
            .await
        }
    }
}
