//! Secrets (the NKey seed, anything read from a secret file): held in [`Secret`], whose
//! `Debug` and `Display` print `[REDACTED]`, so that no log line, error or `{:?}` of a struct
//! holding one can show it. The value is zeroized when dropped (`secrecy`). Reading it takes an
//! explicit [`Secret::expose`].

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

/// What a secret prints as.
pub const REDACTED: &str = "[REDACTED]";

/// A secret string.
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(SecretString::from(value))
    }

    /// Reads a secret file (e.g. `nkey_seed_file`), trimmed. The error names the file, never
    /// its content.
    pub fn read_file(path: &Path) -> std::io::Result<Secret> {
        let text = std::fs::read_to_string(path)?;
        Ok(Secret::new(text.trim().to_string()))
    }

    /// The value, for the one place that needs it (e.g. handing the seed to the NATS client).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Neither Debug nor Display (nor a struct's derived Debug around it) shows the value.
    #[test]
    fn secrets_print_redacted() {
        let seed = "SUAMKZH6ZB2NYB5VEOVW4IQSYMW5O42GO4ZU5YHZYOGXWOF5NDPKVQYNIM";
        let secret = Secret::new(seed.into());
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(format!("{secret:?}"), REDACTED);
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            seed: Secret,
        }
        let shown = format!(
            "{:?} {:#?}",
            Holder {
                seed: Secret::new(seed.into())
            },
            secret
        );
        assert!(!shown.contains(seed) && shown.contains(REDACTED), "{shown}");
        assert_eq!(secret.expose(), seed);
    }

    /// A secret file is read trimmed; a missing one fails naming nothing of its content.
    #[test]
    fn reads_a_secret_file() {
        let dir = std::env::temp_dir().join(format!("secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("seed.nk");
        std::fs::write(&file, "SUSEED\n").unwrap();
        assert_eq!(Secret::read_file(&file).unwrap().expose(), "SUSEED");
        assert!(Secret::read_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
