//! ultronctl, the operator CLI. Talks to the hive's control service over
//! mutual TLS.
//!
//! - [`config`]: where the hive and the credentials are.
//! - [`client`]: connecting, and failures as actionable messages.
//! - [`cli`]: the commands.
//! - [`follow`]: a job's live output, cancel on Ctrl-C, `job logs`.
//! - [`automation`]: packs, events, rules and the audit trail.
//! - [`output`]: tables and JSON.
//! - [`probes`]: where the hive's probes stand (`probe list`).
//! - [`secrets`]: the hive's named secrets (`secret set|list|get|delete`).
//! - [`status`]: `version` and `status`.

pub mod automation;
pub mod checks;
pub mod cli;
pub mod client;
pub mod config;
pub mod fleet;
pub mod follow;
pub mod operators;
pub mod output;
pub mod probes;
pub mod secrets;
pub mod status;
pub mod top;
