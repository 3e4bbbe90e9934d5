//! The Ultron8 hive: stores the fleet, jobs, executions and audit trail,
//! resolves targets, dispatches signed requests to drones and collects
//! their results.
//!
//! - [`config`]: layered configuration.
//! - [`identity`]: the CA, certificates and signing key on disk (`init`).
//! - [`hive`]: shared state and the dispatch/expiry/offline operations.
//! - [`drone_service`], [`control_service`]: the gRPC APIs.
//! - [`http`]: health, readiness, metrics, and the event intake routes.
//! - [`packs`]: validating and installing packs.
//! - [`events`]: webhooks and the Alertmanager receiver.
//! - [`engine`]: the rules engine and timers.
//! - [`actions`]: pack actions as jobs; `http`/`noop` actions run here.
//! - [`serve`]: wiring and lifetime.
//! - [`dev`]: the all-in-one hive + local drone on SQLite and an in-process
//!   broker.

pub mod actions;
pub mod config;
pub mod control_service;
pub mod dev;
pub mod drone_service;
pub mod engine;
pub mod events;
pub mod hive;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod packs;
mod rpc;
pub mod serve;
