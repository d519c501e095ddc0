//! `bridge.v1.orders.cancel.<account>` (checked by [`crate::auth`] first) and
//! `bridge.v1.engine.<engine_id>.cancel` (relayed by a peer): cancel an order resting in this
//! engine's book, or relay the request to the engine whose book holds it. The order is named
//! by its client order id or by the id of a replace accepted for it.

use prost::Message as _;
use tracing::{debug, info};

use super::authorize::{echoed_id, CANCEL_REQUEST};
use super::{record_order, request_span, within};
use crate::ack::AckFor;
use crate::auth::Refusal;
use crate::contract;
use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::intake::{self, valid_key};
use crate::proto::v1::{self as pb, OrderStatus, RejectReason};
use crate::publish::Tagged;
use crate::service::{Incoming, ServiceError};
use crate::trace::Trace;
use crate::venue::is_final;

impl Engine {
    /// Cancel: here if the order rests in this engine's book, else forwarded to its owner.
    pub async fn on_cancel(&mut self, req: &Incoming, forwarded: bool) -> Result<(), EngineError> {
        let trace = Trace::of(req.msg().headers.as_ref());
        let span = request_span(&trace);
        within(span.clone(), self.cancel(req, forwarded, &trace, &span)).await
    }

    async fn cancel(
        &mut self,
        incoming: &Incoming,
        forwarded: bool,
        trace: &Trace,
        span: &tracing::Span,
    ) -> Result<(), EngineError> {
        let msg = incoming.msg();
        let correlation_id = trace.correlation_id.as_str();
        self.count_request(
            msg.reply.as_ref(),
            msg.headers.as_ref(),
            msg.payload.len(),
            CANCEL_REQUEST,
        );
        // A cancel relayed by a peer engine was checked by that engine (only engines may
        // publish to the relay subject).
        let verified = if forwarded {
            None
        } else {
            let subject = msg.subject.as_str();
            match self.authorize(subject, &msg.payload, msg.headers.as_ref(), now_ns(), None) {
                Ok(v) => v,
                Err(refusal) => {
                    return self.refuse_cancel(incoming, &refusal, correlation_id).await
                }
            }
        };
        let req = match pb::CancelRequest::decode(msg.payload.clone()) {
            Ok(r) => r,
            Err(e) => {
                self.counters.malformed += 1;
                incoming
                    .fail(ServiceError::undecodable(CANCEL_REQUEST, &e))
                    .await;
                self.metrics.reject(RejectReason::Malformed as i32);
                return Ok(());
            }
        };
        record_order(span, &req.account, &req.client_order_id);
        if let Some(Err(refusal)) = verified.as_ref().map(|v| v.check_account(&req.account)) {
            return self.refuse_cancel(incoming, &refusal, correlation_id).await;
        }
        let mut key = contract::order_key(&req.account, &req.client_order_id);
        let engine_id = self.cfg.engine_id.clone();
        let about = |order_status: i32| AckFor {
            client_order_id: &req.client_order_id,
            account: &req.account,
            engine_order_id: "",
            order_status,
            engine_id: &engine_id,
            now: now_ns(),
        };
        if !valid_key(&req.account, &req.client_order_id) {
            let ack = about(0).rejected(
                RejectReason::InvalidField,
                vec![],
                "account and client_order_id must be [A-Za-z0-9_-]",
            );
            self.answer_cancel(incoming, &ack).await;
            return Ok(());
        }
        // Named by a replace's id (contract 1.1): the order it amended.
        if self.venue.open_order(&key).is_none() {
            if let Some(original) = self.original_id(&req.account, &req.client_order_id).await? {
                key = contract::order_key(&req.account, &original);
            }
        }
        if let Some(touched) = self.venue.cancel(&key, now_ns())? {
            let ack = AckFor {
                engine_order_id: &touched.order.record.engine_order_id,
                ..about(OrderStatus::Canceled as i32)
            }
            .accepted("canceled");
            let tagged: Vec<Tagged<'_>> = touched.reports.iter().map(|r| (r, trace)).collect();
            let symbol = touched.order.order().symbol.clone();
            self.md.touch(&symbol, 1, now_ns());
            // Journaled, answered, then published and written.
            self.journal_group(std::slice::from_ref(&tagged), &[&touched.order])
                .await?;
            self.observe_books([symbol.as_str()]);
            info!(key, "order canceled");
            self.answer_cancel(incoming, &ack).await;
            self.project(vec![tagged], vec![&touched.order]).await?;
            return Ok(());
        }
        let ack = match self.store.load(&key).await? {
            None => about(0).rejected(RejectReason::UnknownOrder, vec![], "no such order"),
            Some((r, _))
                if is_final(
                    OrderStatus::try_from(r.status).unwrap_or(OrderStatus::Unspecified),
                ) =>
            {
                about(r.status).rejected(RejectReason::TooLate, vec![], "order is already final")
            }
            Some((r, _)) if r.engine_id != self.cfg.engine_id && !forwarded => {
                // The order rests in another engine's book: relay the request to its owner.
                let subject = contract::engine_cancel(&r.engine_id);
                match self.request(subject, msg.payload.clone(), trace).await {
                    Ok(answer) => {
                        // The owner's answer, as it is (its endpoint error included).
                        match ServiceError::of_answer(answer.headers.as_ref()) {
                            Some(error) => incoming.fail(error).await,
                            None => incoming.answer(answer.payload.to_vec()).await,
                        }
                        return Ok(());
                    }
                    Err(e) => about(r.status).rejected(
                        RejectReason::EngineUnavailable,
                        vec![],
                        &format!("owner engine {} unreachable: {e}", r.engine_id),
                    ),
                }
            }
            Some((r, _)) => about(r.status).rejected(
                RejectReason::TooLate,
                vec![],
                "order is not resting in a book",
            ),
        };
        self.answer_cancel(incoming, &ack).await;
        debug!(status = ack.status, reason = ack.reason, "cancel answered");
        Ok(())
    }

    /// A refused cancel: answered REJECTED with the refusal's reason and text, nothing
    /// canceled; logged, alerted and counted.
    async fn refuse_cancel(
        &mut self,
        incoming: &Incoming,
        refusal: &Refusal,
        correlation_id: &str,
    ) -> Result<(), EngineError> {
        let msg = incoming.msg();
        let id = echoed_id(&msg.payload, |r: &pb::CancelRequest| &r.client_order_id);
        self.refused(refusal, msg.subject.as_str(), correlation_id, &id);
        let ack = intake::refusal_ack(
            &refusal.account,
            &id,
            refusal.kind.reject_reason(),
            &refusal.text,
            &self.cfg.engine_id,
            now_ns(),
        );
        self.answer_cancel(incoming, &ack).await;
        Ok(())
    }

    /// Answers a cancel; a rejected one is counted by its reason.
    async fn answer_cancel(&self, incoming: &Incoming, ack: &pb::OrderAck) {
        if ack.status != pb::AckStatus::Accepted as i32 {
            self.metrics.reject(ack.reason);
        }
        incoming.answer(ack.encode_to_vec()).await;
    }
}
