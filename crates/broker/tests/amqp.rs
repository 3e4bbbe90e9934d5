//! Against the RabbitMQ on this machine (`ULTRON8_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Each test uses its own drone
//! id, hence its own queue, so tests run in parallel.

use std::time::Duration;

use futures::StreamExt;
use ultron8_broker::amqp::{AmqpConsumer, AmqpPublisher};
use ultron8_broker::{ActionConsumer, ActionPublisher, BrokerError};

fn amqp_url() -> String {
    std::env::var("ULTRON8_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

fn fresh_drone_id() -> String {
    format!("test-{}", uuid::Uuid::now_v7().simple())
}

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_published_request_reaches_the_drone_and_is_redelivered_until_acked() {
    let drone = fresh_drone_id();
    let publisher = AmqpPublisher::connect(&amqp_url())
        .await
        .expect("connect publisher");
    publisher.ensure_drone_queue(&drone).await.expect("declare");
    publisher
        .publish(&drone, b"first".to_vec(), Duration::from_secs(60))
        .await
        .expect("publish");

    let consumer = AmqpConsumer::new(&amqp_url());
    {
        let mut deliveries = consumer.consume(&drone, 4).await.expect("consume");
        let delivery = tokio::time::timeout(DEADLINE, deliveries.next())
            .await
            .expect("delivery within deadline")
            .expect("stream open")
            .expect("delivery ok");
        assert_eq!(delivery.body, b"first");
        assert!(!delivery.redelivered);
        // Dropped without an ack, as when a drone dies mid-run.
    }

    let mut deliveries = consumer.consume(&drone, 4).await.expect("consume again");
    let delivery = tokio::time::timeout(DEADLINE, deliveries.next())
        .await
        .expect("redelivery within deadline")
        .expect("stream open")
        .expect("delivery ok");
    assert_eq!(delivery.body, b"first");
    assert!(
        delivery.redelivered,
        "an unacknowledged message comes back marked redelivered"
    );
    delivery.ack().await.expect("ack");
}

#[tokio::test]
async fn publishing_to_a_queue_that_does_not_exist_fails() {
    let publisher = AmqpPublisher::connect(&amqp_url())
        .await
        .expect("connect publisher");
    let err = publisher
        .publish(
            &fresh_drone_id(),
            b"lost?".to_vec(),
            Duration::from_secs(60),
        )
        .await
        .expect_err("mandatory publish to a missing queue must fail");
    assert!(matches!(err, BrokerError::Publish { .. }), "{err}");
    // The publisher recovers for the next call.
    let drone = fresh_drone_id();
    publisher
        .ensure_drone_queue(&drone)
        .await
        .expect("declare after failure");
    publisher
        .publish(&drone, b"ok".to_vec(), Duration::from_secs(60))
        .await
        .expect("publish");
}

#[tokio::test]
async fn an_expired_message_is_never_delivered() {
    let drone = fresh_drone_id();
    let publisher = AmqpPublisher::connect(&amqp_url())
        .await
        .expect("connect publisher");
    publisher.ensure_drone_queue(&drone).await.expect("declare");
    publisher
        .publish(&drone, b"stale".to_vec(), Duration::from_millis(1))
        .await
        .expect("publish");
    publisher
        .publish(&drone, b"fresh".to_vec(), Duration::from_secs(60))
        .await
        .expect("publish");

    let mut deliveries = AmqpConsumer::new(&amqp_url())
        .consume(&drone, 4)
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(DEADLINE, deliveries.next())
        .await
        .expect("delivery within deadline")
        .expect("stream open")
        .expect("delivery ok");
    // RabbitMQ discards expired messages at the head of the queue, so the
    // first thing the drone sees is the fresh one.
    assert_eq!(delivery.body, b"fresh");
    delivery.ack().await.expect("ack");
}

#[tokio::test]
async fn a_wrong_url_is_a_clear_error() {
    let err = AmqpPublisher::connect("amqp://guest:hunter2@127.0.0.1:1/%2f")
        .await
        .err()
        .expect("nothing listens on port 1");
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("hunter2"), "password leaked: {message}");
}
