//! Orders naming a session (`NewOrder.session_id`), on both intake paths: the id's pattern is
//! the validator's (`crate::validate`, rule `pattern`); here, whether the session is open for
//! the order's signer ([`crate::sessions::Sessions::check_order`]: else REJECTED,
//! INVALID_FIELD, rule `open_session` or `session_owner`).
//!
//! A session opened through another engine moments ago may not have reached this engine's
//! watch yet: before an order naming a session this engine does not know open is taken in,
//! the bucket is read ([`Engine::learn_session`]), so that the answer never depends on which
//! engine took the open. Only such orders pay the read.

use async_nats::jetstream;
use prost::Message as _;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::intake::batch;
use crate::proto::v1 as pb;
use crate::sessions::valid_session_id;
use crate::validate::{Rejection, Validator};

/// The session id of an encoded NewOrder, read without decoding the rest (its field 12).
#[derive(Clone, PartialEq, prost::Message)]
struct SessionOf {
    #[prost(string, tag = "12")]
    session_id: String,
}

impl Engine {
    /// The refusal of an order whose session is not open for its signer; `None` for an order
    /// without a session, of an open one, or failing another check (refused by that check).
    pub(crate) fn session_gate(
        &self,
        validator: &Validator<'_>,
        order: &pb::NewOrder,
        signer: &str,
        now: i64,
    ) -> Option<Rejection> {
        if order.session_id.is_empty() {
            return None;
        }
        let refusal = self
            .sessions
            .known
            .check_order(&order.session_id, signer)
            .err()?;
        validator.check(order, now).ok()?;
        Some(refusal)
    }

    /// Before an order naming session `id` is taken in: if this engine does not know it open,
    /// reads its record from the bucket.
    pub(crate) async fn learn_session(&mut self, id: &str) -> Result<(), EngineError> {
        if id.is_empty() || !valid_session_id(id) || self.sessions.known.is_open(id) {
            return Ok(());
        }
        self.refresh_session(id).await
    }

    /// [`Engine::learn_session`] for every order of a pull.
    pub(crate) async fn learn_queued_sessions(
        &mut self,
        msgs: &[jetstream::Message],
    ) -> Result<(), EngineError> {
        for msg in msgs {
            if crate::commands::queued_batch::is_batch(msg) {
                // Each order of a batch (contract 1.2); one that does not decode names none.
                for range in batch::order_ranges(&msg.payload).unwrap_or_default() {
                    if let Ok(of) = SessionOf::decode(msg.payload.slice(range)) {
                        self.learn_session(&of.session_id).await?;
                    }
                }
            } else if let Ok(of) = SessionOf::decode(msg.payload.clone()) {
                self.learn_session(&of.session_id).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_id_is_read_alone_from_an_encoded_order() {
        let order = pb::NewOrder {
            client_order_id: "c1".into(),
            account: "ACC".into(),
            symbol: "AAPL".into(),
            quantity: Some(crate::fixed::to_decimal(5)),
            session_id: "s-1".into(),
            ..Default::default()
        };
        let of = SessionOf::decode(order.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(of.session_id, "s-1");
        let none = pb::NewOrder::default().encode_to_vec();
        assert_eq!(
            SessionOf::decode(none.as_slice())
                .expect("decodes")
                .session_id,
            ""
        );
    }
}
