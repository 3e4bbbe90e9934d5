//! The client side: tonic channels over our own TCP + TLS connector.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::ALPN_H2;
use crate::{TransportError, error_chain};

/// TCP connect plus TLS handshake must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 PING interval, also while idle, so dead connections are noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// A PING unanswered for this long closes the connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Dials `address` (`host:port`) over TLS and returns a connected channel.
/// `server_name` (DNS name or IP address) is what the server certificate is
/// verified against. Fails if the server cannot be reached or the handshake
/// fails.
pub async fn connect(
    address: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<Channel, TransportError> {
    let endpoint = endpoint(address)?;
    let connector = connector(address, server_name, config)?;
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| TransportError::Connect {
            address: address.to_string(),
            reason: error_chain(&e),
        })
}

/// Like [`connect`] but returns at once; the channel connects on first use and
/// reconnects after the connection drops. For long-lived drones.
pub fn connect_lazy(
    address: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<Channel, TransportError> {
    let endpoint = endpoint(address)?;
    let connector = connector(address, server_name, config)?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

fn endpoint(address: &str) -> Result<Endpoint, TransportError> {
    let invalid = |reason: String| TransportError::InvalidAddress {
        address: address.to_string(),
        reason,
    };
    if address.is_empty() || address.contains('/') || address.contains("://") {
        return Err(invalid("expected host:port".into()));
    }
    // The scheme is only a label here: our connector does TLS itself (an
    // https:// URI would make tonic look for its own TLS support).
    let endpoint =
        Endpoint::from_shared(format!("http://{address}")).map_err(|e| invalid(error_chain(&e)))?;
    if endpoint.uri().port_u16().is_none() {
        return Err(invalid("missing port (expected host:port)".into()));
    }
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

fn connector(
    address: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<
    impl tower::Service<
        Uri,
        Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
        Error = io::Error,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
    TransportError,
> {
    let server_name = ServerName::try_from(server_name.to_string()).map_err(|e| {
        TransportError::InvalidServerName {
            name: server_name.to_string(),
            reason: e.to_string(),
        }
    })?;
    // gRPC needs HTTP/2: make sure it is offered even if the caller built the
    // config without ALPN.
    let config = if config.alpn_protocols.iter().any(|p| p == ALPN_H2) {
        config
    } else {
        let mut with_h2 = (*config).clone();
        with_h2.alpn_protocols = vec![ALPN_H2.to_vec()];
        Arc::new(with_h2)
    };
    let tls = TlsConnector::from(config);
    let address: Arc<str> = Arc::from(address);
    Ok(tower::service_fn(move |_: Uri| {
        let tls = tls.clone();
        let address = address.clone();
        let server_name = server_name.clone();
        async move {
            let tcp = TcpStream::connect(&*address).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    }))
}
