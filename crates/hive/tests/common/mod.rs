//! The real hive in-process, for tests that run in milliseconds: [`Hive`]
//! over an in-memory SQLite store and the in-process broker, its gRPC
//! services (with their caller check) served over in-memory connections
//! (`tokio::io::duplex`). There is no TLS: each client connection carries
//! the [`Caller`] the test names, as the extension the caller layer would
//! otherwise fill from the client certificate. No processes, ports or files.
//!
//! What only real processes show (mutual TLS, AMQP, crashes, the drone's
//! executor) stays with the end-to-end tests in `crates/e2e`.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use chrono::Utc;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};
use ultron8_broker::inproc::InProcessBroker;
use ultron8_broker::{ActionConsumer, ActionPublisher};
use ultron8_core::DroneFacts;
use ultron8_hive::caller::Caller;
use ultron8_hive::config::HiveConfig;
use ultron8_hive::hive::Hive;
use ultron8_pki::{CertificateAuthority, RequestSigningKey};
use ultron8_proto::v1::control_service_client::ControlServiceClient;
use ultron8_proto::v1::drone_service_client::DroneServiceClient;
use ultron8_store::sqlite::SqliteStore;
use ultron8_store::{DroneEnrollment, Store};

/// The operator [`TestHive::control`] calls as.
pub const OPERATOR: &str = "alice";

pub struct TestHive {
    pub hive: Arc<Hive>,
    /// The broker the hive publishes to; consume a drone's queue from it to
    /// see what the hive sent that drone.
    pub broker: InProcessBroker,
    connections: mpsc::UnboundedSender<Result<Connection, io::Error>>,
    server: JoinHandle<()>,
}

impl TestHive {
    pub async fn start() -> TestHive {
        TestHive::start_with(HiveConfig::default()).await
    }

    /// A hive with `config`; its broker URL for drones is always the
    /// in-process one.
    pub async fn start_with(config: HiveConfig) -> TestHive {
        let config = HiveConfig {
            drone_amqp_url: Some("inproc:".into()),
            ..config
        };
        let store = SqliteStore::open_in_memory()
            .await
            .expect("in-memory SQLite store");
        let broker = InProcessBroker::new();
        let ca = CertificateAuthority::generate("test-hive").expect("CA");
        let signing_key =
            RequestSigningKey::from_pkcs8(&RequestSigningKey::generate_pkcs8().expect("key"))
                .expect("signing key");
        let hive = Arc::new(
            Hive::new(
                config,
                Arc::new(store) as Arc<dyn Store>,
                Arc::new(broker.clone()) as Arc<dyn ActionPublisher>,
                ca,
                signing_key,
            )
            .expect("hive")
            .with_secrets_key(Arc::new(
                ultron8_hive::keys::FileKey::ephemeral().expect("secrets key"),
            )),
        );
        let (connections, incoming) = mpsc::unbounded_channel();
        let services =
            ultron8_hive::serve::grpc_services(&hive, tonic_health::server::HealthReporter::new())
                .expect("services");
        let server = tokio::spawn(async move {
            if let Err(e) = services
                .serve_with_incoming(UnboundedReceiverStream::new(incoming))
                .await
            {
                panic!("the test hive's gRPC server failed: {e}");
            }
        });
        TestHive {
            hive,
            broker,
            connections,
            server,
        }
    }

    /// A channel to the hive on which every call is made as `caller`.
    pub async fn channel(&self, caller: Caller) -> Channel {
        let connections = self.connections.clone();
        Endpoint::from_static("http://in-process.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let connections = connections.clone();
                let caller = caller.clone();
                async move {
                    let (client, server) = tokio::io::duplex(64 * 1024);
                    connections
                        .send(Ok(Connection { io: server, caller }))
                        .map_err(|_| io::Error::other("the test hive has stopped"))?;
                    Ok::<_, io::Error>(TokioIo::new(client))
                }
            }))
            .await
            .expect("connect to the test hive")
    }

    /// The control service, as the operator [`OPERATOR`].
    pub async fn control(&self) -> ControlServiceClient<Channel> {
        self.control_as(Caller::Operator {
            name: OPERATOR.into(),
            role: "admin".into(),
        })
        .await
    }

    pub async fn control_as(&self, caller: Caller) -> ControlServiceClient<Channel> {
        ControlServiceClient::new(self.channel(caller).await)
    }

    /// The drone service, as the drone `id`.
    pub async fn drone(&self, id: &str) -> DroneServiceClient<Channel> {
        self.drone_service_as(Caller::Drone { id: id.into() }).await
    }

    pub async fn drone_service_as(&self, caller: Caller) -> DroneServiceClient<Channel> {
        DroneServiceClient::new(self.channel(caller).await)
    }

    /// A drone that enrolled with `labels` and registered just now: online,
    /// with its queue declared, so requests to it are published.
    pub async fn add_online_drone(&self, id: &str, labels: &[(&str, &str)]) {
        self.add_drone(id, labels, Utc::now()).await;
        self.hive
            .publisher
            .ensure_drone_queue(id)
            .await
            .expect("declare the drone's queue");
    }

    /// A drone that enrolled and registered, then fell silent: offline.
    pub async fn add_offline_drone(&self, id: &str, labels: &[(&str, &str)]) {
        let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
        self.add_drone(id, labels, an_hour_ago).await;
        // Only drones last seen before the cutoff go offline, so those
        // registered just now stay online.
        self.hive
            .store
            .mark_silent_drones_offline(Utc::now() - chrono::Duration::minutes(30))
            .await
            .expect("mark silent drones offline");
    }

    async fn add_drone(&self, id: &str, labels: &[(&str, &str)], seen_at: chrono::DateTime<Utc>) {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let store = &self.hive.store;
        store
            .record_enrollment(&DroneEnrollment {
                drone_id: id.into(),
                certificate_fingerprint: format!("test-certificate-of-{id}"),
                certificate_not_after: seen_at + chrono::Duration::days(365),
                labels,
                token_id: format!("test-token-of-{id}"),
                enrolled_at: seen_at,
            })
            .await
            .expect("record enrollment");
        let facts = DroneFacts {
            hostname: id.into(),
            os: "linux".into(),
            ..DroneFacts::default()
        };
        store
            .record_registration(&id.into(), &facts, seen_at)
            .await
            .expect("record registration");
    }

    /// The next request the hive published to `drone_id`'s queue.
    pub async fn next_request(&self, drone_id: &str) -> ultron8_proto::v1::ActionRequest {
        use futures::StreamExt;
        use prost::Message;
        let mut deliveries = self.broker.consume(drone_id, 1).await.expect("consume");
        let delivery = deliveries
            .next()
            .await
            .expect("a delivery")
            .expect("a message");
        let signed = ultron8_proto::v1::SignedActionRequest::decode(delivery.body.as_slice())
            .expect("a signed request");
        delivery.ack().await.expect("ack");
        ultron8_proto::v1::ActionRequest::decode(signed.request.as_slice()).expect("a request")
    }
}

impl Drop for TestHive {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One in-memory connection, carrying the caller its client stands for.
struct Connection {
    io: DuplexStream,
    caller: Caller,
}

impl Connected for Connection {
    /// tonic puts this into every request's extensions: the test's stand-in
    /// for the identity TLS would have proven.
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
