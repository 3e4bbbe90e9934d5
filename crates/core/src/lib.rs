//! Ultron8's functional core: the domain vocabulary and the pure decisions
//! made over it. Nothing in this crate performs I/O, so everything here is
//! tested exhaustively with table and property tests.
//!
//! - [`model`]: drones, facts, stats, commands: the data every other crate
//!   passes around.
//! - [`ids`]: job, execution, drone and event ids as types of their own.
//! - [`audit`]: who did something and what, as the audit trail names them.
//! - [`echo`]: quoting a caller's input back in messages, bounded.
//! - [`status`]: the execution state machine.
//! - [`target`]: target expressions (`label:role=web and not web-3`), their
//!   parser and matcher.
//! - [`params`]: action parameter schemas and validation.
//! - [`criteria`]: rule conditions over event payloads.
//! - [`template`]: parameter and target templates (minijinja).
//! - [`policy`]: cooldown, concurrency and blast-radius decisions.
//! - [`drone_policy`]: what a drone's owner lets run on it.
//! - [`triggers`]: built-in trigger types and their payload shapes.
//! - [`intake`]: webhook and Alertmanager bodies read into event payloads.
//! - [`schedule`]: interval and cron timers.
//! - [`probe`]: probes of discovered targets: where to connect and how an
//!   answer is judged.
//! - [`health`]: the state machine of checks and probes: thresholds,
//!   recovery and flap detection.
//! - [`secrets`]: the hive's named secrets: valid names and values, the
//!   environment variables that carry them, and masking them in output
//!   that arrives in pieces.

pub mod audit;
pub mod checks;
pub mod criteria;
pub mod discovery;
pub mod drone_policy;
pub mod echo;
mod glob;
pub mod health;
pub mod ids;
pub mod intake;
pub mod model;
pub mod params;
pub mod policy;
pub mod probe;
pub mod roles;
pub mod schedule;
pub mod secrets;
pub mod status;
pub mod target;
pub mod template;
pub mod triggers;

pub use model::{CommandSpec, DroneFacts, HostStats, Program};
pub use status::ExecutionStatus;
