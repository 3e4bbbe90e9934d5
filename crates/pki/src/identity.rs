//! Peer identities and how they are written into certificates.
//!
//! # Encoding
//!
//! The CA writes exactly one subject-alternative-name URI into every client
//! certificate it issues:
//!
//! * a drone: `urn:ultron8:drone:<id>`
//! * an operator: `urn:ultron8:operator:<name>:<role>`
//!
//! The SAN URI is the only thing [`peer_identity`] reads; the subject CN
//! (`drone:<id>` / `operator:<name>`) is for humans and is never trusted.
//! Ids, names and roles are 1 to 128 characters of `A-Z a-z 0-9 . _ @ -`,
//! starting with a letter or digit, so they cannot contain the `:` separator
//! and one kind can never be read as the other. A certificate with no
//! `urn:ultron8:` URI (e.g. the hive's server certificate), with a malformed
//! one, or with more than one is refused. Whatever a drone puts in its CSR is
//! ignored: the CA sets the subject and SAN itself.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::PkiError;

/// Prefix of every identity URI (matched case-insensitively when looking for
/// identity claims, so that `URN:Ultron8:...` cannot slip past as "no identity").
pub(crate) const URN_PREFIX: &str = "urn:ultron8:";
const MAX_NAME_LEN: usize = 128;

/// Who is at the other end of a mutually authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// A drone, by its id.
    Drone { id: String },
    /// An operator (ultronctl user), by name, with the role the CA granted.
    Operator { name: String, role: String },
}

impl PeerIdentity {
    /// The SAN URI the CA writes for this identity.
    pub(crate) fn to_uri(&self) -> String {
        match self {
            PeerIdentity::Drone { id } => format!("{URN_PREFIX}drone:{id}"),
            PeerIdentity::Operator { name, role } => {
                format!("{URN_PREFIX}operator:{name}:{role}")
            }
        }
    }

    /// Parses an identity URI; `uri` must start with [`URN_PREFIX`] (any case).
    pub(crate) fn from_uri(uri: &str) -> Result<Self, PkiError> {
        let malformed = |reason: &str| PkiError::MalformedIdentity {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let rest = uri
            .strip_prefix(URN_PREFIX)
            .ok_or_else(|| malformed("the prefix must be exactly \"urn:ultron8:\""))?;
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            ["drone", id] => {
                validate_name("drone id", id).map_err(|e| malformed(&e.to_string()))?;
                Ok(PeerIdentity::Drone { id: id.to_string() })
            }
            ["operator", name, role] => {
                validate_name("operator name", name).map_err(|e| malformed(&e.to_string()))?;
                validate_name("operator role", role).map_err(|e| malformed(&e.to_string()))?;
                Ok(PeerIdentity::Operator {
                    name: name.to_string(),
                    role: role.to_string(),
                })
            }
            ["drone", ..] => Err(malformed("expected urn:ultron8:drone:<id>")),
            ["operator", ..] => Err(malformed("expected urn:ultron8:operator:<name>:<role>")),
            _ => Err(malformed(
                "unknown identity kind (expected drone or operator)",
            )),
        }
    }

    /// The human-readable subject CN the CA writes (informational only).
    pub(crate) fn common_name(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::Drone { id } => write!(f, "drone:{id}"),
            PeerIdentity::Operator { name, .. } => write!(f, "operator:{name}"),
        }
    }
}

/// Checks a drone id, operator name or role (see the module docs for the rules).
pub(crate) fn validate_name(kind: &'static str, value: &str) -> Result<(), PkiError> {
    let invalid = |reason: String| PkiError::InvalidName {
        kind,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!("longer than {MAX_NAME_LEN} characters")));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid("must start with a letter or digit".into()));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')))
    {
        return Err(invalid(format!(
            "character {c:?} is not allowed (use A-Z a-z 0-9 . _ @ -)"
        )));
    }
    Ok(())
}

/// Reads the identity the CA put in a certificate (see the module docs).
///
/// This does not check the certificate's chain or validity: call it only on a
/// certificate that TLS has already verified against the CA.
pub fn peer_identity(cert_der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let (rest, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| PkiError::Certificate(format!("cannot parse DER certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(PkiError::Certificate(
            "trailing bytes after the DER certificate".into(),
        ));
    }
    let san = cert.subject_alternative_name().map_err(|e| {
        PkiError::Certificate(format!("cannot parse the subject alternative names: {e}"))
    })?;
    let Some(san) = san else {
        return Err(PkiError::NoIdentity);
    };
    let claims: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri)
                if uri
                    .get(..URN_PREFIX.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(URN_PREFIX)) =>
            {
                Some(*uri)
            }
            _ => None,
        })
        .collect();
    match claims.as_slice() {
        [] => Err(PkiError::NoIdentity),
        [uri] => PeerIdentity::from_uri(uri),
        many => Err(PkiError::AmbiguousIdentity(
            many.iter().map(|s| s.to_string()).collect(),
        )),
    }
}
