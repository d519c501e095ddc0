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
    #[error("order store ({key}): write: {source}")]
    Put { key: String, source: kv::PutError },
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

/// The engine's journal (stream JOURNAL, `journal.rs`), after its retries. Every variant stops
/// the engine: a write that did not become durable is never assumed to have.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An entry refused for good (`why`), or failed past its retries: not retried again (the
    /// store's answer, e.g. a failed disk write, is not something a retry can cure).
    #[error("journal ({subject}): entry after stream sequence {prev} not stored: {source}")]
    Append {
        subject: String,
        prev: u64,
        source: async_nats::Error,
    },
    /// Another writer appended to this engine's journal: this process no longer owns it.
    #[error("journal ({subject}): fenced: the last entry is at stream sequence {found}, not {expected} (ours); another process writes this engine's journal; stopping without writing")]
    Fenced {
        subject: String,
        expected: u64,
        found: u64,
    },
    /// An entry too large for one message even alone (one execution's reports and records).
    #[error(
        "journal ({subject}): an entry of {bytes} bytes exceeds the journal's {limit}-byte limit"
    )]
    TooLarge {
        subject: String,
        bytes: usize,
        limit: usize,
    },
    /// Reading the journal (start-up, repair) failed past its retries, or an entry did not
    /// decode.
    #[error("journal ({subject}): reading stream sequence {seq}: {why}")]
    Read {
        subject: String,
        seq: u64,
        why: String,
    },
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
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("venue: {0}")]
    Venue(#[from] VenueError),
    #[error("seeded liquidity: {0}")]
    Seed(#[from] BadSeedId),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// A partition instance's task panicked or was cancelled (`partitions.rs`).
    #[error("engine instance task: {0}")]
    Task(String),
    #[error(transparent)]
    Entitlements(#[from] EntitlementsError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}
