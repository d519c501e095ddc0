//! The watch of the config bucket: an ordered push consumer on the bucket's stream
//! (`KV_bridge_config`, every key), delivering every revision the bucket keeps (its history:
//! the start-up load, see `apply.rs`), then every new one. The sessions bucket
//! (`crate::sessions`) is watched the same way ([`start_bucket`]). The bucket's stream, not async-nats' `kv::Store::watch`: a `kv::Entry` has no headers,
//! and the signature headers are needed.
//!
//! Reconnects: async-nats' ordered consumer re-creates itself from the last stream sequence it
//! delivered when the connection comes back or its heartbeats stop (a server restart), so
//! every revision written while the engine was cut off is delivered, in order, once it is back;
//! until then the configuration in force stays (nothing is delivered, nothing changes). If the
//! consumer's stream ends (the client closed) or it cannot be created, the task retries with
//! the engine's backoff, resuming after the last sequence seen.
//!
//! The task only reads; the run loop applies each [`Event`] between commands.

use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv::Operation;
use async_nats::{jetstream, Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::contract;
use crate::retry::Policy;

/// The KV protocol's operation header (nats-server's, not the bridge's): DEL or PURGE.
const KV_OPERATION_HEADER: &str = "KV-Operation";

/// Events queued for the run loop at most (the bucket holds six keys: a full resync fits).
const CAPACITY: usize = 256;

/// One revision of one key, as the bucket's stream holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    /// The KV revision: the stream sequence.
    pub revision: u64,
    pub operation: Operation,
    pub subject: String,
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
}

/// What the watch reports.
#[derive(Debug, Clone)]
pub enum Event {
    Entry(Entry),
    /// Every revision in force at the watch's start has been delivered.
    CaughtUp,
}

/// Starts the watch task of the config bucket; its events come out of the receiver.
pub fn start(client: Client, cfg: &Config) -> mpsc::Receiver<Event> {
    start_bucket(client, cfg, contract::CONFIG_KV_BUCKET)
}

/// Starts the watch task of any bucket (every key); its events come out of the receiver.
pub fn start_bucket(client: Client, cfg: &Config, bucket: &'static str) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(CAPACITY);
    tokio::spawn(run(client, tx, Policy::from_config(cfg), bucket));
    rx
}

async fn run(client: Client, tx: mpsc::Sender<Event>, backoff: Policy, bucket: &'static str) {
    let js = jetstream::new(client.clone());
    let stream_name = contract::kv_stream(bucket);
    let filter = contract::kv_key_subject(bucket, ">");
    let prefix = contract::kv_key_subject(bucket, "");
    // The last stream sequence delivered: a re-created watch resumes after it.
    let mut last = 0u64;
    let mut caught_up = false;
    // Consecutive failures: the n-th waits the engine's reconnect backoff (never gives up).
    let mut failures = 0usize;
    loop {
        let deliver_policy = if last == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            }
        };
        let created = async {
            let stream = js.get_stream(&stream_name).await?;
            let consumer = stream
                .create_consumer(OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    filter_subject: filter.clone(),
                    deliver_policy,
                    ..Default::default()
                })
                .await?;
            let pending = consumer.cached_info().num_pending;
            let messages = consumer.messages().await?;
            Ok::<_, async_nats::Error>((pending, messages))
        }
        .await;
        let (pending, mut messages) = match created {
            Ok(m) => m,
            Err(e) => {
                let delay = backoff.delay(failures);
                failures += 1;
                warn!(bucket, error = %e, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "bucket watch: cannot watch the bucket; what is in force stays");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        failures = 0;
        info!(
            bucket,
            from_revision = last + 1,
            pending,
            "bucket watch started"
        );
        if pending == 0 && !caught_up {
            caught_up = true;
            if tx.send(Event::CaughtUp).await.is_err() {
                return;
            }
        }
        while let Some(m) = messages.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    // The ordered consumer re-creates itself after this (see the module doc).
                    warn!(bucket, error = %e, "bucket watch interrupted; resuming after revision {last}; what is in force stays");
                    continue;
                }
            };
            let Ok(meta) = m.info() else { continue };
            let (revision, remaining) = (meta.stream_sequence, meta.pending);
            last = last.max(revision);
            let key = m
                .subject
                .as_str()
                .strip_prefix(prefix.as_str())
                .unwrap_or_default()
                .to_string();
            let operation = m
                .headers
                .as_ref()
                .and_then(|h| h.get(KV_OPERATION_HEADER))
                .and_then(|v| v.as_str().parse().ok())
                .unwrap_or(Operation::Put);
            debug!(bucket, key, revision, "config revision received");
            let entry = Entry {
                key,
                revision,
                operation,
                subject: m.subject.to_string(),
                payload: m.payload.clone(),
                headers: m.headers.clone(),
            };
            if tx.send(Event::Entry(entry)).await.is_err() {
                return;
            }
            if remaining == 0 && !caught_up {
                caught_up = true;
                if tx.send(Event::CaughtUp).await.is_err() {
                    return;
                }
            }
        }
        // The client is closed, or the consumer's subscription ended: start again.
        if tx.is_closed() {
            return;
        }
        let delay = backoff.delay(failures);
        failures += 1;
        warn!(
            bucket,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "bucket watch ended; re-creating it"
        );
        tokio::time::sleep(delay).await;
    }
}
