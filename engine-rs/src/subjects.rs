//! Transitional re-export of [`crate::contract`] (generated from
//! `schemas/bridge/v1/contract.toml`); callers move to `contract::` directly.

pub use crate::contract::*;

// CONTRACT-TODO: fold into contract.toml
/// Name of the stream behind KV bucket `bucket` (JetStream's naming).
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

// CONTRACT-TODO: fold into contract.toml
/// Subject a write of `key` in KV bucket `bucket` is published to (named in permission
/// violations).
pub fn kv_key_subject(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// The symbol a lease key names (the inverse of [`lease_symbol_key`]).
pub fn symbol_of_lease_key(key: &str) -> Option<&str> {
    key.strip_prefix(LEASE_SYMBOL_KEY_PREFIX)
}
