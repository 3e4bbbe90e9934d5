use thiserror::Error;

/// Everything that can go wrong in the PKI crate. Each message says what was
/// wrong with which input, so it can be shown to an operator as is.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PkiError {
    /// rcgen failed to build or sign a certificate or CSR.
    #[error("could not {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// Text that should hold PEM blocks does not.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A certificate could not be parsed or is not what it has to be.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// A private key could not be parsed or does not fit its certificate.
    #[error("invalid private key: {0}")]
    PrivateKey(String),
    /// A certificate signing request could not be parsed or used.
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    /// A CSR whose self-signature does not verify: whoever sent it does not
    /// hold the private key of the public key in it.
    #[error("certificate signing request rejected: its signature does not verify ({0})")]
    CsrSignature(String),
    /// A drone id, operator name or role that cannot be put in a certificate.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidName {
        kind: &'static str,
        value: String,
        reason: String,
    },
    /// The certificate carries no Ultron8 identity (e.g. a server certificate).
    #[error("certificate carries no Ultron8 identity (no urn:ultron8: SAN URI)")]
    NoIdentity,
    /// The certificate carries an Ultron8 identity this version cannot read.
    #[error("certificate carries a malformed Ultron8 identity {uri:?}: {reason}")]
    MalformedIdentity { uri: String, reason: String },
    /// The certificate carries more than one Ultron8 identity.
    #[error("certificate carries more than one Ultron8 identity: {0:?}")]
    AmbiguousIdentity(Vec<String>),
    /// A requested validity period that cannot be issued.
    #[error("invalid validity: {0}")]
    Validity(String),
    /// Issuing needs at least one DNS name or IP address.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerNames,
    /// A DNS name that cannot go in a certificate.
    #[error("invalid DNS name {0:?} for a server certificate")]
    InvalidDnsName(String),
    /// The request-signing key could not be generated or parsed.
    #[error("invalid request-signing key: {0}")]
    SigningKey(String),
    /// A request signature that does not verify with the key.
    #[error("request signature does not verify with key {key_id}")]
    BadSignature { key_id: String },
    /// A join token whose text form is wrong; `part` names the part.
    #[error("invalid join token: {part}: {reason}")]
    InvalidToken { part: &'static str, reason: String },
    /// A CA fingerprint that is not 64 hex characters.
    #[error("invalid CA fingerprint {value:?}: {reason}")]
    InvalidFingerprint { value: String, reason: String },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl PkiError {
    pub(crate) fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
        move |source| PkiError::Generate { what, source }
    }
}
