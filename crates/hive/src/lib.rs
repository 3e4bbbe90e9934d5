//! The Ultron8 hive: stores the fleet, jobs, executions and audit trail,
//! resolves targets, dispatches signed requests to drones and collects
//! their results.
//!
//! - [`config`]: layered configuration.
//! - [`identity`]: the CA, certificates and signing key on disk (`init`).
//! - [`keys`]: the key that seals secrets at rest, behind a provider trait.
//! - [`hive`]: shared state and the dispatch/expiry/offline loops.
//! - [`ops`]: the operations, by noun, with core types in and
//!   [`error::HiveError`] out.
//! - [`error`]: the one error type and its mapping to gRPC and HTTP.
//! - [`actor`]: who did something, as records name them.
//! - [`ids`]: the job, execution and event ids the hive mints.
//! - [`caller`]: who is calling a gRPC service, checked once per request.
//! - [`drone_service`], [`control_service`]: the gRPC adapters over [`ops`].
//! - [`http`]: health, readiness, metrics, and the event intake routes
//!   ([`events`]).
//! - [`engine`]: the rules engine and timers.
//! - [`rulebook`]: rules compiled once per catalog version and planned
//!   against an event.
//! - [`planning`]: an action planned as a job against a fleet snapshot,
//!   writing nothing; knows nothing of [`hive::Hive`], so every module can
//!   use it.
//! - [`actions`]: recorded jobs started; `http`/`noop` actions run here.
//! - [`serve`]: wiring and lifetime, over a store and a broker the caller
//!   chose.
//!
//! The `ultron8-hive` binary (`crates/hive-server`) composes this library
//! with the store, the broker and, for `dev`, a drone; this library knows
//! nothing of the drone.

pub mod actions;
pub mod actor;
pub mod caller;
pub mod config;
pub mod control_service;
pub mod discovery;
pub mod drone_service;
pub mod engine;
pub mod error;
pub mod events;
pub mod hive;
pub mod http;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod metrics;
pub mod ops;
pub mod planning;
pub mod probes;
pub mod revocation;
mod rpc;
pub mod rulebook;
pub mod serve;
