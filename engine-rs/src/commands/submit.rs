//! `bridge.v1.orders.submit.<account>`: a synchronous order. Authorize, parse, take in
//! (dedupe), execute, journal; ack once the journal entry is stored; then project.

use std::time::Instant;

use prost::Message as _;
use tracing::{debug, warn, Instrument};

use super::authorize::{echoed_id, NEW_ORDER};
use super::{order_span, request_span};
use crate::auth::Refusal;
use crate::engine::{execution_groups, now_ns, Engine, Intake};
use crate::error::EngineError;
use crate::intake;
use crate::metrics::{Path, Stage};
use crate::proto::v1::{self as pb, RejectReason};
use crate::service::{Incoming, ServiceError};
use crate::trace::Trace;

impl Engine {
    /// Synchronous submit: checked (signature, entitlement) before anything else, then ack
    /// once durable, then execute. A refusal is answered without a record; an undecodable
    /// request with an endpoint error.
    pub async fn on_submit(&mut self, req: &Incoming) -> Result<(), EngineError> {
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
        let verified =
            match self.authorize(subject, &msg.payload, msg.headers.as_ref(), now_ns(), None) {
                Ok(v) => v,
                Err(refusal) => return self.refuse_submit(req, &refusal, &trace).await,
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
                return Ok(());
            }
        };
        self.metrics.stage(Stage::Decode, started.elapsed());
        let signer = match &verified {
            None => String::new(),
            Some(v) => match v.check_account(&order.account) {
                Ok(()) => v.nkey.clone(),
                Err(refusal) => return self.refuse_submit(req, &refusal, &trace).await,
            },
        };
        let span = order_span(&trace, &order.account, &order.client_order_id);
        self.submit(req, order, &trace, &signer)
            .instrument(span)
            .await
    }

    async fn submit(
        &mut self,
        req: &Incoming,
        order: pb::NewOrder,
        trace: &Trace,
        signer: &str,
    ) -> Result<(), EngineError> {
        debug!(symbol = %order.symbol, "order received (sync)");
        // The size limits (the whole message, then each field) are checked by intake, before
        // anything is stored.
        let (ack, intake) = self
            .intake(order, req.msg().payload.len(), trace, signer)
            .await?;
        match intake {
            Intake::Accepted(live, valid) => {
                let executed = self.execute_in_venue(*live, &valid)?;
                let groups = execution_groups(&[(&executed, trace)]);
                let writes: Vec<_> = executed.orders().collect();
                self.journal_group(&groups, &writes).await?;
                self.acked(req, &ack).await;
                self.project(groups, writes).await?;
            }
            Intake::Rejected(reports) => {
                let groups = vec![reports.iter().map(|r| (r, trace)).collect()];
                self.journal_group(&groups, &[]).await?;
                self.acked(req, &ack).await;
                self.project(groups, Vec::new()).await?;
            }
            Intake::Answered => {
                self.commit_created().await?;
                self.acked(req, &ack).await;
            }
        }
        Ok(())
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
