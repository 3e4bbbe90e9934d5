//! RabbitMQ over AMQP 0-9-1 (lapin).
//!
//! Every drone has one durable queue, declared by the hive when the drone
//! registers and again by the drone when it consumes (same arguments, so
//! the declarations agree). Messages are persistent, published with
//! `mandatory` and publisher confirms: `publish` returns only once RabbitMQ
//! has taken responsibility for the message, and fails when the queue does
//! not exist instead of letting RabbitMQ drop it silently, or when the
//! confirm does not come within the publish deadline (see
//! [`AmqpPublisher`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
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
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ConnectionStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

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
/// up (or replace) the channel, not across the broker's confirm, so many
/// dispatches in flight cost about one round trip, not one each.
///
/// # Deadlines
///
/// A broker can stop answering without closing anything: under a memory or
/// disk alarm RabbitMQ stops reading from publishers, and a frozen host
/// accepts connections and never speaks. So nothing here waits without a
/// limit ([`PublisherOptions`]): opening a link has `connect_timeout`, and
/// every publish or queue declaration has `publish_timeout` from start
/// (including waiting for a link being opened) to the broker's confirm.
/// A publish that misses its deadline fails; the hive leaves its execution
/// `requested` and its redispatch loop publishes it again later.
///
/// [`ActionPublisher::ping`] never waits: it reads the state of the current
/// link (connected, blocked by the broker, or none), so a readiness probe
/// answers at once even while a publish or a reconnection is stuck.
pub struct AmqpPublisher {
    inner: Arc<Inner>,
}

/// Deadlines of an [`AmqpPublisher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherOptions {
    /// Opening a link: the TCP connection, the AMQP handshake and
    /// `confirm.select`.
    pub connect_timeout: Duration,
    /// One publish or queue declaration, from its start (waiting for a link
    /// being opened included) to the broker's answer.
    pub publish_timeout: Duration,
}

impl Default for PublisherOptions {
    /// A few seconds each: far above a healthy broker's round trip, and
    /// short enough that a submission or a readiness probe gets an answer.
    fn default() -> Self {
        PublisherOptions {
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
        }
    }
}

struct Inner {
    url: String,
    options: PublisherOptions,
    /// The current link. A plain mutex, held only to read or replace the
    /// link and never across an await, so that `ping` can read it without
    /// waiting for a publish or a connection in progress.
    link: std::sync::Mutex<Option<Link>>,
    /// Held while a link is being opened, so that the publishes waiting for
    /// it open one link, not one each.
    connecting: Arc<tokio::sync::Mutex<()>>,
    generations: AtomicU64,
}

struct Link {
    connection: Connection,
    channel: Channel,
    /// Which link this is, so that a publish failing on an old link does
    /// not throw away the one opened after it.
    generation: u64,
}

/// What `ping` reports.
enum LinkState {
    Connected,
    /// The broker sent `connection.blocked`: an alarm (memory or disk) makes
    /// it stop reading from publishers.
    Blocked,
    Down,
}

impl AmqpPublisher {
    /// Connects eagerly so a wrong URL fails at start-up, not at the first
    /// dispatch, with the default [`PublisherOptions`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PublisherOptions::default()).await
    }

    /// Connects eagerly, within `options.connect_timeout`.
    pub async fn connect_with(url: &str, options: PublisherOptions) -> Result<Self> {
        let inner = Arc::new(Inner {
            url: url.to_string(),
            options,
            link: std::sync::Mutex::new(None),
            connecting: Arc::default(),
            generations: AtomicU64::new(0),
        });
        inner.open().await?;
        Ok(AmqpPublisher { inner })
    }

    /// Runs `f` on the current channel (opening a link first if there is
    /// none), all within the publish deadline. `on_timeout` says what was
    /// not done in time, given whether a channel was reached at all.
    async fn with_channel<T, F, Fut>(
        &self,
        f: F,
        on_timeout: impl FnOnce(Duration, bool) -> BrokerError,
    ) -> Result<T>
    where
        F: FnOnce(Channel, ConnectionStatus) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = self.inner.options.publish_timeout;
        let mut used: Option<u64> = None;
        let attempt = async {
            let (channel, status, generation) = self.inner.channel().await?;
            used = Some(generation);
            f(channel, status).await
        };
        let result = match tokio::time::timeout(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(on_timeout(deadline, used.is_some())),
        };
        if result.is_err()
            && let Some(generation) = used
        {
            self.inner.forget(generation);
        }
        result
    }
}

impl Inner {
    /// The current channel, if its link is sound.
    fn current(&self) -> Option<(Channel, ConnectionStatus, u64)> {
        let guard = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .filter(|link| link.channel.status().connected())
            .map(|link| {
                (
                    link.channel.clone(),
                    link.connection.status().clone(),
                    link.generation,
                )
            })
    }

    fn state(&self) -> LinkState {
        let guard = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(link) if link.connection.status().blocked() => LinkState::Blocked,
            Some(link) if link.channel.status().connected() => LinkState::Connected,
            _ => LinkState::Down,
        }
    }

    /// The current channel, opening a link if there is none. Callers bound
    /// the wait.
    async fn channel(&self) -> Result<(Channel, ConnectionStatus, u64)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let _connecting = self.connecting.lock().await;
        // Whoever held the lock before may have opened one.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        self.open().await
    }

    /// Opens a link within the connect deadline and makes it the current
    /// one.
    async fn open(&self) -> Result<(Channel, ConnectionStatus, u64)> {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let timeout = self.options.connect_timeout;
        let link = tokio::time::timeout(timeout, open_link(&self.url, "ultron8-hive", generation))
            .await
            .map_err(|_| BrokerError::Connect {
                url: redact(&self.url),
                reason: format!("the broker did not answer within {timeout:?}"),
            })??;
        let opened = (
            link.channel.clone(),
            link.connection.status().clone(),
            generation,
        );
        *self.link.lock().unwrap_or_else(PoisonError::into_inner) = Some(link);
        Ok(opened)
    }

    /// After any failure on link `generation`, start from a fresh one next
    /// time rather than guess whether it is still sound; unless another
    /// publish already replaced it, or the broker is blocking it (a new
    /// connection would be blocked as soon as it published; the blocked
    /// one unblocks when the alarm clears).
    fn forget(&self, generation: u64) {
        let mut guard = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.as_ref().is_some_and(|link| {
            link.generation == generation && !link.connection.status().blocked()
        }) {
            *guard = None;
        }
    }

    /// Opens a link in the background unless one is being opened already,
    /// so that a hive with nothing to publish notices that the broker is
    /// back. The task holds the connecting lock, so publishes wait for it
    /// rather than open a second link.
    fn reconnect_in_background(self: &Arc<Self>) {
        let Ok(connecting) = self.connecting.clone().try_lock_owned() else {
            return;
        };
        let inner = self.clone();
        tokio::spawn(async move {
            let _connecting = connecting;
            if inner.current().is_none()
                && let Err(e) = inner.open().await
            {
                debug!(error = %e, "cannot reconnect to the broker yet");
            }
        });
    }
}

async fn open_link(url: &str, name: &str, generation: u64) -> Result<Link> {
    probe(url).await?;
    let connection = connect(url, name).await?;
    let channel = connection.create_channel().await.map_err(protocol)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(protocol)?;
    Ok(Link {
        connection,
        channel,
        generation,
    })
}

/// The AMQP 0-9-1 protocol header a client opens with.
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// Checks that something at `url` answers the AMQP protocol header before
/// lapin is given the connection. lapin cannot abandon a handshake: once
/// started, its I/O thread and socket live until the server closes them,
/// so a connect deadline alone would leave one of each behind per attempt
/// against a server that accepts and never answers. Dropping this probe's
/// socket at the deadline closes it. For `amqps` URLs lapin does the TLS
/// handshake and the probe is skipped.
async fn probe(url: &str) -> Result<()> {
    let failed = |reason: String| BrokerError::Connect {
        url: redact(url),
        reason,
    };
    let uri: AMQPUri = url
        .parse()
        .map_err(|e: String| failed(format!("invalid URL: {e}")))?;
    if uri.scheme != AMQPScheme::AMQP {
        return Ok(());
    }
    let mut socket = TcpStream::connect((uri.authority.host.as_str(), uri.authority.port))
        .await
        .map_err(|e| failed(e.to_string()))?;
    socket
        .write_all(PROTOCOL_HEADER)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut first = [0u8; 1];
    match socket.read(&mut first).await {
        Ok(0) => Err(failed(
            "the server closed the connection without answering the AMQP protocol header".into(),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(failed(e.to_string())),
    }
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

/// Why nothing was done in time: still connecting, or the broker did not
/// answer on a link it had accepted.
fn unanswered(reached_channel: bool) -> &'static str {
    if reached_channel {
        "the broker is unreachable or blocking publishers (a memory or disk alarm)"
    } else {
        "still connecting to the broker"
    }
}

const BLOCKED: &str = "the broker is blocking publishers (a memory or disk alarm)";

#[async_trait]
impl ActionPublisher for AmqpPublisher {
    async fn ensure_drone_queue(&self, drone_id: &str) -> Result<()> {
        self.with_channel(
            |channel, _| async move { declare_drone_queue(&channel, drone_id).await },
            |after, reached| {
                BrokerError::Protocol(format!(
                    "cannot declare {} within {after:?}: {}",
                    drone_queue_name(drone_id),
                    unanswered(reached)
                ))
            },
        )
        .await
    }

    async fn publish(&self, drone_id: &str, body: Vec<u8>, ttl: Duration) -> Result<()> {
        let queue = drone_queue_name(drone_id);
        self.with_channel(
            |channel, status| {
                let queue = queue.clone();
                async move {
                    // It would wait until the deadline: RabbitMQ reads
                    // nothing from a blocked connection.
                    if status.blocked() {
                        return Err(publish_error(&queue, BLOCKED.into()));
                    }
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
                                "the broker returned the message: {} (queue not declared?)",
                                returned.reply_text
                            ),
                        )),
                        Confirmation::Nack(_) => Err(publish_error(
                            &queue,
                            "the broker nacked the message".into(),
                        )),
                        Confirmation::NotRequested => Err(publish_error(
                            &queue,
                            "publisher confirms are not enabled".into(),
                        )),
                    }
                }
            },
            |after, reached| {
                publish_error(
                    &queue,
                    format!("not confirmed within {after:?}: {}", unanswered(reached)),
                )
            },
        )
        .await
    }

    /// The state of the current link, without waiting for anything. With no
    /// sound link, one is opened in the background and the next ping tells.
    async fn ping(&self) -> Result<()> {
        match self.inner.state() {
            LinkState::Connected => Ok(()),
            LinkState::Blocked => Err(BrokerError::Protocol(BLOCKED.into())),
            LinkState::Down => {
                self.inner.reconnect_in_background();
                Err(BrokerError::Protocol(format!(
                    "not connected to the broker at {}; reconnecting",
                    redact(&self.inner.url)
                )))
            }
        }
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
