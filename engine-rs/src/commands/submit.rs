//! `bridge.v1.orders.submit.<account>`: synchronous orders, taken together when several have
//! arrived (group commit, up to `sync_group_max`). Authorize, parse, take in (dedupe),
//! execute, journal the group once; ack once the journal entry is stored; then project.

use std::time::Instant;

use futures::future::try_join_all;
use prost::Message as _;
use tracing::{debug, warn, Instrument};

use super::authorize::{echoed_id, NEW_ORDER};
use super::{order_span, request_span};
use crate::auth::Refusal;
use crate::commit::latest_writes;
use crate::engine::{execution_groups, now_ns, Engine, Intake};
use crate::error::EngineError;
use crate::intake::{self, Prepared};
use crate::metrics::{Path, Stage};
use crate::proto::v1::{self as pb, RejectReason};
use crate::publish::Tagged;
use crate::service::{Incoming, ServiceError};
use crate::trace::Trace;
use crate::venue::Executed;

/// A synchronous order taken in, waiting for its group's commit.
struct Taken {
    /// Its request's index in the group.
    index: usize,
    trace: Trace,
    span: tracing::Span,
    prepared: Prepared,
}

/// What a taken order left to commit.
enum Outcome {
    Executed(Executed),
    Rejected(Vec<pb::ExecutionReport>),
    Answered,
}

impl Engine {
    /// Synchronous submits already received, taken together (group commit): each checked
    /// (signature, entitlement; a refusal or an undecodable request is answered at once),
    /// taken in (the records created concurrently), executed in arrival order, then ONE journal
    /// entry for the whole group; every ack is answered once it is stored, then the reports
    /// and records are projected. A lone order is a group of one: one journal write.
    pub async fn on_submits(&mut self, reqs: &[Incoming]) -> Result<(), EngineError> {
        let mut taken = Vec::with_capacity(reqs.len());
        for (index, req) in reqs.iter().enumerate() {
            let started = Instant::now();
            let Some((order, trace, signer)) = self.take_submit(req).await? else {
                continue;
            };
            let span = order_span(&trace, &order.account, &order.client_order_id);
            // An order naming a session this engine does not know open: read it first.
            self.learn_session(&order.session_id)
                .instrument(span.clone())
                .await?;
            let len = req.msg().payload.len();
            let prepared = span.in_scope(|| {
                debug!(symbol = %order.symbol, "order received (sync)");
                self.prepare(order, None, len, &trace, &signer)
            })?;
            self.metrics.stage(Stage::Validate, started.elapsed());
            taken.push(Taken {
                index,
                trace,
                span,
                prepared,
            });
        }
        if taken.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let this = &*self;
        let created = try_join_all(taken.iter().map(|t| this.create_prepared(&t.prepared))).await?;
        self.metrics
            .stage_each(Stage::Dedupe, started.elapsed(), taken.len());
        let mut done = Vec::with_capacity(taken.len());
        for (t, created) in taken.into_iter().zip(created) {
            let (ack, intake) = self
                .settle(t.prepared, created, &t.trace)
                .instrument(t.span.clone())
                .await?;
            let outcome = match intake {
                Intake::Accepted(live, valid) => {
                    Outcome::Executed(t.span.in_scope(|| self.execute_in_venue(*live, &valid))?)
                }
                Intake::Rejected(reports) => Outcome::Rejected(reports),
                Intake::Answered => Outcome::Answered,
            };
            done.push((t.index, t.trace, t.span, ack, outcome));
        }
        let mut groups: Vec<Vec<Tagged<'_>>> = Vec::new();
        let mut executed = Vec::new();
        for (_, trace, _, _, outcome) in &done {
            match outcome {
                Outcome::Executed(e) => {
                    groups.extend(execution_groups(&[(e, trace)]));
                    executed.push(e);
                }
                Outcome::Rejected(reports) => {
                    groups.push(reports.iter().map(|r| (r, trace)).collect());
                }
                Outcome::Answered => {}
            }
        }
        let writes = latest_writes(executed.iter().flat_map(|e| e.orders()));
        self.journal_group(&groups, &writes).await?;
        for (index, _, span, ack, _) in &done {
            self.acked(&reqs[*index], ack)
                .instrument(span.clone())
                .await;
        }
        self.project(groups, writes).await
    }

    /// One submit up to its order: counted, authorized, decoded, its account checked. `None`:
    /// answered already (refused, or undecodable).
    pub(crate) async fn take_submit(
        &mut self,
        req: &Incoming,
    ) -> Result<Option<(pb::NewOrder, Trace, String)>, EngineError> {
        let started = Instant::now();
        let msg = req.msg();
        let trace = Trace::of(msg.headers.as_ref());
        self.count_request(
            msg.reply.as_ref(),
            msg.headers.as_ref(),
            msg.payload.len(),
            NEW_ORDER,
        );
        let subject = msg.subject.as_str();
        // Relayed by a peer engine (partitioned engines): that engine checked the signature
        // and names the signer; only engines may publish to the relay subject.
        let relayed_signer = super::relay::relayed_signer(msg);
        let verified = match relayed_signer {
            Some(_) => None,
            None => {
                match self.authorize(subject, &msg.payload, msg.headers.as_ref(), now_ns(), None) {
                    Ok(v) => v,
                    Err(refusal) => {
                        self.refuse_submit(req, &refusal, &trace).await?;
                        return Ok(None);
                    }
                }
            }
        };
        let order = match pb::NewOrder::decode(msg.payload.clone()) {
            Ok(o) => o,
            Err(e) => {
                // Nothing in the bytes can be trusted to name the order: an endpoint error.
                self.counters.malformed += 1;
                let error = ServiceError::undecodable(NEW_ORDER, &e);
                request_span(&trace)
                    .in_scope(|| warn!(reason = %error.status, "malformed order rejected"));
                req.fail(error).await;
                self.metrics.reject(RejectReason::Malformed as i32);
                return Ok(None);
            }
        };
        self.metrics.stage(Stage::Decode, started.elapsed());
        let signer = match &verified {
            None => relayed_signer.unwrap_or_default(),
            Some(v) => match v.check_account(&order.account) {
                Ok(()) => v.nkey.clone(),
                Err(refusal) => {
                    self.refuse_submit(req, &refusal, &trace).await?;
                    return Ok(None);
                }
            },
        };
        Ok(Some((order, trace, signer)))
    }

    /// The ack of a journaled order, answered.
    async fn acked(&self, req: &Incoming, ack: &pb::OrderAck) {
        self.answer_order(req, ack).await;
        debug!(status = ack.status, duplicate = ack.duplicate, "ack sent");
        self.failpoint.reached("after_ack").await;
    }

    /// A refused submit: answered REJECTED with the refusal's reason and text, never stored,
    /// never executed; logged, alerted and counted.
    async fn refuse_submit(
        &mut self,
        req: &Incoming,
        refusal: &Refusal,
        trace: &Trace,
    ) -> Result<(), EngineError> {
        let msg = req.msg();
        let id = echoed_id(&msg.payload, |o: &pb::NewOrder| &o.client_order_id);
        let span = order_span(trace, &refusal.account, &id);
        let correlation_id = trace.correlation_id.as_str();
        span.in_scope(|| self.refused(refusal, msg.subject.as_str(), correlation_id, &id));
        let ack = intake::refusal_ack(
            &refusal.account,
            &id,
            refusal.kind.reject_reason(),
            &refusal.text,
            &self.cfg.engine_id,
            now_ns(),
        );
        self.answer_order(req, &ack).await;
        Ok(())
    }

    /// Answers a synchronous order with its ack (the `ack` stage), then counts it.
    async fn answer_order(&self, req: &Incoming, ack: &pb::OrderAck) {
        let started = Instant::now();
        req.answer(ack.encode_to_vec()).await;
        self.metrics.stage(Stage::Ack, started.elapsed());
        self.metrics.order(Path::Sync, ack);
    }
}
