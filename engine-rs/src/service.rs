//! The engine's NATS side: request-reply intake, the ORDERS pull consumer, the KV journal,
//! execution report publishing, recovery after a restart and graceful shutdown.
//!
//! Durability protocol for one order (both paths):
//! 1. validate; `kv.create(<account>.<client_order_id>)` with status PENDING_NEW (or the final
//!    REJECTED/EXPIRED record). `create` is atomic, so it is also the deduplication point for
//!    every engine sharing the bucket: if the key exists, the original ack is answered.
//! 2. answer the ack (synchronous path). The order is durable from here on.
//! 3. execute in the venue; publish every report to JetStream with `Nats-Msg-Id = exec_id`
//!    and wait for the acks (subscribers of `bridge.v1.exec.<account>.>` see them too).
//! 4. `kv.update` the touched records with their latest report, then (queued path) ack the
//!    ORDERS message.
//!
//! A crash between 1 and 4 is repaired at start-up by [`Engine::recover`]: every non-final
//! record owned by this engine id is reconciled with the last report EXECUTIONS holds for it
//! and its remaining quantity is executed. A journal or publish failure after step 1 that
//! outlives its retries stops the engine (exit non-zero) so that this recovery, not a guess,
//! restores consistency.
//!
//! Failures no retry can cure ([`journal_errors::permanent`]: payload too large, a permission
//! violation, a bad request, an invalid key) are never retried. Step 1's `kv.create` refused
//! for good answers the order REJECTED (ENGINE_UNAVAILABLE) and the engine carries on; a
//! refused `kv.update` (step 4) is logged at ERROR and the engine carries on, because the
//! reports are already in EXECUTIONS, which recovery trusts over the record; a refused report
//! publish still stops the engine at once, since an executed fill nobody can see must not be
//! left behind. Intake bounds every record and report ([`crate::intake`]), so no order can
//! cause one of these.
//!
//! Status queries: "not found" is definitive. An id without a record is retired by an atomic
//! `kv.create` of a tombstone record before the engine answers found=false; an order with that
//! id arriving later finds the key taken and is answered as a duplicate of the tombstone's
//! REJECTED outcome.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::PullConsumer, kv, stream::Stream as JsStream};
use async_nats::{Client, HeaderMap, Message, Subscriber};
use backon::Retryable;
use bytes::Bytes;
use futures::future::try_join_all;
use futures::{FutureExt, StreamExt};
use prost::Message as _;
use tracing::{error, info, warn};

use crate::config::{Config, SymbolLimits};
use crate::intake::{self, valid_key, Prepared};
use crate::journal_errors::{self, Readiness};
use crate::lease;
use crate::proto::state::OrderRecord;
use crate::proto::v1::{self as pb, AckStatus, OrderStatus, RejectReason};
use crate::retry;
use crate::subjects;
use crate::validate::{echo, field_error, Rejection, ValidOrder, Validator};
use crate::venue::{is_final, Executed, LiveOrder, Venue, VenueError};

mod publish;
mod recovery;

use publish::Tagged;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("connecting to NATS: {0}")]
    Connect(String),
    #[error("JetStream set-up ({what}): {source}")]
    Setup {
        what: &'static str,
        source: async_nats::Error,
    },
    #[error("journal ({key}): {source}")]
    Journal {
        key: String,
        source: async_nats::Error,
    },
    #[error("publishing reports: {0}")]
    Publish(async_nats::Error),
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("venue: {0}")]
    Venue(#[from] VenueError),
    #[error("seeded liquidity: {0}")]
    Seed(String),
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Connects with mutual TLS and the engine's NKey, using the engine role's inbox prefix.
///
/// Reconnects (and the first connection, `retry_on_initial_connect`) back off exponentially
/// with jitter ([`retry::Policy`]); subscriptions are re-established by async-nats itself.
/// Start-up fails with a clear error if no connection is up within `connect_deadline_ms`.
pub async fn connect(cfg: &Config) -> Result<Client, ServiceError> {
    let policy = retry::Policy::from_config(cfg);
    let (state_tx, mut state_rx) = tokio::sync::watch::channel(ConnState::Connecting);
    let mut opts = async_nats::ConnectOptions::new()
        .name(&cfg.client_name)
        .custom_inbox_prefix(&cfg.inbox_prefix)
        .connection_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .request_timeout(Some(Duration::from_millis(cfg.request_timeout_ms)))
        .ping_interval(Duration::from_millis(cfg.ping_interval_ms))
        .subscription_capacity(cfg.subscription_capacity)
        .reconnect_delay_callback(move |attempts| policy.delay(attempts.saturating_sub(1)))
        .max_reconnects(match cfg.max_reconnect_attempts {
            n if n < 0 => None,
            n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        })
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let state_tx = state_tx.clone();
            async move {
                match &event {
                    async_nats::Event::Connected => {
                        info!(%event, "nats connection event");
                        state_tx.send_replace(ConnState::Connected);
                    }
                    async_nats::Event::Closed => {
                        error!(%event, "nats connection event");
                        state_tx.send_replace(ConnState::Closed);
                    }
                    async_nats::Event::ClientError(_) | async_nats::Event::ServerError(_) => {
                        if let async_nats::Event::ServerError(async_nats::ServerError::Other(e)) =
                            &event
                        {
                            journal_errors::note_server_error(e);
                        }
                        warn!(%event, "nats connection event");
                        state_tx.send_if_modified(|s| match s {
                            ConnState::Connecting | ConnState::Failing(_) => {
                                *s = ConnState::Failing(event.to_string());
                                true
                            }
                            _ => false,
                        });
                    }
                    _ => warn!(%event, "nats connection event"),
                }
            }
        });
    if let Some(seed_file) = &cfg.nkey_seed_file {
        let seed = std::fs::read_to_string(seed_file)
            .map_err(|e| ServiceError::Connect(format!("reading {}: {e}", seed_file.display())))?;
        opts = opts.nkey(seed.trim().to_string());
    }
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.require_tls(true).add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let servers: Vec<&str> = cfg.nats_url.split(',').map(str::trim).collect();
    let addrs: Vec<async_nats::ServerAddr> = servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| ServiceError::Connect(format!("{:?}: {e}", cfg.nats_url)))?;
    let client = opts
        .connect(addrs)
        .await
        .map_err(|e| ServiceError::Connect(e.to_string()))?;
    let deadline = Duration::from_millis(cfg.connect_deadline_ms);
    let settled = tokio::time::timeout(deadline, async {
        state_rx
            .wait_for(|s| matches!(s, ConnState::Connected | ConnState::Closed))
            .await
            .map(|s| s.clone())
    })
    .await;
    match settled {
        Ok(Ok(ConnState::Connected)) => Ok(client),
        _ => {
            let last = match &*state_rx.borrow() {
                ConnState::Failing(e) => e.clone(),
                ConnState::Closed => "connection closed (max_reconnect_attempts reached)".into(),
                _ => "no answer".into(),
            };
            Err(ServiceError::Connect(format!(
                "no connection to {} within connect_deadline_ms={}: {last}",
                cfg.nats_url, cfg.connect_deadline_ms
            )))
        }
    }
}

/// Connection state as seen by the start-up wait.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnState {
    Connecting,
    /// Still trying; the last error event.
    Failing(String),
    Connected,
    Closed,
}

/// What a `kv.create` of a new record found.
#[derive(Debug)]
enum Created {
    /// Written (or found written by an earlier attempt of ours) at this revision.
    Written(u64),
    /// The key holds another record: a duplicate client order id.
    Exists,
    /// Refused for good ([`journal_errors::permanent`]); not retried.
    Refused(String),
}

/// Result of taking an order in.
enum Intake {
    /// Recorded as PENDING_NEW: execute it.
    Accepted(Box<LiveOrder>, ValidOrder),
    /// Recorded as REJECTED/EXPIRED: publish these reports.
    Rejected(Vec<pb::ExecutionReport>),
    /// Unkeyed, or a duplicate answered with its original outcome: nothing left to do.
    Answered,
}

pub struct Engine {
    cfg: Config,
    client: Client,
    js: jetstream::Context,
    kv: kv::Store,
    executions: JsStream,
    venue: Venue,
    limits: BTreeMap<String, SymbolLimits>,
    max_notional: i64,
    last_seq: u64,
    readiness: Readiness,
}

impl Engine {
    /// Binds to the provisioned streams, consumer and bucket (it never creates them: the
    /// engine role may not) and seeds the venue.
    pub async fn new(cfg: Config, client: Client) -> Result<(Self, PullConsumer), ServiceError> {
        let js = jetstream::new(client.clone());
        let kv = js
            .get_key_value(subjects::ORDERS_KV_BUCKET)
            .await
            .map_err(|e| ServiceError::Setup {
                what: "KV bucket bridge_orders",
                source: e.into(),
            })?;
        let executions = js
            .get_stream(subjects::EXECUTIONS_STREAM)
            .await
            .map_err(|e| ServiceError::Setup {
                what: "stream EXECUTIONS",
                source: e.into(),
            })?;
        let consumer = bind_consumer(&js).await?;
        let limits = cfg.limits()?;
        let max_notional = cfg.max_notional()?;
        let venue = Venue::new(&limits);
        Ok((
            Engine {
                cfg,
                client,
                js,
                kv,
                executions,
                venue,
                limits,
                max_notional,
                last_seq: 0,
                readiness: Readiness::default(),
            },
            consumer,
        ))
    }

    fn next_seq(&mut self) -> u64 {
        let now = u64::try_from(now_ns()).unwrap_or(0);
        self.last_seq = (self.last_seq + 1).max(now);
        self.last_seq
    }

    /// The REJECTED ack of a request that names no order (undecodable, or no valid key).
    fn unkeyed_reject(&self, order: &pb::NewOrder, rej: &Rejection) -> pb::OrderAck {
        intake::unkeyed_reject(order, rej, &self.cfg.engine_id, now_ns())
    }

    /// Validation and the record to journal (step 1 without its write; [`intake::prepare`]).
    fn prepare(
        &mut self,
        order: pb::NewOrder,
        rejection: Option<Rejection>,
        payload_len: usize,
        correlation_id: &str,
    ) -> Result<Prepared, ServiceError> {
        let seq = self.next_seq();
        let validator = Validator {
            symbols: &self.limits,
            max_notional: self.max_notional,
        };
        let ctx = intake::Context {
            validator: &validator,
            engine_id: &self.cfg.engine_id,
            now: now_ns(),
        };
        let prepared = intake::prepare(&ctx, order, rejection, payload_len, seq, correlation_id)?;
        if let Prepared::Unkeyed(ack) = &prepared {
            warn!(client_order_id = %echo(&ack.client_order_id), correlation_id = %intake::bounded_correlation_id(correlation_id), reason = %ack.text, "order rejected (unkeyed)");
        }
        Ok(prepared)
    }

    /// Step 1's write: `kv.create` of a prepared order's record. `None`: no record (unkeyed).
    async fn create_prepared(&self, prepared: &Prepared) -> Result<Option<Created>, ServiceError> {
        match prepared.journal_entry() {
            Some((key, record)) => self.create(key, record).await.map(Some),
            None => Ok(None),
        }
    }

    /// What step 1's write decided: the ack to answer, and what is left to do.
    async fn settle(
        &self,
        prepared: Prepared,
        created: Option<Created>,
        correlation_id: &str,
    ) -> Result<(pb::OrderAck, Intake), ServiceError> {
        let cid = intake::bounded_correlation_id(correlation_id);
        match (prepared, created) {
            (Prepared::Unkeyed(ack), _) => Ok((ack, Intake::Answered)),
            (Prepared::Rejected(touched), Some(Created::Written(_))) => {
                let ack = touched.order.record.ack.clone().unwrap_or_default();
                info!(client_order_id = %ack.client_order_id, correlation_id = cid, reason = %ack.text, "order rejected");
                Ok((ack, Intake::Rejected(touched.reports)))
            }
            (Prepared::Accepted(mut live, valid), Some(Created::Written(revision))) => {
                live.revision = revision;
                let ack = live.record.ack.clone().unwrap_or_default();
                Ok((ack, Intake::Accepted(live, valid)))
            }
            (Prepared::Rejected(touched), Some(Created::Refused(why))) => {
                // Rejected anyway: answer the validation's verdict, unjournaled.
                let ack = touched.order.record.ack.clone().unwrap_or_default();
                error!(key = %touched.order.key, correlation_id = cid, error = %why, reason = %ack.text, "journal refused a rejected order's record for good; answered without it");
                Ok((ack, Intake::Rejected(touched.reports)))
            }
            (Prepared::Accepted(live, _), Some(Created::Refused(why))) => {
                let (ack, reports) = intake::refused(&live, &why, &self.cfg.engine_id, now_ns())?;
                error!(key = %live.key, correlation_id = cid, error = %why, "journal refused an order's record for good: order rejected, not retried");
                Ok((ack, Intake::Rejected(reports)))
            }
            (Prepared::Rejected(t), _) => {
                Ok((self.duplicate(&t.order.key, cid).await?, Intake::Answered))
            }
            (Prepared::Accepted(live, _), _) => {
                Ok((self.duplicate(&live.key, cid).await?, Intake::Answered))
            }
        }
    }

    /// Step 1 of the protocol for one order (and for a rejection, its report). Returns the
    /// ack to answer.
    async fn intake(
        &mut self,
        order: pb::NewOrder,
        payload_len: usize,
        correlation_id: &str,
    ) -> Result<(pb::OrderAck, Intake), ServiceError> {
        let prepared = self.prepare(order, None, payload_len, correlation_id)?;
        let created = self.create_prepared(&prepared).await?;
        let (ack, intake) = self.settle(prepared, created, correlation_id).await?;
        if let Intake::Rejected(reports) = &intake {
            let cid = intake::bounded_correlation_id(correlation_id);
            let tagged: Vec<Tagged<'_>> = reports.iter().map(|r| (r, cid)).collect();
            self.publish_groups(vec![tagged]).await?;
        }
        Ok((ack, intake))
    }

    /// The backoff of one retried JetStream operation.
    fn backoff(&self) -> retry::Backoff {
        retry::Backoff::from_config(&self.cfg)
    }

    /// `kv.create`, retried unless the failure is permanent.
    ///
    /// A retried create whose earlier attempt was stored (only its answer was lost) finds the
    /// key taken by its own record: same engine order id, so it is ours, not a duplicate.
    async fn create(&self, key: &str, record: &OrderRecord) -> Result<Created, ServiceError> {
        let value = Bytes::from(record.encode_to_vec());
        let subject = kv_subject(key);
        let started = Instant::now();
        let attempts = self.readiness.operation("kv create", key);
        let created = (|| self.kv.create(key, value.clone()))
            .retry(self.backoff())
            .when(|e: &kv::CreateError| {
                e.kind() != kv::CreateErrorKind::AlreadyExists
                    && journal_errors::permanent_on(e, &subject, started).is_none()
            })
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        drop(attempts);
        match created {
            Ok(rev) => Ok(Created::Written(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => match self.load(key).await?
            {
                Some((stored, rev)) if stored.engine_order_id == record.engine_order_id => {
                    Ok(Created::Written(rev))
                }
                _ => Ok(Created::Exists),
            },
            Err(e) => match journal_errors::permanent_on(&e, &subject, started) {
                Some(why) => Ok(Created::Refused(format!(
                    "{why} (record of {} bytes)",
                    value.len()
                ))),
                None => Err(ServiceError::Journal {
                    key: key.into(),
                    source: e.into(),
                }),
            },
        }
    }

    /// The journal entry of `key`, retried unless the failure is permanent.
    async fn load(&self, key: &str) -> Result<Option<(OrderRecord, u64)>, ServiceError> {
        let attempts = self.readiness.operation("kv entry", key);
        let entry = (|| self.kv.entry(key))
            .retry(self.backoff())
            .when(|e: &kv::EntryError| journal_errors::permanent(e).is_none())
            .notify(|e, delay| attempts.retrying(e, delay))
            .await
            .map_err(|e| ServiceError::Journal {
                key: key.into(),
                source: e.into(),
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
    async fn load_existing(&self, key: &str) -> Result<(OrderRecord, u64), ServiceError> {
        let attempts = self.readiness.operation("kv entry after create", key);
        let read = || async {
            match self.load(key).await {
                Ok(Some(found)) => Ok(found),
                Ok(None) => Err(ServiceError::Journal {
                    key: key.into(),
                    source: "record not readable although kv.create reported it exists".into(),
                }),
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
    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, ServiceError> {
        let subject = kv_subject(key);
        let started = Instant::now();
        let attempts = self.readiness.operation("kv update", key);
        let updated = (|| self.kv.update(key, value.clone(), revision))
            .retry(self.backoff())
            .when(|e: &kv::UpdateError| {
                e.kind() != kv::UpdateErrorKind::WrongLastRevision
                    && journal_errors::permanent_on(e, &subject, started).is_none()
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
                if let Some(why) = journal_errors::permanent_on(&e, &subject, started) {
                    error!(key, error = %why, bytes = value.len(), "journal refused a record update for good; not retried, record left at its previous state (EXECUTIONS holds the reports)");
                    return Ok(revision);
                }
                Err(ServiceError::Journal {
                    key: key.into(),
                    source: e.into(),
                })
            }
        }
    }

    /// True when EXECUTIONS already holds `report` or a later report of its order.
    async fn report_stored(&self, report: &pb::ExecutionReport) -> Result<bool, ServiceError> {
        let subject = subjects::executions(&report.account, &report.client_order_id);
        Ok(self
            .last_stored_report(&subject)
            .await?
            .is_some_and(|stored| stored.seq >= report.seq))
    }

    /// The last report EXECUTIONS holds on `subject` (one order's), read from the stream
    /// leader, retried while JetStream is unavailable.
    async fn last_stored_report(
        &self,
        subject: &str,
    ) -> Result<Option<pb::ExecutionReport>, ServiceError> {
        let attempts = self.readiness.operation("last report", subject);
        let last = (|| self.executions.get_last_raw_message_by_subject(subject))
            .retry(self.backoff())
            .when(|e: &jetstream::stream::LastRawMessageError| {
                e.kind() != jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                    && journal_errors::permanent(e).is_none()
            })
            .notify(|e, delay| attempts.retrying(e, delay))
            .await;
        match last {
            Ok(m) => Ok(pb::ExecutionReport::decode(m.payload).ok()),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(None)
            }
            Err(e) => Err(ServiceError::Publish(e.into())),
        }
    }

    /// Answers a re-sent client order id with the original ack. The record's latest report is
    /// published again if EXECUTIONS does not hold it yet (the first engine died between its
    /// journal write and its publish, or the record is a tombstone whose REJECTED report is
    /// published when the first order hits it); never otherwise, so that a replay cannot store
    /// an exec id twice, even after JetStream's duplicate window.
    async fn duplicate(
        &self,
        key: &str,
        correlation_id: &str,
    ) -> Result<pb::OrderAck, ServiceError> {
        let (record, _) = self.load_existing(key).await?;
        if let Some(report) = &record.last_report {
            if !self.report_stored(report).await? {
                self.publish_groups(vec![vec![(report, correlation_id)]])
                    .await?;
            }
        }
        let mut ack = record.ack.unwrap_or_default();
        ack.duplicate = true;
        ack.order_status = record.status;
        info!(
            key,
            correlation_id,
            tombstone = record.tombstone,
            "duplicate client order id answered with the original outcome"
        );
        Ok(ack)
    }

    /// Steps 3-4: execute, publish (each fact atomically), journal.
    async fn execute(
        &mut self,
        live: LiveOrder,
        valid: &ValidOrder,
        correlation_id: &str,
    ) -> Result<(), ServiceError> {
        let executed = self.venue.execute(live, valid, now_ns())?;
        self.publish_executed(&[(&executed, correlation_id)])
            .await?;
        let touched: Vec<_> = executed.into_all().map(|t| t.order).collect();
        self.journal(touched).await
    }

    /// Publishes executions in order: each expired order is its own fact, each execution one
    /// fact (its order and every order it traded with).
    async fn publish_executed(&self, executions: &[(&Executed, &str)]) -> Result<(), ServiceError> {
        let mut groups: Vec<Vec<Tagged<'_>>> = Vec::new();
        for (e, cid) in executions {
            for t in &e.expired {
                groups.push(t.reports.iter().map(|r| (r, *cid)).collect());
            }
            groups.push(
                e.touched
                    .iter()
                    .flat_map(|t| t.reports.iter().map(|r| (r, *cid)))
                    .collect(),
            );
        }
        self.publish_groups(groups).await
    }

    /// Step 4: `kv.update` of every record (concurrently), at most one write per key.
    async fn journal(&mut self, orders: Vec<LiveOrder>) -> Result<(), ServiceError> {
        let this = &*self;
        let writes = orders.iter().map(|o| async move {
            this.update(&o.key, Bytes::from(o.record.encode_to_vec()), o.revision)
                .await
                .map(|rev| (o.key.clone(), rev))
        });
        for (key, rev) in try_join_all(writes).await? {
            self.venue.set_revision(&key, rev);
        }
        Ok(())
    }

    /// Crash here if the configured failpoint is `name` (tests of crash recovery only).
    async fn failpoint(&self, name: &str) {
        if self.cfg.failpoint.as_deref() == Some(name) {
            let _ = self.client.flush().await;
            error!(failpoint = name, "failpoint reached: aborting");
            std::process::abort();
        }
    }

    async fn respond(&self, reply: Option<&async_nats::Subject>, payload: Vec<u8>) {
        if let Some(reply) = reply {
            if let Err(e) = self
                .client
                .publish(reply.clone(), Bytes::from(payload))
                .await
            {
                warn!(error = %e, "could not send reply");
            }
        }
    }

    /// Synchronous submit: ack once durable, then execute.
    pub async fn on_submit(&mut self, msg: Message) -> Result<(), ServiceError> {
        let cid = correlation_id(msg.headers.as_ref());
        let order = match pb::NewOrder::decode(msg.payload.clone()) {
            Ok(o) => o,
            Err(e) => {
                // Nothing in the bytes can be trusted to name the order: answer only.
                let rej = malformed(&e);
                warn!(correlation_id = %cid, reason = %rej.text(), "malformed order rejected");
                let ack = self.unkeyed_reject(&pb::NewOrder::default(), &rej);
                self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
                return Ok(());
            }
        };
        // The size limits (the whole message, then each field) are checked by intake, before
        // anything is journaled.
        let (ack, intake) = self.intake(order, msg.payload.len(), &cid).await?;
        self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
        self.failpoint("after_ack").await;
        if let Intake::Accepted(live, valid) = intake {
            self.execute(*live, &valid, &cid).await?;
        }
        Ok(())
    }

    /// Queued orders: the same protocol, applied to every message of a pull at once so that
    /// the JetStream round trips of one step overlap instead of queuing one order behind the
    /// next. Step 1 writes all records concurrently; step 3 executes them in delivery order
    /// (price-time priority is the delivery order) and publishes all reports pipelined, in
    /// that order; step 4 writes each touched record once, with its latest state. Each ORDERS
    /// message is acked only after all of that.
    pub async fn on_queued_batch(
        &mut self,
        msgs: &[jetstream::Message],
    ) -> Result<(), ServiceError> {
        let mut cids = Vec::with_capacity(msgs.len());
        let mut prepared = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let cid = correlation_id(msg.headers.as_ref());
            let (order, rejection) = decode_queued(msg);
            prepared.push(self.prepare(order, rejection, msg.payload.len(), &cid)?);
            cids.push(cid);
        }
        let this = &*self;
        let created = try_join_all(prepared.iter().map(|p| this.create_prepared(p))).await?;
        self.failpoint("after_journal").await;

        // In delivery order: what each order did (an execution, or the reports of its
        // rejection), and the index of its message.
        let mut executions: Vec<(Executed, usize)> = Vec::new();
        let mut rejections: Vec<(Vec<pb::ExecutionReport>, usize)> = Vec::new();
        for (i, (p, created)) in prepared.into_iter().zip(created).enumerate() {
            match self.settle(p, created, &cids[i]).await?.1 {
                Intake::Accepted(live, valid) => {
                    executions.push((self.venue.execute(*live, &valid, now_ns())?, i));
                }
                Intake::Rejected(rs) => rejections.push((rs, i)),
                Intake::Answered => {}
            }
        }
        let mut groups: Vec<(usize, Vec<Tagged<'_>>)> = Vec::new();
        for (e, i) in &executions {
            let cid = cids[*i].as_str();
            for t in &e.expired {
                groups.push((*i, t.reports.iter().map(|r| (r, cid)).collect()));
            }
            let all = e.touched.iter().flat_map(|t| t.reports.iter());
            groups.push((*i, all.map(|r| (r, cid)).collect()));
        }
        for (rs, i) in &rejections {
            groups.push((*i, rs.iter().map(|r| (r, cids[*i].as_str())).collect()));
        }
        groups.sort_by_key(|(i, _)| *i); // stable: delivery order, each order's facts in order
        self.publish_groups(groups.into_iter().map(|(_, g)| g).collect())
            .await?;
        // Every state of a record within this batch carries the revision it had before the
        // batch: the last state replaces the earlier ones.
        let mut writes: Vec<LiveOrder> = Vec::new();
        for t in executions.into_iter().flat_map(|(e, _)| e.into_all()) {
            match writes.iter_mut().find(|w| w.key == t.order.key) {
                Some(w) => *w = t.order,
                None => writes.push(t.order),
            }
        }
        self.journal(writes).await?;
        for (msg, cid) in msgs.iter().zip(&cids) {
            self.ack_queued(msg, cid).await;
        }
        Ok(())
    }

    /// Acks a queued message whose order is journaled and reported, without waiting for the
    /// server's confirmation. If the ack is lost (e.g. the server restarted and no longer knows
    /// this delivery; such an ack is never answered) the message is redelivered after the
    /// consumer's ack_wait, finds the order's record and is answered as a duplicate: a lost ack
    /// delays the message's removal but can never re-execute the order.
    async fn ack_queued(&self, msg: &jetstream::Message, correlation_id: &str) {
        if let Err(e) = msg.ack().await {
            warn!(correlation_id, error = %e, "ack of a queued order not sent; a redelivery will be answered as a duplicate");
        }
    }

    /// Cancel: here if the order rests in this engine's book, else forwarded to its owner.
    pub async fn on_cancel(&mut self, msg: Message, forwarded: bool) -> Result<(), ServiceError> {
        let cid = correlation_id(msg.headers.as_ref());
        let req = match pb::CancelRequest::decode(msg.payload.clone()) {
            Ok(r) => r,
            Err(e) => {
                let ack = self.unkeyed_reject(&pb::NewOrder::default(), &malformed(&e));
                self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
                return Ok(());
            }
        };
        let key = subjects::order_key(&req.account, &req.client_order_id);
        let reply = |reason: RejectReason, status: i32, text: &str| pb::OrderAck {
            client_order_id: req.client_order_id.clone(),
            account: req.account.clone(),
            status: if reason == RejectReason::Unspecified {
                AckStatus::Accepted
            } else {
                AckStatus::Rejected
            } as i32,
            reason: reason as i32,
            order_status: status,
            ack_time_unix_ns: now_ns(),
            engine_id: self.cfg.engine_id.clone(),
            text: text.into(),
            ..Default::default()
        };
        if !valid_key(&req.account, &req.client_order_id) {
            let ack = reply(
                RejectReason::InvalidField,
                0,
                "account and client_order_id must be [A-Za-z0-9_-]",
            );
            self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
            return Ok(());
        }
        if let Some(touched) = self.venue.cancel(&key, now_ns())? {
            let mut ack = reply(
                RejectReason::Unspecified,
                OrderStatus::Canceled as i32,
                "canceled",
            );
            ack.engine_order_id = touched.order.record.engine_order_id.clone();
            let tagged: Vec<Tagged<'_>> =
                touched.reports.iter().map(|r| (r, cid.as_str())).collect();
            self.publish_groups(vec![tagged]).await?;
            self.journal(vec![touched.order]).await?;
            info!(key, correlation_id = %cid, "order canceled");
            self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
            return Ok(());
        }
        let ack = match self.load(&key).await? {
            None => reply(RejectReason::UnknownOrder, 0, "no such order"),
            Some((r, _))
                if is_final(
                    OrderStatus::try_from(r.status).unwrap_or(OrderStatus::Unspecified),
                ) =>
            {
                reply(RejectReason::TooLate, r.status, "order is already final")
            }
            Some((r, _)) if r.engine_id != self.cfg.engine_id && !forwarded => {
                // The order rests in another engine's book: relay the request to its owner.
                let subject = subjects::engine_cancel(&r.engine_id);
                match self.client.request(subject, msg.payload.clone()).await {
                    Ok(answer) => {
                        self.respond(msg.reply.as_ref(), answer.payload.to_vec())
                            .await;
                        return Ok(());
                    }
                    Err(e) => reply(
                        RejectReason::EngineUnavailable,
                        r.status,
                        &format!("owner engine {} unreachable: {e}", r.engine_id),
                    ),
                }
            }
            Some((r, _)) => reply(
                RejectReason::TooLate,
                r.status,
                "order is not resting in a book",
            ),
        };
        self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
        Ok(())
    }

    /// Status: the journal is authoritative (written before any ack). An id without a record
    /// is retired first ([`Engine::retire`]), so that "not found" stays true.
    pub async fn on_status(&mut self, msg: Message) -> Result<(), ServiceError> {
        let cid = correlation_id(msg.headers.as_ref());
        let reply = match pb::OrderStatusRequest::decode(msg.payload.clone()) {
            Err(e) => pb::OrderStatusReply {
                reason: RejectReason::Malformed as i32,
                text: format!("undecodable OrderStatusRequest: {e}"),
                ..Default::default()
            },
            Ok(req) if !valid_key(&req.account, &req.client_order_id) => pb::OrderStatusReply {
                reason: RejectReason::InvalidField as i32,
                text: format!(
                    "account {} / client_order_id {} must be [A-Za-z0-9_-]",
                    echo(&req.account),
                    echo(&req.client_order_id)
                ),
                ..Default::default()
            },
            Ok(req) => {
                let key = subjects::order_key(&req.account, &req.client_order_id);
                match self.load(&key).await? {
                    Some((r, _)) => intake::status_reply(r),
                    None => self.retire(&req, &key, &cid).await?,
                }
            }
        };
        self.respond(msg.reply.as_ref(), reply.encode_to_vec())
            .await;
        Ok(())
    }

    /// Retires an id that has no record: an atomic `kv.create` of a tombstone, so that an order
    /// with this id arriving later (a submit still in flight, a queued copy) is answered as a
    /// duplicate of a REJECTED outcome and never executes. If the key was created meanwhile,
    /// the stored record answers. If the journal refuses the tombstone, the answer says that
    /// nothing is known (ENGINE_UNAVAILABLE), never "not found".
    async fn retire(
        &mut self,
        req: &pb::OrderStatusRequest,
        key: &str,
        correlation_id: &str,
    ) -> Result<pb::OrderStatusReply, ServiceError> {
        let seq = self.next_seq();
        let record = intake::tombstone(
            &req.account,
            &req.client_order_id,
            &self.cfg.engine_id,
            seq,
            now_ns(),
            correlation_id,
        )?;
        match self.create(key, &record).await? {
            Created::Written(_) => {
                info!(
                    key,
                    correlation_id, "status of an unknown order: client order id retired"
                );
                Ok(intake::status_reply(record))
            }
            Created::Exists => Ok(intake::status_reply(self.load_existing(key).await?.0)),
            Created::Refused(why) => {
                error!(key, correlation_id, error = %why, "could not retire an unknown client order id");
                Ok(pb::OrderStatusReply {
                    found: false,
                    reason: RejectReason::EngineUnavailable as i32,
                    text: format!(
                        "status unknown: the engine could not record the id as retired ({why}); \
                         ask again"
                    ),
                    ..Default::default()
                })
            }
        }
    }

    /// Answers every status query already received, before the next order is taken: a query
    /// is answered promptly, not behind a backlog of orders (possibly the very backlog that
    /// made its caller time out); "not found" is safe to answer at any time (see
    /// [`Engine::retire`]).
    pub async fn answer_statuses(&mut self, statuses: &mut Subscriber) -> Result<(), ServiceError> {
        while let Some(Some(m)) = statuses.next().now_or_never() {
            self.on_status(m).await?;
        }
        Ok(())
    }
}

/// The order in a queued message. A malformed one is attributed through its subject and
/// `Nats-Msg-Id` so that the orchestrator still gets a REJECTED report for it.
fn decode_queued(msg: &jetstream::Message) -> (pb::NewOrder, Option<Rejection>) {
    match pb::NewOrder::decode(msg.payload.clone()) {
        Ok(o) => (o, None),
        Err(e) => {
            let order = pb::NewOrder {
                account: subjects::account_of_queue_subject(msg.subject.as_str())
                    .unwrap_or("")
                    .into(),
                client_order_id: msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(subjects::HEADER_MSG_ID))
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default(),
                ..Default::default()
            };
            (order, Some(malformed(&e)))
        }
    }
}

/// The committed definition of the engine's durable consumer (provisioning applies the same
/// file); used to re-create the consumer if it has disappeared.
const CONSUMER_DEFINITION: &str =
    include_str!("../../bridge/jetstream/orders-engine.consumer.json");

/// Binds to the durable ORDERS consumer. If it is missing (deleted, or lost with a stream
/// leader) it is re-created from its committed definition, which the engine role may do.
async fn bind_consumer(js: &jetstream::Context) -> Result<PullConsumer, ServiceError> {
    let setup = |e: async_nats::Error| ServiceError::Setup {
        what: "consumer ORDERS/engine",
        source: e,
    };
    match js
        .get_consumer_from_stream(subjects::ENGINE_CONSUMER, subjects::ORDERS_STREAM)
        .await
    {
        Ok(c) => Ok(c),
        Err(e)
            if matches!(e.kind(), jetstream::stream::ConsumerErrorKind::JetStream(ref j)
                if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) =>
        {
            let config: jetstream::consumer::pull::Config =
                serde_json::from_str(CONSUMER_DEFINITION).map_err(|e| setup(e.into()))?;
            error!(
                "consumer ORDERS/engine is missing: re-creating it from its committed definition"
            );
            let stream = js
                .get_stream(subjects::ORDERS_STREAM)
                .await
                .map_err(|e| setup(e.into()))?;
            stream
                .get_or_create_consumer(subjects::ENGINE_CONSUMER, config)
                .await
                .map_err(|e| setup(e.into()))
        }
        Err(e) => Err(setup(e.into())),
    }
}

/// [`bind_consumer`], retried with the engine's backoff (the server may be restarting or
/// electing a leader).
async fn rebind_consumer(
    js: &jetstream::Context,
    cfg: &Config,
) -> Result<PullConsumer, ServiceError> {
    (|| bind_consumer(js))
        .retry(retry::Backoff::from_config(cfg))
        .notify(|e, delay| retrying("bind consumer", subjects::ENGINE_CONSUMER, e, delay))
        .await
}

/// Logs one retry of a JetStream operation (`what` on `about`: a key or a correlation id).
fn retrying(what: &str, about: &str, error: &dyn std::fmt::Display, delay: Duration) {
    warn!(
        operation = what,
        about,
        error = %error,
        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "JetStream operation failed; retrying"
    );
}

/// The request's correlation id, cut to its limit (it is journaled and logged).
fn correlation_id(headers: Option<&HeaderMap>) -> String {
    headers
        .and_then(|h| h.get(subjects::HEADER_CORRELATION_ID))
        .map(|v| intake::bounded_correlation_id(v.as_str()).to_string())
        .unwrap_or_default()
}

/// The subject a KV write of `key` is published to (for permission violations).
fn kv_subject(key: &str) -> String {
    format!("$KV.{}.{key}", subjects::ORDERS_KV_BUCKET)
}

fn malformed(e: &prost::DecodeError) -> Rejection {
    Rejection {
        reason: RejectReason::Malformed,
        errors: vec![field_error(
            "<message>",
            "decodable",
            format!("not a bridge.v1.NewOrder: {e}"),
        )],
    }
}

/// Runs the engine until `shutdown` resolves: recover, subscribe, serve; then stop intake,
/// finish in-flight orders, flush and return.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
    let client = connect(&cfg).await?;
    // Before anything else touches orders: refuse to run beside another live engine.
    // Both are retried while JetStream is unavailable (a cluster electing leaders at start-up);
    // a refusal or a configuration error is final.
    let mut lease = (|| lease::acquire(&client, &cfg))
        .retry(retry::Backoff::from_config(&cfg))
        .when(|e| !matches!(e, lease::LeaseError::Refused(_)))
        .notify(|e, delay| retrying("take leases", &cfg.engine_id, e, delay))
        .await?;
    let (mut engine, consumer) = (|| Engine::new(cfg.clone(), client.clone()))
        .retry(retry::Backoff::from_config(&cfg))
        .when(|e| matches!(e, ServiceError::Setup { .. }))
        .notify(|e, delay| retrying("bind streams and bucket", &cfg.engine_id, e, delay))
        .await?;
    let recovered = engine.recover().await?;

    let group = subjects::ENGINE_QUEUE_GROUP.to_string();
    let sub = |s: &'static str| {
        let client = client.clone();
        let group = group.clone();
        async move { client.queue_subscribe(s, group).await }
    };
    let setup = |e: async_nats::SubscribeError| ServiceError::Setup {
        what: "subscribe",
        source: e.into(),
    };
    let mut submits: Subscriber = sub(subjects::SUBMIT).await.map_err(setup)?;
    let mut cancels: Subscriber = sub(subjects::CANCEL).await.map_err(setup)?;
    let mut statuses: Subscriber = sub(subjects::STATUS).await.map_err(setup)?;
    let mut forwarded: Subscriber = client
        .subscribe(subjects::engine_cancel(&cfg.engine_id))
        .await
        .map_err(setup)?;
    client
        .flush()
        .await
        .map_err(|e| ServiceError::Connect(e.to_string()))?;

    // Ready only once the request subscriptions are registered server-side (flushed above):
    // tooling and operators take this line to mean "requests will be answered".
    info!(engine_id = %cfg.engine_id, recovered, "engine ready");

    tokio::pin!(shutdown);
    let mut stopping = false;
    let mut consumer = consumer;
    let js = jetstream::new(client.clone());
    // A pull ends with messages or the server's 408 within pull_expires_ms; waiting longer than
    // this for its next item means it is stalled (its server or consumer leader is gone, or the
    // request was lost in a reconnect).
    let stall_after = Duration::from_millis(cfg.pull_expires_ms + cfg.consumer_stall_timeout_ms);
    loop {
        // One pull request at a time: at most `pull_batch` queued orders are in this process,
        // and at most max_ack_pending unacked across all engines (server side).
        let mut batch = if stopping {
            None
        } else {
            match consumer
                .batch()
                .max_messages(cfg.pull_batch)
                .expires(Duration::from_millis(cfg.pull_expires_ms))
                .messages()
                .await
            {
                Ok(b) => Some(b),
                Err(e) => {
                    warn!(error = %e, "pull request failed: re-binding the consumer");
                    consumer = rebind_consumer(&js, &cfg).await?;
                    continue;
                }
            }
        };
        let mut rebind = false;
        loop {
            tokio::select! {
                m = async { match batch.as_mut() { Some(b) => tokio::time::timeout(stall_after, b.next()).await, None => std::future::pending().await } } => match m {
                    Ok(Some(Ok(m))) => {
                        // Take every message of this pull that has already arrived, and run
                        // them through the protocol together.
                        let mut msgs = vec![m];
                        let mut ended = None;
                        if let Some(b) = batch.as_mut() {
                            while msgs.len() < cfg.pull_batch {
                                match b.next().now_or_never() {
                                    Some(Some(Ok(m))) => msgs.push(m),
                                    Some(Some(Err(e))) => { ended = Some(Some(e)); break; }
                                    Some(None) => { ended = Some(None); break; }
                                    None => break,
                                }
                            }
                        }
                        engine.answer_statuses(&mut statuses).await?;
                        engine.on_queued_batch(&msgs).await?;
                        match ended {
                            Some(Some(e)) => { warn!(error = %e, "pull ended with an error: re-binding the consumer"); rebind = true; break; }
                            Some(None) => break,
                            None => {}
                        }
                    }
                    Ok(Some(Err(e))) => { warn!(error = %e, "pull ended with an error: re-binding the consumer"); rebind = true; break; }
                    Ok(None) => break,
                    Err(_) => {
                        warn!(stalled_ms = u64::try_from(stall_after.as_millis()).unwrap_or(u64::MAX), "consumer stalled: pull neither delivered nor ended; re-binding the consumer");
                        rebind = true;
                        break;
                    }
                },
                Some(m) = submits.next() => {
                    engine.answer_statuses(&mut statuses).await?;
                    engine.on_submit(m).await?;
                }
                Some(m) = cancels.next() => engine.on_cancel(m, false).await?,
                Some(m) = forwarded.next() => engine.on_cancel(m, true).await?,
                Some(m) = statuses.next() => engine.on_status(m).await?,
                lost = lease.lost() => return Err(lost.into()),
                () = &mut shutdown, if !stopping => {
                    info!("shutdown requested: stopping intake");
                    stopping = true;
                    for s in [&mut submits, &mut cancels, &mut statuses, &mut forwarded] {
                        // Drain: the server stops routing to us; already delivered requests
                        // are still served below.
                        let _ = s.drain().await;
                    }
                    if batch.is_none() { break; }
                }
                else => break,
            }
        }
        if rebind && !stopping {
            consumer = rebind_consumer(&js, &cfg).await?;
            info!("consumer re-bound: pulling again");
        }
        if stopping {
            // Serve requests delivered before the drain took effect; each stream ends once the
            // server has confirmed its UNSUB (drain = UNSUB + PING/PONG).
            let deadline = tokio::time::sleep(Duration::from_millis(cfg.shutdown_timeout_ms));
            tokio::pin!(deadline);
            let mut open = [true; 4];
            while open.iter().any(|o| *o) {
                tokio::select! {
                    m = submits.next(), if open[0] => match m { Some(m) => engine.on_submit(m).await?, None => open[0] = false },
                    m = cancels.next(), if open[1] => match m { Some(m) => engine.on_cancel(m, false).await?, None => open[1] = false },
                    m = forwarded.next(), if open[2] => match m { Some(m) => engine.on_cancel(m, true).await?, None => open[2] = false },
                    m = statuses.next(), if open[3] => match m { Some(m) => engine.on_status(m).await?, None => open[3] = false },
                    () = &mut deadline => { warn!("shutdown timeout: leaving remaining requests"); break; }
                }
            }
            break;
        }
    }
    client
        .flush()
        .await
        .map_err(|e| ServiceError::Connect(e.to_string()))?;
    lease.release().await;
    info!("engine stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded consumer definition (the committed JSON provisioning applies) parses into
    /// the consumer async-nats would create, with its limits intact.
    #[test]
    fn consumer_definition_parses() {
        let c: jetstream::consumer::pull::Config =
            serde_json::from_str(CONSUMER_DEFINITION).expect("definition parses");
        assert_eq!(c.durable_name.as_deref(), Some(subjects::ENGINE_CONSUMER));
        assert_eq!(c.ack_policy, jetstream::consumer::AckPolicy::Explicit);
        assert_eq!(c.ack_wait, Duration::from_secs(30));
        assert_eq!(c.max_ack_pending, 1024);
        assert_eq!(c.filter_subject, "bridge.v1.orders.queue.>");
    }
}
