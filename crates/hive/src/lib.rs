//! The Ultron8 hive: stores the fleet, jobs, executions and audit trail,
//! resolves targets, dispatches signed requests to drones and collects
//! their results.
//!
//! - [`config`]: layered configuration.
//! - [`identity`]: the CA, certificates and signing key on disk (`init`).
//! - [`hive`]: shared state and the dispatch/expiry/offline operations.
//! - [`drone_service`], [`control_service`]: the gRPC APIs.
//! - [`http`]: health, readiness, metrics.
//! - [`serve`]: wiring and lifetime.
//! - [`dev`]: the all-in-one hive + local drone on SQLite and an in-process
//!   broker.

pub mod config;
pub mod control_service;
pub mod dev;
pub mod drone_service;
pub mod hive;
pub mod http;
pub mod identity;
pub mod metrics;
mod rpc;
pub mod serve;
