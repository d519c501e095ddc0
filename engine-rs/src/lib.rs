//! Execution engine of the bridge.
//!
//! Module map (dependencies point downwards only):
//! - [`book`]: pure price-time matching for one symbol.
//! - [`venue`]: the books plus the order state machine -> execution reports (pure).
//! - [`house`]: the venue's own orders (seeded liquidity of the account `_house`).
//! - [`validate`]: field, size, symbol, risk and deadline checks (pure).
//! - [`intake`]: an order's journal record and answer, every size bounded (pure).
//! - [`journal_errors`]: permanent vs transient JetStream failures; readiness while retrying.
//! - [`fixed`]: exact fixed-point (1e-8) arithmetic and wire decimals.
//! - [`config`]: defaults < TOML file < `BRIDGE_*` environment.
//! - [`retry`]: the backoff policy of reconnects and JetStream retries.
//! - [`subjects`]: every subject, stream, consumer and bucket name.
//! - [`lease`]: the KV leases that keep a second engine from serving the same symbols.
//! - [`service`]: the NATS side: request-reply, the ORDERS pull consumer, the KV journal,
//!   report publishing, recovery and graceful shutdown.
//! - [`proto`]: prost-generated `bridge.v1` and engine state types.

pub mod book;
pub mod config;
pub mod contract;
pub mod fixed;
pub mod house;
pub mod intake;
pub mod journal_errors;
pub mod lease;
pub mod proto;
pub mod retry;
pub mod service;
pub mod subjects;
pub mod validate;
pub mod venue;
