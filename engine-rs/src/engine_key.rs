//! The engine's NKey, read once from `nkey_seed_file`: it authenticates the NATS connection
//! and signs the links of the execution report chain (`chain.rs`).
//!
//! The seed never leaves this type except into the connection options (async-nats takes the
//! seed as a string); `Debug` shows the public key and `[REDACTED]`, and the seed's copy is
//! zeroed on drop.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::secret::Secret;

/// Why the key could not be loaded. Never carries the seed's text.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the NKey seed {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the NKey seed in {path} is not a valid seed: {reason}")]
    Invalid {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// An engine's NKey seed and key pair (see the module docs).
pub struct EngineKey {
    seed: Secret,
    pair: nkeys::KeyPair,
}

impl EngineKey {
    /// Reads and parses the seed file (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<EngineKey, KeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.into(),
                    source,
                })?,
            );
        EngineKey::from_seed(text.trim()).map_err(|reason| KeyError::Invalid {
            path: path.into(),
            reason,
        })
    }

    /// A key from the seed's text; the error says why, without the seed.
    pub fn from_seed(seed: &str) -> Result<EngineKey, String> {
        // nkeys' own error text does not quote its input.
        let pair = nkeys::KeyPair::from_seed(seed).map_err(|e| e.to_string())?;
        Ok(EngineKey {
            seed: Secret::new(seed.to_string()),
            pair,
        })
    }

    /// The public NKey ("U...").
    pub fn public_key(&self) -> String {
        self.pair.public_key()
    }

    /// Ed25519 signature of `message` (64 bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        // A key pair made from a seed always has its signing key.
        self.pair.sign(message).unwrap_or_default()
    }

    /// The seed, for the connection's NKey authentication only.
    pub(crate) fn seed_for_connection(&self) -> String {
        self.seed.expose().to_string()
    }
}

impl fmt::Debug for EngineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineKey")
            .field("public_key", &self.public_key())
            .field("seed", &"[REDACTED]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh user seed (never a committed one).
    fn seed() -> String {
        nkeys::KeyPair::new_user()
            .seed()
            .expect("a new key has a seed")
    }

    /// Debug output names the public key, never the seed.
    #[test]
    fn debug_never_shows_the_seed() {
        let seed = seed();
        let key = EngineKey::from_seed(&seed).expect("valid seed");
        let shown = format!("{key:?}");
        assert!(shown.contains("[REDACTED]"), "{shown}");
        assert!(shown.contains(&key.public_key()), "{shown}");
        assert!(!shown.contains(&seed), "{shown}");
        assert!(key.public_key().starts_with('U'));
    }

    /// A bad seed is refused with a reason that does not quote it.
    #[test]
    fn bad_seed_is_refused_without_quoting_it() {
        let bad = "SUnotaseedatall";
        let err = EngineKey::from_seed(bad).expect_err("invalid");
        assert!(!err.contains(bad), "{err}");
    }

    /// Signatures verify with the public key.
    #[test]
    fn signature_verifies_with_the_public_key() {
        let key = EngineKey::from_seed(&seed()).expect("valid seed");
        let sig = key.sign(b"digest");
        let public = nkeys::KeyPair::from_public_key(&key.public_key()).expect("public");
        assert!(public.verify(b"digest", &sig).is_ok());
        assert!(public.verify(b"other", &sig).is_err());
    }
}
