//! The contract version check of every order operation ([`crate::schema_version`]), done once
//! for all of them before the command runs: the orchestrator's requests (submit, cancel,
//! status, replace, mass cancel, session open and close) in [`Engine::dispatch`] and
//! [`Engine::answer_statuses`], queued orders in `take_queued`. Requests relayed by a peer
//! engine were checked by that engine and are not checked again.
//!
//! Every checked operation is counted by its sender's version
//! (`bridge_engine_schema_version_requests_total`); the version is also a field of the
//! request's log span ([`crate::trace::Trace::schema_version`]).
//!
//! A refused request (another major, or an unparsable header) changes nothing: it is answered
//! in its endpoint's reply type with reason `UNSUPPORTED_VERSION` and the field error, logged
//! at WARN and counted by its reason. The check comes before the signature check: a sender
//! of another major cannot be assumed to sign by this major's rules, and the refusal tells it
//! only which version this engine speaks.

use async_nats::{jetstream, HeaderMap};
use prost::Message as _;
use tracing::warn;

use super::authorize::echoed_id;
use super::{order_span, request_span, Request};
use crate::ack::AckFor;
use crate::contract;
use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::intake::Prepared;
use crate::proto::v1::{self as pb, AckStatus, OrderStatus};
use crate::schema_version::{check, ours, Checked};
use crate::service::Incoming;
use crate::trace::Trace;
use crate::validate::{truncate, Rejection, MAX_ACCOUNT_BYTES, MAX_CLIENT_ORDER_ID_BYTES};

/// The orchestrator operations whose version is checked, by the reply type they answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Submit,
    Cancel,
    Status,
    Replace,
    MassCancel,
    SessionOpen,
    SessionClose,
}

impl Request {
    /// The operation and request to check the version of (`None`: not an orchestrator order
    /// operation, or relayed by a peer engine).
    pub(crate) fn versioned(&self) -> Option<(Operation, &Incoming)> {
        match self {
            Request::Submit(r) | Request::ForwardedSubmit(r) => Some((Operation::Submit, r)),
            Request::Cancel(r) => Some((Operation::Cancel, r)),
            Request::Status(r) => Some((Operation::Status, r)),
            Request::Replace(r) => Some((Operation::Replace, r)),
            Request::MassCancel(r) => Some((Operation::MassCancel, r)),
            Request::SessionOpen(r) => Some((Operation::SessionOpen, r)),
            Request::SessionClose(r) => Some((Operation::SessionClose, r)),
            Request::ForwardedCancel(_)
            | Request::ForwardedMassCancel(_)
            | Request::MdSnapshot(_)
            | Request::FeedOpen(_)
            | Request::FeedData(_)
            | Request::SessionHeartbeat(_)
            | Request::ReloadEntitlements => None,
        }
    }
}

impl Engine {
    /// Checks a message's `Bridge-Schema-Version` and counts it by version: the refusal, if
    /// it is refused.
    pub(crate) fn check_version(&self, headers: Option<&HeaderMap>) -> Option<Rejection> {
        let header = headers
            .and_then(|h| h.get(contract::HEADER_SCHEMA_VERSION))
            .map(|v| v.as_str());
        let speaks = ours();
        let checked: Checked = check(header, speaks);
        self.metrics.versions.seen(&checked.label(speaks));
        checked.rejection()
    }

    /// A queued order refused for its version, prepared like an invalid order: REJECTED with
    /// the version's reason and field error, stored under the subject's account and the
    /// message's client order id (nothing else of the payload is kept), reported; its message
    /// is then acked. Not checked by the authorization checks (see the module docs).
    pub(crate) fn refuse_queued_version(
        &mut self,
        msg: &jetstream::Message,
        rejection: Rejection,
        trace: &Trace,
    ) -> Result<(Prepared, tracing::Span, bool), EngineError> {
        let subject = msg.subject.as_str();
        let order = pb::NewOrder {
            account: contract::account_of_queue_subject(subject)
                .unwrap_or("")
                .into(),
            client_order_id: msg
                .headers
                .as_ref()
                .and_then(|h| h.get(contract::HEADER_MSG_ID))
                .map(|v| v.as_str().to_string())
                .unwrap_or_else(|| echoed_id(&msg.payload, |o: &pb::NewOrder| &o.client_order_id)),
            ..Default::default()
        };
        let span = order_span(trace, &order.account, &order.client_order_id);
        span.in_scope(|| {
            warn!(
                subject = truncate(subject, 256),
                reason = %rejection.text(),
                "queued order refused: unsupported contract version"
            );
        });
        let len = msg.payload.len();
        let p = span.in_scope(|| self.prepare(order, Some(rejection), len, trace, ""))?;
        Ok((p, span, false))
    }

    /// The version check of one request: true when it is to be served; false when it was
    /// refused (and answered).
    pub(crate) async fn admit(&mut self, op: Operation, req: &Incoming) -> bool {
        let msg = req.msg();
        let Some(rejection) = self.check_version(msg.headers.as_ref()) else {
            return true;
        };
        let trace = Trace::of(msg.headers.as_ref());
        request_span(&trace).in_scope(|| {
            warn!(
                operation = ?op,
                subject = truncate(msg.subject.as_str(), 256),
                reason = %rejection.text(),
                "request refused: unsupported contract version"
            );
        });
        self.metrics.reject(rejection.reason as i32);
        let answer = refusal(op, &msg.payload, &rejection, &self.cfg.engine_id, now_ns());
        req.answer(answer).await;
        false
    }
}

/// The encoded answer refusing a request of `op` for its version: the endpoint's reply type,
/// REJECTED / not found with `rejection`'s reason, field errors and text, and the ids the
/// payload seems to carry (only echoed).
pub(crate) fn refusal(
    op: Operation,
    payload: &bytes::Bytes,
    rejection: &Rejection,
    engine_id: &str,
    now: i64,
) -> Vec<u8> {
    let text = rejection.text();
    let ack = |account: &str, client_order_id: &str| {
        AckFor {
            client_order_id: truncate(client_order_id, MAX_CLIENT_ORDER_ID_BYTES),
            account: truncate(account, MAX_ACCOUNT_BYTES),
            engine_order_id: "",
            order_status: OrderStatus::Rejected as i32,
            engine_id,
            now,
        }
        .rejected_by(rejection)
    };
    let session = |session_id: &str| {
        pb::SessionAck {
            session_id: truncate(session_id, MAX_CLIENT_ORDER_ID_BYTES).into(),
            status: AckStatus::Rejected as i32,
            reason: rejection.reason as i32,
            field_errors: rejection.errors.clone(),
            text: text.clone(),
            engine_id: engine_id.into(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    match op {
        Operation::Submit => {
            let m = pb::NewOrder::decode(payload.clone()).unwrap_or_default();
            ack(&m.account, &m.client_order_id).encode_to_vec()
        }
        Operation::Cancel => {
            let m = pb::CancelRequest::decode(payload.clone()).unwrap_or_default();
            ack(&m.account, &m.client_order_id).encode_to_vec()
        }
        Operation::Replace => {
            let m = pb::ReplaceRequest::decode(payload.clone()).unwrap_or_default();
            pb::OrderAck {
                orig_client_order_id: truncate(&m.orig_client_order_id, MAX_CLIENT_ORDER_ID_BYTES)
                    .into(),
                ..ack(&m.account, &m.client_order_id)
            }
            .encode_to_vec()
        }
        Operation::Status => pb::OrderStatusReply {
            found: false,
            reason: rejection.reason as i32,
            text,
            ..Default::default()
        }
        .encode_to_vec(),
        Operation::MassCancel => {
            let m = pb::MassCancelRequest::decode(payload.clone()).unwrap_or_default();
            pb::MassCancelReply {
                account: truncate(&m.account, MAX_ACCOUNT_BYTES).into(),
                request_id: truncate(&m.request_id, MAX_CLIENT_ORDER_ID_BYTES).into(),
                status: AckStatus::Rejected as i32,
                reason: rejection.reason as i32,
                field_errors: rejection.errors.clone(),
                text,
                ..Default::default()
            }
            .encode_to_vec()
        }
        Operation::SessionOpen => session(
            &pb::SessionOpen::decode(payload.clone())
                .unwrap_or_default()
                .session_id,
        ),
        Operation::SessionClose => session(
            &pb::SessionClose::decode(payload.clone())
                .unwrap_or_default()
                .session_id,
        ),
    }
}

#[cfg(test)]
mod tests;
