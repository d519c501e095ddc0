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
//! and its remaining quantity is executed. Any journal or publish failure after step 1 stops
//! the engine (exit non-zero) so that this recovery, not a guess, restores consistency.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::PullConsumer, kv, stream::Stream as JsStream};
use async_nats::{Client, HeaderMap, Message, Subscriber};
use backon::Retryable;
use bytes::Bytes;
use futures::future::try_join_all;
use futures::{FutureExt, StreamExt};
use prost::Message as _;
use tracing::{debug, error, info, warn};

use crate::config::{Config, SymbolLimits};
use crate::fixed;
use crate::lease;
use crate::proto::state::OrderRecord;
use crate::proto::v1::{self as pb, AckStatus, OrderStatus, RejectReason};
use crate::retry;
use crate::subjects;
use crate::validate::{field_error, Rejection, ValidOrder, Validator};
use crate::venue::{is_final, LiveOrder, Touched, Venue, VenueError};

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

/// Where an order came from, and so how it is answered.
enum Origin<'a> {
    Request,
    Queue(&'a jetstream::Message),
}

/// An order validated and ready for its journal write.
enum Prepared {
    /// No valid key (account / client order id): answered, never journaled.
    Unkeyed(pb::OrderAck),
    /// Rejected or expired: journaled already final.
    Rejected(Box<Touched>),
    /// Accepted: journaled as PENDING_NEW, then executed.
    Accepted(Box<LiveOrder>, ValidOrder),
}

impl Prepared {
    /// The key and record to `kv.create`, if the order has a key.
    fn journal_entry(&self) -> Option<(&str, &OrderRecord)> {
        match self {
            Prepared::Unkeyed(_) => None,
            Prepared::Rejected(t) => Some((&t.order.key, &t.order.record)),
            Prepared::Accepted(live, _) => Some((&live.key, &live.record)),
        }
    }
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
        let venue = Venue::new(&limits)?;
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
            },
            consumer,
        ))
    }

    fn next_seq(&mut self) -> u64 {
        let now = u64::try_from(now_ns()).unwrap_or(0);
        self.last_seq = (self.last_seq + 1).max(now);
        self.last_seq
    }

    fn ack_for(&self, o: &LiveOrder, status: AckStatus, rej: Option<&Rejection>) -> pb::OrderAck {
        let order = o.order();
        pb::OrderAck {
            client_order_id: order.client_order_id.clone(),
            account: order.account.clone(),
            engine_order_id: o.record.engine_order_id.clone(),
            status: status as i32,
            reason: rej.map_or(RejectReason::Unspecified, |r| r.reason) as i32,
            field_errors: rej.map(|r| r.errors.clone()).unwrap_or_default(),
            order_status: o.record.status,
            duplicate: false,
            ack_time_unix_ns: now_ns(),
            engine_id: self.cfg.engine_id.clone(),
            text: rej.map(Rejection::text).unwrap_or_default(),
        }
    }

    fn unkeyed_reject(&self, order: &pb::NewOrder, rej: &Rejection) -> pb::OrderAck {
        pb::OrderAck {
            client_order_id: order.client_order_id.clone(),
            account: order.account.clone(),
            status: AckStatus::Rejected as i32,
            reason: rej.reason as i32,
            field_errors: rej.errors.clone(),
            order_status: OrderStatus::Rejected as i32,
            ack_time_unix_ns: now_ns(),
            engine_id: self.cfg.engine_id.clone(),
            text: rej.text(),
            ..Default::default()
        }
    }

    /// Validation and the record to journal (step 1 without its write).
    fn prepare(
        &mut self,
        order: pb::NewOrder,
        rejection: Option<Rejection>,
        correlation_id: &str,
    ) -> Result<Prepared, ServiceError> {
        let now = now_ns();
        let validator = Validator {
            symbols: &self.limits,
            max_notional: self.max_notional,
        };
        let checked = match rejection {
            Some(r) => Err(r),
            None => validator.check(&order, now),
        };
        if !valid_key(&order.account, &order.client_order_id) {
            // Without a valid account and id there is no key and no report subject: answer only.
            let rej = match checked {
                Err(r) => r,
                Ok(_) => Rejection::single(
                    RejectReason::InvalidField,
                    "client_order_id",
                    "pattern",
                    "account and client_order_id must be [A-Za-z0-9_-]".into(),
                ),
            };
            warn!(client_order_id = %order.client_order_id, correlation_id, reason = %rej.text(), "order rejected (unkeyed)");
            return Ok(Prepared::Unkeyed(self.unkeyed_reject(&order, &rej)));
        }
        let key = subjects::order_key(&order.account, &order.client_order_id);
        let seq = self.next_seq();
        let mut live = LiveOrder::new(key, order, &self.cfg.engine_id, seq, correlation_id);
        Ok(match checked {
            Err(rej) => {
                let text = rej.text();
                let mut touched = Venue::reject(live, rej.reason, &rej.errors, &text, now)?;
                let ack = self.ack_for(&touched.order, AckStatus::Rejected, Some(&rej));
                touched.order.record.ack = Some(ack);
                Prepared::Rejected(Box::new(touched))
            }
            Ok(valid) => {
                let ack = self.ack_for(&live, AckStatus::Accepted, None);
                live.record.ack = Some(ack);
                Prepared::Accepted(Box::new(live), valid)
            }
        })
    }

    /// Step 1's write: `kv.create` of a prepared order's record. `None`: no record (unkeyed)
    /// or the key exists (a duplicate).
    async fn create_prepared(&self, prepared: &Prepared) -> Result<Option<u64>, ServiceError> {
        match prepared.journal_entry() {
            Some((key, record)) => self.create(key, record).await,
            None => Ok(None),
        }
    }

    /// What step 1's write decided: the ack to answer, and what is left to do.
    async fn settle(
        &self,
        prepared: Prepared,
        created: Option<u64>,
        correlation_id: &str,
        origin: &Origin<'_>,
    ) -> Result<(pb::OrderAck, Intake), ServiceError> {
        match (prepared, created) {
            (Prepared::Unkeyed(ack), _) => Ok((ack, Intake::Answered)),
            (Prepared::Rejected(touched), Some(_)) => {
                let ack = touched.order.record.ack.clone().unwrap_or_default();
                info!(client_order_id = %ack.client_order_id, correlation_id, reason = %ack.text, "order rejected");
                Ok((ack, Intake::Rejected(touched.reports)))
            }
            (Prepared::Accepted(mut live, valid), Some(revision)) => {
                live.revision = revision;
                let ack = live.record.ack.clone().unwrap_or_default();
                Ok((ack, Intake::Accepted(live, valid)))
            }
            (Prepared::Rejected(t), None) => Ok((
                self.duplicate(&t.order.key, origin, correlation_id).await?,
                Intake::Answered,
            )),
            (Prepared::Accepted(live, _), None) => Ok((
                self.duplicate(&live.key, origin, correlation_id).await?,
                Intake::Answered,
            )),
        }
    }

    /// Step 1 of the protocol for one order (and for a rejection, its report). Returns the
    /// ack to answer.
    async fn intake(
        &mut self,
        order: pb::NewOrder,
        correlation_id: &str,
    ) -> Result<(pb::OrderAck, Intake), ServiceError> {
        let prepared = self.prepare(order, None, correlation_id)?;
        let created = self.create_prepared(&prepared).await?;
        let (ack, intake) = self
            .settle(prepared, created, correlation_id, &Origin::Request)
            .await?;
        if let Intake::Rejected(reports) = &intake {
            let tagged: Vec<_> = reports.iter().map(|r| (r, correlation_id)).collect();
            self.publish_reports(&tagged).await?;
        }
        Ok((ack, intake))
    }

    /// The backoff of one retried JetStream operation.
    fn backoff(&self) -> retry::Backoff {
        retry::Backoff::from_config(&self.cfg)
    }

    /// `kv.create`, retried; `None` when the key already exists (a duplicate client order id).
    ///
    /// A retried create whose earlier attempt was stored (only its answer was lost) finds the
    /// key taken by its own record: same engine order id, so it is ours, not a duplicate.
    async fn create(&self, key: &str, record: &OrderRecord) -> Result<Option<u64>, ServiceError> {
        let value = Bytes::from(record.encode_to_vec());
        let created = (|| self.kv.create(key, value.clone()))
            .retry(self.backoff())
            .when(|e: &kv::CreateError| {
                !matches!(
                    e.kind(),
                    kv::CreateErrorKind::AlreadyExists | kv::CreateErrorKind::InvalidKey
                )
            })
            .notify(|e, delay| retrying("kv create", key, e, delay))
            .await;
        match created {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => match self.load(key).await?
            {
                Some((stored, rev)) if stored.engine_order_id == record.engine_order_id => {
                    Ok(Some(rev))
                }
                _ => Ok(None),
            },
            Err(e) => Err(ServiceError::Journal {
                key: key.into(),
                source: e.into(),
            }),
        }
    }

    /// The journal entry of `key`, retried.
    async fn load(&self, key: &str) -> Result<Option<(OrderRecord, u64)>, ServiceError> {
        let entry = (|| self.kv.entry(key))
            .retry(self.backoff())
            .notify(|e, delay| retrying("kv entry", key, e, delay))
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

    /// `kv.update` at `revision`, retried. A retry whose earlier attempt was stored finds the
    /// revision moved on with exactly our bytes: that is success, not a conflict.
    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, ServiceError> {
        let updated = (|| self.kv.update(key, value.clone(), revision))
            .retry(self.backoff())
            .when(|e: &kv::UpdateError| {
                !matches!(
                    e.kind(),
                    kv::UpdateErrorKind::WrongLastRevision | kv::UpdateErrorKind::InvalidKey
                )
            })
            .notify(|e, delay| retrying("kv update", key, e, delay))
            .await;
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
                Err(ServiceError::Journal {
                    key: key.into(),
                    source: e.into(),
                })
            }
        }
    }

    /// Answers a re-sent client order id with the original ack. A redelivered queued message
    /// also re-publishes the latest report (idempotent: same exec id, same Nats-Msg-Id), in case
    /// the first delivery's engine died between its journal write and its publish.
    async fn duplicate(
        &self,
        key: &str,
        origin: &Origin<'_>,
        correlation_id: &str,
    ) -> Result<pb::OrderAck, ServiceError> {
        let (record, _) = self.load(key).await?.ok_or_else(|| ServiceError::Journal {
            key: key.into(),
            source: "record vanished after create reported it exists".into(),
        })?;
        if let Origin::Queue(msg) = origin {
            let redelivered = msg.info().map(|i| i.delivered > 1).unwrap_or(false);
            if let (true, Some(report)) = (redelivered, record.last_report.clone()) {
                self.publish_reports(&[(&report, correlation_id)]).await?;
            }
        }
        let mut ack = record.ack.unwrap_or_default();
        ack.duplicate = true;
        ack.order_status = record.status;
        info!(
            key,
            correlation_id, "duplicate client order id answered with the original outcome"
        );
        Ok(ack)
    }

    /// Steps 3-4: execute, publish, journal.
    async fn execute(
        &mut self,
        live: LiveOrder,
        valid: &ValidOrder,
        correlation_id: &str,
    ) -> Result<(), ServiceError> {
        let touched = self.venue.execute(live, valid, now_ns())?;
        self.publish(&touched, correlation_id).await?;
        self.journal(touched.into_iter().map(|t| t.order).collect())
            .await
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

    async fn publish(&self, touched: &[Touched], correlation_id: &str) -> Result<(), ServiceError> {
        let reports: Vec<_> = touched
            .iter()
            .flat_map(|t| t.reports.iter().map(|r| (r, correlation_id)))
            .collect();
        self.publish_reports(&reports).await
    }

    /// Publishes reports, each with its correlation id, pipelined (all sent in order, then all
    /// acks awaited), deduplicated by exec id. Retried as a whole: a report stored by an earlier
    /// attempt is a duplicate (same `Nats-Msg-Id`) inside EXECUTIONS' window, so a retry never
    /// stores a fill twice.
    async fn publish_reports(
        &self,
        reports: &[(&pb::ExecutionReport, &str)],
    ) -> Result<(), ServiceError> {
        if reports.is_empty() {
            return Ok(());
        }
        let attempt = || async {
            let mut acks = Vec::with_capacity(reports.len());
            for (r, correlation_id) in reports {
                let mut headers = HeaderMap::new();
                headers.insert(subjects::HEADER_MSG_ID, r.exec_id.as_str());
                headers.insert(subjects::HEADER_CORRELATION_ID, *correlation_id);
                let subject = subjects::executions(&r.account, &r.client_order_id);
                let ack = self
                    .js
                    .publish_with_headers(subject, headers, Bytes::from(r.encode_to_vec()))
                    .await?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await?;
            }
            Ok::<(), jetstream::context::PublishError>(())
        };
        let about = reports[0].1;
        attempt
            .retry(self.backoff())
            .notify(|e, delay| retrying("publish reports", about, e, delay))
            .await
            .map_err(|e| ServiceError::Publish(e.into()))?;
        for (r, correlation_id) in reports {
            debug!(exec_id = %r.exec_id, client_order_id = %r.client_order_id, correlation_id, exec_type = r.exec_type, "report published");
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
        let (ack, intake) = self.intake(order, &cid).await?;
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
            prepared.push(self.prepare(order, rejection, &cid)?);
            cids.push(cid);
        }
        let this = &*self;
        let created = try_join_all(prepared.iter().map(|p| this.create_prepared(p))).await?;
        self.failpoint("after_journal").await;

        let mut reports: Vec<(pb::ExecutionReport, usize)> = Vec::new();
        let mut writes: Vec<LiveOrder> = Vec::new();
        for (i, (p, created)) in prepared.into_iter().zip(created).enumerate() {
            let origin = Origin::Queue(&msgs[i]);
            match self.settle(p, created, &cids[i], &origin).await?.1 {
                Intake::Accepted(live, valid) => {
                    for t in self.venue.execute(*live, &valid, now_ns())? {
                        reports.extend(t.reports.into_iter().map(|r| (r, i)));
                        // Every state of a record within this batch carries the revision it
                        // had before the batch: the last state replaces the earlier ones.
                        match writes.iter_mut().find(|w| w.key == t.order.key) {
                            Some(w) => *w = t.order,
                            None => writes.push(t.order),
                        }
                    }
                }
                Intake::Rejected(rs) => reports.extend(rs.into_iter().map(|r| (r, i))),
                Intake::Answered => {}
            }
        }
        let tagged: Vec<_> = reports
            .iter()
            .map(|(r, i)| (r, cids[*i].as_str()))
            .collect();
        self.publish_reports(&tagged).await?;
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
            self.publish(std::slice::from_ref(&touched), &cid).await?;
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

    /// Status: the journal is authoritative (written before any ack).
    pub async fn on_status(&mut self, msg: Message) -> Result<(), ServiceError> {
        let reply = match pb::OrderStatusRequest::decode(msg.payload.clone()) {
            Err(e) => pb::OrderStatusReply {
                reason: RejectReason::Malformed as i32,
                text: format!("undecodable OrderStatusRequest: {e}"),
                ..Default::default()
            },
            Ok(req) if !valid_key(&req.account, &req.client_order_id) => pb::OrderStatusReply {
                reason: RejectReason::InvalidField as i32,
                text: format!(
                    "account {:?} / client_order_id {:?} must be [A-Za-z0-9_-]",
                    req.account, req.client_order_id
                ),
                ..Default::default()
            },
            Ok(req) => match self
                .load(&subjects::order_key(&req.account, &req.client_order_id))
                .await?
            {
                None => pb::OrderStatusReply {
                    found: false,
                    reason: RejectReason::UnknownOrder as i32,
                    ..Default::default()
                },
                Some((r, _)) => pb::OrderStatusReply {
                    found: true,
                    order_status: r.status,
                    last_report: r.last_report,
                    ..Default::default()
                },
            },
        };
        self.respond(msg.reply.as_ref(), reply.encode_to_vec())
            .await;
        Ok(())
    }

    /// Restores this engine's open orders after a restart (see the module docs).
    pub async fn recover(&mut self) -> Result<usize, ServiceError> {
        let status = self.kv.status().await.map_err(|e| ServiceError::Setup {
            what: "KV status",
            source: e.into(),
        })?;
        if status.values() == 0 {
            return Ok(0);
        }
        let mut watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| ServiceError::Setup {
                what: "KV watch",
                source: e.into(),
            })?;
        let mut mine = Vec::new();
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| ServiceError::Setup {
                what: "KV watch",
                source: e.into(),
            })?;
            if entry.operation == kv::Operation::Put {
                if let Ok(record) = OrderRecord::decode(entry.value.clone()) {
                    let st =
                        OrderStatus::try_from(record.status).unwrap_or(OrderStatus::Unspecified);
                    if record.engine_id == self.cfg.engine_id && !is_final(st) {
                        mine.push(LiveOrder::from_record(
                            entry.key.clone(),
                            record,
                            entry.revision,
                        ));
                    }
                }
            }
            if entry.delta == 0 {
                break;
            }
        }
        mine.sort_by_key(|o| o.record.seq);
        let n = mine.len();
        for mut live in mine {
            self.last_seq = self.last_seq.max(live.record.seq);
            let order = live.order().clone();
            let subject = subjects::executions(&order.account, &order.client_order_id);
            if let Ok(m) = self
                .executions
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                if let Ok(report) = pb::ExecutionReport::decode(m.payload.clone()) {
                    if report.seq > live.report_seq {
                        let avg = report
                            .avg_px
                            .as_ref()
                            .and_then(|d| fixed::from_decimal(d).ok())
                            .unwrap_or(0);
                        let cum = report
                            .cum_qty
                            .as_ref()
                            .and_then(|d| fixed::from_decimal(d).ok())
                            .unwrap_or(0);
                        live.adopt(report, fixed::notional_e16(avg, cum));
                    }
                }
            }
            let cid = live.record.correlation_id.clone();
            let st = live.status();
            let validator = Validator {
                symbols: &self.limits,
                max_notional: self.max_notional,
            };
            let touched = match validator.check(&order, now_ns()) {
                _ if is_final(st) => vec![Touched {
                    order: live,
                    reports: vec![],
                }],
                Ok(valid) => self.venue.execute(live, &valid, now_ns())?,
                Err(rej)
                    if st == OrderStatus::PendingNew
                        || rej.reason == RejectReason::DeadlineExceeded =>
                {
                    vec![Venue::reject(
                        live,
                        rej.reason,
                        &rej.errors,
                        &rej.text(),
                        now_ns(),
                    )?]
                }
                Err(rej) => {
                    warn!(key = %live.key, reason = %rej.text(), "recovered order no longer valid; left as is");
                    continue;
                }
            };
            info!(key = %touched[0].order.key, status = ?touched[0].order.status(), "recovered order");
            self.publish(&touched, &cid).await?;
            self.journal(touched.into_iter().map(|t| t.order).collect())
                .await?;
        }
        Ok(n)
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

/// True when account and client order id can form a KV key (and a subject token). Requests
/// naming anything else are answered, never looked up: a bad key must not stop the engine.
/// The committed definition of the engine's durable consumer (provisioning applies the same
/// file); used to re-create the consumer if it has disappeared.
const CONSUMER_DEFINITION: &str = include_str!("../../nats/jetstream/orders-engine.consumer.json");

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

fn valid_key(account: &str, client_order_id: &str) -> bool {
    crate::validate::valid_id(account, 32) && crate::validate::valid_id(client_order_id, 64)
}

fn correlation_id(headers: Option<&HeaderMap>) -> String {
    headers
        .and_then(|h| h.get(subjects::HEADER_CORRELATION_ID))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
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
    let mut lease = lease::acquire(&client, &cfg).await?;
    let (mut engine, consumer) = Engine::new(cfg.clone(), client.clone()).await?;
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
                Some(m) = submits.next() => engine.on_submit(m).await?,
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
