//! `bridge.v1.orders.queue.<account>` through the ORDERS pull consumer: the orders of one
//! pull, checked ([`crate::auth`]), taken in, executed and reported together, then acked (a
//! refused one terminated). A pull may also hold order batches (contract 1.2,
//! `bridge.v1.orders.batch.<account>`): [`super::queued_batch`] maps each message to its
//! orders, and everything below works on orders.

use std::time::Instant;

use async_nats::jetstream;
use futures::future::try_join_all;
use prost::Message as _;
use tracing::{debug, warn, Instrument};

use super::authorize::{echoed_id, NEW_ORDER};
use super::{malformed, order_span};
use crate::auth::Refusal;
use crate::commit::latest_writes;
use crate::contract;
use crate::engine::{now_ns, Engine, Intake};
use crate::error::EngineError;
use crate::intake::Prepared;
use crate::metrics::{Path, Stage};
use crate::proto::v1 as pb;
use crate::publish::Tagged;
use crate::trace::Trace;
use crate::validate::Rejection;
use crate::venue::Executed;

/// The order in a queued message. A malformed one is attributed through its subject and
/// `Nats-Msg-Id` so that the orchestrator still gets a REJECTED report for it.
fn decode_queued(msg: &jetstream::Message) -> (pb::NewOrder, Option<Rejection>) {
    match pb::NewOrder::decode(msg.payload.clone()) {
        Ok(o) => (o, None),
        Err(e) => {
            let order = pb::NewOrder {
                account: contract::account_of_queue_subject(msg.subject.as_str())
                    .unwrap_or("")
                    .into(),
                client_order_id: msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(contract::HEADER_MSG_ID))
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default(),
                ..Default::default()
            };
            (order, Some(malformed(&e)))
        }
    }
}

impl Engine {
    /// Queued orders: the same protocol, applied to every message of a pull at once so that
    /// the JetStream round trips of one step overlap instead of queuing one order behind the
    /// next. Step 1 writes all records concurrently; step 3 executes them in delivery order
    /// (price-time priority is the delivery order) and publishes all reports pipelined, in
    /// that order; step 4 writes each touched record once, with its latest state. Each ORDERS
    /// message is acked only after all of that.
    pub async fn on_queued_batch(
        &mut self,
        msgs: &[jetstream::Message],
    ) -> Result<(), EngineError> {
        // Per order (a message brings one, or a batch's; see `queued_batch`), in delivery order.
        let mut traces = Vec::with_capacity(msgs.len());
        let mut spans = Vec::with_capacity(msgs.len());
        let mut prepared = Vec::with_capacity(msgs.len());
        // Per message: its span, whether it is terminated (refused) rather than acked, and how
        // many orders it brought (the ack stage is timed per order).
        let mut taken_msgs = Vec::with_capacity(msgs.len());
        // Orders naming a session this engine does not know open: read it first.
        self.learn_queued_sessions(msgs).await?;
        for msg in msgs {
            let trace = Trace::of(msg.headers.as_ref());
            let taken = self.take_message(msg, &trace)?;
            let orders = taken.orders.len();
            for (p, span) in taken.orders {
                prepared.push(p);
                traces.push(trace.clone());
                spans.push(span);
            }
            taken_msgs.push((taken.span, taken.terminate, orders));
        }
        let this = &*self;
        let started = Instant::now();
        let created = try_join_all(prepared.iter().map(|p| this.create_prepared(p))).await?;
        self.metrics
            .stage_each(Stage::Dedupe, started.elapsed(), prepared.len());
        self.failpoint.reached("after_store").await;

        // In delivery order: what each order did (an execution, or the reports of its
        // rejection), and the index of its message.
        let mut executions: Vec<(Executed, usize)> = Vec::new();
        let mut rejections: Vec<(Vec<pb::ExecutionReport>, usize)> = Vec::new();
        // The books an execution touched: their depth is exported afterwards.
        let mut symbols = std::collections::BTreeSet::new();
        for (i, (p, created)) in prepared.into_iter().zip(created).enumerate() {
            let settled = self
                .settle(p, created, &traces[i])
                .instrument(spans[i].clone())
                .await?;
            self.metrics.order(Path::Queued, &settled.0);
            match settled.1 {
                Intake::Accepted(live, valid) => {
                    symbols.insert(live.order().symbol.clone());
                    let started = Instant::now();
                    let symbol = live.order().symbol.clone();
                    let now = now_ns();
                    let executed = spans[i].in_scope(|| self.venue.execute(*live, &valid, now))?;
                    self.md.executed(&symbol, &executed, now);
                    self.runtime.in_force.positions.record(&executed);
                    self.metrics.stage(Stage::Match, started.elapsed());
                    executions.push((executed, i));
                }
                Intake::Rejected(rs) => rejections.push((rs, i)),
                Intake::Answered => {}
            }
        }
        let mut groups: Vec<(usize, Vec<Tagged<'_>>)> = Vec::new();
        for (e, i) in &executions {
            let trace = &traces[*i];
            for t in &e.expired {
                groups.push((*i, t.reports.iter().map(|r| (r, trace)).collect()));
            }
            let all = e.touched.iter().flat_map(|t| t.reports.iter());
            groups.push((*i, all.map(|r| (r, trace)).collect()));
        }
        for (rs, i) in &rejections {
            let trace = &traces[*i];
            groups.push((*i, rs.iter().map(|r| (r, trace)).collect()));
        }
        groups.sort_by_key(|(i, _)| *i); // stable: delivery order, each order's facts in order
        let groups: Vec<Vec<Tagged<'_>>> = groups.into_iter().map(|(_, g)| g).collect();
        let reported = executions.len() + rejections.len();
        // Every state of a record within this batch: the last one is written.
        let writes = latest_writes(executions.iter().flat_map(|(e, _)| e.orders()));
        // One journal entry for the whole pull; its messages are acked once it is stored.
        self.journal_group(&groups, &writes).await?;
        let started = Instant::now();
        self.project(groups, writes).await?;
        self.metrics
            .stage_each(Stage::Publish, started.elapsed(), reported);
        self.observe_books(symbols.iter().map(String::as_str));
        for (msg, (span, refused, orders)) in msgs.iter().zip(taken_msgs) {
            let started = Instant::now();
            if refused {
                term_queued(msg).instrument(span.clone()).await;
            } else {
                ack_queued(msg).instrument(span.clone()).await;
            }
            self.metrics
                .stage_each(Stage::Ack, started.elapsed(), orders);
        }
        Ok(())
    }

    /// One queued message up to its prepared intake: the authorization checks first (the
    /// window against the time JetStream stored it, redeliveries of its stream sequence not
    /// replays), then decoding and validation. True when refused by the checks.
    pub(crate) fn take_queued(
        &mut self,
        msg: &jetstream::Message,
        trace: &Trace,
    ) -> Result<(Prepared, tracing::Span, bool), EngineError> {
        let started = Instant::now();
        self.count_message(msg.headers.as_ref(), msg.payload.len(), NEW_ORDER);
        let (stored_ns, stream_seq) = self.stored_at(msg);
        if let Some(rejection) = self.check_version(msg.headers.as_ref()) {
            return self.refuse_queued_version(msg, rejection, trace);
        }
        let subject = msg.subject.as_str();
        let verified = match self.authorize(
            subject,
            &msg.payload,
            msg.headers.as_ref(),
            stored_ns,
            stream_seq,
        ) {
            Ok(v) => v,
            Err(refusal) => return self.refuse_queued(msg, &refusal, trace),
        };
        let (order, rejection) = decode_queued(msg);
        if rejection.is_some() {
            self.counters.malformed += 1;
        }
        let mut signer = String::new();
        if let (Some(v), None) = (&verified, &rejection) {
            if let Err(refusal) = v.check_account(&order.account) {
                return self.refuse_queued(msg, &refusal, trace);
            }
            signer.clone_from(&v.nkey);
        }
        self.metrics.stage(Stage::Decode, started.elapsed());
        let span = order_span(trace, &order.account, &order.client_order_id);
        let len = msg.payload.len();
        let started = Instant::now();
        let p = span.in_scope(|| {
            debug!(symbol = %order.symbol, stream_seq = stream_seq.unwrap_or(0), "order received (queued)");
            self.prepare(order, rejection, len, trace, &signer)
        })?;
        self.metrics.stage(Stage::Validate, started.elapsed());
        Ok((p, span, false))
    }

    /// A refused queued order: logged, alerted, counted; taken in like an invalid order
    /// (REJECTED record and report under the subject's account and the message's client order
    /// id, see [`crate::intake::refusal`]); its message is then terminated.
    fn refuse_queued(
        &mut self,
        msg: &jetstream::Message,
        refusal: &Refusal,
        trace: &Trace,
    ) -> Result<(Prepared, tracing::Span, bool), EngineError> {
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(contract::HEADER_MSG_ID))
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| echoed_id(&msg.payload, |o: &pb::NewOrder| &o.client_order_id));
        let span = order_span(trace, &refusal.account, &id);
        let correlation_id = trace.correlation_id.as_str();
        span.in_scope(|| self.refused(refusal, msg.subject.as_str(), correlation_id, &id));
        let p = span.in_scope(|| self.prepare_refusal(refusal, &id, correlation_id))?;
        Ok((p, span, true))
    }
}

/// Terminates a refused queued message once its rejection is stored and reported: JetStream
/// never redelivers it (and removes it from the work queue). A lost term is like a lost ack:
/// the redelivery finds the rejection's record and is answered as its duplicate.
async fn term_queued(msg: &jetstream::Message) {
    match msg.ack_with(jetstream::AckKind::Term).await {
        Ok(()) => debug!("refused queued order terminated"),
        Err(e) => {
            warn!(error = %e, "term of a refused queued order not sent; a redelivery will be answered as a duplicate")
        }
    }
}

/// Acks a queued message whose order is stored and reported, without waiting for the
/// server's confirmation. If the ack is lost (e.g. the server restarted and no longer knows
/// this delivery; such an ack is never answered) the message is redelivered after the
/// consumer's ack_wait, finds the order's record and is answered as a duplicate: a lost ack
/// delays the message's removal but can never re-execute the order.
async fn ack_queued(msg: &jetstream::Message) {
    match msg.ack().await {
        Ok(()) => debug!("queued order acked"),
        Err(e) => {
            warn!(error = %e, "ack of a queued order not sent; a redelivery will be answered as a duplicate")
        }
    }
}
