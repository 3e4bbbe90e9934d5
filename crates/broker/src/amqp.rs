//! RabbitMQ over AMQP 0-9-1 (lapin).
//!
//! Every drone has one durable queue, declared by the hive when the drone
//! registers and again by the drone when it consumes (same arguments, so
//! the declarations agree). Messages are persistent, published with
//! `mandatory` and publisher confirms: `publish` returns only once RabbitMQ
//! has taken responsibility for the message, and fails when the queue does
//! not exist instead of letting RabbitMQ drop it silently.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::{
    Acker, ActionConsumer, ActionPublisher, BrokerError, Delivery, Result, drone_queue_name,
};

/// Publishes action requests to RabbitMQ.
///
/// Holds one connection and one confirm-mode channel and re-establishes
/// them on the next publish after any failure, so a broker restart costs
/// the publishes made while it was down (which the hive retries), not the
/// publisher.
///
/// Publishes share the channel concurrently: the lock is held only to pick
/// up (or re-open) the channel, not across the broker's confirm, so many
/// dispatches in flight cost about one round trip, not one each.
pub struct AmqpPublisher {
    url: String,
    link: Mutex<Option<Link>>,
}

struct Link {
    // Kept so the connection lives as long as the channel.
    _connection: Connection,
    channel: Channel,
    /// Which link this is, so that a publish failing on an old link does
    /// not throw away the one opened after it.
    generation: u64,
}

impl AmqpPublisher {
    /// Connects eagerly so a wrong URL fails at start-up, not at the first
    /// dispatch.
    pub async fn connect(url: &str) -> Result<Self> {
        let link = open_link(url, "ultron8-hive", 0).await?;
        Ok(AmqpPublisher {
            url: url.to_string(),
            link: Mutex::new(Some(link)),
        })
    }

    /// The current channel and its link's generation, re-opening the link
    /// if it is gone or broken.
    async fn channel(&self) -> Result<(Channel, u64)> {
        let mut guard = self.link.lock().await;
        if let Some(link) = guard.as_ref()
            && link.channel.status().connected()
        {
            return Ok((link.channel.clone(), link.generation));
        }
        let next = guard.as_ref().map_or(0, |link| link.generation + 1);
        *guard = None;
        let link = open_link(&self.url, "ultron8-hive", next).await?;
        let channel = link.channel.clone();
        *guard = Some(link);
        Ok((channel, next))
    }

    async fn with_channel<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let (channel, generation) = self.channel().await?;
        let result = f(channel).await;
        if result.is_err() {
            // Whatever failed, start from a fresh connection next time rather
            // than guessing whether this one is still sound; unless another
            // publish already did.
            let mut guard = self.link.lock().await;
            if guard
                .as_ref()
                .is_some_and(|link| link.generation == generation)
            {
                *guard = None;
            }
        }
        result
    }
}

async fn open_link(url: &str, name: &str, generation: u64) -> Result<Link> {
    let connection = connect(url, name).await?;
    let channel = connection.create_channel().await.map_err(protocol)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(protocol)?;
    Ok(Link {
        _connection: connection,
        channel,
        generation,
    })
}

async fn connect(url: &str, name: &str) -> Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, properties)
        .await
        .map_err(|e| BrokerError::Connect {
            url: redact(url),
            reason: e.to_string(),
        })
}

async fn declare_drone_queue(channel: &Channel, drone_id: &str) -> Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(
            drone_queue_name(drone_id).as_str().into(),
            options,
            FieldTable::default(),
        )
        .await
        .map_err(protocol)?;
    Ok(())
}

#[async_trait]
impl ActionPublisher for AmqpPublisher {
    async fn ensure_drone_queue(&self, drone_id: &str) -> Result<()> {
        self.with_channel(|channel| async move { declare_drone_queue(&channel, drone_id).await })
            .await
    }

    async fn publish(&self, drone_id: &str, body: Vec<u8>, ttl: Duration) -> Result<()> {
        let queue = drone_queue_name(drone_id);
        self.with_channel(|channel| {
            let queue = queue.clone();
            async move {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/x-protobuf".into())
                    .with_expiration(ttl.as_millis().max(1).to_string().as_str().into());
                let options = BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                };
                let confirm = channel
                    .basic_publish("".into(), queue.as_str().into(), options, &body, properties)
                    .await
                    .map_err(|e| publish_error(&queue, e.to_string()))?
                    .await
                    .map_err(|e| publish_error(&queue, e.to_string()))?;
                match confirm {
                    Confirmation::Ack(None) => Ok(()),
                    Confirmation::Ack(Some(returned)) => Err(publish_error(
                        &queue,
                        format!(
                            "message returned: {} (queue not declared?)",
                            returned.reply_text
                        ),
                    )),
                    Confirmation::Nack(_) => {
                        Err(publish_error(&queue, "broker nacked the message".into()))
                    }
                    Confirmation::NotRequested => Err(publish_error(
                        &queue,
                        "publisher confirms are not enabled".into(),
                    )),
                }
            }
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.with_channel(|channel| async move {
            if channel.status().connected() {
                Ok(())
            } else {
                Err(BrokerError::Protocol("channel is not connected".into()))
            }
        })
        .await
    }
}

/// Consumes a drone's queue from RabbitMQ.
pub struct AmqpConsumer {
    url: String,
}

impl AmqpConsumer {
    pub fn new(url: &str) -> Self {
        AmqpConsumer {
            url: url.to_string(),
        }
    }
}

#[async_trait]
impl ActionConsumer for AmqpConsumer {
    async fn consume(
        &self,
        drone_id: &str,
        prefetch: u16,
    ) -> Result<BoxStream<'static, Result<Delivery>>> {
        let connection = connect(&self.url, &format!("ultron8-drone {drone_id}")).await?;
        let channel = connection.create_channel().await.map_err(protocol)?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(protocol)?;
        declare_drone_queue(&channel, drone_id).await?;
        let consumer = channel
            .basic_consume(
                drone_queue_name(drone_id).as_str().into(),
                format!("drone-{drone_id}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(protocol)?;
        let stream = consumer.map(move |delivery| {
            // The consumer alone does not keep the connection open.
            let _keep_alive = (&connection, &channel);
            delivery.map_err(protocol).map(|delivery| {
                Delivery::new(
                    delivery.data,
                    delivery.redelivered,
                    Box::new(AmqpAcker(delivery.acker)),
                )
            })
        });
        Ok(stream.boxed())
    }
}

struct AmqpAcker(lapin::Acker);

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        let sent = self
            .0
            .ack(BasicAckOptions::default())
            .await
            .map_err(protocol)?;
        settled(sent)
    }

    async fn reject(self: Box<Self>) -> Result<()> {
        let sent = self
            .0
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map_err(protocol)?;
        settled(sent)
    }
}

/// lapin answers `Ok(false)` instead of an error when the channel the
/// message came on has closed (each acker is used once, so nothing else
/// can cause it). RabbitMQ has then requeued the message, so reporting
/// success would be a lie.
fn settled(sent: bool) -> Result<()> {
    if sent {
        Ok(())
    } else {
        Err(BrokerError::Protocol(
            "cannot settle a message: its channel has closed, \
             so the broker will redeliver it"
                .to_string(),
        ))
    }
}

fn protocol(error: lapin::Error) -> BrokerError {
    BrokerError::Protocol(error.to_string())
}

fn publish_error(queue: &str, reason: String) -> BrokerError {
    BrokerError::Publish {
        queue: queue.to_string(),
        reason,
    }
}

/// The URL without its password, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(redact("amqp://user@host"), "amqp://user@host");
    }
}
