//! An in-memory broker for the single-process embedded hive
//! (`ultron8-hive dev`), where the hive and its one local drone share a
//! process and RabbitMQ would be an extra service to run for nothing.
//!
//! [`InProcessBroker`] is both the [`ActionPublisher`] the hive publishes
//! through and the [`ActionConsumer`] the local drone consumes from; clones
//! share the same queues. It keeps the guarantees the hive and the drone
//! rely on from RabbitMQ, as pinned down by the broker conformance suite:
//!
//! - Every drone has one queue, created by [`ActionPublisher::ensure_drone_queue`]
//!   or by [`ActionConsumer::consume`] (both idempotent). Publishing to a
//!   queue that was never created fails with [`BrokerError::Publish`], as a
//!   mandatory publish to RabbitMQ does, instead of dropping the message.
//!   `publish` returns once the message is queued.
//! - Messages wait in the queue, first in first out, until a consumer takes
//!   them. A message whose TTL (counted from `publish`) has passed is never
//!   delivered; it is discarded when it reaches the head of the queue.
//! - A consumer has at most `prefetch` unsettled deliveries (0 means no
//!   limit, as `basic.qos` does). [`Delivery::ack`] and [`Delivery::reject`]
//!   settle a delivery: both remove the message for good and free a slot.
//! - The consumer's stream plays the part of the AMQP channel. A delivery
//!   dropped without being settled keeps its message (and its prefetch slot)
//!   for as long as the stream lives, as an unacknowledged message does on
//!   an open channel. When the stream is dropped, every message it delivered
//!   that is still unsettled goes back to the queue at its original position
//!   and is delivered again with `redelivered = true`, whether or not its
//!   [`Delivery`] is still held. Settling such a delivery afterwards fails
//!   with [`BrokerError::Protocol`] and has no effect, and dropping it does
//!   nothing more: the message already belongs to the queue again.
//! - [`ActionPublisher::ping`] always succeeds.
//!
//! Consumers wait on a [`Notify`] that publishes, settlements and returned
//! messages signal, so an idle drone costs nothing.
//!
//! # Differences from RabbitMQ
//!
//! - **Nothing is durable.** Queues and messages live in this process's
//!   memory and are lost when it exits. That is acceptable for the embedded
//!   hive because the drone dies with it: on the next start the hive
//!   re-dispatches executions still `requested`, and those already
//!   `dispatched` (published, perhaps not yet run) expire through the usual
//!   expiry sweep rather than being replayed.
//! - **Only this process can connect.** There is no URL, no network and no
//!   authentication; a remote drone cannot consume from it.
//! - **The stream never ends or errors**, since there is no connection to
//!   lose; a drone's reconnect path is never taken.
//! - **No flow control or limits.** Publishing never blocks and queues are
//!   unbounded, where RabbitMQ would apply memory alarms or queue limits.
//! - **Expired messages are discarded lazily**, when they reach the head of
//!   the queue during a publish or a delivery. RabbitMQ also expires the head
//!   on a timer, so an expired message may occupy memory here a little
//!   longer; it is never delivered either way.
//! - **`redelivered` is exact**: it is set only on a message that was handed
//!   to a consumer before. RabbitMQ may also set it on messages recovered
//!   after a broker restart without knowing whether they were delivered.
//! - **Several consumers of one queue** are served in whichever order their
//!   streams are polled, not strictly round-robin. Ultron8 runs one consumer
//!   per drone queue, so this is not observable in practice.
//! - **Queues are never deleted**; they last as long as the broker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::Notify;
// tokio's clock rather than std's, so tests that pause time see TTLs pass.
use tokio::time::Instant;

use crate::{
    Acker, ActionConsumer, ActionPublisher, BrokerError, Delivery, Result, drone_queue_name,
};

/// RabbitMQ cannot express a TTL below one millisecond (the AMQP publisher
/// rounds up to it), so neither does this broker.
const MIN_TTL: Duration = Duration::from_millis(1);

/// The in-process broker; see the [module documentation](self).
#[derive(Clone, Default)]
pub struct InProcessBroker {
    queues: Arc<Mutex<HashMap<String, Arc<Queue>>>>,
}

impl InProcessBroker {
    pub fn new() -> Self {
        Self::default()
    }

    fn declare(&self, drone_id: &str) -> Arc<Queue> {
        let name = drone_queue_name(drone_id);
        lock(&self.queues)
            .entry(name)
            .or_insert_with_key(|name| Arc::new(Queue::new(name.clone())))
            .clone()
    }

    fn existing(&self, drone_id: &str) -> Option<Arc<Queue>> {
        lock(&self.queues).get(&drone_queue_name(drone_id)).cloned()
    }
}

impl std::fmt::Debug for InProcessBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBroker")
            .field("queues", &lock(&self.queues).len())
            .finish()
    }
}

/// Every critical section only moves messages between collections and
/// cannot leave them half-updated, so a panic elsewhere while a lock was
/// held is no reason to refuse all later publishes and deliveries.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Queue {
    name: String,
    state: Mutex<QueueState>,
    /// Signalled whenever a consumer might now be able to take a message:
    /// one was queued, a slot was freed, or unsettled messages came back.
    changed: Notify,
}

#[derive(Default)]
struct QueueState {
    /// Messages waiting for a consumer, ordered by `seq`.
    ready: VecDeque<Message>,
    next_seq: u64,
    next_consumer: u64,
    /// Delivered, unsettled messages of each attached consumer, by `seq`.
    /// Consumer ids are never reused, so a settlement that arrives after its
    /// consumer has gone cannot touch another consumer's messages.
    unsettled: HashMap<u64, BTreeMap<u64, Message>>,
}

struct Message {
    /// Publication order; returned messages go back to their old place.
    seq: u64,
    body: Vec<u8>,
    /// `None` for a TTL too large to represent: it never expires.
    expires_at: Option<Instant>,
    redelivered: bool,
}

impl Message {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

impl Queue {
    fn new(name: String) -> Self {
        Queue {
            name,
            state: Mutex::new(QueueState::default()),
            changed: Notify::new(),
        }
    }

    fn attach(&self) -> u64 {
        let mut state = lock(&self.state);
        let id = state.next_consumer;
        state.next_consumer += 1;
        state.unsettled.insert(id, BTreeMap::new());
        id
    }

    fn settle(&self, consumer: u64, seq: u64) -> Result<()> {
        let settled = lock(&self.state)
            .unsettled
            .get_mut(&consumer)
            .and_then(|messages| messages.remove(&seq))
            .is_some();
        if !settled {
            return Err(BrokerError::Protocol(format!(
                "cannot settle a message from {}: its consumer has gone away, \
                 so the message went back to the queue and will be redelivered",
                self.name
            )));
        }
        self.changed.notify_waiters();
        Ok(())
    }
}

impl QueueState {
    fn discard_expired_head(&mut self, now: Instant) {
        while self.ready.front().is_some_and(|m| m.expired(now)) {
            self.ready.pop_front();
        }
    }

    /// Hands the next live message to `consumer` if its prefetch allows.
    fn take(&mut self, consumer: u64, prefetch: u16) -> Option<(Vec<u8>, bool, u64)> {
        let outstanding = self.unsettled.get(&consumer).map_or(0, BTreeMap::len);
        if prefetch != 0 && outstanding >= usize::from(prefetch) {
            return None;
        }
        self.discard_expired_head(Instant::now());
        let message = self.ready.pop_front()?;
        let taken = (message.body.clone(), message.redelivered, message.seq);
        self.unsettled
            .entry(consumer)
            .or_default()
            .insert(message.seq, message);
        Some(taken)
    }
}

#[async_trait]
impl ActionPublisher for InProcessBroker {
    async fn ensure_drone_queue(&self, drone_id: &str) -> Result<()> {
        self.declare(drone_id);
        Ok(())
    }

    async fn publish(&self, drone_id: &str, body: Vec<u8>, ttl: Duration) -> Result<()> {
        let queue = self
            .existing(drone_id)
            .ok_or_else(|| BrokerError::Publish {
                queue: drone_queue_name(drone_id),
                reason: "no such queue (not declared)".to_string(),
            })?;
        {
            let now = Instant::now();
            let mut state = lock(&queue.state);
            // Without a consumer nothing else would ever trim the queue.
            state.discard_expired_head(now);
            let seq = state.next_seq;
            state.next_seq += 1;
            state.ready.push_back(Message {
                seq,
                body,
                expires_at: now.checked_add(ttl.max(MIN_TTL)),
                redelivered: false,
            });
        }
        queue.changed.notify_waiters();
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ActionConsumer for InProcessBroker {
    async fn consume(
        &self,
        drone_id: &str,
        prefetch: u16,
    ) -> Result<BoxStream<'static, Result<Delivery>>> {
        let queue = self.declare(drone_id);
        let id = queue.attach();
        let session = Session {
            queue,
            id,
            prefetch,
        };
        // The session is owned by the stream (or by its pending `next`), so
        // dropping the stream is what returns unsettled messages.
        let stream = futures::stream::unfold(session, |session| async move {
            let delivery = session.next_delivery().await;
            Some((Ok(delivery), session))
        });
        Ok(stream.boxed())
    }
}

/// One attached consumer: the in-process counterpart of an AMQP channel.
struct Session {
    queue: Arc<Queue>,
    id: u64,
    prefetch: u16,
}

impl Session {
    async fn next_delivery(&self) -> Delivery {
        loop {
            // Registered before looking at the queue, so a publish or an ack
            // that lands between the look and the wait still wakes us.
            let mut changed = pin!(self.queue.changed.notified());
            changed.as_mut().enable();
            let taken = lock(&self.queue.state).take(self.id, self.prefetch);
            if let Some((body, redelivered, seq)) = taken {
                let acker = InProcessAcker {
                    queue: self.queue.clone(),
                    consumer: self.id,
                    seq,
                };
                return Delivery::new(body, redelivered, Box::new(acker));
            }
            changed.await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let returned = {
            let mut state = lock(&self.queue.state);
            let unsettled = state.unsettled.remove(&self.id).unwrap_or_default();
            let returned = !unsettled.is_empty();
            for (_, mut message) in unsettled {
                message.redelivered = true;
                let at = state.ready.partition_point(|m| m.seq < message.seq);
                state.ready.insert(at, message);
            }
            returned
        };
        if returned {
            self.queue.changed.notify_waiters();
        }
    }
}

struct InProcessAcker {
    queue: Arc<Queue>,
    consumer: u64,
    seq: u64,
}

#[async_trait]
impl Acker for InProcessAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.queue.settle(self.consumer, self.seq)
    }

    // There is no dead-lettering, so rejecting is indistinguishable from
    // acknowledging: the message is gone either way.
    async fn reject(self: Box<Self>) -> Result<()> {
        self.queue.settle(self.consumer, self.seq)
    }
}
