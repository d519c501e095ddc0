//! The engine's state (order store, journal, report stream, venue, limits) and the steps of
//! the durability protocol every command shares: take an order in, answer a duplicate,
//! execute, commit.
//!
//! Durability protocol for one order (both paths):
//! 1. validate; `kv.create(<account>.<client_order_id>)` with status PENDING_NEW (or the final
//!    REJECTED/EXPIRED record). `create` is atomic, so it is the deduplication point for every
//!    engine sharing the bucket: if the key exists, the original ack is answered.
//! 2. execute in the venue (in memory).
//! 3. commit the group (`commit.rs`): ONE journal entry (`journal.rs`, fsynced) holds every
//!    record and report of the command (of the whole queued pull, or every synchronous order
//!    taken together); once it is stored the ack is answered (synchronous path) and the ORDERS
//!    message acked (queued path), and the projections are written: the reports to EXECUTIONS
//!    (`Nats-Msg-Id = exec_id`; subscribers of `bridge.v1.exec.<account>.>` see them only
//!    now: durable before visible) and the records to the order store.
//!
//! A crash before the journal entry loses nothing acknowledged: recovery (`recovery.rs`)
//! executes a PENDING_NEW record it finds, and a queued message not acked is redelivered. A
//! crash after it is repaired from the journal (`repair.rs`) at start-up and after every
//! reconnect, before anything is served. A journal write that fails for good or past its
//! retries stops the engine (exit non-zero), and so does a report publish refused for good.
//!
//! Failures no retry can cure ([`crate::jetstream_errors::permanent`]: payload too large, a
//! permission violation, a bad request, an invalid key) are never retried. Step 1's
//! `kv.create` refused for good answers the order REJECTED (ENGINE_UNAVAILABLE) and the engine
//! carries on; a refused record write is logged at ERROR and the engine carries on, because
//! the journal holds the record and EXECUTIONS the reports, which recovery trusts over the
//! record. Intake bounds every record and report ([`crate::intake`]), so no order can cause one
//! of these.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::PullConsumer};
use async_nats::Client;
use bytes::Bytes;
use tracing::{debug, error, info, warn};

use crate::alerts::Alerts;
use crate::auth::{Authorizer, Entitlements, Refusal};
use crate::book::Side;
use crate::config::Config;
use crate::consumer;
use crate::engine_key::EngineKey;
use crate::error::EngineError;
use crate::failpoint::Failpoint;
use crate::feed::Feeds;
use crate::intake::{self, IntakeCounters, Prepared};
use crate::jetstream_errors::Readiness;
use crate::journal::Journal;
use crate::limits::Limits;
use crate::marketdata::MarketData;
use crate::md_publish::MdPublisher;
use crate::metrics::{Metrics, Stage};
use crate::proto::v1 as pb;
use crate::publish::{Reports, Tagged};
use crate::runtime_config::RuntimeConfig;
use crate::store::{Created, OrderStore};
use crate::trace::Trace;
use crate::validate::{echo, Rejection, ValidOrder};
use crate::venue::{Executed, LiveOrder, Venue};

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Result of taking an order in.
pub enum Intake {
    /// Stored as PENDING_NEW: execute it.
    Accepted(Box<LiveOrder>, ValidOrder),
    /// Stored as REJECTED/EXPIRED: publish these reports.
    Rejected(Vec<pb::ExecutionReport>),
    /// Unkeyed, or a duplicate answered with its original outcome: nothing left to do.
    Answered,
}

pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) client: Client,
    pub(crate) store: OrderStore,
    /// This engine's journal: every commit group's durable entry (`commit.rs`).
    pub(crate) journal: Journal,
    /// The connection's connect count when the projections were last repaired (`repair.rs`).
    pub(crate) connects_repaired: u64,
    pub(crate) reports: Reports,
    pub(crate) venue: Venue,
    pub(crate) limits: Limits,
    pub(crate) last_seq: u64,
    pub(crate) failpoint: Failpoint,
    /// The authorization checks; `None` when `require_signatures` is off.
    pub(crate) auth: Option<Authorizer>,
    pub(crate) alerts: Alerts,
    pub(crate) alerts_raised: u64,
    pub counters: IntakeCounters,
    /// Every metric and the readiness flags (shared with the HTTP server).
    pub metrics: Arc<Metrics>,
    /// The venue's market data (what was published, what waits), its publisher, and when
    /// the pending changes are due (coalescing; `None`: nothing pending).
    pub(crate) md: MarketData,
    pub(crate) md_out: MdPublisher,
    pub(crate) md_due: Option<tokio::time::Instant>,
    /// The input streams (credit) and their reference prices.
    pub(crate) feeds: Feeds,
    /// The latest streamed reference price per symbol: in force over the configured one, also
    /// after a configuration change rebuilds `limits`.
    pub(crate) streamed_prices: std::collections::HashMap<String, i64>,
    /// The runtime configuration in force (`runtime_config`): `limits` is its effective limits.
    pub(crate) runtime: RuntimeConfig,
    /// Orchestrator sessions (cancel on disconnect, `commands/session.rs`).
    pub(crate) sessions: crate::commands::session::SessionDesk,
}

impl Engine {
    /// Binds to the provisioned streams, consumer and bucket (it never creates them: the
    /// engine role may not) and sets up an empty venue. `entitlements`: what signed order
    /// operations are checked against (`None`: signatures are not required). The report chain
    /// starts at genesis until `reports.open_chain()` (before recovery, `run.rs`); `key` signs
    /// its links.
    pub async fn new(
        cfg: Config,
        client: Client,
        entitlements: Option<Entitlements>,
        key: Option<Arc<EngineKey>>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, PullConsumer), EngineError> {
        let js = jetstream::new(client.clone());
        let readiness = Arc::new(Readiness::default());
        let failpoint = Failpoint::new(cfg.failpoint.clone(), client.clone());
        let store = OrderStore::bind(&js, &cfg, readiness.clone()).await?;
        let journal = Journal::bind(&js, &cfg, readiness.clone()).await?;
        let reports = Reports::bind(
            &js,
            &cfg,
            readiness,
            failpoint.clone(),
            key,
            metrics.clone(),
        )
        .await?;
        let consumer = consumer::bind(&js).await?;
        let sessions = crate::commands::session::SessionDesk::bind(&js, &cfg).await?;
        let limits = cfg.core_limits()?;
        let venue = Venue::new(&limits.symbols).with_day_session_end(cfg.day_session_end()?);
        let auth = entitlements.map(|e| Authorizer::new(e, cfg.signature_window_ms));
        let alerts = Alerts::start(client.clone());
        let md = MarketData::new(now_ns().to_string(), limits.symbols.keys());
        let md_out = MdPublisher::start(client.clone(), metrics.clone());
        let feeds = Feeds::new(cfg.feed_window, cfg.feed_max_streams);
        let runtime = RuntimeConfig::new(limits.clone(), client.clone(), cfg.engine_id.clone());
        Ok((
            Engine {
                cfg,
                client,
                store,
                journal,
                connects_repaired: 0,
                reports,
                venue,
                limits,
                last_seq: 0,
                failpoint,
                auth,
                alerts,
                alerts_raised: 0,
                counters: IntakeCounters::default(),
                metrics,
                md,
                md_out,
                md_due: None,
                feeds,
                streamed_prices: std::collections::HashMap::new(),
                runtime,
                sessions,
            },
            consumer,
        ))
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        let now = u64::try_from(now_ns()).unwrap_or(0);
        self.last_seq = (self.last_seq + 1).max(now);
        self.last_seq
    }

    /// Validation and the record to store (step 1 without its write; [`intake::prepare`]).
    pub(crate) fn prepare(
        &mut self,
        order: pb::NewOrder,
        rejection: Option<Rejection>,
        payload_len: usize,
        trace: &Trace,
        signer: &str,
    ) -> Result<Prepared, EngineError> {
        let correlation_id = trace.correlation_id.as_str();
        let seq = self.next_seq();
        let validator = self.limits.validator();
        let now = now_ns();
        // The kill switch (runtime configuration), for an order that passes every other check.
        let rejection = rejection
            .or_else(|| self.trading_gate(&validator, &order, now))
            .or_else(|| self.session_gate(&validator, &order, signer, now));
        let ctx = intake::Context {
            validator: &validator,
            engine_id: &self.cfg.engine_id,
            now,
            signer,
        };
        let mut prepared =
            intake::prepare(&ctx, order, rejection, payload_len, seq, correlation_id)?;
        if let Prepared::Accepted(live, _) = &mut prepared {
            // What its reports may say to its sender (order.rs, `reason_for_sender`).
            live.record
                .sender_contract_version
                .clone_from(&trace.schema_version);
        }
        if let Prepared::Unkeyed(ack) = &prepared {
            warn!(client_order_id = %echo(&ack.client_order_id), reason = %ack.text, "order rejected (unkeyed)");
        }
        Ok(prepared)
    }

    /// A queued order refused by the authorization checks, prepared as an invalid one
    /// ([`intake::refusal`]): stored REJECTED under the subject's account, reported.
    pub(crate) fn prepare_refusal(
        &mut self,
        refusal: &Refusal,
        client_order_id: &str,
        correlation_id: &str,
    ) -> Result<Prepared, EngineError> {
        let seq = self.next_seq();
        let validator = self.limits.validator();
        // The signer is recorded only once its signature verified.
        let signer = if refusal.identity.is_some() {
            refusal.signer.as_str()
        } else {
            ""
        };
        let ctx = intake::Context {
            validator: &validator,
            engine_id: &self.cfg.engine_id,
            now: now_ns(),
            signer,
        };
        let reason = refusal.kind.reject_reason();
        Ok(intake::refusal(
            &ctx,
            &refusal.account,
            client_order_id,
            reason,
            &refusal.text,
            seq,
            correlation_id,
        )?)
    }

    /// Step 1's write: `kv.create` of a prepared order's record. `None`: no record (unkeyed).
    pub(crate) async fn create_prepared(
        &self,
        prepared: &Prepared,
    ) -> Result<Option<Created>, EngineError> {
        match prepared.store_entry() {
            Some((key, record)) => Ok(Some(self.store.create(key, record).await?)),
            None => Ok(None),
        }
    }

    /// What step 1's write decided: the ack to answer, and what is left to do.
    pub(crate) async fn settle(
        &mut self,
        prepared: Prepared,
        created: Option<Created>,
        trace: &Trace,
    ) -> Result<(pb::OrderAck, Intake), EngineError> {
        match (prepared, created) {
            (Prepared::Unkeyed(ack), _) => Ok((ack, Intake::Answered)),
            (Prepared::Rejected(touched), Some(Created::Written(_))) => {
                let ack = touched.order.record.ack.clone().unwrap_or_default();
                info!(reason = %ack.text, "order rejected");
                Ok((ack, Intake::Rejected(touched.reports)))
            }
            (Prepared::Accepted(live, valid), Some(Created::Written(_))) => {
                let ack = live.record.ack.clone().unwrap_or_default();
                debug!(engine_order_id = %live.record.engine_order_id, "order accepted and stored");
                Ok((ack, Intake::Accepted(live, valid)))
            }
            (Prepared::Rejected(touched), Some(Created::Refused(why))) => {
                // Rejected anyway: answer the validation's verdict, without a stored record.
                let ack = touched.order.record.ack.clone().unwrap_or_default();
                error!(key = %touched.order.key, error = %why, reason = %ack.text, "order store refused a rejected order's record for good; answered without it");
                Ok((ack, Intake::Rejected(touched.reports)))
            }
            (Prepared::Accepted(live, _), Some(Created::Refused(why))) => {
                let (ack, reports) = intake::refused(&live, &why, &self.cfg.engine_id, now_ns())?;
                error!(key = %live.key, error = %why, "order store refused an order's record for good: order rejected, not retried");
                Ok((ack, Intake::Rejected(reports)))
            }
            (Prepared::Rejected(t), _) => {
                Ok((self.duplicate(&t.order.key, trace).await?, Intake::Answered))
            }
            (Prepared::Accepted(live, _), _) => {
                Ok((self.duplicate(&live.key, trace).await?, Intake::Answered))
            }
        }
    }

    /// Answers a re-sent client order id with the original ack. The record's latest report is
    /// published again if EXECUTIONS does not hold it yet (the first engine died between its
    /// store write and its publish, or the record is a tombstone whose REJECTED report is
    /// published when the first order hits it); never otherwise, so that a replay cannot store
    /// an exec id twice, even after JetStream's duplicate window.
    pub(crate) async fn duplicate(
        &self,
        key: &str,
        trace: &Trace,
    ) -> Result<pb::OrderAck, EngineError> {
        let (record, _) = self.store.load_existing(key).await?;
        if !record.alias_of.is_empty() {
            // The id is a replace's (contract 1.1): never an order's.
            warn!(key, alias_of = %record.alias_of, "an order reuses a replace's client order id: rejected");
            let engine_id = &self.cfg.engine_id;
            return Ok(crate::alias::id_taken_by_replace(
                &record,
                engine_id,
                now_ns(),
            ));
        }
        if let Some(report) = &record.last_report {
            let original = record
                .order
                .as_ref()
                .map_or(report.client_order_id.as_str(), |o| &o.client_order_id);
            if !self.reports.stored(original, report).await? {
                self.reports.publish(vec![vec![(report, trace)]]).await?;
            }
        }
        let mut ack = record.ack.unwrap_or_default();
        ack.duplicate = true;
        ack.order_status = record.status;
        info!(
            key,
            tombstone = record.tombstone,
            "duplicate client order id answered with the original outcome"
        );
        Ok(ack)
    }

    /// Step 2: execute in the venue (in memory); the caller commits what it did.
    pub(crate) fn execute_in_venue(
        &mut self,
        live: LiveOrder,
        valid: &ValidOrder,
    ) -> Result<Executed, EngineError> {
        let symbol = live.order().symbol.clone();
        let metrics = self.metrics.clone();
        let now = now_ns();
        let executed = metrics.timed(Stage::Match, || self.venue.execute(live, valid, now))?;
        self.md.executed(&symbol, &executed, now);
        self.runtime.in_force.positions.record(&executed);
        self.observe_books([symbol.as_str()]);
        Ok(executed)
    }

    /// Steps 2-3 for one order: execute, commit.
    pub(crate) async fn execute(
        &mut self,
        live: LiveOrder,
        valid: &ValidOrder,
        trace: &Trace,
    ) -> Result<(), EngineError> {
        let executed = self.execute_in_venue(live, valid)?;
        let groups = execution_groups(&[(&executed, trace)]);
        self.commit(groups, executed.orders().collect()).await
    }

    /// `bridge_engine_book_depth` of these symbols' books, from the venue now.
    pub(crate) fn observe_books<'a>(&self, symbols: impl IntoIterator<Item = &'a str>) {
        for symbol in symbols {
            if let Some(book) = self.venue.book(symbol) {
                for side in [Side::Buy, Side::Sell] {
                    self.metrics
                        .book_depth(symbol, side.label(), book.orders(side));
                }
            }
        }
    }

    /// Commits records changed without a report (and any created since the last entry).
    pub(crate) async fn write_back(&mut self, orders: Vec<LiveOrder>) -> Result<(), EngineError> {
        self.commit(Vec::new(), orders.iter().collect()).await
    }

    /// A request to another engine (the cancel relay), carrying the request's ids.
    pub(crate) async fn request(
        &self,
        subject: String,
        payload: Bytes,
        trace: &Trace,
    ) -> Result<async_nats::Message, async_nats::RequestError> {
        let mut headers = async_nats::HeaderMap::new();
        trace.insert_into(&mut headers);
        self.client
            .request_with_headers(subject, headers, payload)
            .await
    }
}

/// The report groups of executions, in order: each expired order is its own fact, each
/// execution one fact (its order and every order it traded with).
pub(crate) fn execution_groups<'a>(
    executions: &[(&'a Executed, &'a Trace)],
) -> Vec<Vec<Tagged<'a>>> {
    let mut groups: Vec<Vec<Tagged<'a>>> = Vec::new();
    for (e, trace) in executions {
        for t in &e.expired {
            groups.push(t.reports.iter().map(|r| (r, *trace)).collect());
        }
        groups.push(
            e.touched
                .iter()
                .flat_map(|t| t.reports.iter().map(|r| (r, *trace)))
                .collect(),
        );
    }
    groups
}
