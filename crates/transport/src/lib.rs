//! Ultron8's mutual-TLS gRPC plumbing for tonic over tokio-rustls, with the
//! `ring` crypto provider only.
//!
//! * [`server_config`], [`client_config`], [`enrollment_client_config`]: the
//!   rustls configurations of the hive, of drones and operators, and of a
//!   drone that enrolls with a join token (pins the CA by fingerprint).
//! * [`tls_incoming`]: a stream of TLS connections for
//!   `tonic::transport::Server::serve_with_incoming`.
//! * [`connect`], [`connect_lazy`]: tonic channels dialled over TLS.
//! * [`caller_identity`]: who called, from the verified client certificate.

mod config;
mod dial;
mod incoming;

use thiserror::Error;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use ultron8_pki::PeerIdentity;

pub use config::{
    NoRevocations, RevocationCheck, client_config, enrollment_client_config, server_config,
};
pub use dial::{connect, connect_lazy};
pub use incoming::tls_incoming;

/// What can go wrong setting up or dialling a TLS connection.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// rustls refused the configuration (e.g. a key that is not the certificate's).
    #[error("TLS configuration refused: {0}")]
    Tls(#[from] rustls::Error),
    /// A certificate that cannot be used.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// A private key that cannot be read.
    #[error("invalid private key: {0}")]
    PrivateKey(String),
    /// The certificate verifier could not be built.
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(String),
    /// A CA fingerprint that is not 64 hex characters.
    #[error("invalid CA fingerprint {value:?}: {reason}")]
    InvalidFingerprint { value: String, reason: String },
    /// A server name that is neither a DNS name nor an IP address.
    #[error("invalid server name {name:?}: {reason}")]
    InvalidServerName { name: String, reason: String },
    /// An address that is not `host:port`.
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    /// The server could not be reached, or the TLS or HTTP/2 handshake failed.
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// The identity of the caller of a request, read from the client
/// certificate TLS verified against the CA; `None` for an anonymous caller
/// (no certificate, or one without an Ultron8 identity). Takes the request's
/// extensions, where tonic keeps the connection's TLS information, so that
/// both a handler (`request.extensions()`) and a tower layer in front of the
/// service (`http::Request::extensions`) can ask. Requires the server to be
/// fed by [`tls_incoming`] (or another `TlsStream<TcpStream>` incoming).
pub fn caller_identity(extensions: &tonic::codegen::http::Extensions) -> Option<PeerIdentity> {
    let tls = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = tls.peer_certs()?;
    let leaf = certs.first()?;
    match ultron8_pki::peer_identity(leaf) {
        Ok(identity) => Some(identity),
        Err(e) => {
            tracing::debug!(error = %e, "client certificate carries no usable identity");
            None
        }
    }
}

/// The DER client certificate TLS verified for the request's connection;
/// `None` for a caller without one.
pub fn caller_certificate(extensions: &tonic::codegen::http::Extensions) -> Option<Vec<u8>> {
    let tls = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = tls.peer_certs()?;
    certs.first().map(|leaf| leaf.to_vec())
}

/// An error and its sources, joined with ": ".
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}
