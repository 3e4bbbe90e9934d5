//! Ultron8's functional core: the domain vocabulary and the pure decisions
//! made over it. Nothing in this crate performs I/O, so everything here is
//! tested exhaustively with table and property tests.
//!
//! - [`model`]: drones, facts, stats, commands: the data every other crate
//!   passes around.
//! - [`status`]: the execution state machine.
//! - [`target`]: target expressions (`label:role=web and not web-3`), their
//!   parser and matcher.

pub mod model;
pub mod status;
pub mod target;

pub use model::{CommandSpec, DroneFacts, HostStats, Program};
pub use status::ExecutionStatus;
