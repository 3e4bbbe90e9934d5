//! rustls configurations (ring provider only) for the hive, its clients and
//! enrolling drones.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls::{DistinguishedName, Error as TlsError};

use crate::TransportError;

/// The only ALPN protocol spoken: gRPC runs over HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// The `ring` crypto provider; never the process default, so nothing can
/// swap in another provider behind our back.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn roots(ca_cert_der: &[u8]) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_cert_der.to_vec()))
        .map_err(|e| TransportError::Certificate(format!("unusable CA certificate: {e}")))?;
    Ok(Arc::new(roots))
}

fn private_key(key_pem: &str) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TransportError::PrivateKey(format!("cannot read the key PEM: {e}")))
}

/// The hive's server configuration.
///
/// Presents `[server cert, CA cert]` (the CA in the chain lets an enrolling
/// drone pin it by fingerprint), ALPN `h2`, TLS 1.2 and 1.3. Client
/// certificates are optional, but one that is presented must chain to
/// `ca_cert_der` (with clientAuth usage) or the handshake fails. Handlers
/// decide whether an anonymous caller may proceed (see
/// [`caller_identity`](crate::caller_identity)). A client certificate
/// `revoked` names fails the handshake.
pub fn server_config(
    ca_cert_der: &[u8],
    server_cert_der: &[u8],
    server_key_pem: &str,
    revoked: Arc<dyn RevocationCheck>,
) -> Result<Arc<ServerConfig>, TransportError> {
    let provider = provider();
    let webpki = WebPkiClientVerifier::builder_with_provider(roots(ca_cert_der)?, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TransportError::Verifier(e.to_string()))?;
    let verifier = Arc::new(RevocationAwareVerifier {
        inner: webpki,
        revoked,
    });
    let chain = vec![
        CertificateDer::from(server_cert_der.to_vec()),
        CertificateDer::from(ca_cert_der.to_vec()),
    ];
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key(server_key_pem)?)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No session resumption: a resumed session skips client certificate
    // verification, so a certificate revoked since the first handshake
    // would get back in. Clients keep their connections open; a full
    // handshake on reconnect costs about a millisecond.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Which client certificates the hive no longer accepts although its CA
/// signed them and they have not expired (a removed drone's, a revoked
/// operator's). Asked on every handshake, so it must answer from memory.
pub trait RevocationCheck: Send + Sync + fmt::Debug {
    fn is_revoked(&self, cert_der: &[u8]) -> bool;
}

/// Nothing is revoked: for servers without a revocation list.
#[derive(Debug, Default)]
pub struct NoRevocations;

impl RevocationCheck for NoRevocations {
    fn is_revoked(&self, _cert_der: &[u8]) -> bool {
        false
    }
}

/// WebPKI's client verification (chain to the CA, clientAuth usage,
/// validity), then the revocation list. A CRL would need the CA to sign and
/// publish lists; the hive already knows what it revoked, so it asks itself.
#[derive(Debug)]
struct RevocationAwareVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<dyn RevocationCheck>,
}

impl ClientCertVerifier for RevocationAwareVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.revoked.is_revoked(end_entity) {
            tracing::warn!(
                fingerprint = %ultron8_pki::fingerprint(end_entity),
                "refused a revoked client certificate"
            );
            return Err(TlsError::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client (drone or operator) with its certificate, verifying the server
/// against the CA.
pub fn client_config(
    ca_cert_der: &[u8],
    client_cert_der: &[u8],
    client_key_pem: &str,
) -> Result<Arc<ClientConfig>, TransportError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(roots(ca_cert_der)?)
        .with_client_auth_cert(
            vec![CertificateDer::from(client_cert_der.to_vec())],
            private_key(client_key_pem)?,
        )?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A client without a certificate, for a drone that enrolls with a join
/// token. It accepts the server only if the chain the server presents holds a
/// certificate whose SHA-256 is `ca_fingerprint` (64 hex characters) and the
/// server certificate verifies against that certificate (as the only root)
/// for the server name dialled.
pub fn enrollment_client_config(ca_fingerprint: &str) -> Result<Arc<ClientConfig>, TransportError> {
    let pinned = parse_fingerprint(ca_fingerprint)?;
    let provider = provider();
    let verifier = PinnedCaVerifier {
        fingerprint: pinned,
        provider: provider.clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

fn parse_fingerprint(text: &str) -> Result<[u8; 32], TransportError> {
    let invalid = |reason: &str| TransportError::InvalidFingerprint {
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let bytes = hex::decode(text.trim()).map_err(|_| invalid("not hex"))?;
    bytes
        .try_into()
        .map_err(|_| invalid("expected 64 hex characters (SHA-256)"))
}

/// Trusts the CA certificate whose SHA-256 was pinned, found in the chain
/// the server presents, and nothing else.
struct PinnedCaVerifier {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PinnedCaVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedCaVerifier")
            .field("fingerprint", &hex::encode(self.fingerprint))
            .finish()
    }
}

impl PinnedCaVerifier {
    fn is_pinned(&self, cert: &CertificateDer<'_>) -> bool {
        ultron8_pki::fingerprint(cert) == hex::encode(self.fingerprint)
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| self.is_pinned(c)) else {
            tracing::warn!(
                pinned = %hex::encode(self.fingerprint),
                "the server did not present the pinned CA certificate"
            );
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| {
            tracing::warn!(error = %e, "the pinned CA certificate is not usable as a root");
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| !self.is_pinned(c))
            .cloned()
            .collect();
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("cannot build the verifier: {e}")))?
            .verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_checked() {
        assert!(enrollment_client_config("abc").is_err());
        assert!(enrollment_client_config(&"zz".repeat(32)).is_err());
        assert!(enrollment_client_config(&"ab".repeat(31)).is_err());
        let err = enrollment_client_config("abc").unwrap_err();
        assert!(err.to_string().contains("fingerprint"), "{err}");
        let config = enrollment_client_config(&"AB".repeat(32)).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn configs_refuse_bad_inputs() {
        let ca = ultron8_pki::CertificateAuthority::generate("t").unwrap();
        let server = ca.issue_server(&["localhost".into()], &[]).unwrap();
        let config = server_config(
            ca.cert_der(),
            &server.cert_der,
            &server.key_pem,
            Arc::new(NoRevocations),
        )
        .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(matches!(
            server_config(
                ca.cert_der(),
                &server.cert_der,
                "nope",
                Arc::new(NoRevocations)
            ),
            Err(TransportError::PrivateKey(_))
        ));
        assert!(matches!(
            server_config(
                b"junk",
                &server.cert_der,
                &server.key_pem,
                Arc::new(NoRevocations)
            ),
            Err(TransportError::Certificate(_))
        ));
        // A key that is not the certificate's.
        let other = ca.issue_server(&["localhost".into()], &[]).unwrap();
        assert!(
            server_config(
                ca.cert_der(),
                &server.cert_der,
                &other.key_pem,
                Arc::new(NoRevocations)
            )
            .is_err()
        );

        let op = ca.issue_operator("alice", "admin").unwrap();
        let config = client_config(ca.cert_der(), &op.cert_der, &op.key_pem).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(matches!(
            client_config(ca.cert_der(), &op.cert_der, ""),
            Err(TransportError::PrivateKey(_))
        ));
    }
}
