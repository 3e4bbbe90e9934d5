//! `ultron8-hive serve`: the production hive, on Postgres and RabbitMQ.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use ultron8_broker::amqp::{AmqpPublisher, PublisherOptions, redact};
use ultron8_hive::config::HiveConfig;
use ultron8_store::postgres::{PgSettings, PgStore};

/// Connects to Postgres and RabbitMQ as configured and serves until
/// `shutdown` is cancelled.
pub async fn run(config: HiveConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let database_url = config.database_url.clone().context(
        "no database configured: pass --database-url, set ULTRON8_DATABASE_URL, or put database_url in the config file",
    )?;
    let amqp_url = config
        .amqp_url
        .clone()
        .context("no broker configured: pass --amqp-url, set ULTRON8_AMQP_URL, or put amqp_url in the config file")?;
    let settings = PgSettings {
        acquire_timeout: config.database_acquire_timeout,
    };
    let store = PgStore::connect_with(&database_url, settings)
        .await
        .with_context(|| format!("cannot open the database at {}", redact(&database_url)))?;
    let publisher = AmqpPublisher::connect_with(
        &amqp_url,
        PublisherOptions {
            connect_timeout: config.amqp_connect_timeout,
            publish_timeout: config.amqp_publish_timeout,
        },
    )
    .await?;
    ultron8_hive::serve::run(
        config,
        crate::build_info(),
        Arc::new(store),
        Arc::new(publisher),
        shutdown,
    )
    .await
}
