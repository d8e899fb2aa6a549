//! Secret env values sealed at rest (issue 7). A value set with `secret` is stored as
//! `paas-secret:v1:<hex nonce||ciphertext>` (ChaCha20-Poly1305, key in `$PAAS_DATA_DIR/secret-key`,
//! created 0600 at first start), so the database, backups of it and revision copies never hold
//! the plaintext. It is opened only where it must be plain: the agent's assignment (over the
//! authenticated agent channel) and `GET env?reveal=true` for a developer or better; everywhere
//! else the API shows `***`. The app id is the associated data, so a sealed value copied to
//! another app does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use std::path::Path;

const PREFIX: &str = "paas-secret:v1:";
/// What the API shows in place of a secret value.
pub const MASK: &str = "***";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key file {0}: {1}")]
    KeyFile(String, std::io::Error),
    #[error("secret key file {0} does not hold 32 bytes")]
    KeyLength(String),
    #[error("a sealed value does not open (wrong key, wrong app or damaged)")]
    Open,
}

pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl SecretBox {
    /// Loads the key, or creates it (mode 0600, written before first use) at first start.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let err = |e| SecretError::KeyFile(path.display().to_string(), e);
        let key = match std::fs::read(path) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = vec![0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut k);
                write_private(path, &k).map_err(err)?;
                k
            }
            Err(e) => return Err(err(e)),
        };
        if key.len() != 32 {
            return Err(SecretError::KeyLength(path.display().to_string()));
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    pub fn seal(&self, app_id: &str, plain: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encrypting into a Vec only fails for inputs beyond 2^38 bytes; env values are capped
        // at 32 KiB by `check_env`.
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: app_id.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", hex::encode(out))
    }

    /// The plain value of a sealed one; a value that is not sealed comes back as it is.
    pub fn open(&self, app_id: &str, value: &str) -> Result<String, SecretError> {
        let Some(h) = value.strip_prefix(PREFIX) else {
            return Ok(value.to_string());
        };
        let raw = hex::decode(h).map_err(|_| SecretError::Open)?;
        if raw.len() < 12 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = raw.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: app_id.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain).map_err(|_| SecretError::Open)
    }
}

pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seals_opens_and_binds_to_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret-key");
        let b = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = b.seal("app1", "hunter2");
        assert!(is_sealed(&sealed) && !sealed.contains("hunter2"));
        assert_ne!(sealed, b.seal("app1", "hunter2"), "a fresh nonce each time");
        // The same key file reopens it after a restart; another app's id does not.
        let again = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(again.open("app1", &sealed).unwrap(), "hunter2");
        assert!(again.open("app2", &sealed).is_err());
        assert_eq!(again.open("app1", "plain").unwrap(), "plain");
    }
}
