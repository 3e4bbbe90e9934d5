//! The [`ultron8_store::Store`] conformance suite, run against every backend.
//!
//! `conformance/suite.rs` holds the backend-independent tests; each backend
//! module provides a runner that hands every test a fresh store, plus any
//! tests of its own (schema-level guarantees only that database can show).

// A crate root resolves `mod x;` next to itself, not in `conformance/`.
#[path = "conformance/postgres.rs"]
mod postgres;
#[path = "conformance/sqlite.rs"]
mod sqlite;
#[path = "conformance/suite.rs"]
mod suite;
