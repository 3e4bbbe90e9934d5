//! The drone's data directory: its identity (written once by `join`) and
//! its settings (`drone.toml`, editable by the operator).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use ultron8_core::drone_policy::PolicyConfig;

/// `drone.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DroneFile {
    /// This drone's id, as in its certificate.
    pub id: String,
    /// The hive's gRPC address, `host:port`.
    pub hive: String,
    /// The name the hive's certificate is checked against.
    pub server_name: String,
    /// Labels reported at registration (the join token may add more).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub settings: DroneSettings,
    /// What this host's owner lets run on it, whatever the hive asks
    /// (`ultron8_core::drone_policy`); absent: everything verified runs.
    #[serde(default, skip_serializing_if = "is_open")]
    pub policy: PolicyConfig,
}

fn is_open(policy: &PolicyConfig) -> bool {
    *policy == PolicyConfig::default()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DroneSettings {
    /// Timeout for commands that do not set one.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a command times out.
    #[serde(with = "humantime_serde")]
    pub kill_grace: Duration,
    /// Captured bytes per stream for commands that do not set a cap.
    pub output_limit_bytes: u64,
    /// Commands run at the same time; more wait in the queue.
    pub max_concurrent: u16,
}

impl Default for DroneSettings {
    fn default() -> Self {
        DroneSettings {
            default_timeout: Duration::from_secs(600),
            kill_grace: Duration::from_secs(5),
            output_limit_bytes: 1024 * 1024,
            max_concurrent: 8,
        }
    }
}

pub struct DroneDir {
    root: PathBuf,
}

impl DroneDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DroneDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("drone.toml")
    }
    pub fn key(&self) -> PathBuf {
        self.root.join("drone-key.pem")
    }
    pub fn cert(&self) -> PathBuf {
        self.root.join("drone.pem")
    }
    pub fn ca(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    pub fn journal(&self) -> PathBuf {
        self.root.join("journal")
    }
    pub fn scripts(&self) -> PathBuf {
        self.root.join("scripts")
    }
    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }
    /// The verified check set, the checks' state and their spooled
    /// transitions.
    pub fn checks(&self) -> PathBuf {
        self.root.join("checks")
    }

    pub fn load(&self) -> anyhow::Result<DroneFile> {
        let path = self.config();
        if !path.exists() {
            bail!(
                "{} has no drone identity; join a hive first: ultron8-drone join --hive HOST:7443 --token TOKEN --data-dir {}",
                self.root.display(),
                self.root.display()
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("invalid drone configuration {}", path.display()))
    }
}

/// Parses `key=value` label arguments.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("label {text:?} is not key=value"))?;
    if key.is_empty() {
        return Err(format!("label {text:?} has an empty key"));
    }
    Ok((key.to_string(), value.to_string()))
}
