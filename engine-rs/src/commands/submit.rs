//! `bridge.v1.orders.submit`: a synchronous order. Parse, take in (store), ack once durable,
//! then execute.

use async_nats::Message;
use prost::Message as _;
use tracing::{warn, Instrument};

use super::{correlation_id, malformed, order_span, request_span};
use crate::engine::{Engine, Intake};
use crate::error::EngineError;
use crate::proto::v1 as pb;

impl Engine {
    /// Synchronous submit: ack once durable, then execute.
    pub async fn on_submit(&mut self, msg: Message) -> Result<(), EngineError> {
        let correlation_id = correlation_id(msg.headers.as_ref());
        let order = match pb::NewOrder::decode(msg.payload.clone()) {
            Ok(o) => o,
            Err(e) => {
                // Nothing in the bytes can be trusted to name the order: answer only.
                let rej = malformed(&e);
                request_span(&correlation_id)
                    .in_scope(|| warn!(reason = %rej.text(), "malformed order rejected"));
                let ack = self.unkeyed_reject(&pb::NewOrder::default(), &rej);
                self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
                return Ok(());
            }
        };
        let span = order_span(&correlation_id, &order.account, &order.client_order_id);
        self.submit(msg, order, &correlation_id)
            .instrument(span)
            .await
    }

    async fn submit(
        &mut self,
        msg: Message,
        order: pb::NewOrder,
        correlation_id: &str,
    ) -> Result<(), EngineError> {
        // The size limits (the whole message, then each field) are checked by intake, before
        // anything is stored.
        let (ack, intake) = self
            .intake(order, msg.payload.len(), correlation_id)
            .await?;
        self.respond(msg.reply.as_ref(), ack.encode_to_vec()).await;
        self.failpoint.reached("after_ack").await;
        if let Intake::Accepted(live, valid) = intake {
            self.execute(*live, &valid, correlation_id).await?;
        }
        Ok(())
    }
}
