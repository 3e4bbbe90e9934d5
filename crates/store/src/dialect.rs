//! What differs between the databases the store runs on, named once.
//!
//! [`crate::sql::SqlStore`] writes every operation once, over any
//! [`Dialect`]; the few places where Postgres and SQLite need different
//! text or a different step are the items of this trait, implemented in
//! [`crate::postgres`] and [`crate::sqlite`]. Times, which the two
//! databases store differently, are bound and read as [`SqlTime`], whose
//! encodings live in those modules too.

use std::future::Future;

use chrono::{DateTime, Utc};
use sqlx::Database;
use sqlx::postgres::PgQueryResult;
use sqlx::sqlite::SqliteQueryResult;

use crate::Result;

/// A database the store runs on: [`sqlx::Postgres`] or [`sqlx::Sqlite`]
/// (sealed: the conformance suite is what makes a backend, not this trait).
///
/// Every item is either a piece of SQL that one database spells and the
/// other leaves out, or a step that one needs and the other gets from its
/// single writer. Everything else is written once in [`crate::sql`].
pub trait Dialect: Database<QueryResult: RowsAffected> + sealed::Sealed {
    /// The statement that opens a transaction that will write.
    const BEGIN_WRITE: &'static str;

    /// Appended to a `SELECT` whose rows the transaction updates next:
    /// holds them against other writers until commit. Empty where the
    /// write transaction already excludes every other writer.
    const FOR_UPDATE: &'static str;
    /// Appended to a `SELECT` whose rows must not change until commit
    /// while others may still read them.
    const FOR_SHARE: &'static str;
    /// [`Dialect::FOR_UPDATE`], passing over rows another transaction
    /// holds rather than waiting for them.
    const FOR_UPDATE_SKIP_LOCKED: &'static str;

    /// The table function that turns a JSON array of strings, bound as
    /// one parameter, into rows whose column `value` is each string: a list
    /// of any length in one statement, whatever the database's limit on
    /// bound parameters.
    const JSON_ARRAY_ELEMENTS: &'static str;

    /// How many parameters one statement may bind; batch writes split
    /// their rows to stay within it.
    const MAX_BIND_PARAMETERS: usize;

    /// Makes this transaction wait for, then exclude until it ends, every
    /// other transaction that locks any of `names` of the same `kind`.
    /// Names need not have a row (a pack's first install has none yet).
    fn lock_names(
        conn: &mut Self::Connection,
        kind: NamedLock,
        names: &[&str],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// How many rows a statement changed: what sqlx's result types each have,
/// but no sqlx trait names.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
}

impl RowsAffected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}

/// What a [`Dialect::lock_names`] name is the name of, so that a pack and a
/// rule called alike do not wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedLock {
    /// Installs and removals of one pack run one after the other.
    Pack,
    /// Policy decisions of one rule run one after the other.
    Rule,
    /// Writes of one secret run one after the other, so that of two
    /// operators creating it at once one creates and the other replaces.
    Secret,
}

/// A point in time as a column holds it: `TIMESTAMPTZ` in Postgres,
/// INTEGER microseconds since the unix epoch in SQLite. Both keep
/// microseconds, so an instant reads back the same from either.
///
/// Rows decode their times as this and queries bind it, so the SQL and the
/// row types are the same for both databases. Public only because the
/// bounds of [`crate::sql::SqlStore`]'s `impl` blocks name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlTime(pub DateTime<Utc>);

impl From<SqlTime> for DateTime<Utc> {
    fn from(time: SqlTime) -> Self {
        time.0
    }
}

mod sealed {
    pub trait Sealed {}

    impl Sealed for sqlx::Postgres {}
    impl Sealed for sqlx::Sqlite {}
}
