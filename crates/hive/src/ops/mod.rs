//! The hive's operations, one module per noun. Each is a method of
//! [`Hive`](crate::hive::Hive) that takes core and store types and returns
//! `Result<_, HiveError>`; the gRPC services and the HTTP event routes are
//! adapters that decode a request, call one operation and encode its
//! result, so every transport gets the same behaviour and errors.
//!
//! - [`jobs`]: submitting ([`jobs::JobSpec`], one path for ad-hoc commands
//!   and pack actions), watching and reading jobs and executions.
//! - [`follow`]: a job's output and states as they happen.
//! - [`drones`]: the fleet, enrollment, registration, heartbeats, removal.
//! - [`executions`]: output and status reports from drones.
//! - [`tokens`]: join tokens.
//! - [`packs`]: installing, reading and removing packs; their scripts.
//! - [`actions`]: the installed actions and their parameters.
//! - [`events`]: storing events (webhooks, Alertmanager, operators) and
//!   reading them.
//! - [`rules`]: reading, enabling and testing rules.
//! - [`audit`]: reading the audit trail.
//! - [`secrets`]: the hive's named secrets, sealed at rest, and their
//!   delivery to the drone that runs a command needing them.
//! - [`fleet`]: discovery sources and the fleet views of the inventory
//!   they feed (summary, services, health).
//! - [`probes`]: where each probe stands on each of its targets.
//! - [`checks`]: drone checks: each drone's signed check set, the
//!   transitions drones report (`drone.check` events, once each), their
//!   summaries, and `check list`.
//! - [`health`]: readiness and the hive's status summary.
//! - [`lookup`]: ids by a unique prefix, ids shortened for printing, and
//!   the closest names to one that matches nothing.

pub mod actions;
pub mod audit;
pub mod checks;
pub mod drones;
pub mod events;
pub mod executions;
pub mod fleet;
pub mod follow;
pub mod health;
pub mod jobs;
pub mod lookup;
pub mod operators;
pub mod packs;
pub mod probes;
pub mod rules;
pub mod secrets;
pub mod tokens;
