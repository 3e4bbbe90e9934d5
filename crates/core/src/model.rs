//! Domain types shared by the hive, the drone, the store and ultronctl.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a drone tells the hive about its host when it registers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DroneFacts {
    pub hostname: String,
    pub os: String,
    pub os_version: String,
    pub kernel: String,
    pub arch: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
}

/// A drone's resource usage, sent with every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostStats {
    pub cpu_percent: f32,
    pub memory_percent: f32,
    pub disk_percent: f32,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub uptime_seconds: u64,
    /// Unix milliseconds, drone clock.
    pub collected_at_ms: i64,
}

/// How a command is started on the drone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Program {
    /// Executed directly, without a shell.
    Argv(Vec<String>),
    /// Passed to `/bin/sh -c`.
    Shell(String),
}

impl Program {
    /// A one-line rendering for tables and logs.
    pub fn display(&self) -> String {
        match self {
            Program::Argv(args) => args.join(" "),
            Program::Shell(script) => script.clone(),
        }
    }
}

/// A command as requested by an operator or a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    pub program: Program,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `None`: the drone's working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `None`: the drone's default.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Cap per output stream; `None`: the drone's default.
    #[serde(default)]
    pub output_limit_bytes: Option<u64>,
}
