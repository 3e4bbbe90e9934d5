//! How action requests travel from the hive to drones.
//!
//! The hive publishes through [`ActionPublisher`]; a drone consumes its own
//! queue through [`ActionConsumer`]. [`amqp`] implements both over RabbitMQ;
//! [`inproc`] implements both in memory for the single-process embedded hive
//! (`ultron8-hive dev`), with the differences its module documents.
//! The broker is not trusted with integrity: bodies are signed by the hive
//! and verified by the drone, so these traits only move bytes.

pub mod amqp;
pub mod inproc;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to the broker at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot publish to {queue}: {reason}")]
    Publish { queue: String, reason: String },
    #[error("broker error: {0}")]
    Protocol(String),
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// The durable queue a drone consumes its action requests from.
pub fn drone_queue_name(drone_id: &str) -> String {
    format!("ultron8.drone.{drone_id}")
}

#[async_trait]
pub trait ActionPublisher: Send + Sync + 'static {
    /// Declares the drone's durable queue; idempotent.
    async fn ensure_drone_queue(&self, drone_id: &str) -> Result<()>;
    /// Publishes a persistent message to the drone's queue and returns once
    /// the broker has confirmed it, or fails when the implementation's
    /// deadline passes first (the message may then still arrive: callers
    /// retry, and drones drop a request they already have). The broker
    /// drops it unread after `ttl`.
    async fn publish(&self, drone_id: &str, body: Vec<u8>, ttl: Duration) -> Result<()>;
    /// Whether the broker is reachable, for readiness checks. Answers at
    /// once from what the publisher knows, never waiting behind a publish
    /// or a connection in progress.
    async fn ping(&self) -> Result<()>;
}

/// One received message. It stays unacknowledged (and is redelivered after
/// a crash) until [`Delivery::ack`] or [`Delivery::reject`].
pub struct Delivery {
    pub body: Vec<u8>,
    /// Whether the broker delivered this message before.
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub fn new(body: Vec<u8>, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Delivery {
            body,
            redelivered,
            acker,
        }
    }

    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Drops the message for good (no requeue).
    pub async fn reject(self) -> Result<()> {
        self.acker.reject().await
    }
}

#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<()>;
    async fn reject(self: Box<Self>) -> Result<()>;
}

#[async_trait]
pub trait ActionConsumer: Send + Sync + 'static {
    /// Consumes the drone's queue. The stream ends (or yields an error) when
    /// the connection is lost; the caller reconnects.
    async fn consume(
        &self,
        drone_id: &str,
        prefetch: u16,
    ) -> Result<BoxStream<'static, Result<Delivery>>>;
}
