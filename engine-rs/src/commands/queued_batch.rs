//! `bridge.v1.orders.batch.<account>` (contract 1.2) through the ORDERS pull consumer: one
//! message, many orders of one account ([`crate::intake::batch`] splits it). What a message
//! brings in, for [`Engine::on_queued_batch`]: the orders of a pull are the orders of its
//! messages, in delivery order, each of a batch right after the other.
//!
//! A batch is checked once as a message, then order by order:
//! - its contract version (`Bridge-Schema-Version`): refused, each order it carries is
//!   REJECTED (`UNSUPPORTED_VERSION`) as a single queued order is, and the message acked;
//! - the authorization checks ([`crate::auth`], checks 1-5: the signature covers the whole
//!   encoded batch, so it is verified once): refused, the refusal is logged, alerted and
//!   counted once, each order the batch seems to carry is REJECTED with the refusal's reason
//!   under the subject's account, and the message is terminated;
//! - decoding: a batch that is not an `OrderBatch` or is over its bounds is terminated
//!   unexecuted, logged at ERROR with its subject, `Nats-Msg-Id` and stream sequence, and
//!   counted (malformed / oversize) like a malformed queued order;
//! - per order: the payload's account must be the subject's (check 6; else that order is
//!   REJECTED `ACCOUNT_MISMATCH`, alerted, and the message terminated once every order is
//!   done), then the intake of a single queued order: validation (its own size against
//!   `MAX_NEW_ORDER_BYTES`), the order store's create (the per-order dedupe), execution in
//!   delivery order and reports.

use std::time::Instant;

use async_nats::jetstream;
use tracing::{debug, error, warn};

use super::authorize::ORDER_BATCH;
use super::order_span;
use crate::contract;
use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::intake::batch::{self, BatchError};
use crate::intake::Prepared;
use crate::metrics::Stage;
use crate::proto::v1::{self as pb, RejectReason};
use crate::trace::Trace;
use crate::validate::{truncate, MAX_CLIENT_ORDER_ID_BYTES};

/// What one ORDERS message brought in: its orders, each prepared and with its log span (one
/// order for a single queued order), the message's own span, and whether the message is
/// terminated (a refusal, or undecodable) rather than acked once its orders are done.
pub(crate) struct Taken {
    pub orders: Vec<(Prepared, tracing::Span)>,
    pub span: tracing::Span,
    pub terminate: bool,
}

/// True for a message of the batch subject (whatever its account token), or of a
/// partition's subject (an `OrderBatch` re-published by an engine, `commands/relay.rs`).
pub(crate) fn is_batch(msg: &jetstream::Message) -> bool {
    let subject = msg.subject.as_str();
    subject.starts_with(contract::QUEUE_BATCH_PREFIX) || is_repartitioned(subject)
}

/// True for a partition's subject: re-published by an engine, which checked the signature.
pub(crate) fn is_repartitioned(subject: &str) -> bool {
    subject.starts_with(contract::QUEUE_PARTITION_PREFIX)
}

/// The message's `Nats-Msg-Id` (empty when absent).
fn msg_id(msg: &jetstream::Message) -> &str {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(contract::HEADER_MSG_ID))
        .map_or("", |v| v.as_str())
}

impl Engine {
    /// One ORDERS message up to its orders' prepared intake: a batch, or a single queued order
    /// ([`Engine::take_queued`]).
    pub(crate) fn take_message(
        &mut self,
        msg: &jetstream::Message,
        trace: &Trace,
    ) -> Result<Taken, EngineError> {
        if is_batch(msg) {
            return self.take_batch(msg, trace);
        }
        let (p, span, refused) = self.take_queued(msg, trace)?;
        Ok(Taken {
            orders: vec![(p, span.clone())],
            span,
            terminate: refused,
        })
    }

    /// When JetStream stored a message (what a queued signature's window is checked against)
    /// and its stream sequence (its redeliveries are not replays); a redelivery is counted.
    pub(crate) fn stored_at(&self, msg: &jetstream::Message) -> (i64, Option<u64>) {
        match msg.info() {
            Ok(info) => {
                if info.delivered > 1 {
                    self.metrics.redelivered();
                }
                (
                    i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX),
                    Some(info.stream_sequence),
                )
            }
            Err(_) => (now_ns(), None),
        }
    }

    /// A batch message (see the module docs).
    fn take_batch(
        &mut self,
        msg: &jetstream::Message,
        trace: &Trace,
    ) -> Result<Taken, EngineError> {
        let started = Instant::now();
        let subject = msg.subject.as_str();
        let account = contract::account_of_batch_subject(subject)
            .or_else(|| contract::account_of_partition_subject(subject))
            .unwrap_or("");
        let id = truncate(msg_id(msg), 128);
        self.count_message(msg.headers.as_ref(), 0, ORDER_BATCH);
        let (stored_ns, stream_seq) = self.stored_at(msg);
        let span = tracing::info_span!(
            "batch",
            correlation_id = trace.correlation_id.as_str(),
            trace_id = trace.trace_id.as_str(),
            account = truncate(account, 32),
            msg_id = id,
            stream_seq = stream_seq.unwrap_or(0),
        );
        if let Some(rejection) = self.check_version(msg.headers.as_ref()) {
            span.in_scope(|| {
                warn!(
                    subject = truncate(subject, 256),
                    reason = %rejection.text(),
                    "order batch refused: unsupported contract version"
                );
            });
            let orders = self.reject_each(msg, account, trace, |engine, order| {
                engine.prepare(order, Some(rejection.clone()), 0, trace, "")
            })?;
            return Ok(Taken {
                orders,
                span,
                terminate: false,
            });
        }
        // Re-published to a partition by a peer engine: that engine checked the signature
        // (the original subject's) and names the signer; only engines may publish here.
        let relayed_signer = is_repartitioned(subject).then(|| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(contract::HEADER_SIGNER))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        });
        let authorized = match relayed_signer {
            Some(_) => Ok(None),
            None => self.authorize(
                subject,
                &msg.payload,
                msg.headers.as_ref(),
                stored_ns,
                stream_seq,
            ),
        };
        let verified = match authorized {
            Ok(v) => v,
            Err(refusal) => {
                let correlation_id = trace.correlation_id.as_str();
                span.in_scope(|| self.refused(&refusal, subject, correlation_id, id));
                let orders = self.reject_each(msg, &refusal.account, trace, |engine, o| {
                    engine.prepare_refusal(&refusal, &o.client_order_id, correlation_id)
                })?;
                return Ok(Taken {
                    orders,
                    span,
                    terminate: true,
                });
            }
        };
        let orders = match batch::decode(&msg.payload) {
            Ok(orders) => orders,
            Err(e) => {
                match e {
                    BatchError::TooLarge { .. } | BatchError::TooManyOrders => {
                        self.counters.oversize += 1;
                    }
                    BatchError::Wire { .. } | BatchError::Order { .. } => {
                        self.counters.malformed += 1;
                    }
                }
                self.metrics.reject(RejectReason::Malformed as i32);
                span.in_scope(|| {
                    error!(
                        subject = truncate(subject, 256),
                        error = %e,
                        "undecodable order batch terminated: none of its orders was taken in"
                    );
                });
                return Ok(Taken {
                    orders: Vec::new(),
                    span,
                    terminate: true,
                });
            }
        };
        self.metrics
            .stage_each(Stage::Decode, started.elapsed(), orders.len());
        span.in_scope(|| debug!(orders = orders.len(), "order batch received"));
        let correlation_id = trace.correlation_id.as_str();
        let mut terminate = false;
        let mut taken = Vec::with_capacity(orders.len());
        for batch::BatchOrder { order, encoded_len } in orders {
            let mut signer = relayed_signer.clone().unwrap_or_default();
            if let Some(v) = &verified {
                if let Err(refusal) = v.check_account(&order.account) {
                    terminate = true;
                    let id = truncate(&order.client_order_id, MAX_CLIENT_ORDER_ID_BYTES);
                    let order_span = order_span(trace, &refusal.account, id);
                    order_span.in_scope(|| self.refused(&refusal, subject, correlation_id, id));
                    let p = order_span
                        .in_scope(|| self.prepare_refusal(&refusal, id, correlation_id))?;
                    taken.push((p, order_span));
                    continue;
                }
                signer.clone_from(&v.nkey);
            }
            let order_span = order_span(trace, &order.account, &order.client_order_id);
            let started = Instant::now();
            let p = order_span.in_scope(|| {
                debug!(symbol = %order.symbol, stream_seq = stream_seq.unwrap_or(0), "order received (batch)");
                self.prepare(order, None, encoded_len, trace, &signer)
            })?;
            self.metrics.stage(Stage::Validate, started.elapsed());
            taken.push((p, order_span));
        }
        Ok(Taken {
            orders: taken,
            span,
            terminate,
        })
    }

    /// Every order a refused batch seems to carry (only its client order id is kept, under
    /// `account`, the subject's), prepared by `prepare` as a rejection; none when the batch
    /// does not decode.
    fn reject_each(
        &mut self,
        msg: &jetstream::Message,
        account: &str,
        trace: &Trace,
        mut prepare: impl FnMut(&mut Engine, pb::NewOrder) -> Result<Prepared, EngineError>,
    ) -> Result<Vec<(Prepared, tracing::Span)>, EngineError> {
        batch::echoed_ids(&msg.payload)
            .into_iter()
            .map(|id| {
                let id = truncate(&id, MAX_CLIENT_ORDER_ID_BYTES).to_string();
                let span = order_span(trace, account, &id);
                let order = pb::NewOrder {
                    account: account.into(),
                    client_order_id: id,
                    ..Default::default()
                };
                let p = span.in_scope(|| prepare(self, order))?;
                Ok((p, span))
            })
            .collect()
    }
}
