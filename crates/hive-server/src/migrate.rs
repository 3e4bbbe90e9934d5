//! `ultron8-hive migrate`: brings the Postgres schema up to date as the
//! role that owns it, and grants the role the hive serves as what it needs
//! and no more (see [`PgStore::grant`]), so that the hive cannot rewrite
//! its own audit trail. `docs/operations.md` ("Database roles") is the
//! operator's side of it.

use anyhow::Context;
use ultron8_broker::amqp::redact;
use ultron8_store::postgres::PgStore;

/// What [`run`] did, for the operator.
#[derive(Debug)]
pub struct Migrated {
    /// The statements that granted the serving role its privileges.
    pub grants: Vec<String>,
}

/// Connects to `database_url` (the schema owner's), applies pending
/// migrations, and grants `grant_to` the serving role's privileges.
pub async fn run(database_url: &str, grant_to: Option<&str>) -> anyhow::Result<Migrated> {
    let store = PgStore::connect(database_url)
        .await
        .with_context(|| format!("cannot migrate the database at {}", redact(database_url)))?;
    let grants = match grant_to {
        Some(role) => store
            .grant(role)
            .await
            .with_context(|| format!("cannot grant {role:?} its privileges"))?,
        None => Vec::new(),
    };
    store.pool().close().await;
    Ok(Migrated { grants })
}
