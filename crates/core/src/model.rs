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
    /// A pack script identified by the SHA-256 of its content. The drone
    /// fetches it from the hive, verifies the hash, and runs it with `args`
    /// (it starts with its own `#!` line).
    Script {
        sha256: String,
        name: String,
        args: Vec<String>,
    },
}

impl Program {
    /// A one-line rendering for tables and logs.
    pub fn display(&self) -> String {
        match self {
            Program::Argv(args) => args.join(" "),
            Program::Shell(script) => script.clone(),
            Program::Script { name, args, .. } => std::iter::once(name.as_str())
                .chain(args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
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
    /// Secret values to mask wherever the command or its output is shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
    /// Environment variables the drone fills, just before the command
    /// starts, with the values of the hive's secrets they name (variable →
    /// secret name). Only names travel and are stored: the drone fetches
    /// the values over its mutual-TLS connection (`GetExecutionSecrets`)
    /// and masks them in the output (see [`crate::secrets`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
}

/// What replaces a secret in output, logs and audit records.
pub const REDACTED: &str = "********";

/// Secrets shorter than this are not masked inside free text: masking a
/// value such as `1` or `ab` would mangle unrelated output and, worse, the
/// positions of the masks would reveal the secret's characters.
pub const MIN_REDACTED_LEN: usize = 4;

impl CommandSpec {
    /// The command as a person may see it: secrets masked.
    pub fn display(&self) -> String {
        redact(&self.program.display(), &self.redact)
    }

    /// A copy safe to show or send to an operator: every secret in the
    /// program and environment masked, and the list of secrets dropped.
    pub fn redacted(&self) -> CommandSpec {
        let mask = |text: &String| redact(text, &self.redact);
        let program = match &self.program {
            Program::Argv(args) => Program::Argv(args.iter().map(mask).collect()),
            Program::Shell(script) => Program::Shell(mask(script)),
            Program::Script { sha256, name, args } => Program::Script {
                sha256: sha256.clone(),
                name: name.clone(),
                args: args.iter().map(mask).collect(),
            },
        };
        CommandSpec {
            program,
            env: self.env.iter().map(|(k, v)| (k.clone(), mask(v))).collect(),
            working_dir: self.working_dir.clone(),
            timeout_ms: self.timeout_ms,
            output_limit_bytes: self.output_limit_bytes,
            redact: Vec::new(),
            secret_env: self.secret_env.clone(),
        }
    }
}

/// `text` with every occurrence of each secret replaced by [`REDACTED`].
/// At each position the longest secret starting there wins, and masked
/// text is never scanned again (a secret made of `*` cannot re-mask a
/// mask). Secrets shorter than [`MIN_REDACTED_LEN`] are left alone.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let masked = redact_bytes(text.as_bytes(), secrets);
    // Only whole secrets (valid UTF-8 themselves) were replaced by ASCII,
    // so the result is still valid UTF-8; the fallback never runs.
    String::from_utf8(masked).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Bytes version of [`redact`] for command output, which may not be UTF-8.
pub fn redact_bytes(bytes: &[u8], secrets: &[String]) -> Vec<u8> {
    let secrets = maskable(secrets);
    if secrets.is_empty() {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    'scan: while i < bytes.len() {
        for secret in &secrets {
            if bytes[i..].starts_with(secret) {
                out.extend_from_slice(REDACTED.as_bytes());
                i += secret.len();
                continue 'scan;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The secrets worth masking in free text (at least [`MIN_REDACTED_LEN`]
/// characters), longest first, without duplicates: the order in which
/// [`redact_bytes`] and [`crate::secrets::OutputMasker`] try them.
pub(crate) fn maskable(secrets: &[String]) -> Vec<&[u8]> {
    let mut secrets: Vec<&[u8]> = secrets
        .iter()
        .filter(|s| s.chars().count() >= MIN_REDACTED_LEN)
        .map(String::as_bytes)
        .collect();
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    secrets.dedup();
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_text_and_bytes() {
        let secrets = vec![
            "hunter2".to_string(),
            String::new(),
            "hunter2-long".to_string(),
            "ab".to_string(),
        ];
        // Longest first; empty and short secrets are never masked.
        assert_eq!(
            redact("pw=hunter2-long and hunter2, ab", &secrets),
            "pw=******** and ********, ab"
        );
        assert_eq!(
            redact_bytes(b"x hunter2 \xff", &secrets),
            b"x ******** \xff".to_vec()
        );
        assert_eq!(redact("nothing secret", &[]), "nothing secret");
        // A secret made of mask characters does not re-mask the mask.
        assert_eq!(
            redact("**** and ****", &["****".to_string()]),
            "******** and ********"
        );
    }
}
