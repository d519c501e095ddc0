//! The order store: the KV bucket `bridge_orders`, one `OrderRecord` per
//! `<account>.<client_order_id>`. Owns creating, reading and writing records under the retry
//! policy.
//!
//! The store is a projection of the engines' journals (`journal.rs`): a record's durable state
//! is in its commit group's journal entry, written before anything of the group is answered or
//! published; the record is written here after it (`Engine::commit`), and repaired from the
//! journal after a crash (`repair.rs`). Only `kv.create` comes first: it is the per-order dedupe
//! (atomic, across engines), and every record it creates is remembered until the next journal
//! entry takes it ([`OrderStore::take_created`]).
//!
//! Failures no retry can cure ([`crate::jetstream_errors::permanent`]) are never retried: a
//! create refused for good is [`Created::Refused`] (the caller answers the order REJECTED),
//! a write refused for good is logged at ERROR and leaves the record as it was (the journal
//! holds its state, and EXECUTIONS its reports, which recovery trusts over the record).

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use async_nats::jetstream::{self, kv};
use backon::Retryable;
use bytes::Bytes;
use futures::future::try_join_all;
use futures::StreamExt;
use prost::Message as _;
use tracing::error;

use crate::config::Config;
use crate::contract;
use crate::error::{SetupError, StoreError};
use crate::jetstream_errors::{self, Readiness};
use crate::proto::state::OrderRecord;
use crate::proto::v1::OrderStatus;
use crate::retry;
use crate::venue::{is_final, LiveOrder};

/// What a `kv.create` of a new record found.
#[derive(Debug)]
pub enum Created {
    /// Written (or found written by an earlier attempt of ours) at this revision.
    Written(u64),
    /// The key holds another record: a duplicate client order id.
    Exists,
    /// Refused for good ([`jetstream_errors::permanent`]); not retried.
    Refused(String),
}

/// A record read back, with its revision.
pub type Stored = (OrderRecord, u64);

/// The order store, and the records created since the last journal entry.
pub struct OrderStore {
    kv: kv::Store,
    js: jetstream::Context,
    cfg: Config,
    readiness: std::sync::Arc<Readiness>,
    /// Records `kv.create` wrote that no journal entry holds yet (never held across an await).
    created: Mutex<Vec<(String, OrderRecord)>>,
}

impl OrderStore {
    /// Binds to the provisioned bucket (the engine role may not create it).
    pub async fn bind(
        js: &jetstream::Context,
        cfg: &Config,
        readiness: std::sync::Arc<Readiness>,
    ) -> Result<OrderStore, SetupError> {
        let kv = js
            .get_key_value(contract::ORDERS_KV_BUCKET)
            .await
            .map_err(|e| SetupError::new("KV bucket bridge_orders", e))?;
        Ok(OrderStore {
            kv,
            js: js.clone(),
            cfg: cfg.clone(),
            readiness,
            created: Mutex::new(Vec::new()),
        })
    }

    fn backoff(&self) -> retry::Backoff {
        retry::Backoff::from_config(&self.cfg)
    }

    /// The records created since the last call, in the order they were created: what the
    /// next journal entry must hold.
    pub fn take_created(&self) -> Vec<(String, OrderRecord)> {
        std::mem::take(&mut *self.created.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn note_created(&self, key: &str, record: &OrderRecord) {
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key.to_string(), record.clone()));
    }

    /// `kv.create`, retried unless the failure is permanent.
    ///
    /// A retried create whose earlier attempt was stored (only its answer was lost) finds the
    /// key taken by its own record: same engine order id, so it is ours, not a duplicate.
    pub async fn create(&self, key: &str, record: &OrderRecord) -> Result<Created, StoreError> {
        let value = Bytes::from(record.encode_to_vec());
        let subject = contract::kv_key_subject(contract::ORDERS_KV_BUCKET, key);
        let started = Instant::now();
        let attempts = self.readiness.operation("kv create", key);
        let created = (|| self.kv.create(key, value.clone()))
            .retry(self.backoff())
            .when(|e: &kv::CreateError| {
                e.kind() != kv::CreateErrorKind::AlreadyExists
                    && jetstream_errors::permanent_on(e, &subject, started).is_none()
            })
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        match created {
            Ok(rev) => {
                self.note_created(key, record);
                Ok(Created::Written(rev))
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => match self.load(key).await?
            {
                // Same engine order id and arrival sequence: ours (a replace's record shares
                // its order's engine order id, never its sequence).
                Some((stored, rev))
                    if stored.engine_order_id == record.engine_order_id
                        && stored.seq == record.seq =>
                {
                    self.note_created(key, record);
                    Ok(Created::Written(rev))
                }
                _ => Ok(Created::Exists),
            },
            Err(e) => match jetstream_errors::permanent_on(&e, &subject, started) {
                Some(why) => Ok(Created::Refused(format!(
                    "{why} (record of {} bytes)",
                    value.len()
                ))),
                None => Err(StoreError::Create {
                    key: key.into(),
                    source: e,
                }),
            },
        }
    }

    /// The record of `key`, retried unless the failure is permanent.
    pub async fn load(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let attempts = self.readiness.operation("kv entry", key);
        let entry = (|| self.kv.entry(key))
            .retry(self.backoff())
            .when(|e: &kv::EntryError| jetstream_errors::permanent(e).is_none())
            .notify(|e, delay| attempts.retrying(e, delay))
            .await
            .map_err(|e| StoreError::Read {
                key: key.into(),
                source: e,
            })?;
        Ok(entry.and_then(|e| match e.operation {
            kv::Operation::Put => OrderRecord::decode(e.value).ok().map(|r| (r, e.revision)),
            _ => None,
        }))
    }

    /// The record of a key that `kv.create` found taken. Reads go to the bucket's stream
    /// leader (no direct gets), but during an election a create that timed out and was
    /// stored can be answered "exists" by the new leader before the entry reads back: read
    /// again under the retry policy until it does; only then is the absence an error.
    pub async fn load_existing(&self, key: &str) -> Result<Stored, StoreError> {
        let attempts = self.readiness.operation("kv entry after create", key);
        let read = || async {
            match self.load(key).await {
                Ok(Some(found)) => Ok(found),
                Ok(None) => Err(StoreError::Unreadable { key: key.into() }),
                Err(e) => Err(e),
            }
        };
        let found = read
            .retry(self.backoff())
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        found
    }

    /// `kv.put`, retried unless the failure is permanent. A permanent failure is logged at
    /// ERROR and leaves the record as it was: its journal entry holds the state (and EXECUTIONS
    /// the reports, which recovery trusts over the record).
    async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        let subject = contract::kv_key_subject(contract::ORDERS_KV_BUCKET, key);
        let started = Instant::now();
        let attempts = self.readiness.operation("kv put", key);
        let put = (|| self.kv.put(key, value.clone()))
            .retry(self.backoff())
            .when(|e: &kv::PutError| jetstream_errors::permanent_on(e, &subject, started).is_none())
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        match put {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(why) = jetstream_errors::permanent_on(&e, &subject, started) {
                    error!(key, error = %why, bytes = value.len(), "order store refused a record write for good; not retried, record left at its previous state (the journal holds it)");
                    return Ok(());
                }
                Err(StoreError::Put {
                    key: key.into(),
                    source: e,
                })
            }
        }
    }

    /// Writes every order's record (concurrently), at most one write per key: the projection
    /// of a journal entry that is already stored.
    pub async fn write(&self, orders: &[LiveOrder]) -> Result<(), StoreError> {
        self.write_records(orders.iter().map(|o| (o.key.as_str(), &o.record)))
            .await
    }

    /// [`OrderStore::write`] of records by key (repair).
    pub async fn write_records<'a>(
        &self,
        records: impl Iterator<Item = (&'a str, &'a OrderRecord)>,
    ) -> Result<(), StoreError> {
        let writes =
            records.map(|(key, record)| self.put(key, Bytes::from(record.encode_to_vec())));
        try_join_all(writes).await?;
        Ok(())
    }

    /// Every non-final record owned by `engine_id`, in arrival
    /// sequence, pending replaces' records included (`crate::alias`), and every key of the
    /// store (to tell which seed orders exist).
    ///
    /// A KV watch is a single-replica consumer the server may place on a replica still catching
    /// up (a node just restarted in a cluster): it would end its history early and recovery
    /// would miss orders. So the bucket's last sequence is asked of its stream leader first,
    /// and a scan that ends below it is read again, under the retry policy.
    pub async fn open_records(
        &mut self,
        engine_id: &str,
    ) -> Result<(Vec<LiveOrder>, std::collections::HashSet<String>), StoreError> {
        let attempts = self.readiness.operation("read the order store", "recovery");
        let scanned = (|| self.scan(engine_id))
            .retry(self.backoff())
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        let (mine, keys) = scanned?;
        Ok((mine.into_iter().map(|(live, _)| live).collect(), keys))
    }

    /// One complete scan of the bucket, or an error if it ended before the leader's last
    /// sequence.
    #[allow(clippy::type_complexity)]
    async fn scan(
        &self,
        engine_id: &str,
    ) -> Result<(Vec<(LiveOrder, u64)>, std::collections::HashSet<String>), StoreError> {
        let setup = |e: async_nats::Error| StoreError::Scan(SetupError::new("order store scan", e));
        let stream_name = contract::kv_stream(contract::ORDERS_KV_BUCKET);
        let stream = self
            .js
            .get_stream(&stream_name)
            .await
            .map_err(|e| setup(e.into()))?;
        let last = stream.cached_info().state.last_sequence;
        let mut mine = Vec::new();
        let mut keys = std::collections::HashSet::new();
        if stream.cached_info().state.messages == 0 {
            return Ok((mine, keys));
        }
        let mut watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| setup(e.into()))?;
        let mut seen = 0;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| setup(e.into()))?;
            seen = seen.max(entry.revision);
            if entry.operation == kv::Operation::Put {
                keys.insert(entry.key.clone());
                if let Ok(record) = OrderRecord::decode(entry.value.clone()) {
                    let st =
                        OrderStatus::try_from(record.status).unwrap_or(OrderStatus::Unspecified);
                    // Of the replaces' records (aliases), only a pending one is open.
                    let settled_alias =
                        !record.alias_of.is_empty() && !crate::alias::is_pending(&record);
                    if record.engine_id == engine_id && !is_final(st) && !settled_alias {
                        mine.push((LiveOrder::from_record(entry.key, record), entry.revision));
                    }
                }
            }
            if entry.delta == 0 {
                break;
            }
        }
        if seen < last {
            return Err(setup(
                format!("the order store scan ended at sequence {seen}, the leader has {last}: a lagging replica answered; reading again").into(),
            ));
        }
        mine.sort_by_key(|(o, _)| o.record.seq);
        Ok((mine, keys))
    }
}
