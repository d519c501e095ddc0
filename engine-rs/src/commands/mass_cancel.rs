//! `bridge.v1.orders.mass_cancel.<account>` (checked by [`crate::auth`] first) and its relay
//! `bridge.v1.engine.<engine_id>.mass_cancel`: cancel every open order of an account,
//! optionally only one symbol's and/or one side's (FIX OrderMassCancelRequest, 35=q), answered
//! with a `MassCancelReply` (FIX OrderMassCancelReport, 35=r).
//!
//! 1. Authorized like a cancel (signature, ACCOUNT_MISMATCH, NOT_ENTITLED: answered REJECTED
//!    with the reason, logged, alerted, counted); a relayed request was checked by the engine
//!    that received it (only engines may publish to the relay subject).
//! 2. Validated ([`check_mass_cancel`]): REJECTED / INVALID_FIELD naming each field and rule.
//! 3. Every matching order resting in this engine's books is canceled
//!    ([`crate::venue::Venue::mass_cancel`]): each a CANCELED report with reason MASS_CANCELED,
//!    each its own fact, all of them one commit group (journaled, then published with their
//!    records); then the books' market data is touched. A re-sent request finds nothing left: it answers `canceled = 0`.
//! 4. A request from a client (not a relayed one) is relayed to every other live engine that
//!    could hold the account's orders ([`relay`]); the reply sums what every engine canceled and
//!    says which engines took part, and which did not.

use std::collections::BTreeMap;

use prost::Message as _;
use tracing::{info, warn};

use super::authorize::{echoed_id, MASS_CANCEL_REQUEST};
use super::{request_span, within};
use crate::auth::Refusal;
use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::proto::v1::{self as pb, AckStatus, RejectReason};
use crate::publish::Tagged;
use crate::service::{Incoming, ServiceError};
use crate::trace::Trace;
use crate::validate::mass_cancel::check_mass_cancel;
use crate::validate::{truncate, MAX_ACCOUNT_BYTES};
use crate::venue::LiveOrder;
use crate::venue::MassCancelFilter;

pub mod relay;

impl Engine {
    /// A mass cancel (`forwarded`: relayed by a peer engine; cancel here only).
    pub async fn on_mass_cancel(
        &mut self,
        req: &Incoming,
        forwarded: bool,
    ) -> Result<(), EngineError> {
        let trace = Trace::of(req.msg().headers.as_ref());
        let span = request_span(&trace);
        within(
            span.clone(),
            self.mass_cancel(req, forwarded, &trace, &span),
        )
        .await
    }

    async fn mass_cancel(
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
            MASS_CANCEL_REQUEST,
        );
        let verified = if forwarded {
            None
        } else {
            let subject = msg.subject.as_str();
            match self.authorize(subject, &msg.payload, msg.headers.as_ref(), now_ns(), None) {
                Ok(v) => v,
                Err(refusal) => {
                    return self
                        .refuse_mass_cancel(incoming, &refusal, correlation_id)
                        .await
                }
            }
        };
        let req = match pb::MassCancelRequest::decode(msg.payload.clone()) {
            Ok(r) => r,
            Err(e) => {
                self.counters.malformed += 1;
                incoming
                    .fail(ServiceError::undecodable(MASS_CANCEL_REQUEST, &e))
                    .await;
                self.metrics.reject(RejectReason::Malformed as i32);
                return Ok(());
            }
        };
        span.record("account", truncate(&req.account, MAX_ACCOUNT_BYTES));
        if let Some(Err(refusal)) = verified.as_ref().map(|v| v.check_account(&req.account)) {
            return self
                .refuse_mass_cancel(incoming, &refusal, correlation_id)
                .await;
        }
        let base = pb::MassCancelReply {
            account: truncate(&req.account, MAX_ACCOUNT_BYTES).into(),
            request_id: echoed_id(&msg.payload, |r: &pb::MassCancelRequest| &r.request_id),
            ..Default::default()
        };
        let filter = match check_mass_cancel(&req) {
            Ok(f) => f,
            Err(errors) => {
                let text = errors
                    .iter()
                    .map(|e| format!("{}: {} [{}]", e.field, e.message, e.rule))
                    .collect::<Vec<_>>()
                    .join("; ");
                let reply = pb::MassCancelReply {
                    status: AckStatus::Rejected as i32,
                    reason: RejectReason::InvalidField as i32,
                    field_errors: errors,
                    text,
                    ..base
                };
                self.answer_mass_cancel(incoming, &reply).await;
                return Ok(());
            }
        };
        let canceled = self
            .cancel_matching(&filter, &req.request_id, trace)
            .await?;
        let local = pb::MassCancelReply {
            status: AckStatus::Accepted as i32,
            canceled,
            engine_ids: vec![self.cfg.engine_id.clone()],
            text: format!("canceled {canceled} open order(s) here"),
            ..base
        };
        let reply = if forwarded {
            local
        } else {
            let relayed = self
                .relay_mass_cancel(&msg.payload, filter.symbol.as_deref(), trace)
                .await;
            relay::combine(local, relayed)
        };
        if reply.status == AckStatus::Accepted as i32 {
            info!(
                canceled_here = canceled,
                canceled = reply.canceled,
                engines = ?reply.engine_ids,
                forwarded,
                symbol = filter.symbol.as_deref().unwrap_or("*"),
                side = filter.side.map_or("*", |s| s.as_str_name()),
                "mass cancel done"
            );
        } else {
            warn!(
                canceled_here = canceled,
                canceled = reply.canceled,
                engines = ?reply.engine_ids,
                text = %reply.text,
                "mass cancel incomplete: an engine did not take part"
            );
        }
        self.answer_mass_cancel(incoming, &reply).await;
        Ok(())
    }

    /// Cancels the matching orders in this engine's books: reports published (each order one
    /// fact), records written back, market data touched. How many were canceled.
    async fn cancel_matching(
        &mut self,
        filter: &MassCancelFilter,
        request_id: &str,
        trace: &Trace,
    ) -> Result<u32, EngineError> {
        let now = now_ns();
        let text = if request_id.is_empty() {
            "mass cancel".to_string()
        } else {
            format!("mass cancel {request_id}")
        };
        let touched = self.venue.mass_cancel(filter, &text, now)?;
        if touched.is_empty() {
            return Ok(0);
        }
        let groups: Vec<Vec<Tagged<'_>>> = touched
            .iter()
            .map(|t| t.reports.iter().map(|r| (r, trace)).collect())
            .collect();
        // One commit: every cancel journaled (in as many entries as its size needs), then
        // published. A crash after the journal and before the reports is repaired from it.
        let writes: Vec<&LiveOrder> = touched.iter().map(|t| &t.order).collect();
        self.journal_group(&groups, &writes).await?;
        if touched.len() > 1 {
            self.failpoint.reached("mid_mass_cancel").await;
        }
        self.project(groups, writes).await?;
        let mut per_symbol: BTreeMap<String, u32> = BTreeMap::new();
        for t in &touched {
            *per_symbol
                .entry(t.order.order().symbol.clone())
                .or_default() += 1;
        }
        for (symbol, n) in &per_symbol {
            self.md.touch(symbol, *n, now);
        }
        let n = u32::try_from(touched.len()).unwrap_or(u32::MAX);
        self.observe_books(per_symbol.keys().map(String::as_str));
        Ok(n)
    }

    /// A refused mass cancel: answered REJECTED with the refusal's reason and text, nothing
    /// canceled; logged, alerted and counted.
    async fn refuse_mass_cancel(
        &mut self,
        incoming: &Incoming,
        refusal: &Refusal,
        correlation_id: &str,
    ) -> Result<(), EngineError> {
        let msg = incoming.msg();
        let request_id = echoed_id(&msg.payload, |r: &pb::MassCancelRequest| &r.request_id);
        self.refused(refusal, msg.subject.as_str(), correlation_id, &request_id);
        let reply = pb::MassCancelReply {
            account: truncate(&refusal.account, MAX_ACCOUNT_BYTES).into(),
            request_id,
            status: AckStatus::Rejected as i32,
            reason: refusal.kind.reject_reason() as i32,
            text: truncate(&refusal.text, crate::intake::MAX_REFUSAL_TEXT_BYTES).into(),
            ..Default::default()
        };
        self.answer_mass_cancel(incoming, &reply).await;
        Ok(())
    }

    /// Answers a mass cancel; a rejected one is counted by its reason.
    async fn answer_mass_cancel(&self, incoming: &Incoming, reply: &pb::MassCancelReply) {
        if reply.status != AckStatus::Accepted as i32 {
            self.metrics.reject(reply.reason);
        }
        incoming.answer(reply.encode_to_vec()).await;
    }
}
