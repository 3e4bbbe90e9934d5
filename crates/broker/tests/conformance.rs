//! The broker conformance suite, run against every implementation.
//!
//! `conformance/suite.rs` holds the backend-independent tests, written
//! against [`ultron8_broker::ActionPublisher`] and
//! [`ultron8_broker::ActionConsumer`] only; each backend module provides a
//! runner that hands every test a broker, plus any tests of its own
//! (behaviour only that implementation has).

// A crate root resolves `mod x;` next to itself, not in `conformance/`.
#[path = "conformance/amqp.rs"]
mod amqp;
#[path = "conformance/inproc.rs"]
mod inproc;
#[path = "conformance/suite.rs"]
mod suite;
