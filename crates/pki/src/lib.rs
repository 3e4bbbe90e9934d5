//! Ultron8's PKI: the certificate authority, the certificates it issues, the
//! peer identities they carry, drone join tokens and the Ed25519 key the hive
//! signs ActionRequests with. No network I/O; all crypto is `ring`.
//!
//! Identity encoding: see [`identity`] (a single SAN URI
//! `urn:ultron8:drone:<id>` or `urn:ultron8:operator:<name>:<role>`).

mod ca;
mod error;
pub mod identity;
mod signing;
mod token;

use sha2::{Digest, Sha256};

pub use ca::{
    CertificateAuthority, IssuedCertificate, SignedCertificate, certificate_not_after,
    generate_key_and_csr, generate_operator_key_and_csr,
};
pub use error::PkiError;
pub use identity::{PeerIdentity, peer_identity};
pub use signing::{RequestSigningKey, RequestVerifier};
pub use token::JoinToken;

/// Lowercase hex SHA-256 of a DER certificate.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// Every `CERTIFICATE` block of a PEM text, as DER, in order. Other blocks
/// (e.g. a private key in the same file) are skipped; no certificate at all
/// is an error.
pub fn pem_to_der_certs(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut certs = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| PkiError::Pem(format!("cannot read a PEM block: {e}")))?;
        if block.label == "CERTIFICATE" {
            certs.push(block.contents);
        }
    }
    if certs.is_empty() {
        return Err(PkiError::Pem("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// A DER certificate as a PEM `CERTIFICATE` block, for files operators
/// inspect with standard tools.
pub fn der_to_pem(cert_der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(cert_der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests;
