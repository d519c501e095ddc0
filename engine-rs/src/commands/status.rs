//! `bridge.v1.orders.status.<account>`: an order's state from the order store, once the query
//! passed the checks of [`crate::auth`]; the order is named by its client order id or by the
//! id of a replace accepted for it (a refused query is answered not found with the
//! refusal's reason, and retires nothing). "Not found" is definitive: an id without a record
//! is retired by an atomic `kv.create` of a tombstone record before the engine answers
//! found=false; an order with that id arriving later finds the key taken and is answered as a
//! duplicate of the tombstone's REJECTED outcome.

use prost::Message as _;
use tracing::{debug, error, info};

use super::authorize::{echoed_id, refused_status, ORDER_STATUS_REQUEST};
use super::{record_order, request_span, within};
use crate::contract;
use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::intake::{self, valid_key};
use crate::proto::v1::{self as pb, RejectReason};
use crate::service::{Incoming, ServiceError};
use crate::store::Created;
use crate::trace::Trace;
use crate::validate::echo;

impl Engine {
    /// Status: the order store is authoritative (written before any ack). An id without a
    /// record is retired first ([`Engine::retire`]), so that "not found" stays true.
    pub async fn on_status(&mut self, req: &Incoming) -> Result<(), EngineError> {
        let trace = Trace::of(req.msg().headers.as_ref());
        let span = request_span(&trace);
        within(span.clone(), self.status(req, &trace.correlation_id, &span)).await
    }

    async fn status(
        &mut self,
        incoming: &Incoming,
        correlation_id: &str,
        span: &tracing::Span,
    ) -> Result<(), EngineError> {
        let msg = incoming.msg();
        self.count_request(
            msg.reply.as_ref(),
            msg.headers.as_ref(),
            msg.payload.len(),
            ORDER_STATUS_REQUEST,
        );
        let subject = msg.subject.as_str();
        let relayed = super::relay::relayed_signer(msg);
        let authorized = match relayed {
            Some(_) => Ok(None),
            None => self.authorize(subject, &msg.payload, msg.headers.as_ref(), now_ns(), None),
        };
        let verified = match authorized {
            Ok(v) => v,
            Err(refusal) => {
                let id = echoed_id(&msg.payload, |r: &pb::OrderStatusRequest| {
                    &r.client_order_id
                });
                self.refused(&refusal, subject, correlation_id, &id);
                let reply = refused_status(&refusal);
                self.answer_status(incoming, &reply).await;
                return Ok(());
            }
        };
        let decoded = match pb::OrderStatusRequest::decode(msg.payload.clone()) {
            Ok(d) => d,
            Err(e) => {
                self.counters.malformed += 1;
                incoming
                    .fail(ServiceError::undecodable(ORDER_STATUS_REQUEST, &e))
                    .await;
                self.metrics.reject(RejectReason::Malformed as i32);
                return Ok(());
            }
        };
        let reply = match decoded {
            req if !valid_key(&req.account, &req.client_order_id) => pb::OrderStatusReply {
                reason: RejectReason::InvalidField as i32,
                text: format!(
                    "account {} / client_order_id {} must be [A-Za-z0-9_-]",
                    echo(&req.account),
                    echo(&req.client_order_id)
                ),
                ..Default::default()
            },
            req => {
                record_order(span, &req.account, &req.client_order_id);
                if let Some(Err(refusal)) = verified.as_ref().map(|v| v.check_account(&req.account))
                {
                    self.refused(&refusal, subject, correlation_id, &req.client_order_id);
                    let reply = refused_status(&refusal);
                    self.answer_status(incoming, &reply).await;
                    return Ok(());
                }
                let key = contract::order_key(&req.account, &req.client_order_id);
                let record = match self.store.load(&key).await? {
                    // A replace's id (contract 1.1): the order it amended answers.
                    Some((r, _)) if !r.alias_of.is_empty() => {
                        let order = contract::order_key(&req.account, &r.alias_of);
                        Some(self.store.load_existing(&order).await?.0)
                    }
                    Some((r, _)) => Some(r),
                    None => None,
                };
                // Partitioned: a live order of another partition is answered by its owner,
                // whose answer includes everything it acknowledged.
                if let (None, Some(owner)) = (
                    &relayed,
                    record.as_ref().and_then(|r| self.live_elsewhere(r)),
                ) {
                    let signer = verified
                        .as_ref()
                        .map(|v| v.nkey.clone())
                        .unwrap_or_default();
                    self.relay_request(incoming, contract::engine_status(&owner), &signer);
                    return Ok(());
                }
                match record {
                    Some(r) => intake::status_reply(r),
                    None => self.retire(&req, &key, correlation_id).await?,
                }
            }
        };
        self.answer_status(incoming, &reply).await;
        debug!(
            found = reply.found,
            order_status = reply.last_report.as_ref().map_or(0, |r| r.order_status),
            "status answered"
        );
        Ok(())
    }

    /// Answers a status query; a refused or invalid one is counted by its reason ("not
    /// found", UNKNOWN_ORDER, is an answer, not a rejection).
    async fn answer_status(&self, incoming: &Incoming, reply: &pb::OrderStatusReply) {
        let reason = reply.reason;
        if reason != RejectReason::Unspecified as i32 && reason != RejectReason::UnknownOrder as i32
        {
            self.metrics.reject(reason);
        }
        incoming.answer(reply.encode_to_vec()).await;
    }

    /// Retires an id that has no record: an atomic `kv.create` of a tombstone, so that an order
    /// with this id arriving later (a submit still in flight, a queued copy) is answered as a
    /// duplicate of a REJECTED outcome and never executes. If the key was created meanwhile,
    /// the stored record answers. If the order store refuses the tombstone, the answer says
    /// that nothing is known (ENGINE_UNAVAILABLE), never "not found".
    async fn retire(
        &mut self,
        req: &pb::OrderStatusRequest,
        key: &str,
        correlation_id: &str,
    ) -> Result<pb::OrderStatusReply, EngineError> {
        let seq = self.next_seq();
        let record = intake::tombstone(
            &req.account,
            &req.client_order_id,
            &self.cfg.engine_id,
            seq,
            now_ns(),
            correlation_id,
        )?;
        match self.store.create(key, &record).await? {
            Created::Written(_) => {
                // Retired durably (journaled) before the reply says so.
                self.commit_created().await?;
                info!(key, "status of an unknown order: client order id retired");
                Ok(intake::status_reply(record))
            }
            Created::Exists => Ok(intake::status_reply(self.store.load_existing(key).await?.0)),
            Created::Refused(why) => {
                error!(key, error = %why, "could not retire an unknown client order id");
                Ok(pb::OrderStatusReply {
                    found: false,
                    reason: RejectReason::EngineUnavailable as i32,
                    text: format!(
                        "status unknown: the engine could not record the id as retired ({why}); \
                         ask again"
                    ),
                    ..Default::default()
                })
            }
        }
    }
}
