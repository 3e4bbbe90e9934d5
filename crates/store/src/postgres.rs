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
        store.migrate_if_behind().await?;
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

    /// Leaves a current schema alone, and otherwise migrates it if this
    /// role may: a new database in whose schema it may create tables, or
    /// one whose migration table it owns (the one-role setup, where the
    /// hive owns its tables).
    ///
    /// A hive serving as a role that does not own the schema (see
    /// [`PgStore::grant`]) could not migrate it anyway: it fails here,
    /// before serving, saying to run `ultron8-hive migrate` as the owner.
    /// Checking first matters even when nothing is pending: the migrator
    /// starts with `CREATE TABLE IF NOT EXISTS`, which Postgres refuses to
    /// a role that may not create tables, table present or not.
    pub async fn migrate_if_behind(&self) -> Result<()> {
        let (owned, pending) = match self.schema_state().await? {
            SchemaState::Current => return Ok(()),
            SchemaState::New => {
                let may_create: bool =
                    sqlx::query_scalar("SELECT has_schema_privilege(current_schema(), 'CREATE')")
                        .fetch_one(&self.writer)
                        .await?;
                (may_create, MIGRATOR.iter().map(|m| m.version).collect())
            }
            SchemaState::Differs { owned, pending } => (owned, pending),
        };
        match owned {
            true => self.migrate().await,
            false => {
                let user: String = sqlx::query_scalar("SELECT current_user::text")
                    .fetch_one(&self.writer)
                    .await?;
                let what = if pending.is_empty() {
                    "its applied migrations differ from this hive's (was it migrated by a newer hive?)".to_string()
                } else {
                    let versions: Vec<String> = pending.iter().map(i64::to_string).collect();
                    format!("migrations {} are not applied", versions.join(", "))
                };
                Err(crate::StoreError::Schema(format!(
                    "the database schema is not the one this hive needs: {what}; \
                     {user} does not own the schema and cannot migrate it. As the schema's owner, run \
                     `ultron8-hive migrate --database-url <owner's URL> --grant-to {user}`, then start the hive again"
                )))
            }
        }
    }

    /// Where the schema stands against this build's migrations.
    async fn schema_state(&self) -> Result<SchemaState> {
        let owned: Option<bool> = sqlx::query_scalar(
            "SELECT pg_has_role(current_user, c.relowner, 'USAGE') \
             FROM pg_class c WHERE c.oid = to_regclass('_sqlx_migrations')",
        )
        .fetch_optional(&self.writer)
        .await?;
        let Some(owned) = owned else {
            return Ok(SchemaState::New);
        };
        let rows: Vec<(i64, Vec<u8>, bool)> =
            sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
                .fetch_all(&self.writer)
                .await?;
        let applied: std::collections::BTreeSet<(i64, &[u8])> = rows
            .iter()
            .filter(|(_, _, success)| *success)
            .map(|(version, checksum, _)| (*version, checksum.as_slice()))
            .collect();
        let wanted: std::collections::BTreeSet<(i64, &[u8])> = MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| (m.version, &*m.checksum))
            .collect();
        if applied == wanted && rows.iter().all(|(_, _, success)| *success) {
            return Ok(SchemaState::Current);
        }
        let pending = wanted
            .iter()
            .filter(|(version, _)| !rows.iter().any(|(v, _, _)| v == version))
            .map(|(version, _)| *version)
            .collect();
        Ok(SchemaState::Differs { owned, pending })
    }

    /// Grants `role` what a hive serving as it needs, and nothing more, so
    /// that the audit trail is append-only by privilege and not only by
    /// trigger: a role that does not own `audit_log` cannot disable its
    /// triggers, alter, truncate or drop it, and without the privileges it
    /// cannot update or delete its rows.
    ///
    /// - `audit_log`: SELECT and INSERT only;
    /// - `_sqlx_migrations`: SELECT, so that the hive can tell the schema
    ///   is current ([`PgStore::migrate_if_behind`]);
    /// - every other table of the schema: SELECT, INSERT, UPDATE, DELETE;
    /// - the schema: USAGE; its sequences: USAGE and SELECT.
    ///
    /// Run as the schema's owner after migrating, and again after every
    /// migration (new tables need their grants). It first revokes whatever
    /// `role` held on the schema's tables, so the result is exactly the
    /// list above however often it runs; all in one transaction, so a
    /// running hive never sees its privileges half granted. Refuses a role
    /// that would hold the owner's rights anyway: the owner itself, a
    /// member of it, or a superuser.
    pub async fn grant(&self, role: &str) -> Result<Vec<String>> {
        let refuse = |why: String| Err(crate::StoreError::Schema(why));
        let found: Option<(bool, bool, bool)> = sqlx::query_as(
            "SELECT r.rolsuper, r.rolname = current_user, pg_has_role(r.oid, current_user, 'USAGE') \
             FROM pg_roles r WHERE r.rolname = $1",
        )
        .bind(role)
        .fetch_optional(&self.writer)
        .await?;
        match found {
            None => {
                return refuse(format!(
                    "there is no role {role:?}; create it first (CREATE ROLE ... LOGIN)"
                ));
            }
            Some((true, _, _)) => {
                return refuse(format!(
                    "{role:?} is a superuser, which no privilege restricts; serve as an ordinary role"
                ));
            }
            Some((_, true, _)) => {
                return refuse(format!(
                    "{role:?} is the role running this migration, which owns the schema; \
                     the hive must serve as another role"
                ));
            }
            Some((_, _, true)) => {
                return refuse(format!(
                    "{role:?} is a member of the schema's owner and holds its rights; \
                     serve as a role that is not"
                ));
            }
            Some(_) => {}
        }
        let mut tx = self.writer.begin().await?;
        let quoted_role: String = sqlx::query_scalar("SELECT quote_ident($1)")
            .bind(role)
            .fetch_one(&mut *tx)
            .await?;
        let schema: String = sqlx::query_scalar("SELECT quote_ident(current_schema())")
            .fetch_one(&mut *tx)
            .await?;
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT tablename::text, quote_ident(tablename) FROM pg_tables \
             WHERE schemaname = current_schema() ORDER BY tablename",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut statements = vec![format!("GRANT USAGE ON SCHEMA {schema} TO {quoted_role}")];
        for (name, quoted) in &tables {
            let privileges = match name.as_str() {
                "audit_log" => "SELECT, INSERT",
                "_sqlx_migrations" => "SELECT",
                _ => "SELECT, INSERT, UPDATE, DELETE",
            };
            statements.push(format!(
                "REVOKE ALL ON TABLE {schema}.{quoted} FROM {quoted_role}"
            ));
            statements.push(format!(
                "GRANT {privileges} ON TABLE {schema}.{quoted} TO {quoted_role}"
            ));
        }
        statements.push(format!(
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {quoted_role}"
        ));
        for statement in &statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(statements)
    }
}

/// See [`PgStore::schema_state`].
enum SchemaState {
    /// No migration table: a new database.
    New,
    /// Exactly this build's migrations are applied.
    Current,
    /// Anything else: migrations pending, one failed half-way, or applied
    /// ones this build does not know or knows with another checksum.
    Differs {
        /// Whether this role owns the migration table (or is a member of
        /// its owner), and so may migrate.
        owned: bool,
        /// This build's migrations not applied.
        pending: Vec<i64>,
    },
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
