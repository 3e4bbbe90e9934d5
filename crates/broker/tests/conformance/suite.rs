//! The behaviour every broker must have, written against the traits only.
//!
//! Each test is a plain `async fn(BrokerUnderTest)`. A backend runs the
//! whole list with [`conformance_tests!`], so adding a test here adds it to
//! every backend. Nothing in this file may know which backend it talks to.
//!
//! Backends may be shared between tests running in parallel (one RabbitMQ
//! serves them all), so every test takes its drone ids, hence its queues,
//! from [`BrokerUnderTest::fresh_drone`].
//!
//! "Nothing else arrives" is never proven by waiting a while: a test
//! publishes a sentinel behind the message that must not come back, and
//! receiving the sentinel first shows that queue order held nothing in
//! front of it. Every wait for a message is bounded by [`DEADLINE`].

use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use ultron8_broker::{ActionConsumer, ActionPublisher, BrokerError, Delivery, Result};

/// Expands to one `#[tokio::test]` per conformance test, each calling
/// `$run(test_fn)`. `$run` provides the broker and cleans up after.
macro_rules! conformance_tests {
    ($run:path) => {
        $crate::suite::conformance_tests!(@each $run;
            ping_succeeds,
            a_published_request_reaches_the_drone_in_order,
            a_waiting_consumer_receives_a_later_publish,
            declaring_a_queue_again_keeps_its_messages,
            consuming_declares_the_queue,
            an_unacked_message_is_redelivered_after_the_consumer_goes_away,
            a_waiting_consumer_receives_a_message_another_consumer_left_unacked,
            an_acked_message_is_gone,
            a_rejected_message_is_gone,
            publishing_to_an_undeclared_queue_fails_and_the_publisher_recovers,
            an_expired_message_is_never_delivered,
            prefetch_limits_unsettled_deliveries,
            queues_of_different_drones_are_isolated,
            concurrent_publishes_each_get_their_own_confirm,
        );
    };
    (@each $run:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $run($crate::suite::$name).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;

/// One backend, as a publisher and a consumer, plus the drone ids a test
/// used so that the runner can delete their queues afterwards.
#[derive(Clone)]
pub struct BrokerUnderTest {
    pub publisher: Arc<dyn ActionPublisher>,
    pub consumer: Arc<dyn ActionConsumer>,
    drones: Arc<Mutex<Vec<String>>>,
}

impl BrokerUnderTest {
    pub fn new(publisher: Arc<dyn ActionPublisher>, consumer: Arc<dyn ActionConsumer>) -> Self {
        BrokerUnderTest {
            publisher,
            consumer,
            drones: Arc::default(),
        }
    }

    /// A drone id no other test uses.
    pub fn fresh_drone(&self) -> String {
        let id = format!("test-{}", uuid::Uuid::now_v7().simple());
        self.drones
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id.clone());
        id
    }

    /// Every id [`Self::fresh_drone`] handed out.
    pub fn drones(&self) -> Vec<String> {
        self.drones
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn declared_drone(&self) -> String {
        let drone = self.fresh_drone();
        self.publisher
            .ensure_drone_queue(&drone)
            .await
            .expect("declare the drone's queue");
        drone
    }

    async fn publish(&self, drone: &str, body: &[u8]) {
        self.publisher
            .publish(drone, body.to_vec(), LONG_TTL)
            .await
            .unwrap_or_else(|e| panic!("publish {:?}: {e}", String::from_utf8_lossy(body)));
    }

    async fn consume(&self, drone: &str, prefetch: u16) -> Deliveries {
        self.consumer
            .consume(drone, prefetch)
            .await
            .expect("start consuming")
    }
}

type Deliveries = BoxStream<'static, Result<Delivery>>;

/// Generous: RabbitMQ on a loaded CI machine can be slow, and a passing
/// test never waits this long.
const DEADLINE: Duration = Duration::from_secs(20);
const LONG_TTL: Duration = Duration::from_secs(600);

async fn next(deliveries: &mut Deliveries) -> Delivery {
    tokio::time::timeout(DEADLINE, deliveries.next())
        .await
        .expect("a delivery within the deadline")
        .expect("the stream is open")
        .expect("the delivery is not an error")
}

fn text(delivery: &Delivery) -> String {
    String::from_utf8_lossy(&delivery.body).into_owned()
}

/// Receives the next delivery, checks its body and acknowledges it.
async fn expect_and_ack(deliveries: &mut Deliveries, body: &str) {
    let delivery = next(deliveries).await;
    assert_eq!(text(&delivery), body);
    delivery.ack().await.expect("ack");
}

// --- tests ------------------------------------------------------------------

pub async fn ping_succeeds(broker: BrokerUnderTest) {
    broker.publisher.ping().await.expect("ping");
}

pub async fn a_published_request_reaches_the_drone_in_order(broker: BrokerUnderTest) {
    let drone = broker.declared_drone().await;
    for body in ["one", "two", "three"] {
        broker.publish(&drone, body.as_bytes()).await;
    }

    let mut deliveries = broker.consume(&drone, 4).await;
    for body in ["one", "two", "three"] {
        let delivery = next(&mut deliveries).await;
        assert_eq!(text(&delivery), body, "first in, first out");
        assert!(!delivery.redelivered, "a first delivery is not redelivered");
        delivery.ack().await.expect("ack");
    }
}

pub async fn a_waiting_consumer_receives_a_later_publish(broker: BrokerUnderTest) {
    let drone = broker.declared_drone().await;
    let mut deliveries = broker.consume(&drone, 1).await;
    // Polled once before the publish, so the consumer is already waiting
    // (the queue is empty) and only the publish can wake it.
    let mut waiting = pin!(next(&mut deliveries));
    assert!(
        futures::poll!(waiting.as_mut()).is_pending(),
        "nothing was published yet"
    );
    broker.publish(&drone, b"late").await;
    let delivery = waiting.await;
    assert_eq!(text(&delivery), "late");
    delivery.ack().await.expect("ack");
}

pub async fn declaring_a_queue_again_keeps_its_messages(broker: BrokerUnderTest) {
    let drone = broker.declared_drone().await;
    broker.publish(&drone, b"kept").await;
    broker
        .publisher
        .ensure_drone_queue(&drone)
        .await
        .expect("declare again");

    let mut deliveries = broker.consume(&drone, 1).await;
    expect_and_ack(&mut deliveries, "kept").await;
}

pub async fn consuming_declares_the_queue(broker: BrokerUnderTest) {
    // A drone may start consuming before the hive has declared its queue.
    let drone = broker.fresh_drone();
    let mut deliveries = broker.consume(&drone, 1).await;
    broker.publish(&drone, b"hello").await;
    expect_and_ack(&mut deliveries, "hello").await;
}

pub async fn an_unacked_message_is_redelivered_after_the_consumer_goes_away(
    broker: BrokerUnderTest,
) {
    let drone = broker.declared_drone().await;
    broker.publish(&drone, b"first").await;

    {
        let mut deliveries = broker.consume(&drone, 4).await;
        let delivery = next(&mut deliveries).await;
        assert_eq!(text(&delivery), "first");
        assert!(!delivery.redelivered);
        // Stream and delivery dropped without an ack, as when a drone dies
        // mid-run.
    }

    let mut deliveries = broker.consume(&drone, 4).await;
    let delivery = next(&mut deliveries).await;
    assert_eq!(text(&delivery), "first");
    assert!(
        delivery.redelivered,
        "an unacknowledged message comes back marked redelivered"
    );
    delivery.ack().await.expect("ack the redelivery");

    // Acked now: a later message is the only thing left.
    broker.publish(&drone, b"sentinel").await;
    let delivery = next(&mut deliveries).await;
    assert_eq!(text(&delivery), "sentinel");
    assert!(!delivery.redelivered);
    delivery.ack().await.expect("ack");
}

pub async fn a_waiting_consumer_receives_a_message_another_consumer_left_unacked(
    broker: BrokerUnderTest,
) {
    let drone = broker.declared_drone().await;
    broker.publish(&drone, b"orphan").await;
    let mut departing = broker.consume(&drone, 1).await;
    let orphan = next(&mut departing).await;
    assert_eq!(text(&orphan), "orphan");

    let mut remaining = broker.consume(&drone, 1).await;
    // Waiting already: the only message is held by the other consumer.
    let mut waiting = pin!(next(&mut remaining));
    assert!(
        futures::poll!(waiting.as_mut()).is_pending(),
        "the only message is taken"
    );
    drop(orphan);
    drop(departing);
    let delivery = waiting.await;
    assert_eq!(text(&delivery), "orphan");
    assert!(delivery.redelivered);
    delivery.ack().await.expect("ack");
}

pub async fn an_acked_message_is_gone(broker: BrokerUnderTest) {
    let drone = broker.declared_drone().await;
    broker.publish(&drone, b"done").await;
    {
        let mut deliveries = broker.consume(&drone, 4).await;
        expect_and_ack(&mut deliveries, "done").await;
    }

    // Had the ack been lost, dropping the consumer would have put "done"
    // back in front of the sentinel.
    broker.publish(&drone, b"sentinel").await;
    let mut deliveries = broker.consume(&drone, 4).await;
    expect_and_ack(&mut deliveries, "sentinel").await;
}

pub async fn a_rejected_message_is_gone(broker: BrokerUnderTest) {
    let drone = broker.declared_drone().await;
    broker.publish(&drone, b"forged").await;
    {
        let mut deliveries = broker.consume(&drone, 4).await;
        let delivery = next(&mut deliveries).await;
        assert_eq!(text(&delivery), "forged");
        delivery.reject().await.expect("reject");
    }

    broker.publish(&drone, b"sentinel").await;
    let mut deliveries = broker.consume(&drone, 4).await;
    expect_and_ack(&mut deliveries, "sentinel").await;
}

pub async fn publishing_to_an_undeclared_queue_fails_and_the_publisher_recovers(
    broker: BrokerUnderTest,
) {
    let undeclared = broker.fresh_drone();
    let err = broker
        .publisher
        .publish(&undeclared, b"lost?".to_vec(), LONG_TTL)
        .await
        .expect_err("publishing to a missing queue must fail, not drop the message");
    assert!(matches!(err, BrokerError::Publish { .. }), "{err}");

    let drone = broker.declared_drone().await;
    broker.publish(&drone, b"ok").await;
    let mut deliveries = broker.consume(&drone, 1).await;
    expect_and_ack(&mut deliveries, "ok").await;
}

pub async fn an_expired_message_is_never_delivered(broker: BrokerUnderTest) {
    let drone = broker.declared_drone().await;
    broker
        .publisher
        .publish(&drone, b"stale".to_vec(), Duration::from_millis(1))
        .await
        .expect("publish");
    // Setup, not an assertion: let the 1 ms TTL pass with certainty.
    tokio::time::sleep(Duration::from_millis(50)).await;
    broker.publish(&drone, b"fresh").await;

    let mut deliveries = broker.consume(&drone, 4).await;
    // The stale message is ahead of the fresh one, so receiving the fresh
    // one first shows the stale one was discarded.
    expect_and_ack(&mut deliveries, "fresh").await;
}

pub async fn prefetch_limits_unsettled_deliveries(broker: BrokerUnderTest) {
    let drone = broker.declared_drone().await;
    for body in ["m1", "m2", "m3"] {
        broker.publish(&drone, body.as_bytes()).await;
    }

    let mut first = broker.consume(&drone, 1).await;
    let m1 = next(&mut first).await;
    assert_eq!(text(&m1), "m1");

    // A second consumer is the witness: it can only get m2 if the first,
    // still holding m1 unacked, was not given m2. `biased` polls the first
    // consumer before the witness every time, so a delivery it should not
    // have had always wins the race.
    let mut witness = broker.consume(&drone, 1).await;
    let m2 = tokio::time::timeout(DEADLINE, async {
        tokio::select! {
            biased;
            extra = first.next() => panic!(
                "a consumer with prefetch 1 got a second delivery before acking the first: {:?}",
                extra.map(|d| d.map(|d| text(&d)))
            ),
            m2 = next(&mut witness) => m2,
        }
    })
    .await
    .expect("the witness receives m2 within the deadline");
    assert_eq!(text(&m2), "m2");

    // Both consumers are full now; acking m1 frees the first one's slot,
    // and m3 must reach it.
    m1.ack().await.expect("ack m1");
    expect_and_ack(&mut first, "m3").await;
    m2.ack().await.expect("ack m2");
}

pub async fn queues_of_different_drones_are_isolated(broker: BrokerUnderTest) {
    let alpha = broker.declared_drone().await;
    let beta = broker.declared_drone().await;
    broker.publish(&alpha, b"for alpha").await;
    broker.publish(&beta, b"for beta").await;
    broker.publish(&alpha, b"alpha sentinel").await;

    let mut alpha_deliveries = broker.consume(&alpha, 4).await;
    expect_and_ack(&mut alpha_deliveries, "for alpha").await;
    // Beta's message was published before the sentinel; had it leaked into
    // alpha's queue it would come first.
    expect_and_ack(&mut alpha_deliveries, "alpha sentinel").await;

    let mut beta_deliveries = broker.consume(&beta, 4).await;
    expect_and_ack(&mut beta_deliveries, "for beta").await;
    broker.publish(&beta, b"beta sentinel").await;
    expect_and_ack(&mut beta_deliveries, "beta sentinel").await;
}

pub async fn concurrent_publishes_each_get_their_own_confirm(broker: BrokerUnderTest) {
    // Dispatch publishes many requests at once; each must learn its own
    // fate, the one to a missing queue included, and the others must land.
    let drones: Vec<String> =
        futures::future::join_all((0..3).map(|_| broker.declared_drone())).await;
    let undeclared = broker.fresh_drone();
    let publishes = (0..60).map(|i| {
        let target = if i == 30 {
            undeclared.clone()
        } else {
            drones[i % drones.len()].clone()
        };
        let publisher = broker.publisher.clone();
        async move {
            let body = format!("{i:02}").into_bytes();
            let result = publisher.publish(&target, body, LONG_TTL).await;
            (i, target, result)
        }
    });
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); drones.len()];
    for (i, target, result) in futures::future::join_all(publishes).await {
        if i == 30 {
            assert!(
                matches!(result, Err(BrokerError::Publish { .. })),
                "publish {i} to a missing queue: {result:?}"
            );
        } else {
            result.unwrap_or_else(|e| panic!("publish {i} to {target}: {e}"));
            expected[i % drones.len()].push(format!("{i:02}"));
        }
    }
    for (drone, bodies) in drones.iter().zip(expected) {
        let mut deliveries = broker.consume(drone, 100).await;
        let mut received = Vec::new();
        while received.len() < bodies.len() {
            let delivery = next(&mut deliveries).await;
            received.push(text(&delivery));
            delivery.ack().await.expect("ack");
        }
        received.sort();
        assert_eq!(received, bodies, "what {drone} received");
    }
}
