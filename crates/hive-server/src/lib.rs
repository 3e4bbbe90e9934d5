//! The `ultron8-hive` binary's two ways of running a hive, each composing
//! the hive library with a store and a broker:
//!
//! - [`serve`]: production, on Postgres and RabbitMQ.
//! - [`dev`]: the all-in-one hive + local drone on SQLite and an in-process
//!   broker.
//!
//! And [`migrate`], which prepares the Postgres schema as its owner for a
//! hive that serves as another role.
//!
//! Composition lives here, above the libraries, so that the hive library
//! never depends on the drone: `dev` is the one place that needs both.

pub mod dev;
pub mod migrate;
pub mod serve;

/// This binary's version and the commit it was built from.
pub fn build_info() -> ultron8_hive::hive::BuildInfo {
    ultron8_hive::hive::BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: env!("ULTRON8_COMMIT").to_string(),
    }
}
