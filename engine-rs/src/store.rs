//! The order store: the KV bucket `bridge_orders`, one `OrderRecord` per
//! `<account>.<client_order_id>`. Owns creating, reading and updating records under the retry
//! policy, and the KV revision of every record the engine will write again (compare-and-set
//! updates): revisions live here, not in the orders.
//!
//! Failures no retry can cure ([`crate::jetstream_errors::permanent`]) are never retried: a
//! create refused for good is [`Created::Refused`] (the caller answers the order REJECTED),
//! an update refused for good is logged at ERROR and leaves the record as it was (the reports
//! are in EXECUTIONS, which recovery trusts over the record).

use std::collections::HashMap;
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

/// The order store and the revisions of the records still to be written.
pub struct OrderStore {
    kv: kv::Store,
    js: jetstream::Context,
    cfg: Config,
    readiness: std::sync::Arc<Readiness>,
    /// KV revision of every open order's record (the last one this engine wrote or read).
    revisions: HashMap<String, u64>,
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
            revisions: HashMap::new(),
        })
    }

    fn backoff(&self) -> retry::Backoff {
        retry::Backoff::from_config(&self.cfg)
    }

    /// Remembers the revision of a record this engine will write again.
    pub fn track(&mut self, key: &str, revision: u64) {
        self.revisions.insert(key.to_string(), revision);
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
            Ok(rev) => Ok(Created::Written(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => match self.load(key).await?
            {
                // Same engine order id and arrival sequence: ours (a replace's record shares
                // its order's engine order id, never its sequence).
                Some((stored, rev))
                    if stored.engine_order_id == record.engine_order_id
                        && stored.seq == record.seq =>
                {
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

    /// `kv.update` at `revision`, retried unless the failure is permanent. A retry whose
    /// earlier attempt was stored finds the revision moved on with exactly our bytes: that is
    /// success, not a conflict. A permanent failure is logged at ERROR and leaves the record
    /// at `revision` (returned): EXECUTIONS already holds the order's reports, which a status
    /// query's caller also sees, and recovery reconciles the record with them.
    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, StoreError> {
        let subject = contract::kv_key_subject(contract::ORDERS_KV_BUCKET, key);
        let started = Instant::now();
        let attempts = self.readiness.operation("kv update", key);
        let updated = (|| self.kv.update(key, value.clone(), revision))
            .retry(self.backoff())
            .when(|e: &kv::UpdateError| {
                e.kind() != kv::UpdateErrorKind::WrongLastRevision
                    && jetstream_errors::permanent_on(e, &subject, started).is_none()
            })
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        match updated {
            Ok(rev) => Ok(rev),
            Err(e) => {
                if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                    if let Some((stored, rev)) = self.load(key).await? {
                        if stored.encode_to_vec() == value {
                            return Ok(rev);
                        }
                    }
                }
                if let Some(why) = jetstream_errors::permanent_on(&e, &subject, started) {
                    error!(key, error = %why, bytes = value.len(), "order store refused a record update for good; not retried, record left at its previous state (EXECUTIONS holds the reports)");
                    return Ok(revision);
                }
                Err(StoreError::Update {
                    key: key.into(),
                    source: e,
                })
            }
        }
    }

    /// Writes every order's record (concurrently), at most one write per key, each at the
    /// revision this store holds for it. An order that is final is written for the last
    /// time: its revision is forgotten.
    pub async fn write(&mut self, orders: &[LiveOrder]) -> Result<(), StoreError> {
        let this = &*self;
        let writes = orders.iter().map(|o| async move {
            let revision = this.revisions.get(&o.key).copied().unwrap_or(0);
            this.update(&o.key, Bytes::from(o.record.encode_to_vec()), revision)
                .await
        });
        let revisions = try_join_all(writes).await?;
        for (o, rev) in orders.iter().zip(revisions) {
            // A replace's record (alias) is written once more, when the replace is settled.
            if is_final(o.status()) || !o.record.alias_of.is_empty() {
                self.revisions.remove(&o.key);
            } else {
                self.revisions.insert(o.key.clone(), rev);
            }
        }
        Ok(())
    }

    /// Every non-final record owned by `engine_id` (their revisions are tracked), in arrival
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
        for (live, revision) in &mine {
            self.track(&live.key, *revision);
        }
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
