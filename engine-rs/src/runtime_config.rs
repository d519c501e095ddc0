//! Runtime configuration: typed, versioned JSON documents in the KV bucket `bridge_config`
//! (one per key, each with its schema in `schemas/config/v1`), watched and applied while the
//! engine runs, without a restart. The engine applies `risk` (limits over the file's),
//! `symbols` (which configured symbols take new orders), `trading_state` (the kill switch)
//! and `log_levels.engine`; `client` and `routing` are the Python client's.
//!
//! - [`documents`]: schemas, parsing, validation into `FieldError`s, the engine's checks, diffs
//!   (pure).
//! - [`state`]: trading state ACTIVE / REDUCE_ONLY / HALTED and the position ledger (pure).
//! - [`in_force`]: the file's limits plus the documents in force -> effective limits (pure).
//! - [`signer`]: a revision's signature and signer role (pure).
//! - [`watch`]: the ordered consumer on the bucket's stream (I/O task).
//! - [`apply`]: applying a revision in the run loop; ConfigApplied, log line, metrics.

pub mod apply;
pub mod documents;
pub mod in_force;
pub mod signer;
pub mod state;
pub mod watch;

pub use apply::RuntimeConfig;

#[cfg(test)]
mod tests;
