//! The engine's errors, one enum per boundary, each with a kind its caller can match: nothing
//! is flattened to a string on the way up.

use async_nats::jetstream::{self, kv};

use crate::auth::EntitlementsError;
use crate::config::ConfigError;
use crate::engine_key::KeyError;
use crate::house::BadSeedId;
use crate::lease::LeaseError;
use crate::venue::VenueError;

/// Connecting to NATS (`connection.rs`).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The NKey seed file could not be read or parsed.
    #[error("connecting to NATS: {0}")]
    Key(#[from] KeyError),
    #[error("connecting to NATS: {urls:?}: {source}")]
    BadUrl {
        urls: String,
        source: std::io::Error,
    },
    #[error("connecting to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// No connection within `connect_deadline_ms`; `last` is the last connection event.
    #[error("connecting to NATS: no connection to {urls} within connect_deadline_ms={deadline_ms}: {last}")]
    Deadline {
        urls: String,
        deadline_ms: u64,
        last: String,
    },
    #[error("connecting to NATS: flush: {0}")]
    Flush(#[from] async_nats::client::FlushError),
}

/// Binding to what provisioning created: bucket, streams, consumer, subscriptions.
#[derive(Debug, thiserror::Error)]
#[error("JetStream set-up ({what}): {source}")]
pub struct SetupError {
    pub what: &'static str,
    pub source: async_nats::Error,
}

impl SetupError {
    pub fn new(what: &'static str, source: impl Into<async_nats::Error>) -> SetupError {
        SetupError {
            what,
            source: source.into(),
        }
    }
}

/// The order store (KV bucket `bridge_orders`), after its retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("order store ({key}): create: {source}")]
    Create {
        key: String,
        source: kv::CreateError,
    },
    #[error("order store ({key}): update: {source}")]
    Update {
        key: String,
        source: kv::UpdateError,
    },
    #[error("order store ({key}): read: {source}")]
    Read { key: String, source: kv::EntryError },
    /// `kv.create` said the key exists, but no record reads back under the retry policy.
    #[error("order store ({key}): record not readable although kv.create reported it exists")]
    Unreadable { key: String },
    /// Recovery's scan of the bucket.
    #[error("order store scan: {0}")]
    Scan(#[from] SetupError),
}

/// Execution reports (stream EXECUTIONS), after their retries.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A batch refused for good (`permanent` says why) or failed past its retries.
    #[error("publishing reports: {0}")]
    Batch(async_nats::Error),
    /// Reading the last stored report of an order.
    #[error("publishing reports: reading the last report on {subject}: {source}")]
    LastReport {
        subject: String,
        source: jetstream::stream::LastRawMessageError,
    },
    /// Re-reading the chain head after a duplicate publish.
    #[error("publishing reports: {0}")]
    Chain(#[from] ChainError),
}

/// The execution report hash chain (`chain.rs`): finding this engine's head in EXECUTIONS.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// This engine's last report in EXECUTIONS does not hold its own digest.
    #[error("execution journal tampered with: EXECUTIONS sequence {seq}, the last report of engine {engine_id}'s chain: {why}; refusing to start (check the stream with `bridge audit verify`)")]
    Tampered {
        seq: u64,
        engine_id: String,
        why: String,
    },
    /// The bounded backward walk ended before it found this engine's last report.
    #[error("chain head of engine {engine_id} not found in the last {limit} sequences of EXECUTIONS ({low}..={high}); refusing to start a new chain that the verifier would report as broken: raise chain_search_limit")]
    NotFound {
        engine_id: String,
        limit: u64,
        low: u64,
        high: u64,
    },
    /// Reading EXECUTIONS failed past its retries.
    #[error("reading EXECUTIONS for the chain head: {0}")]
    Read(async_nats::Error),
}

/// Why the engine stops (exit non-zero).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("venue: {0}")]
    Venue(#[from] VenueError),
    #[error("seeded liquidity: {0}")]
    Seed(#[from] BadSeedId),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Entitlements(#[from] EntitlementsError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}
