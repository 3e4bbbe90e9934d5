//! The Ultron8 drone: consumes signed action requests addressed to it, runs
//! them safely, and reports the results to the hive without losing any.
//!
//! - [`executor`]: runs one command: no shell unless asked, process-group
//!   kill on timeout, capped output.
//! - [`journal`]: remembers every execution id before it runs, so a
//!   redelivered request never runs twice.
//! - [`spool`]: results waiting for the hive, on disk until acknowledged.
//! - [`checks`]: the checks the hive signed for this drone, run on their
//!   intervals; their transitions spooled until the hive has them.
//! - [`policy`]: the owner's `[policy]` in force: what may run here, and
//!   as which user.
//! - [`runtime`]: registration, heartbeats, consumption and reporting.
//! - [`join`]: enrollment with a one-time token.
//! - [`config`], [`facts`], [`backoff`]: the data directory, host facts
//!   and stats, reconnect pacing.

pub mod backoff;
pub mod checks;
pub mod config;
pub mod executor;
pub mod facts;
pub mod join;
pub mod journal;
pub mod policy;
pub mod runtime;
pub mod spool;
