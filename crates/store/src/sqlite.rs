//! The embedded [`crate::Store`]: the hive's state in one local SQLite file, for
//! the single-host default (`ultron8-hive dev`) where running Postgres would
//! be a chore.
//!
//! Its queries are [`crate::sql`]'s, shared with [`crate::postgres`], and
//! the conformance suite in `tests/conformance.rs` runs against both. This
//! module holds what only SQLite has: the file and its two pools, the
//! migrations, the [`Dialect`] items that its single writer makes empty,
//! and the time encoding (INTEGER microseconds since the unix epoch, as
//! `migrations/sqlite/0001_initial.sql` explains).
//!
//! # Write serialisation
//!
//! SQLite lets one connection write to a file at a time. Letting pooled
//! connections race for that lock would work badly: SQLite's busy handler
//! waits by sleeping and polling, with no fairness, and a transaction that
//! has read before it writes cannot wait at all (`SQLITE_BUSY_SNAPSHOT`).
//! So the store keeps two pools:
//!
//! - a writer pool of exactly one connection, through which every write
//!   goes. The hive's writes queue for it in order and each runs alone.
//!   Write transactions begin with `BEGIN IMMEDIATE`, which takes SQLite's
//!   write lock at `BEGIN`. Against the store's own writer that is
//!   redundant, but if another process writes to the file (the sqlite3
//!   shell, a backup tool), the store waits for it at `BEGIN`, up to the
//!   busy timeout, instead of failing halfway through.
//! - a pool of query-only reader connections. In WAL mode readers block
//!   neither the writer nor each other, and every statement sees the latest
//!   commit.
//!
//! That takes the place of Postgres's row locks, which is why this
//! [`Dialect`]'s `FOR UPDATE` and kin are empty and its
//! [`Dialect::lock_names`] does nothing. Consuming a join token is one
//! conditional `UPDATE ... RETURNING`. A transition reads the status,
//! checks it against [`ultron8_core::ExecutionStatus::can_transition_to`]
//! and writes, all in one IMMEDIATE transaction, so no other write can land
//! in between. Likewise, claiming events is one `UPDATE ... RETURNING`
//! (where Postgres needs `FOR UPDATE SKIP LOCKED`), and a rule firing counts
//! what its policy needs and writes its outcome in one IMMEDIATE
//! transaction (where Postgres takes a per-rule advisory lock).
//! Outcomes are the same as with Postgres; the cost is that writes to
//! different rows do not run in parallel, which a single host's hive does
//! not need.
//!
//! The file must be on a local filesystem: WAL needs memory shared between
//! connections, which network filesystems do not provide.
//!
//! # Differences from Postgres
//!
//! - Text sorts bytewise (SQLite's BINARY collation). Postgres sorts
//!   `audit_log.id` bytewise too, but every other text column by the
//!   database's collation. So orderings by other text (drones by id, a job's
//!   executions by drone id, ties between jobs created in the same
//!   microsecond) match only if the Postgres database uses the C or C.UTF-8
//!   collation, or the ids are lowercase uuids, which sort alike under any
//!   of them.
//! - Postgres checks that a script is stored under the SHA-256 of its
//!   content; SQLite has no SHA-256 function and only checks that the hash
//!   is 64 lowercase hex digits.
//! - Postgres refuses a NUL character in text (and `\u0000` in JSON) with a
//!   database error; SQLite stores it.
//! - Postgres refuses times before 4714 BC ("timestamp out of range");
//!   SQLite stores them.
//! - Database failures are [`crate::StoreError::Database`] in both, but carry
//!   SQLite result codes instead of SQLSTATEs. A duplicate audit id is
//!   refused by the append-only trigger, not reported as a unique violation.
//! - A write that waits for the writer connection longer than the acquire
//!   timeout (10 s; Postgres's wait for a pooled connection is configurable
//!   and 3 s by default) fails. Postgres would have run it in parallel, or
//!   waited on the row lock without a limit.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteArgumentValue, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous, SqliteTypeInfo, SqliteValueRef,
};
use sqlx::{Decode, Encode, Sqlite, SqliteConnection, Type};

use crate::dialect::SqlTime;
use crate::sql::{Dialect, NamedLock, SqlStore};
use crate::{Result, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Readers only contend for CPU and the page cache, so a handful covers the
/// hive's concurrent request handlers.
const MAX_READERS: u32 = 8;
/// A request waiting longer than this for a connection is better failed than
/// queued: a write backlog this long means the disk cannot keep up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long a statement waits for a lock another process holds on the file
/// (the store's own connections never wait on each other for one).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// [`crate::Store`] on an SQLite file. Cheap to clone: clones share the
/// pools: the writer of exactly one connection, through which every write
/// goes, and the query-only readers (see the module docs).
pub type SqliteStore = SqlStore<Sqlite>;

/// Opens the writer pool and migrates, retrying while another process is
/// doing the same to a new file: switching a fresh database to WAL takes an
/// exclusive lock, and SQLite reports that contention as "database is
/// locked" at once instead of waiting out the busy timeout.
async fn open_writer(options: SqliteConnectOptions) -> Result<SqlitePool> {
    let mut delay = std::time::Duration::from_millis(10);
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let attempt = async {
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options.clone())
                .await?;
            migrate(&writer).await?;
            Ok::<_, StoreError>(writer)
        };
        match attempt.await {
            Ok(writer) => return Ok(writer),
            Err(e) if is_locked(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_millis(250));
            }
            Err(e) => return Err(e),
        }
    }
}

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6), also when wrapped by a migration.
fn is_locked(error: &StoreError) -> bool {
    let database_error = match error {
        StoreError::Database(sqlx::Error::Database(e)) => Some(e),
        StoreError::Migration(sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(e))) => {
            Some(e)
        }
        _ => None,
    };
    match database_error.and_then(|e| e.code()) {
        // Extended codes keep the primary code in the low byte.
        Some(code) => code
            .parse::<u32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
        None => error.to_string().contains("database is locked"),
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file if it is missing,
    /// and brings the schema up to date. The directory must exist.
    ///
    /// Safe to call from several processes at once: the migration runs
    /// under SQLite's write lock, so one opener applies it and the others
    /// wait, then find nothing to do.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // NORMAL is the usual choice with WAL, but may lose the last
            // commits on power loss; FULL makes a commit as durable as it is
            // in Postgres.
            .synchronous(SqliteSynchronous::Full);

        // Recycling connections only makes sense for a server that can fail
        // over; a local file has nothing to gain from it.
        let writer_options = options
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let writer = open_writer(writer_options).await?;

        // query_only makes a write that was sent to a reader by mistake fail
        // instead of racing the writer for the lock.
        let readers = SqlitePoolOptions::new()
            .max_connections(MAX_READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(IDLE_TIMEOUT)
            .max_lifetime(None)
            .connect_with(options.pragma("query_only", "ON"))
            .await?;
        Ok(SqlStore { writer, readers })
    }

    /// A private, empty database that lives in memory until the store and
    /// all its clones are dropped; for tests.
    ///
    /// An in-memory database belongs to the one connection that opened it,
    /// so a single connection serves both reads and writes. It is never
    /// retired: a replacement would open a different, empty database.
    pub async fn open_in_memory() -> Result<SqliteStore> {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                SqliteConnectOptions::new()
                    .in_memory(true)
                    .foreign_keys(true),
            )
            .await?;
        migrate(&pool).await?;
        Ok(SqlStore {
            writer: pool.clone(),
            readers: pool,
        })
    }

    /// Closes every connection, this store's and its clones'. Once the last
    /// one is closed, SQLite writes the WAL back into the database file and
    /// removes the `-wal` and `-shm` files, leaving one self-contained file
    /// to copy or back up.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

/// Applies pending migrations.
///
/// sqlx's SQLite migrator takes no lock (its Postgres one holds an
/// advisory lock). Two processes opening a new file at once would both
/// apply the first migration, and one of them would fail. Running the
/// whole migration in one IMMEDIATE transaction makes checking and
/// applying exclusive: a second opener waits at `BEGIN` (busy timeout),
/// then finds nothing to do. Each migration therefore runs inside a
/// transaction, so it cannot use what SQLite forbids there
/// (`PRAGMA foreign_keys = OFF` does nothing; use
/// `PRAGMA defer_foreign_keys = ON` for table rebuilds).
async fn migrate(writer: &SqlitePool) -> Result<()> {
    let mut tx = writer.begin_with(Sqlite::BEGIN_WRITE).await?;
    // `run_direct` rather than `run`: with a borrowed connection, the
    // `Acquire` bound on `run` makes every future awaiting it non-`Send`
    // ("implementation of `Acquire` is not general enough"), and `open`
    // must work in a spawned task. sqlx keeps `run_direct` public for
    // this reason.
    MIGRATOR.run_direct(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

impl Dialect for Sqlite {
    /// Takes SQLite's write lock at `BEGIN` (see the module docs).
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // The write lock, held from BEGIN, already keeps every other writer
    // out until commit, so no row needs a lock of its own.
    const FOR_UPDATE: &'static str = "";
    const FOR_SHARE: &'static str = "";
    const FOR_UPDATE_SKIP_LOCKED: &'static str = "";
    const JSON_ARRAY_ELEMENTS: &'static str = "json_each";
    /// SQLITE_MAX_VARIABLE_NUMBER, as SQLite has compiled it since 3.32.
    const MAX_BIND_PARAMETERS: usize = 32_766;

    /// Nothing to take: the write transaction already excludes every other
    /// writer, whatever the names.
    async fn lock_names(
        _conn: &mut SqliteConnection,
        _kind: NamedLock,
        _names: &[&str],
    ) -> Result<()> {
        Ok(())
    }
}

// --- times ----------------------------------------------------------------------

/// Postgres's epoch, 2000-01-01T00:00:00Z, in microseconds since the unix
/// epoch.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// `at` as stored: microseconds since the unix epoch.
///
/// Postgres keeps microseconds, and sqlx drops the rest by truncating toward
/// Postgres's epoch, 2000-01-01. Doing the same (rather than always
/// flooring, which differs before 2000) makes both stores keep the same
/// instant for any input, so the same comparisons hold.
fn micros(at: DateTime<Utc>) -> i64 {
    // Cannot overflow: chrono's range is about ±262,000 years, i64
    // microseconds about ±292,000.
    let floored = at.timestamp() * 1_000_000 + i64::from(at.timestamp_subsec_micros());
    let dropped_nanos = !at.timestamp_subsec_nanos().is_multiple_of(1_000);
    if floored < POSTGRES_EPOCH_MICROS && dropped_nanos {
        floored + 1
    } else {
        floored
    }
}

fn from_micros(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "{micros} microseconds since the unix epoch is out of the representable range"
        ))
    })
}

impl Type<Sqlite> for SqlTime {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for SqlTime {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(micros(self.0), buf)
    }
}

// sqlx would read an INTEGER into a `DateTime` as unix seconds, which is why
// rows hold `SqlTime` rather than `DateTime`.
impl<'r> Decode<'r, Sqlite> for SqlTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(SqlTime(from_micros(Decode::<Sqlite>::decode(value)?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    #[test]
    fn times_keep_microseconds_and_round_trip() {
        let time = at("2030-01-01T12:34:56.123456Z");
        assert_eq!(micros(time), 1_893_501_296_123_456);
        assert_eq!(from_micros(micros(time)).expect("in range"), time);
    }

    #[test]
    fn sub_microseconds_are_truncated_toward_2000_as_postgres_does() {
        // After 2000: toward the past.
        assert_eq!(
            from_micros(micros(at("2030-01-01T00:00:00.000001999Z"))).expect("in range"),
            at("2030-01-01T00:00:00.000001Z")
        );
        // Before 2000: toward the future, which plain flooring would miss.
        assert_eq!(
            from_micros(micros(at("1999-12-31T23:59:59.999999500Z"))).expect("in range"),
            at("2000-01-01T00:00:00Z")
        );
        assert_eq!(
            from_micros(micros(at("1969-12-31T23:59:59.000000500Z"))).expect("in range"),
            at("1969-12-31T23:59:59.000001Z")
        );
        // Whole microseconds are kept exactly on both sides.
        for whole in ["1999-12-31T23:59:59.999999Z", "1970-01-01T00:00:00Z"] {
            assert_eq!(micros(at(whole)), at(whole).timestamp_micros());
        }
    }

    #[test]
    fn the_whole_chrono_range_is_storable() {
        for extreme in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            let stored = micros(extreme);
            assert_eq!(
                from_micros(stored).expect("in range").timestamp(),
                extreme.timestamp()
            );
        }
        assert!(matches!(from_micros(i64::MAX), Err(StoreError::Corrupt(_))));
    }
}
