//! The key that seals secrets at rest, behind [`KeyProvider`].
//!
//! The hive seals every secret value before the store sees it
//! (XChaCha20-Poly1305: a random 24-byte nonce per value, which is safe at
//! any number of values, unlike the 12 bytes of plain ChaCha20-Poly1305;
//! the secret's name as associated data, so a sealed value copied under
//! another name in the database does not open). The key never enters the
//! database: a dump, a replica or a backup of it alone reveals names and
//! dates, never a value.
//!
//! # Why a trait
//!
//! Today the key is a file in the hive's data directory ([`FileKey`]).
//! Sites that keep keys in a KMS or an HSM need another source without
//! touching the operations: a provider that unwraps a data key once at
//! start-up (one call to the KMS) and seals locally fits this trait as it
//! is, which is why `seal` and `open` are synchronous and the operations
//! never see a key, only sealed values and their key id. The key id is
//! stored beside each value, so a hive started with the wrong key says so
//! by name instead of reporting a corrupt value, and a later rotation can
//! tell old values from new ones.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::SecretString;
use ultron8_store::SealedValue;
use zeroize::Zeroizing;

/// The key file's name in the data directory.
pub const KEY_FILE_NAME: &str = "secrets.key";

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Why a value could not be sealed or opened. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "secret {name} was sealed with key {sealed_with}, but this hive holds key {held}; \
         start the hive with the secrets key it was set with (secrets_key_file), or set it again"
    )]
    WrongKey {
        name: String,
        sealed_with: String,
        held: String,
    },
    #[error("secret {name} does not open with key {key_id}: the stored value was changed or moved")]
    Corrupt { name: String, key_id: String },
    #[error("cannot seal secret {name}: {reason}")]
    Seal { name: String, reason: String },
}

/// Seals and opens secret values under a key the store never holds.
pub trait KeyProvider: Send + Sync {
    /// The id of the key new values are sealed with.
    fn key_id(&self) -> &str;
    /// `value` sealed for the secret `name` (its associated data).
    fn seal(&self, name: &str, value: &str) -> Result<SealedValue, KeyError>;
    /// The value sealed for `name`.
    fn open(&self, name: &str, sealed: &SealedValue) -> Result<SecretString, KeyError>;
}

/// A key read from a 32-byte file.
pub struct FileKey {
    id: String,
    cipher: XChaCha20Poly1305,
    random: SystemRandom,
}

impl FileKey {
    /// The key in `path`, created (mode 0600) when the file does not exist;
    /// true when it was created. Refuses a file others may read, or one
    /// that is not 32 bytes.
    pub fn load_or_create(path: &Path) -> anyhow::Result<(FileKey, bool)> {
        let created = match create_key_file(path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create the secrets key {}", path.display()));
            }
        };
        Ok((FileKey::load(path)?, created))
    }

    pub fn load(path: &Path) -> anyhow::Result<FileKey> {
        let metadata = fs::metadata(path)
            .with_context(|| format!("cannot read the secrets key {}", path.display()))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "the secrets key {} may be read by other users (mode {mode:03o}); \
                 `chmod 600 {}` and start again",
                path.display(),
                path.display()
            );
        }
        let bytes = Zeroizing::new(
            fs::read(path)
                .with_context(|| format!("cannot read the secrets key {}", path.display()))?,
        );
        if bytes.len() != KEY_LEN {
            bail!(
                "the secrets key {} holds {} bytes; a key is {KEY_LEN} random bytes",
                path.display(),
                bytes.len()
            );
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&bytes);
        Ok(FileKey::from_bytes(&key))
    }

    /// A key from its bytes (tests and other providers).
    pub fn from_bytes(key: &[u8; KEY_LEN]) -> FileKey {
        FileKey {
            id: key_id(key),
            cipher: XChaCha20Poly1305::new(key.into()),
            random: SystemRandom::new(),
        }
    }

    /// A new random key that lives only in memory: for tests, whose
    /// secrets die with them.
    pub fn ephemeral() -> anyhow::Result<FileKey> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(key.as_mut())
            .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
        Ok(FileKey::from_bytes(&key))
    }
}

impl KeyProvider for FileKey {
    fn key_id(&self) -> &str {
        &self.id
    }

    fn seal(&self, name: &str, value: &str) -> Result<SealedValue, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| KeyError::Seal {
            name: name.to_string(),
            reason: "the system's random number generator failed".into(),
        })?;
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Seal {
                name: name.to_string(),
                reason: "the value is too large to seal".into(),
            })?;
        Ok(SealedValue {
            ciphertext,
            nonce: nonce.to_vec(),
            key_id: self.id.clone(),
        })
    }

    fn open(&self, name: &str, sealed: &SealedValue) -> Result<SecretString, KeyError> {
        if sealed.key_id != self.id {
            return Err(KeyError::WrongKey {
                name: name.to_string(),
                sealed_with: sealed.key_id.clone(),
                held: self.id.clone(),
            });
        }
        let corrupt = || KeyError::Corrupt {
            name: name.to_string(),
            key_id: self.id.clone(),
        };
        if sealed.nonce.len() != NONCE_LEN {
            return Err(corrupt());
        }
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(&sealed.nonce),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: name.as_bytes(),
                    },
                )
                .map_err(|_| corrupt())?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| corrupt())?;
        Ok(SecretString::from(text.to_string()))
    }
}

/// A key's public name: the first 8 bytes of the SHA-256 of a label and
/// the key, in hex. Says which key sealed a value without revealing it.
fn key_id(key: &[u8; KEY_LEN]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"ultron8 secrets key id\0");
    context.update(key);
    hex::encode(&context.finish().as_ref()[..8])
}

/// Writes a new random key to `path`, which must not exist: a key is never
/// replaced, as every value sealed with it would be lost.
fn create_key_file(path: &Path) -> std::io::Result<()> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(key.as_mut())
        .map_err(|_| std::io::Error::other("the system's random number generator failed"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = file.write_all(key.as_ref()).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // A partial key would refuse to load; leave no file behind.
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_name_and_key() {
        let key = FileKey::from_bytes(&[7; KEY_LEN]);
        let sealed = key.seal("db_password", "hunter2-hunter2").expect("seal");
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert!(
            !sealed.ciphertext.windows(7).any(|w| w == b"hunter2"),
            "no plaintext in the ciphertext"
        );
        assert_eq!(
            key.open("db_password", &sealed)
                .expect("open")
                .expose_secret(),
            "hunter2-hunter2"
        );
        // Two seals of one value differ (fresh nonces).
        assert_ne!(
            key.seal("db_password", "hunter2-hunter2").expect("seal"),
            sealed
        );
        // Moved to another name: refused.
        assert!(matches!(
            key.open("api_token", &sealed),
            Err(KeyError::Corrupt { .. })
        ));
        // Changed: refused.
        let mut changed = sealed.clone();
        changed.ciphertext[0] ^= 1;
        assert!(key.open("db_password", &changed).is_err());
        // Another key: named as such.
        let other = FileKey::from_bytes(&[8; KEY_LEN]);
        let error = other.open("db_password", &sealed).expect_err("wrong key");
        assert!(matches!(error, KeyError::WrongKey { .. }), "{error}");
        assert!(error.to_string().contains(key.key_id()), "{error}");
    }

    #[test]
    fn the_key_file_is_created_private_once_and_refused_when_others_can_read_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join(KEY_FILE_NAME);
        let (first, created) = FileKey::load_or_create(&path).expect("create");
        assert!(created);
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).expect("read").len(), KEY_LEN);
        let (again, created) = FileKey::load_or_create(&path).expect("load");
        assert!(!created, "an existing key is kept");
        assert_eq!(again.key_id(), first.key_id());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = FileKey::load(&path).err().expect("refused").to_string();
        assert!(error.contains("chmod 600"), "{error}");

        let short = dir.path().join("short.key");
        fs::write(&short, b"too short").expect("write");
        fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).expect("chmod");
        let error = FileKey::load(&short).err().expect("refused").to_string();
        assert!(error.contains("32 random bytes"), "{error}");
    }
}
