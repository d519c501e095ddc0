//! `bridge.v1.orders.submit.<account>`: a synchronous order. Authorize, parse, take in
//! (store), ack once durable, then execute.

use async_nats::Message;
use prost::Message as _;
use tracing::{debug, warn, Instrument};

use super::authorize::{echoed_id, NEW_ORDER};
use super::{malformed, order_span, request_span};
use crate::auth::Refusal;
use crate::engine::{now_ns, Engine, Intake};
use crate::error::EngineError;
use crate::intake;
use crate::proto::v1 as pb;
use crate::trace::Trace;

impl Engine {
    /// Synchronous submit: checked (signature, entitlement) before anything else, then ack
    /// once durable, then execute. A refusal is answered without a record.
    pub async fn on_submit(&mut self, msg: Message) -> Result<(), EngineError> {
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
                Err(refusal) => return self.refuse_submit(&msg, &refusal, &trace).await,
            };
        let order = match pb::NewOrder::decode(msg.payload.clone()) {
            Ok(o) => o,
            Err(e) => {
                // Nothing in the bytes can be trusted to name the order: answer only.
                self.counters.malformed += 1;
                let rej = malformed(&e);
                request_span(&trace)
                    .in_scope(|| warn!(reason = %rej.text(), "malformed order rejected"));
                let ack = self.unkeyed_reject(&pb::NewOrder::default(), &rej);
                self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
                return Ok(());
            }
        };
        let signer = match &verified {
            None => String::new(),
            Some(v) => match v.check_account(&order.account) {
                Ok(()) => v.nkey.clone(),
                Err(refusal) => return self.refuse_submit(&msg, &refusal, &trace).await,
            },
        };
        let span = order_span(&trace, &order.account, &order.client_order_id);
        self.submit(msg, order, &trace, &signer)
            .instrument(span)
            .await
    }

    async fn submit(
        &mut self,
        msg: Message,
        order: pb::NewOrder,
        trace: &Trace,
        signer: &str,
    ) -> Result<(), EngineError> {
        debug!(symbol = %order.symbol, "order received (sync)");
        // The size limits (the whole message, then each field) are checked by intake, before
        // anything is stored.
        let (ack, intake) = self.intake(order, msg.payload.len(), trace, signer).await?;
        self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
        debug!(status = ack.status, duplicate = ack.duplicate, "ack sent");
        self.failpoint.reached("after_ack").await;
        if let Intake::Accepted(live, valid) = intake {
            self.execute(*live, &valid, trace).await?;
        }
        Ok(())
    }

    /// A refused submit: answered REJECTED with the refusal's reason and text, never stored,
    /// never executed; logged, alerted and counted.
    async fn refuse_submit(
        &mut self,
        msg: &Message,
        refusal: &Refusal,
        trace: &Trace,
    ) -> Result<(), EngineError> {
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
        self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
        Ok(())
    }
}
