//! The production [`crate::Store`]: PostgreSQL through sqlx.
//!
//! The queries are [`crate::sql`]'s, shared with SQLite; this module holds
//! what only Postgres has: the connection pool, the migrations, the
//! [`Dialect`] items that let replicas write in parallel (row locks and
//! advisory locks, where SQLite has one writer), and the time encoding.
//!
//! Queries are checked at run time (`sqlx::query`), not compile time: there
//! is no database at build time. The conformance suite in
//! `tests/conformance.rs` is what keeps them honest.
//!
//! # Concurrency
//!
//! Several hive replicas may share one database, and transactions run at
//! Postgres's default READ COMMITTED: every statement sees what committed
//! before it started. What must not interleave is serialised explicitly:
//!
//! - a read that decides a write locks its rows (`FOR UPDATE`; `FOR SHARE`
//!   for the status an output chunk is checked against; `SKIP LOCKED` for
//!   claiming events, so claimers take different ones);
//! - what has no row to lock takes a transaction-scoped advisory lock on
//!   its name ([`Dialect::lock_names`]): installs and removals of a pack,
//!   and the policy decisions of a rule, whose rule row a pack upgrade may
//!   replace meanwhile.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgPool, PgPoolOptions, PgTypeInfo, PgValueRef,
};
use sqlx::{Decode, Encode, PgConnection, Postgres, Type};

use crate::Result;
use crate::dialect::SqlTime;
use crate::sql::{Dialect, NamedLock, SqlStore};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Enough for the hive's concurrent request handlers and sweepers without
/// letting several hives exhaust a default Postgres (100 connections).
const MAX_CONNECTIONS: u32 = 16;
/// A request waiting longer than this for a connection is better failed than
/// queued: the database is down or the pool is saturated. While Postgres is
/// down the pool retries connecting until then, so this is also how long
/// every request takes to fail: a few seconds, so that callers learn "the
/// database is unavailable" while they still wait for an answer.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Recycling connections lets a failover or a changed DNS record take effect.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// [`crate::Store`] on PostgreSQL. Cheap to clone: clones share the pool.
pub type PgStore = SqlStore<Postgres>;

/// What a deployment may tune of the connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgSettings {
    /// How long a request waits for a pooled connection, opening one
    /// included, before it fails ([`ACQUIRE_TIMEOUT`] by default).
    pub acquire_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            acquire_timeout: ACQUIRE_TIMEOUT,
        }
    }
}

impl PgStore {
    /// Connects with the default [`PgSettings`] and brings the schema up to
    /// date (see [`PgStore::connect_with`]).
    pub async fn connect(database_url: &str) -> Result<PgStore> {
        Self::connect_with(database_url, PgSettings::default()).await
    }

    /// Connects and brings the schema up to date.
    ///
    /// Several hives may start at once against the same database: the
    /// migrator holds a Postgres advisory lock while it works, so exactly
    /// one applies each migration and the others wait, then find nothing to
    /// do.
    pub async fn connect_with(database_url: &str, settings: PgSettings) -> Result<PgStore> {
        let options = PgConnectOptions::from_str(database_url)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(IDLE_TIMEOUT)
            .max_lifetime(MAX_LIFETIME)
            .connect_with(options)
            .await?;
        let store = PgStore::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Wraps an existing pool. The schema is assumed to be current; call
    /// [`PgStore::migrate`] if it may not be.
    pub fn from_pool(pool: PgPool) -> PgStore {
        // One pool for both: Postgres runs reads and writes side by side.
        SqlStore {
            writer: pool.clone(),
            readers: pool,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.writer
    }

    /// Applies pending migrations; safe to run concurrently (see
    /// [`PgStore::connect`]).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }
}

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_SHARE: &'static str = " FOR SHARE";
    const FOR_UPDATE_SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const JSON_ARRAY_ELEMENTS: &'static str = "jsonb_array_elements_text";
    /// The wire protocol counts a statement's parameters in 16 bits.
    const MAX_BIND_PARAMETERS: usize = u16::MAX as usize;

    /// Advisory locks held until the transaction ends. After the wait, each
    /// statement reads a fresh snapshot (READ COMMITTED), so it sees all
    /// that the previous holder wrote. All of them are taken first, in key
    /// order, so two replicas' batches can never wait for each other in a
    /// cycle.
    async fn lock_names(conn: &mut PgConnection, kind: NamedLock, names: &[&str]) -> Result<()> {
        let space = match kind {
            NamedLock::Pack => PACK_LOCK_SPACE,
            NamedLock::Rule => RULE_LOCK_SPACE,
            NamedLock::Secret => SECRET_LOCK_SPACE,
        };
        let mut keys: Vec<i32> = names.iter().map(|name| lock_key(name)).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(space)
                .bind(key)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// Advisory lock spaces: the first key of `pg_advisory_xact_lock(int, int)`,
/// so that a pack and a rule of the same name do not share a lock. (The
/// one-key form, which the migrator uses, is a separate space.)
const PACK_LOCK_SPACE: i32 = 0x5538_0001;
const RULE_LOCK_SPACE: i32 = 0x5538_0002;
const SECRET_LOCK_SPACE: i32 = 0x5538_0003;

/// The second key for `name`: 32-bit FNV-1a, computed here rather than with
/// Postgres's undocumented `hashtext` so it cannot change under an upgrade.
/// Two names sharing a key only serialise needlessly.
fn lock_key(name: &str) -> i32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    i32::from_ne_bytes(hash.to_ne_bytes())
}

// --- times ----------------------------------------------------------------------
//
// TIMESTAMPTZ, through chrono: Postgres keeps microseconds, and sqlx drops
// the rest by truncating toward Postgres's epoch, 2000-01-01 (which
// `crate::sqlite` copies).

impl Type<Postgres> for SqlTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for SqlTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }

    fn size_hint(&self) -> usize {
        Encode::<Postgres>::size_hint(&self.0)
    }
}

impl<'r> Decode<'r, Postgres> for SqlTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(SqlTime(Decode::<Postgres>::decode(value)?))
    }
}
