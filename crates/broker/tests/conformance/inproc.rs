//! Runs the conformance suite against [`InProcessBroker`], a fresh broker
//! per test, plus the in-process semantics its module documents beyond what
//! RabbitMQ lets the suite observe deterministically.
//!
//! The in-process broker hands a consumer a queued message on the first
//! poll of its stream, so here "not delivered" can be asserted exactly with
//! `now_or_never` instead of a wait.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use ultron8_broker::inproc::InProcessBroker;
use ultron8_broker::{ActionConsumer, ActionPublisher, BrokerError, Delivery};

use crate::suite::BrokerUnderTest;

async fn run<F, Fut>(test: F)
where
    F: FnOnce(BrokerUnderTest) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let broker = InProcessBroker::new();
    // Two handles on one broker, as the embedded hive and its drone hold.
    test(BrokerUnderTest::new(
        Arc::new(broker.clone()),
        Arc::new(broker),
    ))
    .await;
}

crate::suite::conformance_tests!(run);

// --- in-process-only behaviour -----------------------------------------------

const TTL: Duration = Duration::from_secs(600);

/// The delivery the stream has ready right now, if any.
fn ready(
    deliveries: &mut futures::stream::BoxStream<'static, ultron8_broker::Result<Delivery>>,
) -> Option<Delivery> {
    deliveries
        .next()
        .now_or_never()
        .map(|next| next.expect("the stream never ends").expect("delivery ok"))
}

async fn declared(broker: &InProcessBroker) -> &'static str {
    broker.ensure_drone_queue("d").await.expect("declare");
    "d"
}

#[tokio::test]
async fn a_dropped_delivery_keeps_its_slot_until_the_stream_goes() {
    let broker = InProcessBroker::new();
    let drone = declared(&broker).await;
    for body in ["m1", "m2"] {
        broker
            .publish(drone, body.into(), TTL)
            .await
            .expect("publish");
    }

    let mut deliveries = broker.consume(drone, 1).await.expect("consume");
    let m1 = ready(&mut deliveries).expect("m1 is ready");
    assert_eq!(m1.body, b"m1");
    // As on an open AMQP channel, dropping the delivery neither settles
    // nor returns it: m1 still counts against the prefetch of 1.
    drop(m1);
    assert!(
        ready(&mut deliveries).is_none(),
        "m2 must wait for m1's slot"
    );

    drop(deliveries);
    let mut deliveries = broker.consume(drone, 2).await.expect("consume again");
    let m1 = ready(&mut deliveries).expect("m1 came back");
    assert_eq!(m1.body, b"m1");
    assert!(m1.redelivered);
    let m2 = ready(&mut deliveries).expect("m2 follows");
    assert_eq!(m2.body, b"m2");
    assert!(!m2.redelivered);
}

#[tokio::test]
async fn settling_after_the_stream_is_gone_fails_and_the_message_returns() {
    let broker = InProcessBroker::new();
    let drone = declared(&broker).await;
    broker
        .publish(drone, b"late ack".to_vec(), TTL)
        .await
        .expect("publish");

    let mut deliveries = broker.consume(drone, 1).await.expect("consume");
    let delivery = ready(&mut deliveries).expect("delivered");
    drop(deliveries);
    let err = delivery
        .ack()
        .await
        .expect_err("the consumer is gone, so the ack cannot take effect");
    assert!(matches!(err, BrokerError::Protocol(_)), "{err}");

    let mut deliveries = broker.consume(drone, 1).await.expect("consume again");
    let delivery = ready(&mut deliveries).expect("returned to the queue");
    assert_eq!(delivery.body, b"late ack");
    assert!(delivery.redelivered);
    delivery.ack().await.expect("ack from the live consumer");
    assert!(ready(&mut deliveries).is_none(), "acked for good");
}

#[tokio::test]
async fn returned_messages_keep_their_place_in_the_queue() {
    let broker = InProcessBroker::new();
    let drone = declared(&broker).await;
    for body in ["a", "b", "c"] {
        broker
            .publish(drone, body.into(), TTL)
            .await
            .expect("publish");
    }
    let mut first = broker.consume(drone, 1).await.expect("consume");
    let a = ready(&mut first).expect("a");
    assert_eq!(a.body, b"a");
    let mut second = broker.consume(drone, 1).await.expect("consume");
    let b = ready(&mut second).expect("b");
    assert_eq!(b.body, b"b");

    // Returned out of order, they still line up in publication order.
    drop(second);
    drop(first);
    drop((a, b));
    let mut deliveries = broker.consume(drone, 0).await.expect("consume");
    let bodies: Vec<_> = std::iter::from_fn(|| ready(&mut deliveries))
        .map(|d| (d.body.clone(), d.redelivered))
        .collect();
    assert_eq!(
        bodies,
        vec![
            (b"a".to_vec(), true),
            (b"b".to_vec(), true),
            (b"c".to_vec(), false)
        ]
    );
}

#[tokio::test]
async fn prefetch_zero_means_no_limit() {
    let broker = InProcessBroker::new();
    let drone = declared(&broker).await;
    for n in 0..100u8 {
        broker.publish(drone, vec![n], TTL).await.expect("publish");
    }
    let mut deliveries = broker.consume(drone, 0).await.expect("consume");
    let unsettled: Vec<_> = std::iter::from_fn(|| ready(&mut deliveries)).collect();
    assert_eq!(unsettled.len(), 100);
}

#[tokio::test]
async fn a_message_that_expires_while_a_full_consumer_waits_is_skipped() {
    let broker = InProcessBroker::new();
    let drone = declared(&broker).await;
    broker
        .publish(drone, b"m1".to_vec(), TTL)
        .await
        .expect("publish");
    broker
        .publish(drone, b"short-lived".to_vec(), Duration::from_millis(1))
        .await
        .expect("publish");
    broker
        .publish(drone, b"m3".to_vec(), TTL)
        .await
        .expect("publish");

    let mut deliveries = broker.consume(drone, 1).await.expect("consume");
    let m1 = ready(&mut deliveries).expect("m1");
    // Setup: the short TTL passes while m1 holds the only slot.
    tokio::time::sleep(Duration::from_millis(20)).await;
    m1.ack().await.expect("ack");
    let next = ready(&mut deliveries).expect("the slot is free again");
    assert_eq!(next.body, b"m3");
}

#[tokio::test]
async fn clones_share_queues() {
    let hive_side = InProcessBroker::new();
    let drone_side = hive_side.clone();
    let drone = declared(&hive_side).await;
    hive_side
        .publish(drone, b"shared".to_vec(), TTL)
        .await
        .expect("publish");
    let mut deliveries = drone_side.consume(drone, 1).await.expect("consume");
    assert_eq!(ready(&mut deliveries).expect("delivered").body, b"shared");

    let other = InProcessBroker::new();
    let err = other
        .publish(drone, b"elsewhere".to_vec(), TTL)
        .await
        .expect_err("a separate broker has its own queues");
    assert!(matches!(err, BrokerError::Publish { .. }), "{err}");
}
