//! Runs the conformance suite against RabbitMQ through [`AmqpPublisher`]
//! and [`AmqpConsumer`].
//!
//! Uses the RabbitMQ on this machine (`ULTRON8_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Each test uses its own drone
//! ids, hence its own queues, so tests run in parallel; the runner deletes
//! those queues afterwards, whether the test passed or panicked.

use std::future::Future;
use std::sync::Arc;

use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use ultron8_broker::amqp::{AmqpConsumer, AmqpPublisher};
use ultron8_broker::drone_queue_name;

use crate::suite::BrokerUnderTest;

fn amqp_url() -> String {
    std::env::var("ULTRON8_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string())
}

/// Best effort: a leftover queue is clutter, not a failure.
async fn delete_queues(drones: &[String]) {
    let Ok(connection) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await
    else {
        return;
    };
    for drone in drones {
        // A fresh channel each time: deleting a queue a test never declared
        // may close the channel on some RabbitMQ versions.
        let Ok(channel) = connection.create_channel().await else {
            break;
        };
        let _ = channel
            .queue_delete(
                drone_queue_name(drone).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await;
        let _ = channel.close(200, "OK".into()).await;
    }
    let _ = connection.close(200, "OK".into()).await;
}

async fn run<F, Fut>(test: F)
where
    F: FnOnce(BrokerUnderTest) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let publisher = AmqpPublisher::connect(&amqp_url())
        .await
        .expect("connect to RabbitMQ (is it up? see ULTRON8_TEST_AMQP_URL)");
    let broker = BrokerUnderTest::new(
        Arc::new(publisher),
        Arc::new(AmqpConsumer::new(&amqp_url())),
    );
    // A spawned task turns a panic into a JoinError, so cleanup still runs.
    let outcome = tokio::spawn(test(broker.clone())).await;
    delete_queues(&broker.drones()).await;
    if let Err(err) = outcome {
        match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("test task failed: {err}"),
        }
    }
}

crate::suite::conformance_tests!(run);

// --- AMQP-only behaviour -------------------------------------------------------

#[tokio::test]
async fn a_wrong_url_is_a_clear_error_without_the_password() {
    let err = AmqpPublisher::connect("amqp://guest:hunter2@127.0.0.1:1/%2f")
        .await
        .err()
        .expect("nothing listens on port 1");
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("hunter2"), "password leaked: {message}");
}
