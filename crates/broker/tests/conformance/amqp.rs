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

// --- a broker that stops answering ------------------------------------------------
//
// A RabbitMQ under a memory or disk alarm stops reading from publishers; one
// whose host froze accepts connections and never answers. Stalling the shared
// RabbitMQ would stall every other test, so these tests put a TCP proxy of
// their own between the publisher and it, and stop the proxy forwarding; or
// point the publisher at a listener that accepts and never answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use ultron8_broker::ActionPublisher;
use ultron8_broker::amqp::PublisherOptions;

/// Deadlines short enough for a test, long enough for a loaded machine.
const QUICK: PublisherOptions = PublisherOptions {
    connect_timeout: Duration::from_millis(500),
    publish_timeout: Duration::from_secs(1),
};

/// How long past a deadline an operation may take to give up: scheduling
/// on a busy two-core machine, not waiting.
const SLACK: Duration = Duration::from_millis(700);

/// No test here waits longer than this for anything.
const PATIENCE: Duration = Duration::from_secs(10);

/// A listener on 127.0.0.1 that accepts connections and never says a word,
/// and knows how many of them the other side still holds open.
struct SilentListener {
    port: u16,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentListener {
    async fn start() -> SilentListener {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (o, a) = (open.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    // Reads what the client sends, answers nothing, and
                    // notes when the client closes.
                    let mut buf = [0u8; 1024];
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        SilentListener {
            port,
            open,
            accepted,
            task,
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy on 127.0.0.1 in front of the test RabbitMQ that can stop
/// forwarding (in both directions, on every connection, old and new) and
/// start again: a broker that stalls and recovers, without touching the
/// shared one.
struct FreezableProxy {
    port: u16,
    frozen: watch::Sender<bool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start() -> FreezableProxy {
        let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("the test AMQP URL parses");
        let upstream = format!("{}:{}", uri.authority.host, uri.authority.port);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let (frozen, _) = watch::channel(false);
        let gate = frozen.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, gate.subscribe()));
                tokio::spawn(forward(server_read, client_write, gate.subscribe()));
            }
        });
        FreezableProxy {
            port,
            frozen,
            accepted,
            task,
        }
    }

    /// The test URL, through the proxy.
    fn url(&self) -> String {
        let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("the test AMQP URL parses");
        let authority = format!("{}:{}", uri.authority.host, uri.authority.port);
        amqp_url().replacen(&authority, &format!("127.0.0.1:{}", self.port), 1)
    }

    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, holding what it read while the gate is frozen.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits, up to [`PATIENCE`], until `condition` holds.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_broker_that_never_answers_fails_within_the_deadline_and_leaves_nothing_open()
 {
    let silent = SilentListener::start().await;
    let started = Instant::now();
    let refused = tokio::time::timeout(PATIENCE, AmqpPublisher::connect_with(&silent.url(), QUICK))
        .await
        .expect("connecting gives up by itself")
        .err()
        .expect("nothing answers, so nothing connects");
    let took = started.elapsed();
    assert!(
        took <= QUICK.connect_timeout + SLACK,
        "connecting took {took:?}, past its deadline of {:?}",
        QUICK.connect_timeout
    );
    let message = refused.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{}", silent.port)),
        "{message}"
    );
    assert!(message.contains("did not answer within 500ms"), "{message}");
    assert!(
        !message.contains("guest:guest"),
        "password leaked: {message}"
    );
    assert!(silent.accepted.load(Ordering::SeqCst) >= 1, "never tried");
    // An abandoned attempt closes its socket: a broker that never answers
    // costs no connection (nor the thread that would serve it) per attempt.
    eventually("the abandoned connection closing", || async {
        silent.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_fails_each_publish_at_its_deadline_and_never_holds_up_ping() {
    let proxy = FreezableProxy::start().await;
    let publisher = Arc::new(
        AmqpPublisher::connect_with(&proxy.url(), QUICK)
            .await
            .expect("connect through the proxy"),
    );
    let drone = format!("test-{}", uuid::Uuid::now_v7().simple());
    let outcome = tokio::spawn({
        let publisher = publisher.clone();
        let drone = drone.clone();
        async move {
            publisher.ensure_drone_queue(&drone).await.expect("declare");
            publisher
                .publish(&drone, b"before".to_vec(), Duration::from_secs(60))
                .await
                .expect("publish while the broker answers");
            publisher
                .ping()
                .await
                .expect("ping while the broker answers");

            // The broker stops answering: a publish gives up at its deadline,
            // naming the queue and why.
            proxy.freeze();
            let started = Instant::now();
            let failed = tokio::time::timeout(
                PATIENCE,
                publisher.publish(&drone, b"stalled".to_vec(), Duration::from_secs(60)),
            )
            .await
            .expect("a publish gives up by itself")
            .expect_err("nothing confirms it");
            let took = started.elapsed();
            assert!(
                took <= QUICK.publish_timeout + SLACK,
                "the publish took {took:?}, past its deadline of {:?}",
                QUICK.publish_timeout
            );
            let message = failed.to_string();
            assert!(message.contains(&drone), "{message}");
            assert!(message.contains("not confirmed within 1s"), "{message}");

            // The next publish reconnects through the stalled proxy and waits
            // in the handshake; readiness must not wait behind it.
            let connections = proxy.accepted.load(Ordering::SeqCst);
            let stuck = tokio::spawn({
                let publisher = publisher.clone();
                let drone = drone.clone();
                async move {
                    let started = Instant::now();
                    let result = publisher
                        .publish(&drone, b"reconnecting".to_vec(), Duration::from_secs(60))
                        .await;
                    (result, started.elapsed())
                }
            });
            eventually("the publish reconnecting", || async {
                proxy.accepted.load(Ordering::SeqCst) > connections
            })
            .await;
            let started = Instant::now();
            let ping = tokio::time::timeout(PATIENCE, publisher.ping())
                .await
                .expect("ping answers by itself");
            let took = started.elapsed();
            assert!(
                took <= Duration::from_millis(200),
                "ping took {took:?}: it waited behind a publish"
            );
            let message = ping.expect_err("not connected while stalled").to_string();
            assert!(message.contains("not connected"), "{message}");
            let (result, took) = stuck.await.expect("the stuck publish");
            assert!(result.is_err(), "nothing could confirm it");
            assert!(
                took <= QUICK.publish_timeout + SLACK,
                "the reconnecting publish took {took:?}, past its deadline"
            );

            // The broker recovers, and so does the publisher, by itself.
            proxy.thaw();
            eventually("ping succeeding after the broker recovers", || {
                let publisher = publisher.clone();
                async move { publisher.ping().await.is_ok() }
            })
            .await;
            publisher
                .publish(&drone, b"after".to_vec(), Duration::from_secs(60))
                .await
                .expect("publish after the broker recovers");
        }
    })
    .await;
    delete_queues(&[drone]).await;
    if let Err(err) = outcome {
        match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("test task failed: {err}"),
        }
    }
}
