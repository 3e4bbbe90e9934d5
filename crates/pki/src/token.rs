//! One-time drone join tokens.
//!
//! Text form: `u8join1.<id>.<secret>.<ca-fingerprint>`:
//! * `id`: 12 lowercase hex characters (48 random bits), names the token;
//! * `secret`: 32 random bytes from ring's `SystemRandom`, base64url without
//!   padding (43 characters);
//! * `ca-fingerprint`: the SHA-256 of the CA certificate, 64 lowercase hex
//!   characters, which the drone pins when it enrolls.
//!
//! The hive stores only [`JoinToken::secret_sha256`] (SHA-256 over the secret's
//! text form as it appears in the token).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::PkiError;

const PREFIX: &str = "u8join1";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// A one-time drone join token. `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    pub secret: String,
    pub ca_fingerprint: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish()
    }
}

impl JoinToken {
    /// A new token with a random id and secret that pins `ca_fingerprint`
    /// (64 hex characters, any case; stored lowercase).
    pub fn generate(ca_fingerprint: &str) -> Result<Self, PkiError> {
        let ca_fingerprint = normalize_fingerprint(ca_fingerprint)?;
        let rng = SystemRandom::new();
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill(&mut id).map_err(|_| PkiError::Random)?;
        rng.fill(&mut secret).map_err(|_| PkiError::Random)?;
        Ok(Self {
            id: hex::encode(id),
            secret: URL_SAFE_NO_PAD.encode(secret),
            ca_fingerprint,
        })
    }

    /// The text form `u8join1.<id>.<secret>.<ca-fingerprint>`.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}.{}.{}.{}",
            self.id, self.secret, self.ca_fingerprint
        )
    }

    /// Parses the text form (surrounding whitespace is ignored). The error
    /// names the part that is wrong.
    pub fn parse(text: &str) -> Result<Self, PkiError> {
        let bad = |part: &'static str, reason: String| PkiError::InvalidToken { part, reason };
        let text = text.trim();
        if text.is_empty() {
            return Err(bad("token", "empty".into()));
        }
        let parts: Vec<&str> = text.split('.').collect();
        if parts.first() != Some(&PREFIX) {
            return Err(bad(
                "prefix",
                format!(
                    "expected it to start with \"{PREFIX}.\", found {:?}",
                    parts.first().copied().unwrap_or_default()
                ),
            ));
        }
        let [_, id, secret, fingerprint] = parts.as_slice() else {
            return Err(bad(
                "format",
                format!(
                    "expected 4 dot-separated parts ({PREFIX}.<id>.<secret>.<ca-fingerprint>), found {}",
                    parts.len()
                ),
            ));
        };
        if id.len() != ID_BYTES * 2 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad(
                "id",
                format!("expected {} lowercase hex characters", ID_BYTES * 2),
            ));
        }
        let decoded = URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|e| bad("secret", format!("not base64url without padding: {e}")))?;
        if decoded.len() < SECRET_BYTES {
            return Err(bad(
                "secret",
                format!(
                    "too short: {} bytes, at least {SECRET_BYTES} required",
                    decoded.len()
                ),
            ));
        }
        let ca_fingerprint = normalize_fingerprint(fingerprint).map_err(|e| match e {
            PkiError::InvalidFingerprint { reason, .. } => bad("ca-fingerprint", reason),
            other => other,
        })?;
        Ok(Self {
            id: id.to_string(),
            secret: secret.to_string(),
            ca_fingerprint,
        })
    }

    /// SHA-256 of the secret (its text form): what the hive stores.
    pub fn secret_sha256(&self) -> Vec<u8> {
        Sha256::digest(self.secret.as_bytes()).to_vec()
    }
}

/// Checks a SHA-256 fingerprint (64 hex characters) and returns it lowercase.
pub(crate) fn normalize_fingerprint(value: &str) -> Result<String, PkiError> {
    let invalid = |reason: String| PkiError::InvalidFingerprint {
        value: value.to_string(),
        reason,
    };
    if value.len() != 64 {
        return Err(invalid(format!(
            "expected 64 hex characters (SHA-256), found {}",
            value.len()
        )));
    }
    if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("expected only hex characters".into()));
    }
    Ok(value.to_ascii_lowercase())
}
