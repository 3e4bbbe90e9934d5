//! Mutual TLS over real TCP on 127.0.0.1, serving `tonic_health` behind an
//! interceptor that records `caller_identity` of every call.

// Test code: a failed setup step should panic where it happened.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use ultron8_pki::{CertificateAuthority, IssuedCertificate, PeerIdentity, generate_key_and_csr};
use ultron8_transport::{
    TransportError, caller_identity, client_config, connect, connect_lazy,
    enrollment_client_config, server_config, tls_incoming,
};

/// Every test must finish well within this.
const TEST_DEADLINE: Duration = Duration::from_secs(30);

struct Pki {
    ca: CertificateAuthority,
    server: IssuedCertificate,
    /// A second CA with no relation to the first.
    foreign: CertificateAuthority,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = CertificateAuthority::generate("test").unwrap();
        let server = ca
            .issue_server(
                &["localhost".to_string()],
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            )
            .unwrap();
        let foreign = CertificateAuthority::generate("foreign").unwrap();
        Pki {
            ca,
            server,
            foreign,
        }
    })
}

/// The identity (or `None` for anonymous) of every call the server answered.
type Calls = Arc<Mutex<Vec<Option<PeerIdentity>>>>;

/// Serves the health service with mutual TLS on 127.0.0.1:0.
async fn start_server() -> (String, Calls) {
    start_server_revoking(Arc::new(ultron8_transport::NoRevocations)).await
}

/// A revocation list the test fills while the server runs.
#[derive(Debug, Default)]
struct Revoked(Mutex<Vec<String>>);

impl ultron8_transport::RevocationCheck for Revoked {
    fn is_revoked(&self, cert_der: &[u8]) -> bool {
        let fingerprint = ultron8_pki::fingerprint(cert_der);
        self.0.lock().unwrap().contains(&fingerprint)
    }
}

async fn start_server_revoking(
    revoked: Arc<dyn ultron8_transport::RevocationCheck>,
) -> (String, Calls) {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let config = server_config(
        pki.ca.cert_der(),
        &pki.server.cert_der,
        &pki.server.key_pem,
        revoked,
    )
    .unwrap();
    let calls: Calls = Arc::default();
    let recorded = calls.clone();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let service = InterceptedService::new(health, move |request: tonic::Request<()>| {
        recorded
            .lock()
            .unwrap()
            .push(caller_identity(request.extensions()));
        Ok(request)
    });
    tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming(tls_incoming(listener, config))
            .await
            .unwrap();
    });
    (address, calls)
}

async fn check(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// Connects and makes one call; the error (of either step) as text.
async fn connect_and_check(
    address: &str,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    let channel = connect(address, server_name, config)
        .await
        .map_err(|e| e.to_string())?;
    check(channel).await.map_err(|e| e.to_string())
}

fn drone_config(id: &str) -> Arc<rustls::ClientConfig> {
    let pki = pki();
    let (key_pem, csr) = generate_key_and_csr(id).unwrap();
    let signed = pki
        .ca
        .sign_drone_csr(&csr, id, Duration::from_secs(3600))
        .unwrap();
    client_config(pki.ca.cert_der(), &signed.cert_der, &key_pem).unwrap()
}

fn operator_config(ca: &CertificateAuthority, name: &str) -> Arc<rustls::ClientConfig> {
    let op = ca.issue_operator(name, "admin").unwrap();
    // Always trust the real CA for the server; only the client cert varies.
    client_config(pki().ca.cert_der(), &op.cert_der, &op.key_pem).unwrap()
}

async fn within_deadline<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test took too long");
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_at_the_handshake() {
    within_deadline(async {
        let revoked = Arc::new(Revoked::default());
        let (address, calls) = start_server_revoking(revoked.clone()).await;
        let op = pki().ca.issue_operator("mallory", "admin").unwrap();
        let config = client_config(pki().ca.cert_der(), &op.cert_der, &op.key_pem).unwrap();
        connect_and_check(&address, "localhost", config.clone())
            .await
            .unwrap();
        revoked
            .0
            .lock()
            .unwrap()
            .push(ultron8_pki::fingerprint(&op.cert_der));
        let err = connect_and_check(&address, "localhost", config)
            .await
            .unwrap_err();
        assert!(
            err.to_lowercase().contains("revoked") || err.contains("certificate"),
            "{err}"
        );
        // Another certificate of the same CA is still served.
        connect_and_check(&address, "localhost", operator_config(&pki().ca, "alice"))
            .await
            .unwrap();
        assert_eq!(calls.lock().unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn drone_is_served_and_identified() {
    within_deadline(async {
        let (address, calls) = start_server().await;
        let channel = connect(&address, "localhost", drone_config("web-1"))
            .await
            .unwrap();
        check(channel.clone()).await.unwrap();
        check(channel).await.unwrap();
        assert_eq!(
            *calls.lock().unwrap(),
            vec![Some(PeerIdentity::Drone { id: "web-1".into() }); 2]
        );
    })
    .await;
}

#[tokio::test]
async fn operator_is_served_and_identified_by_ip_server_name() {
    within_deadline(async {
        let (address, calls) = start_server().await;
        connect_and_check(&address, "127.0.0.1", operator_config(&pki().ca, "alice"))
            .await
            .unwrap();
        assert_eq!(
            *calls.lock().unwrap(),
            vec![Some(PeerIdentity::Operator {
                name: "alice".into(),
                role: "admin".into()
            })]
        );
    })
    .await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    within_deadline(async {
        let (address, calls) = start_server().await;
        let err = connect_and_check(
            &address,
            "localhost",
            operator_config(&pki().foreign, "mallory"),
        )
        .await
        .unwrap_err();
        eprintln!("foreign client refused: {err}");
        assert!(calls.lock().unwrap().is_empty(), "the handler must not run");
    })
    .await;
}

#[tokio::test]
async fn client_refuses_a_server_from_another_ca_or_with_another_name() {
    within_deadline(async {
        let (address, calls) = start_server().await;
        let pki = pki();
        // The client trusts only the foreign CA.
        let op = pki.foreign.issue_operator("alice", "admin").unwrap();
        let config = client_config(pki.foreign.cert_der(), &op.cert_der, &op.key_pem).unwrap();
        let err = connect(&address, "localhost", config).await.unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");

        // The right CA but a name the server certificate does not carry.
        let err = connect(&address, "hive.example.com", drone_config("web-1"))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");
        assert!(calls.lock().unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn enrollment_pins_the_ca_by_fingerprint() {
    within_deadline(async {
        let (address, calls) = start_server().await;
        let pki = pki();

        // The right fingerprint: connects without a client certificate.
        let config = enrollment_client_config(&pki.ca.fingerprint()).unwrap();
        connect_and_check(&address, "localhost", config.clone())
            .await
            .unwrap();
        assert_eq!(*calls.lock().unwrap(), vec![None], "anonymous caller");

        // Uppercase is the same fingerprint.
        let upper = enrollment_client_config(&pki.ca.fingerprint().to_uppercase()).unwrap();
        connect_and_check(&address, "127.0.0.1", upper)
            .await
            .unwrap();

        // The right CA, but the server certificate is not for that name.
        let err = connect(&address, "hive.example.com", config)
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");

        // A wrong fingerprint: refused.
        let wrong = enrollment_client_config(&pki.foreign.fingerprint()).unwrap();
        let err = connect(&address, "localhost", wrong).await.unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");
        // The fingerprint of the server certificate itself is not a CA pin.
        let leaf =
            enrollment_client_config(&ultron8_pki::fingerprint(&pki.server.cert_der)).unwrap();
        let err = connect(&address, "localhost", leaf).await.unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");

        assert_eq!(calls.lock().unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn server_keeps_accepting_after_bad_handshakes() {
    within_deadline(async {
        let (address, calls) = start_server().await;

        // A connection that never says anything: its handshake is pending for
        // 10 s, which must not hold up anyone else.
        let _silent = TcpStream::connect(&address).await.unwrap();
        // Garbage instead of a ClientHello.
        let mut garbage = TcpStream::connect(&address).await.unwrap();
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Connects and hangs up at once.
        drop(TcpStream::connect(&address).await.unwrap());
        // A certificate from another CA, twice.
        for _ in 0..2 {
            connect_and_check(
                &address,
                "localhost",
                operator_config(&pki().foreign, "mallory"),
            )
            .await
            .unwrap_err();
        }

        let started = Instant::now();
        connect_and_check(&address, "localhost", drone_config("web-2"))
            .await
            .unwrap();
        connect_and_check(
            &address,
            "localhost",
            enrollment_client_config(&pki().ca.fingerprint()).unwrap(),
        )
        .await
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "good clients waited {:?}",
            started.elapsed()
        );
        assert_eq!(
            *calls.lock().unwrap(),
            vec![Some(PeerIdentity::Drone { id: "web-2".into() }), None]
        );
        drop(garbage);
    })
    .await;
}

/// An address nothing listens on.
async fn closed_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
    // dropped here: the port is closed
}

#[tokio::test]
async fn connect_fails_fast_when_unreachable_and_lazy_connects_on_use() {
    within_deadline(async {
        let closed = closed_address().await.to_string();
        let err = connect(&closed, "localhost", drone_config("web-1"))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&closed), "{err}");

        // Lazy: returns at once, fails on use.
        let lazy = connect_lazy(&closed, "localhost", drone_config("web-1")).unwrap();
        assert!(check(lazy).await.is_err());

        // Lazy against a live server: connects on first use.
        let (address, calls) = start_server().await;
        let lazy = connect_lazy(&address, "localhost", drone_config("web-3")).unwrap();
        assert!(calls.lock().unwrap().is_empty());
        check(lazy.clone()).await.unwrap();
        check(lazy).await.unwrap();
        assert_eq!(calls.lock().unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn lazy_channel_reconnects_when_the_server_comes_up() {
    within_deadline(async {
        // Reserve a port, dial it lazily before anything serves there.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let channel = connect_lazy(&address, "localhost", drone_config("web-4")).unwrap();
        assert!(check(channel.clone()).await.is_err());

        let pki = pki();
        let listener = TcpListener::bind(&address).await.unwrap();
        let config = server_config(
            pki.ca.cert_der(),
            &pki.server.cert_der,
            &pki.server.key_pem,
            std::sync::Arc::new(ultron8_transport::NoRevocations),
        )
        .unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            Server::builder()
                .add_service(health)
                .serve_with_incoming(tls_incoming(listener, config)),
        );

        // The channel may need a moment to notice; retry briefly.
        let mut last = None;
        for _ in 0..50 {
            match check(channel.clone()).await {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("lazy channel never reconnected: {last:?}");
    })
    .await;
}

#[tokio::test]
async fn bad_addresses_and_server_names_are_refused() {
    let config = drone_config("web-1");
    for address in ["", "localhost", "http://127.0.0.1:1", "127.0.0.1:1/x"] {
        let err = connect_lazy(address, "localhost", config.clone()).unwrap_err();
        assert!(
            matches!(err, TransportError::InvalidAddress { .. }),
            "{address}: {err}"
        );
    }
    for name in ["", "not a name", "bad..name"] {
        let err = connect_lazy("127.0.0.1:1", name, config.clone()).unwrap_err();
        assert!(
            matches!(err, TransportError::InvalidServerName { .. }),
            "{name}: {err}"
        );
    }
}
