//! `--key value` and `--flag` command-line options (no positional arguments after the command).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Result};

/// Options known to take no value.
const FLAGS: &[&str] = &["plain"];

#[derive(Debug, Default)]
pub struct Args {
    values: BTreeMap<String, String>,
    flags: BTreeSet<String>,
}

impl Args {
    pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Self> {
        let mut out = Args::default();
        let mut it = argv.into_iter();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                bail!("unexpected argument {a:?} (options are --key value)");
            };
            if FLAGS.contains(&key) {
                out.flags.insert(key.to_string());
                continue;
            }
            let value = it.next().ok_or_else(|| anyhow!("--{key} needs a value"))?;
            out.values.insert(key.to_string(), value);
        }
        Ok(out)
    }

    pub fn get(&self, key: &str) -> Result<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("--{key} is required"))
    }

    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.values.get(key).map_or(default, String::as_str)
    }

    pub fn flag(&self, key: &str) -> bool {
        self.flags.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_flags_and_errors() {
        let a = Args::parse(["--url", "tls://x", "--plain"].map(String::from)).unwrap();
        assert_eq!(a.get("url").unwrap(), "tls://x");
        assert!(a.flag("plain"));
        assert_eq!(a.get_or("listen", "127.0.0.1:0"), "127.0.0.1:0");
        assert!(a.get("ca").is_err());
        assert!(Args::parse(["--url"].map(String::from)).is_err());
        assert!(Args::parse(["url"].map(String::from)).is_err());
    }
}
