//! The hive's configuration: one struct, layered defaults < TOML file <
//! `ULTRON8_*` environment < command-line flags.
//!
//! clap merges the environment and the flags (a flag wins over its
//! variable); [`HiveConfig::load`] lays the result over the file, which lays
//! over the defaults. `ultron8-hive serve --print-config` shows what is in
//! force, with passwords redacted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HiveConfig {
    /// Where `init` put the CA, the hive's certificate and the signing key.
    pub data_dir: PathBuf,
    /// Postgres URL, e.g. `postgres://ultron8@db/ultron8`.
    pub database_url: Option<String>,
    /// How long a request waits for a database connection before it fails
    /// as unavailable. While Postgres is down every request takes this
    /// long to fail; readiness has its own, shorter deadline (1 s).
    #[serde(with = "humantime_serde")]
    pub database_acquire_timeout: Duration,
    /// AMQP URL the hive publishes with, e.g. `amqp://ultron8:pw@mq:5672/ultron8`.
    pub amqp_url: Option<String>,
    /// AMQP URL handed to drones at registration. Defaults to `amqp_url`;
    /// set it when drones reach the broker by another address or with
    /// other credentials.
    pub drone_amqp_url: Option<String>,
    /// How long opening a connection to the broker may take (TCP, the AMQP
    /// handshake, confirm mode).
    #[serde(with = "humantime_serde")]
    pub amqp_connect_timeout: Duration,
    /// How long one publish may wait for the broker's confirm (including
    /// reconnecting). Past it the publish fails, the execution stays
    /// `requested` and is published again later: a broker that stops
    /// reading (a memory or disk alarm) cannot hold up a submission.
    #[serde(with = "humantime_serde")]
    pub amqp_publish_timeout: Duration,
    /// gRPC (mutual TLS) listen address for drones and ultronctl.
    pub grpc_listen: SocketAddr,
    /// HTTP listen address: /healthz, /readyz, /metrics, and event intake
    /// (/v1/webhooks/<name>, /v1/alertmanager).
    pub http_listen: SocketAddr,
    /// How long an HTTP client has to send a request's line and headers,
    /// from the moment the connection is ready for one (so also how long
    /// an idle keep-alive connection stays open). Past it the connection
    /// is closed.
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: Duration,
    /// How long an HTTP client has to send a whole request body, however
    /// it trickles in. Past it the request is refused with 408.
    #[serde(with = "humantime_serde")]
    pub http_body_timeout: Duration,
    /// HTTP connections served at once. Further connections wait, unread,
    /// in the listen backlog until one closes.
    pub http_max_connections: usize,
    /// How often drones are asked to heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A drone silent for this long is marked offline.
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,
    /// An execution `running` on a drone silent for this long is declared
    /// `lost` (its command may still be running there).
    #[serde(with = "humantime_serde")]
    pub lost_after: Duration,
    /// How long a drone may take to pick a request up, unless the run says
    /// otherwise (`ultronctl run --ttl`).
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Lifetime of a join token unless given at creation.
    #[serde(with = "humantime_serde")]
    pub join_token_ttl: Duration,
    /// Validity of the certificate a drone receives when it joins.
    #[serde(with = "humantime_serde")]
    pub drone_certificate_validity: Duration,
    /// Generic webhooks, `POST /v1/webhooks/<name>`; each needs a bearer
    /// token or an HMAC secret.
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// Bearer token Alertmanager must send to `POST /v1/alertmanager`
    /// (its `http_config.authorization.credentials`). None: no token asked.
    pub alertmanager_token: Option<String>,
    /// Largest accepted webhook or Alertmanager body, in bytes.
    pub max_event_bytes: usize,
    /// The 32-byte key that seals secrets at rest (`ultronctl secret set`),
    /// kept out of the database on purpose. None: `<data_dir>/secrets.key`,
    /// created (mode 0600) at the first start that finds none. Every
    /// replica needs the same key; back it up with the CA.
    pub secrets_key_file: Option<PathBuf>,
    /// Discovery and the fleet views (`[fleet]`).
    pub fleet: FleetConfig,
    /// Set by `ultron8-hive dev`, never by a file or a flag: the hive runs
    /// with a built-in drone on an in-process broker, which no other drone
    /// can reach, so it refuses to create join tokens.
    #[serde(skip)]
    pub dev: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Callers send `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Callers send `X-Ultron8-Timestamp: <unix seconds>` and
    /// `X-Ultron8-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
    pub hmac_secret: Option<String>,
    /// How far an HMAC-signed request's timestamp may be from the hive's
    /// clock, either way. A request outside it is refused: a replay of a
    /// captured request, or a sender whose clock is wrong.
    #[serde(with = "humantime_serde")]
    pub timestamp_tolerance: Duration,
    /// Request headers copied into the event payload (case-insensitive).
    pub headers: Vec<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            token: None,
            hmac_secret: None,
            timestamp_tolerance: Duration::from_secs(5 * 60),
            headers: Vec::new(),
        }
    }
}

impl Default for HiveConfig {
    fn default() -> Self {
        HiveConfig {
            data_dir: PathBuf::from("/var/lib/ultron8"),
            database_url: None,
            database_acquire_timeout: Duration::from_secs(3),
            amqp_url: None,
            drone_amqp_url: None,
            amqp_connect_timeout: Duration::from_secs(5),
            amqp_publish_timeout: Duration::from_secs(5),
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 7080)),
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(30),
            http_max_connections: 512,
            heartbeat_interval: Duration::from_secs(5),
            offline_after: Duration::from_secs(20),
            lost_after: Duration::from_secs(300),
            default_ttl: Duration::from_secs(300),
            join_token_ttl: Duration::from_secs(3600),
            drone_certificate_validity: Duration::from_secs(365 * 24 * 3600),
            webhooks: BTreeMap::new(),
            alertmanager_token: None,
            max_event_bytes: 1024 * 1024,
            secrets_key_file: None,
            fleet: FleetConfig::default(),
            dev: false,
        }
    }
}

/// `[fleet]`: how instances are judged, and how often the hive looks for
/// sources due a refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// An instance whose CPU is at or above this percentage is unhealthy.
    pub cpu_threshold: f64,
    /// An instance whose memory is at or above this percentage is unhealthy.
    pub memory_threshold: f64,
    /// How often each replica looks for sources due a refresh (and for
    /// changed targets files).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Keep a source named `drones` (every drone, its service from the
    /// label `service`, refreshed every 30 s), so the fleet views show the
    /// drones without anyone adding it: created at start when missing.
    /// False: the hive creates none (remove an existing one with
    /// `ultronctl source remove drones`).
    pub drones: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            cpu_threshold: 80.0,
            memory_threshold: 80.0,
            poll_interval: Duration::from_secs(1),
            drones: true,
        }
    }
}

impl FleetConfig {
    pub fn thresholds(&self) -> ultron8_core::discovery::Thresholds {
        ultron8_core::discovery::Thresholds {
            cpu: self.cpu_threshold,
            memory: self.memory_threshold,
        }
    }
}

/// Settings given on the command line or in the environment; `None` means
/// "not given here", so the file or the default applies.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigOverrides {
    /// TOML configuration file [default: <data-dir>/hive.toml when it exists]
    #[arg(long, env = "ULTRON8_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory written by `ultron8-hive init` [default: /var/lib/ultron8]
    #[arg(long, env = "ULTRON8_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The key that seals secrets at rest [default: <data-dir>/secrets.key]
    #[arg(long, env = "ULTRON8_SECRETS_KEY_FILE", value_name = "FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// Postgres URL
    #[arg(long, env = "ULTRON8_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// How long a request waits for a database connection before failing as unavailable [default: 3s]
    #[arg(long, env = "ULTRON8_DATABASE_ACQUIRE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub database_acquire_timeout: Option<Duration>,
    /// AMQP URL the hive publishes to
    #[arg(long, env = "ULTRON8_AMQP_URL", value_name = "URL")]
    pub amqp_url: Option<String>,
    /// AMQP URL given to drones [default: --amqp-url]
    #[arg(long, env = "ULTRON8_DRONE_AMQP_URL", value_name = "URL")]
    pub drone_amqp_url: Option<String>,
    /// Deadline for opening a connection to the broker [default: 5s]
    #[arg(long, env = "ULTRON8_AMQP_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub amqp_connect_timeout: Option<Duration>,
    /// Deadline for the broker to confirm one publish; past it the execution stays requested and is retried [default: 5s]
    #[arg(long, env = "ULTRON8_AMQP_PUBLISH_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub amqp_publish_timeout: Option<Duration>,
    /// gRPC listen address [default: 0.0.0.0:7443]
    #[arg(long, env = "ULTRON8_GRPC_LISTEN", value_name = "ADDR")]
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP listen address for health, metrics, webhooks and Alertmanager [default: 0.0.0.0:7080]
    #[arg(long, env = "ULTRON8_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Time a client has to send an HTTP request's headers (and that an idle connection stays open) [default: 10s]
    #[arg(long, env = "ULTRON8_HTTP_HEADER_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub http_header_timeout: Option<Duration>,
    /// Time a client has to send a whole HTTP request body; past it, 408 [default: 30s]
    #[arg(long, env = "ULTRON8_HTTP_BODY_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub http_body_timeout: Option<Duration>,
    /// HTTP connections served at once; more wait in the listen backlog [default: 512]
    #[arg(long, env = "ULTRON8_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// Drone heartbeat interval, e.g. 5s [default: 5s]
    #[arg(long, env = "ULTRON8_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub heartbeat_interval: Option<Duration>,
    /// Mark a drone offline after this much silence [default: 20s]
    #[arg(long, env = "ULTRON8_OFFLINE_AFTER", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub offline_after: Option<Duration>,
    /// Declare an execution lost when its drone is silent this long [default: 5m]
    #[arg(long, env = "ULTRON8_LOST_AFTER", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lost_after: Option<Duration>,
    /// Default time a drone has to pick up a request [default: 5m]
    #[arg(long, env = "ULTRON8_DEFAULT_TTL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub default_ttl: Option<Duration>,
}

impl HiveConfig {
    pub fn load(overrides: &ConfigOverrides) -> anyhow::Result<HiveConfig> {
        let defaults = HiveConfig::default();
        let data_dir = overrides.data_dir.clone();
        let file = match &overrides.config {
            Some(path) => Some(path.clone()),
            None => {
                let implicit = data_dir
                    .clone()
                    .unwrap_or_else(|| defaults.data_dir.clone())
                    .join("hive.toml");
                implicit.exists().then_some(implicit)
            }
        };
        let mut config = match &file {
            Some(path) => HiveConfig::from_file(path)?,
            None => defaults,
        };
        let o = overrides.clone();
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(v) = o.$field { config.$field = v; } )* };
        }
        overlay!(
            data_dir,
            database_acquire_timeout,
            amqp_connect_timeout,
            amqp_publish_timeout,
            grpc_listen,
            http_listen,
            http_header_timeout,
            http_body_timeout,
            http_max_connections,
            heartbeat_interval,
            offline_after,
            lost_after,
            default_ttl
        );
        macro_rules! overlay_opt {
            ($($field:ident),*) => { $( if o.$field.is_some() { config.$field = o.$field; } )* };
        }
        overlay_opt!(database_url, amqp_url, drone_amqp_url, secrets_key_file);
        config.validate()?;
        Ok(config)
    }

    /// Where the key that seals secrets is: `secrets_key_file`, else
    /// `secrets.key` in the data directory.
    pub fn secrets_key_path(&self) -> PathBuf {
        self.secrets_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::keys::KEY_FILE_NAME))
    }

    fn from_file(path: &Path) -> anyhow::Result<HiveConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("invalid configuration file {}", path.display()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (name, webhook) in &self.webhooks {
            if webhook.token.is_none() && webhook.hmac_secret.is_none() {
                bail!(
                    "webhook `{name}` has neither `token` nor `hmac_secret`; anyone could fire it"
                );
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("webhook name `{name}` may only contain letters, digits, `-` and `_`");
            }
            if webhook.hmac_secret.is_some() && webhook.timestamp_tolerance.is_zero() {
                bail!(
                    "webhook `{name}`: timestamp_tolerance must be greater than zero, or no signed request is ever on time"
                );
            }
        }
        for (name, value) in [
            ("database_acquire_timeout", self.database_acquire_timeout),
            ("amqp_connect_timeout", self.amqp_connect_timeout),
            ("amqp_publish_timeout", self.amqp_publish_timeout),
            ("http_header_timeout", self.http_header_timeout),
            ("http_body_timeout", self.http_body_timeout),
        ] {
            if value.is_zero() {
                bail!("{name} must be greater than zero");
            }
        }
        if self.http_max_connections == 0 {
            bail!("http_max_connections must be at least 1, or the HTTP listener serves no one");
        }
        if self.heartbeat_interval.is_zero() {
            bail!("heartbeat_interval must be greater than zero");
        }
        if self.offline_after <= self.heartbeat_interval {
            bail!(
                "offline_after ({}) must be longer than heartbeat_interval ({}), or every drone flaps offline",
                humantime::format_duration(self.offline_after),
                humantime::format_duration(self.heartbeat_interval)
            );
        }
        if self.lost_after < self.offline_after {
            bail!(
                "lost_after ({}) must be at least offline_after ({}): a drone is offline before its executions are lost",
                humantime::format_duration(self.lost_after),
                humantime::format_duration(self.offline_after)
            );
        }
        for (name, value) in [
            ("fleet.cpu_threshold", self.fleet.cpu_threshold),
            ("fleet.memory_threshold", self.fleet.memory_threshold),
        ] {
            if !(value > 0.0 && value <= 100.0) {
                bail!("{name} is a percentage above 0 and at most 100; got {value}");
            }
        }
        if self.fleet.poll_interval.is_zero() {
            bail!("fleet.poll_interval must be greater than zero");
        }
        Ok(())
    }

    /// The URL drones are told to consume from.
    pub fn drone_broker_url(&self) -> Option<&str> {
        self.drone_amqp_url.as_deref().or(self.amqp_url.as_deref())
    }

    /// TOML for `--print-config`, with passwords and secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        for webhook in shown.webhooks.values_mut() {
            for secret in [&mut webhook.token, &mut webhook.hmac_secret]
                .into_iter()
                .flatten()
            {
                *secret = "***".into();
            }
        }
        if let Some(token) = shown.alertmanager_token.as_mut() {
            *token = "***".into();
        }
        for url in [
            &mut shown.database_url,
            &mut shown.amqp_url,
            &mut shown.drone_amqp_url,
        ]
        .into_iter()
        .flatten()
        {
            *url = ultron8_broker::amqp::redact(url);
        }
        toml::to_string_pretty(&shown)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hive.toml");
        std::fs::write(&file, "database_url = \"postgres://file\"\nheartbeat_interval = \"2s\"\noffline_after = \"9s\"\n")
            .expect("write");
        let overrides = ConfigOverrides {
            config: Some(file),
            database_url: Some("postgres://flag".into()),
            ..Default::default()
        };
        let config = HiveConfig::load(&overrides).expect("load");
        assert_eq!(config.database_url.as_deref(), Some("postgres://flag"));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(config.grpc_listen, SocketAddr::from(([0, 0, 0, 0], 7443)));
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("hive.toml");
        std::fs::write(&file, "databse_url = \"postgres://typo\"\n").expect("write");
        let err = HiveConfig::load(&ConfigOverrides {
            config: Some(file),
            ..Default::default()
        })
        .expect_err("typo must be refused");
        assert!(format!("{err:#}").contains("databse_url"), "{err:#}");
    }

    #[test]
    fn the_shipped_example_configuration_loads() {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/hive.toml.example");
        let config = HiveConfig::load(&ConfigOverrides {
            config: Some(example),
            ..Default::default()
        })
        .expect("deploy/hive.toml.example must load");
        assert!(config.webhooks["deploy"].token.is_some());
        assert!(config.webhooks["github"].hmac_secret.is_some());
        assert!(config.drone_amqp_url.is_some());
    }

    #[test]
    fn printed_config_hides_passwords() {
        let config = HiveConfig {
            amqp_url: Some("amqp://u:secret@mq/".into()),
            ..Default::default()
        };
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("amqp://u:***@mq/"), "{shown}");
    }
}
