//! The validated model of a pack: what [`crate::load`] returns and what the
//! hive stores (as JSON, hence serde on everything).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ultron8_core::criteria::Criterion;
use ultron8_core::params::ParamSchema;
use ultron8_core::policy::Policy;
use ultron8_core::probe::ProbeSpec;
use ultron8_core::schedule::Schedule;

/// Relative path (with `/`) -> contents. Built by [`crate::source`], or by
/// tests.
pub type PackFiles = BTreeMap<String, Vec<u8>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pack {
    pub manifest: Manifest,
    /// Sorted by name.
    pub actions: Vec<Action>,
    /// Sorted by name.
    pub rules: Vec<Rule>,
    /// Every file under `scripts/`, sorted by path.
    pub scripts: Vec<Script>,
    /// `sensors/*.yaml` of `kind: probe`, sorted by name. Absent from packs
    /// stored before probes existed.
    #[serde(default)]
    pub probes: Vec<Probe>,
    /// `sensors/*.yaml` of `kind: check`, sorted by name. Absent from packs
    /// stored before checks existed.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Discovery sources (`sensors/<name>.yaml`, `kind: source`), sorted
    /// by name. Absent from packs stored before they existed.
    #[serde(default)]
    pub sources: Vec<crate::discovery_source::SourceDecl>,
}

impl Pack {
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// `sensors/<name>.yaml` with `kind: check`: a command the drones matched
/// by `targets` run every `interval`, with thresholds into `drone.check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub pack: String,
    pub name: String,
    pub description: String,
    /// A target expression (`ultron8_core::target`), parsed at install.
    pub targets: String,
    /// `Script` carries the pack path (`scripts/...`) as its name.
    pub program: ultron8_core::Program,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub thresholds: ultron8_core::health::Thresholds,
}

impl Check {
    /// `pack.name`.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }

    /// What a drone runs.
    pub fn spec(&self) -> ultron8_core::checks::CheckSpec {
        ultron8_core::checks::CheckSpec {
            reference: self.reference(),
            program: self.program.clone(),
            interval: self.interval,
            timeout: self.timeout,
            thresholds: self.thresholds,
        }
    }
}

/// `pack.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: semver::Version,
    pub description: String,
    pub author: String,
    /// Packs whose actions this pack's rules use.
    pub dependencies: Vec<String>,
}

/// `actions/<name>.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub pack: String,
    pub name: String,
    pub description: String,
    pub runner: Runner,
    pub parameters: ParamSchema,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

impl Action {
    /// `pack.name`, how rules and operators refer to it.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }

    /// Whether the action runs on drones, so a rule using it must say where
    /// (`action.target`). HTTP and no-op actions run on the hive.
    pub fn runs_on_drones(&self) -> bool {
        matches!(self.runner, Runner::Shell { .. } | Runner::Script { .. })
    }
}

/// How an action runs. Every string here except `Script::path` and
/// `Script::sha256` is a template over the action's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Runner {
    /// On the drones, without a shell (`command`) or with `/bin/sh -c`
    /// (`shell`).
    Shell {
        program: ShellProgram,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// A file from the pack's `scripts/`, shipped to the drones and checked
    /// against `sha256` before it runs.
    Script {
        path: String,
        sha256: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// A request made by the hive.
    Http {
        /// Upper case: `GET`, `POST`, ...
        method: String,
        /// Starts with `http://` or `https://`, or with a template: the hive
        /// must check the scheme of the rendered URL before sending.
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: Option<String>,
        /// Statuses that count as success; empty means any 2xx.
        #[serde(default)]
        expect_status: Vec<u16>,
    },
    /// Does nothing: for rules that only record, hold or escalate.
    Noop,
    /// Raises a `core.escalation` event naming the rule and event that
    /// fired it, with the action's `reason` parameter: for a person (a rule
    /// on `core.escalation` that pages) or another rule.
    Escalate,
}

impl Runner {
    pub fn kind(&self) -> &'static str {
        match self {
            Runner::Shell { .. } => "shell",
            Runner::Script { .. } => "script",
            Runner::Http { .. } => "http",
            Runner::Noop => "noop",
            Runner::Escalate => "escalate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShellProgram {
    /// `command`: argv, executed without a shell.
    Argv(Vec<String>),
    /// `shell`: passed to `/bin/sh -c`.
    Script(String),
}

/// `rules/<name>.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub pack: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    /// A built-in trigger type (`ultron8_core::triggers`).
    pub trigger: String,
    /// As written in the file.
    pub trigger_parameters: Map<String, Value>,
    /// For timer triggers (`core.interval`, `core.cron`), the schedule their
    /// parameters describe.
    pub schedule: Option<Schedule>,
    /// All must hold.
    pub criteria: Vec<Criterion>,
    pub action: RuleAction,
    pub policy: Policy,
}

impl Rule {
    /// `pack.name`.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }
}

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleAction {
    /// `pack.action`.
    pub reference: String,
    /// A template over the trigger's payload rendering a target expression;
    /// `None` for actions that run on the hive.
    pub target: Option<String>,
    /// Values for the action's parameters: literals, or templates over the
    /// payload (any string inside a value is one).
    pub parameters: Map<String, Value>,
}

/// A file under `scripts/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// `scripts/...`, relative to the pack.
    pub path: String,
    /// Lowercase hex SHA-256 of `content`.
    pub sha256: String,
    /// Base64 in JSON, so a stored pack stays a reasonable size.
    #[serde(with = "base64_bytes")]
    pub content: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// What is installed already: rules may use actions of other packs, which
/// must be installed first and listed in `dependencies`.
pub trait Installed {
    /// The installed action `pack.name`, if any.
    fn action(&self, reference: &str) -> Option<Action>;
    /// The installed version of a pack, if it is installed.
    fn pack_version(&self, name: &str) -> Option<semver::Version>;
}

/// Nothing installed: for a first pack, or for checking a pack on its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct NothingInstalled;

impl Installed for NothingInstalled {
    fn action(&self, _reference: &str) -> Option<Action> {
        None
    }

    fn pack_version(&self, _name: &str) -> Option<semver::Version> {
        None
    }
}

/// Packs already loaded, as if installed: lets a tool check a set of packs
/// that depend on each other (load them in dependency order).
impl Installed for Vec<Pack> {
    fn action(&self, reference: &str) -> Option<Action> {
        let (pack, name) = reference.split_once('.')?;
        self.iter()
            .find(|p| p.manifest.name == pack)?
            .action(name)
            .cloned()
    }

    fn pack_version(&self, name: &str) -> Option<semver::Version> {
        self.iter()
            .find(|p| p.manifest.name == name)
            .map(|p| p.manifest.version.clone())
    }
}

/// `sensors/<name>.yaml` with `kind: probe`: what the hive checks on
/// discovered targets (or listed addresses), with the thresholds of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub pack: String,
    pub name: String,
    pub description: String,
    pub spec: ProbeSpec,
}

impl Probe {
    /// `pack.name`.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }
}
