//! `ultron8-hive`: parses flags, builds configuration, wires the hive.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ultron8_hive::config::{ConfigOverrides, HiveConfig};
use ultron8_hive::identity::{DataDir, InitOptions};

/// `--version`: the version and the commit built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ULTRON8_COMMIT"), ")");

/// The Ultron8 hive: the master that stores the fleet, jobs and audit trail
/// and dispatches actions to drones.
#[derive(Parser)]
// clap names a program after its package unless told; this package is
// ultron8-hive-server, the program users run is ultron8-hive.
#[command(name = "ultron8-hive", version = VERSION, propagate_version = true)]
struct Cli {
    /// Log format
    #[arg(long, global = true, env = "ULTRON8_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// After SIGINT/SIGTERM, how long to let streams and in-flight work end before exiting anyway; a second signal exits at once
    #[arg(long, global = true, env = "ULTRON8_SHUTDOWN_GRACE", default_value = ultron8_host::DEFAULT_SHUTDOWN_GRACE, value_parser = humantime::parse_duration, value_name = "DURATION")]
    shutdown_grace: std::time::Duration,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the `serve` variant, which carries
// every setting's override, costs nothing worth boxing it for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Create the hive's identity: a CA, the hive's server certificate, the
    /// request-signing key, an admin operator certificate with an
    /// ultronctl config file, and secrets.key, which seals secrets at rest
    /// (kept if it exists, even with --force).
    ///
    /// Example: ultron8-hive init --data-dir /var/lib/ultron8 --name hive.example --ip 10.0.0.5
    Init {
        /// Directory to create the identity in
        #[arg(long, env = "ULTRON8_DATA_DIR", default_value = "/var/lib/ultron8")]
        data_dir: PathBuf,
        /// DNS name drones and operators use to reach the hive (repeatable)
        #[arg(long = "name")]
        names: Vec<String>,
        /// IP address drones and operators use to reach the hive (repeatable)
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Name of the first operator
        #[arg(long, default_value = "admin")]
        admin: String,
        /// Address written into ultronctl's config [default: first --name or --ip, port 7443]
        #[arg(long)]
        hive_address: Option<String>,
        /// Replace an existing identity (invalidates every issued certificate)
        #[arg(long)]
        force: bool,
    },
    /// Operators: create one with a role, from the hive's CA (run on the
    /// hive host, which holds the CA key).
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Run a hive and a built-in drone in one process, on an embedded
    /// SQLite store and an in-process broker: no Postgres, no RabbitMQ.
    ///
    /// Creates a CA and certificates in the data directory on first use and
    /// writes ultronctl's config, so `ultronctl drone list` works next.
    /// Listens on loopback only unless --listen says otherwise. Its one
    /// drone is the built-in one: it makes no join tokens (remote drones
    /// need `ultron8-hive serve`).
    ///
    /// Examples:
    ///   cargo run --release --bin ultron8-hive -- dev
    ///   ultron8-hive dev --webhook deploys --webhook pager   # for your own pack's rules
    #[command(verbatim_doc_comment)]
    Dev {
        /// State directory [default: <user data dir>/ultron8/dev, e.g. ~/.local/share/ultron8/dev]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Delete the state directory first and start over
        #[arg(long)]
        fresh: bool,
        /// gRPC listen address; anything but loopback exposes an unhardened hive [default: 127.0.0.1:7443]
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// HTTP listen address for health, metrics, webhooks and Alertmanager [default: 127.0.0.1:7080]
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<std::net::SocketAddr>,
        /// Do not write ~/.config/ultron8/ultronctl.toml (use ULTRONCTL_CONFIG instead)
        #[arg(long)]
        no_user_config: bool,
        /// Also serve the webhook POST /v1/webhooks/NAME (repeatable), with a bearer
        /// token kept in <data-dir>/NAME-webhook-token, beside the `demo` webhook's
        #[arg(long = "webhook", value_name = "NAME", value_parser = parse_webhook_name)]
        webhooks: Vec<String>,
    },
    /// Bring the Postgres schema up to date as its owner, and grant the
    /// role the hive serves as what it needs: every table to read and
    /// write, but the audit trail only to read and append to.
    ///
    /// Run it before the first start and after every upgrade; a hive
    /// serving as a role that does not own the schema never migrates it
    /// and refuses to start on a schema that is not current. Without
    /// --grant-to it only migrates. See "Database roles" in
    /// docs/operations.md.
    ///
    /// Example: ultron8-hive migrate --database-url postgres://ultron8_owner@db/ultron8 --grant-to ultron8_hive
    #[command(verbatim_doc_comment)]
    Migrate {
        /// The schema owner's database URL (not the one the hive serves with)
        #[arg(long, env = "ULTRON8_OWNER_DATABASE_URL", value_name = "URL")]
        database_url: String,
        /// The role the hive serves as, to be granted its privileges
        #[arg(long, value_name = "ROLE")]
        grant_to: Option<String>,
    },
    /// Run the hive against Postgres and RabbitMQ.
    ///
    /// Settings come from defaults, then the config file, then ULTRON8_*
    /// environment variables, then flags. Webhooks and the Alertmanager
    /// token are set in the file only (see deploy/hive.toml.example).
    Serve {
        #[command(flatten)]
        overrides: ConfigOverrides,
        /// Print the configuration in force (passwords redacted) and exit
        #[arg(long)]
        print_config: bool,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Issue a certificate and an ultronctl config for a new operator.
    ///
    /// Roles: viewer (reads: drones, jobs, output, packs, rules, events,
    /// audit, status), operator (also runs and cancels jobs, fires events,
    /// enables and disables rules), admin (also installs and removes packs
    /// and creates join tokens). Calls a role does not allow are refused
    /// and audited as `operator.denied`.
    ///
    /// Example: ultron8-hive operator create bob --role viewer --data-dir /var/lib/ultron8
    /// then give bob <data-dir>/bob.pem, bob-key.pem, ca.pem and ultronctl-bob.toml.
    #[command(verbatim_doc_comment)]
    Create {
        /// The operator's name, as the audit trail shows it
        name: String,
        /// viewer, operator or admin
        #[arg(long)]
        role: ultron8_core::roles::Role,
        /// The hive's data directory
        #[arg(long, env = "ULTRON8_DATA_DIR", default_value = "/var/lib/ultron8")]
        data_dir: PathBuf,
    },
}

/// A webhook name as a URL path segment and a file name may hold it.
fn parse_webhook_name(name: &str) -> Result<String, String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{name:?}: a webhook name is 1 to 64 letters, digits, `-` and `_`"
        ));
    }
    Ok(name.to_string())
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
        Command::Init {
            data_dir,
            names,
            ips,
            admin,
            hive_address,
            force,
        } => {
            let host = names
                .first()
                .cloned()
                .or_else(|| ips.first().map(|ip| ip.to_string()));
            let host = host
                .context("give the hive at least one --name or --ip to put in its certificate")?;
            let hive_address = hive_address.unwrap_or_else(|| match host.parse::<IpAddr>() {
                Ok(IpAddr::V6(v6)) => format!("[{v6}]:7443"),
                _ => format!("{host}:7443"),
            });
            let dir = DataDir::new(&data_dir);
            let report = ultron8_hive::identity::init(
                &dir,
                &InitOptions {
                    names,
                    ips,
                    admin_name: admin.clone(),
                    hive_address: hive_address.clone(),
                    force,
                },
            )?;
            println!("Hive identity created in {}", data_dir.display());
            println!("  CA fingerprint: {}", report.ca_fingerprint);
            println!("  operator:       {admin} (admin)");
            println!(
                "  secrets key:    {} (back it up: without it stored secrets cannot be read)",
                dir.secrets_key().display()
            );
            println!();
            println!("Next:");
            println!(
                "  ultron8-hive serve --data-dir {} --database-url postgres://... --amqp-url amqp://...",
                data_dir.display()
            );
            println!(
                "  export ULTRONCTL_CONFIG={}",
                report.ultronctl_config.display()
            );
            println!("  ultronctl drone token create --label role=web");
            Ok(())
        }
        Command::Operator(OperatorCommand::Create {
            name,
            role,
            data_dir,
        }) => {
            let created =
                ultron8_hive::identity::create_operator(&DataDir::new(&data_dir), &name, role)?;
            println!("Operator {name} ({role}) created:");
            println!("  certificate:      {}", created.cert.display());
            println!("  key:              {}", created.key.display());
            println!("  ultronctl config: {}", created.ultronctl_config.display());
            println!();
            println!(
                "Next: export ULTRONCTL_CONFIG={}",
                created.ultronctl_config.display()
            );
            Ok(())
        }
        Command::Dev {
            data_dir,
            fresh,
            listen,
            http_listen,
            no_user_config,
            webhooks,
        } => {
            let shutdown = ultron8_host::shutdown_on_signal(shutdown_grace);
            let options = ultron8_hive_server::dev::DevOptions {
                data_dir,
                fresh,
                listen,
                http_listen,
                write_user_config: !no_user_config,
                webhooks,
            };
            ultron8_hive_server::dev::run(options, shutdown).await
        }
        Command::Migrate {
            database_url,
            grant_to,
        } => {
            let migrated =
                ultron8_hive_server::migrate::run(&database_url, grant_to.as_deref()).await?;
            println!("The database schema is up to date.");
            if let Some(role) = grant_to {
                println!("{role} holds exactly what these statements give it:");
                for grant in &migrated.grants {
                    println!("  {grant}");
                }
                println!();
                println!("Next: ultron8-hive serve --database-url <{role}'s URL> ...");
            }
            Ok(())
        }
        Command::Serve {
            overrides,
            print_config,
        } => {
            let config = HiveConfig::load(&overrides)?;
            if print_config {
                print!("{}", config.to_redacted_toml());
                return Ok(());
            }
            let shutdown = ultron8_host::shutdown_on_signal(shutdown_grace);
            ultron8_hive_server::serve::run(config, shutdown).await
        }
    }
}
