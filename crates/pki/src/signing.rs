//! Ed25519 signatures over ActionRequests: the hive signs, drones verify.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use crate::PkiError;

/// First 16 hex characters of SHA-256 over a raw Ed25519 public key.
fn key_id_of(public_key: &[u8]) -> String {
    let mut id = hex::encode(Sha256::digest(public_key));
    id.truncate(16);
    id
}

/// The Ed25519 key the hive signs ActionRequests with.
pub struct RequestSigningKey {
    key: Ed25519KeyPair,
}

impl fmt::Debug for RequestSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSigningKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl RequestSigningKey {
    /// A new key as PKCS#8 v2 DER: store it, then load it with [`Self::from_pkcs8`].
    pub fn generate_pkcs8() -> Result<Vec<u8>, PkiError> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| PkiError::SigningKey("could not generate an Ed25519 key".into()))
    }

    /// Loads an Ed25519 key from PKCS#8 DER (v2 as generated here, or v1 as
    /// written by `openssl genpkey -algorithm ed25519`).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, PkiError> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|key| Self { key })
            .map_err(|e| PkiError::SigningKey(format!("not an Ed25519 PKCS#8 key: {e}")))
    }

    /// The 64-byte Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).as_ref().to_vec()
    }

    /// The raw 32-byte public key (what [`RequestVerifier::new`] takes).
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// First 16 hex characters of SHA-256 of the public key.
    pub fn key_id(&self) -> String {
        key_id_of(self.key.public_key().as_ref())
    }
}

/// Verifies signatures made by a [`RequestSigningKey`], given its public key.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestVerifier {
    public_key: Vec<u8>,
}

impl fmt::Debug for RequestVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestVerifier")
            .field("key_id", &self.key_id())
            .finish()
    }
}

impl RequestVerifier {
    /// A verifier for a raw 32-byte Ed25519 public key.
    pub fn new(public_key: Vec<u8>) -> Self {
        Self { public_key }
    }

    /// First 16 hex characters of SHA-256 of the public key.
    pub fn key_id(&self) -> String {
        key_id_of(&self.public_key)
    }

    /// Ok if `signature` is this key's signature of exactly `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), PkiError> {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(message, signature)
            .map_err(|_| PkiError::BadSignature {
                key_id: self.key_id(),
            })
    }
}
