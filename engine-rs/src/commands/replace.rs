//! `bridge.v1.orders.replace.<account>` (checked by [`crate::auth`] first): amend a resting
//! order's price and/or quantity (FIX OrderCancelReplaceRequest), answered with an `OrderAck`
//! whose client_order_id is the replace's and whose orig_client_order_id is the one it named.
//!
//! Checks, in order: signature and entitlement (a refusal is answered REJECTED with its
//! reason, logged, alerted, counted: as a cancel's); the request decodes; its account is the
//! subject's (ACCOUNT_MISMATCH); its three ids are ids (INVALID_FIELD); the order it names,
//! by its own id or a replace's, exists under that account (UNKNOWN_ORDER); the replace's own
//! id is free, or a re-sent replace of the same order is answered with its original ack
//! (`duplicate`) and nothing else happens; the order rests in this engine's book (final:
//! TOO_LATE; another engine's: ENGINE_UNAVAILABLE, replaces are not relayed: one engine serves
//! at a time, see `lease.rs`); the replace changes something, the order is a LIMIT order, and
//! the amended order passes the checks a NewOrder passes (`crate::validate`: quantity > 0, the
//! symbol's limits, notional; the kill switch for anything but a pure decrease).
//!
//! Durability (see [`crate::alias`] for the records):
//! 1. `kv.create(<account>.<replace id>)` of the pending alias: the deduplication point.
//!    A crash after it: recovery finds the alias pending and its order untouched, and applies
//!    the replace (the client, which got no answer, re-sends and is answered as a duplicate).
//! 2. apply it in the venue and commit its reports, with any fills, in one journal entry.
//!    A crash after it: recovery adopts the order's last report (amended terms, ids, a new
//!    arrival sequence if priority was lost) and settles the alias as applied.
//! 3. write back the order's record, its makers' and the settled alias; 4. answer.
//!
//! Failpoints (crash tests): `replace_after_alias` (after 1), `replace_after_publish` (after 2).

use prost::Message as _;
use tracing::{debug, info};

use super::authorize::{echoed_id, REPLACE_REQUEST};
use super::{record_order, request_span, within};
use crate::alias;
use crate::auth::Refusal;
use crate::contract;
use crate::engine::{execution_groups, now_ns, Engine};
use crate::error::EngineError;
use crate::intake;
use crate::metrics::Stage;
use crate::order::{is_final, LiveOrder};
use crate::proto::v1::{self as pb, OrderStatus, RejectReason};
use crate::service::{Incoming, ServiceError};
use crate::store::Created;
use crate::trace::Trace;
use crate::validate::{
    echo, field_error, valid_id, Rejection, MAX_ACCOUNT_BYTES, MAX_CLIENT_ORDER_ID_BYTES,
};

impl Engine {
    /// A replace request (see the module docs).
    pub async fn on_replace(&mut self, req: &Incoming) -> Result<(), EngineError> {
        let trace = Trace::of(req.msg().headers.as_ref());
        let span = request_span(&trace);
        within(span.clone(), self.replace(req, &trace, &span)).await
    }

    async fn replace(
        &mut self,
        incoming: &Incoming,
        trace: &Trace,
        span: &tracing::Span,
    ) -> Result<(), EngineError> {
        let msg = incoming.msg();
        let correlation_id = trace.correlation_id.as_str();
        self.count_request(
            msg.reply.as_ref(),
            msg.headers.as_ref(),
            msg.payload.len(),
            REPLACE_REQUEST,
        );
        let subject = msg.subject.as_str();
        let relayed_signer = super::relay::relayed_signer(msg);
        let authorized = match relayed_signer {
            Some(_) => Ok(None),
            None => self.authorize(subject, &msg.payload, msg.headers.as_ref(), now_ns(), None),
        };
        let verified = match authorized {
            Ok(v) => v,
            Err(refusal) => {
                return self
                    .refuse_replace(incoming, &refusal, correlation_id)
                    .await
            }
        };
        let req = match pb::ReplaceRequest::decode(msg.payload.clone()) {
            Ok(r) => r,
            Err(e) => {
                self.counters.malformed += 1;
                incoming
                    .fail(ServiceError::undecodable(REPLACE_REQUEST, &e))
                    .await;
                self.metrics.reject(RejectReason::Malformed as i32);
                return Ok(());
            }
        };
        record_order(span, &req.account, &req.client_order_id);
        let signer = match &verified {
            None => relayed_signer.unwrap_or_default(),
            Some(v) => match v.check_account(&req.account) {
                Ok(()) => v.nkey.clone(),
                Err(refusal) => {
                    return self
                        .refuse_replace(incoming, &refusal, correlation_id)
                        .await
                }
            },
        };
        // Partitioned: an order live in another partition's book is replaced by its owner.
        if !super::relay::is_relayed(subject) {
            let key = contract::order_key(&req.account, &req.orig_client_order_id);
            if let Some((record, _)) = self.store.load(&key).await? {
                if let Some(owner) = self.live_elsewhere(&record) {
                    self.relay_request(incoming, contract::engine_replace(&owner), &signer);
                    return Ok(());
                }
            }
        }
        let ack = self.take_replace(&req, trace, &signer).await?;
        info!(
            orig_client_order_id = %echo(&req.orig_client_order_id),
            status = ack.status,
            reason = ack.reason,
            duplicate = ack.duplicate,
            order_status = ack.order_status,
            "replace answered"
        );
        self.answer_replace(incoming, &ack).await;
        Ok(())
    }

    /// Everything between an authorized, decoded request and its answer.
    async fn take_replace(
        &mut self,
        req: &pb::ReplaceRequest,
        trace: &Trace,
        signer: &str,
    ) -> Result<pb::OrderAck, EngineError> {
        let engine_id = self.cfg.engine_id.clone();
        let now = now_ns();
        let reject = |rejection: Rejection, engine_order_id: &str| {
            alias::rejected(req, engine_order_id, &rejection, &engine_id, now)
        };
        if let Some(rejection) = check_ids(req) {
            return Ok(reject(rejection, ""));
        }
        let Some(original) = self
            .original_id(&req.account, &req.orig_client_order_id)
            .await?
        else {
            return Ok(reject(unknown_order(req), ""));
        };
        let key = contract::order_key(&req.account, &original);
        let own_key = contract::order_key(&req.account, &req.client_order_id);
        if let Some((record, _)) = self.store.load(&own_key).await? {
            let status = self.order_status(&key).await?;
            return Ok(alias::found(
                record, req, &original, status, &engine_id, now,
            ));
        }
        // The arrival sequence of the replace's record (and of the order, if it loses its
        // priority: taken in apply_replace).
        let seq = self.next_seq();
        let Some(order) = self.venue.open_order(&key) else {
            return self.not_resting(req, &key, now).await;
        };
        let engine_order_id = order.record.engine_order_id.clone();
        if let Err(rejection) = self.check_replace(order, req, now) {
            return Ok(reject(rejection, &engine_order_id));
        }
        // 1. Taken in: the alias, pending.
        let (own_key, record) = alias::pending(
            req,
            order,
            &engine_id,
            seq,
            now,
            &trace.correlation_id,
            signer,
        );
        let started = std::time::Instant::now();
        match self.store.create(&own_key, &record).await? {
            Created::Written(_) => {}
            Created::Exists => {
                // Taken meanwhile, by another engine sharing the order store.
                let (found, _) = self.store.load_existing(&own_key).await?;
                let status = self.order_status(&key).await?;
                return Ok(alias::found(found, req, &original, status, &engine_id, now));
            }
            Created::Refused(why) => {
                let rejection = Rejection::single(
                    RejectReason::EngineUnavailable,
                    "<request>",
                    "stored",
                    format!("the order store refused the replace's record for good ({why}); nothing changed"),
                );
                return Ok(reject(rejection, &engine_order_id));
            }
        }
        self.metrics.stage(Stage::Dedupe, started.elapsed());
        self.failpoint.reached("replace_after_alias").await;
        // 2.-3. Applied, published, written back.
        self.apply_replace(LiveOrder::from_record(own_key, record), trace)
            .await
    }

    /// Applies a pending alias's replace to its order (the command, and recovery for a
    /// replace taken in before a crash): steps 2 and 3 of the module docs. Returns the ack.
    pub(crate) async fn apply_replace(
        &mut self,
        mut pending: LiveOrder,
        trace: &Trace,
    ) -> Result<pb::OrderAck, EngineError> {
        let account = pending.order().account.clone();
        let key = contract::order_key(&account, &pending.record.alias_of);
        let now = now_ns();
        let seq = self.next_seq();
        let Some(order) = self.venue.open_order(&key) else {
            let ack = alias::settle(&mut pending.record, None, now);
            self.write_back(vec![pending]).await?;
            return Ok(ack);
        };
        let symbol = order.order().symbol.clone();
        let amendment = alias::amendment(&pending.record, order, seq);
        self.reports.originals.note(
            &order.record.engine_order_id,
            &order.order().client_order_id,
        );
        let metrics = self.metrics.clone();
        let executed = metrics.timed(Stage::Match, || self.venue.replace(&key, &amendment, now))?;
        self.md.executed(&symbol, &executed, now);
        self.runtime.in_force.positions.record(&executed);
        self.observe_books([symbol.as_str()]);
        let replaced = executed
            .touched
            .first()
            .filter(|t| t.order.key == key)
            .map(|t| &t.order);
        let ack = alias::settle(&mut pending.record, replaced, now);
        let groups = execution_groups(&[(&executed, trace)]);
        let mut writes: Vec<&LiveOrder> = executed.orders().collect();
        writes.push(&pending);
        self.journal_group(&groups, &writes).await?;
        // The replace is durable (its reports and the settled alias), not yet visible.
        self.failpoint.reached("replace_after_publish").await;
        self.project(groups, writes).await?;
        Ok(ack)
    }

    /// The original client order id of the order `id` names under `account`: its own, or the
    /// order a replace with that id amended. None: no such order (or a retired id).
    pub(crate) async fn original_id(
        &self,
        account: &str,
        id: &str,
    ) -> Result<Option<String>, EngineError> {
        let key = contract::order_key(account, id);
        if self.venue.open_order(&key).is_some() {
            return Ok(Some(id.to_string()));
        }
        Ok(match self.store.load(&key).await? {
            None => None,
            Some((r, _)) if r.tombstone => None,
            Some((r, _)) if !r.alias_of.is_empty() => Some(r.alias_of),
            Some(_) => Some(id.to_string()),
        })
    }

    /// The status of the order stored under `key` (0 if none).
    async fn order_status(&self, key: &str) -> Result<i32, EngineError> {
        if let Some(o) = self.venue.open_order(key) {
            return Ok(o.record.status);
        }
        Ok(self
            .store
            .load(key)
            .await?
            .map_or(0, |(record, _)| record.status))
    }

    /// The answer to a replace of an order that does not rest in this engine's book.
    async fn not_resting(
        &self,
        req: &pb::ReplaceRequest,
        key: &str,
        now: i64,
    ) -> Result<pb::OrderAck, EngineError> {
        let (reason, text, engine_order_id) = match self.store.load(key).await? {
            None => (
                RejectReason::UnknownOrder,
                "no such order".into(),
                String::new(),
            ),
            Some((r, _)) if is_final(OrderStatus::try_from(r.status).unwrap_or_default()) => (
                RejectReason::TooLate,
                "order is already final".into(),
                r.engine_order_id,
            ),
            Some((r, _)) if r.engine_id != self.cfg.engine_id => (
                RejectReason::EngineUnavailable,
                format!(
                    "order rests in engine {}'s book and replaces are not relayed between \
                     engines; send it again when that engine serves",
                    r.engine_id
                ),
                r.engine_order_id,
            ),
            Some((r, _)) => (
                RejectReason::TooLate,
                "order is not resting in a book".into(),
                r.engine_order_id,
            ),
        };
        let rejection = Rejection::single(reason, "orig_client_order_id", "resting", text);
        Ok(alias::rejected(
            req,
            &engine_order_id,
            &rejection,
            &self.cfg.engine_id,
            now,
        ))
    }

    /// The checks of the amended order (see the module docs).
    fn check_replace(
        &self,
        order: &LiveOrder,
        req: &pb::ReplaceRequest,
        now: i64,
    ) -> Result<(), Rejection> {
        if req.quantity.is_none() && req.limit_price.is_none() {
            return Err(Rejection::single(
                RejectReason::InvalidField,
                "<request>",
                "amends_something",
                "a replace needs a new quantity, a new limit_price, or both".into(),
            ));
        }
        if order.order().order_type != pb::OrderType::Limit as i32 {
            return Err(Rejection::single(
                RejectReason::InvalidField,
                "orig_client_order_id",
                "limit_order",
                "only a LIMIT order can be replaced".into(),
            ));
        }
        let amended = alias::amended(order.order(), req);
        let validator = self.limits.validator();
        let valid = validator.check(&amended, now)?;
        // A pure decrease (no more quantity, no new price unless it ends the order) only ever
        // lowers exposure: the kill switch lets it through. Anything else is gated like a new
        // order of the quantity it would leave open (conservatively: the order's own current
        // leaves still count as resting under REDUCE_ONLY).
        let (qty, price) = order.terms();
        let decrease = valid.qty <= qty && (valid.limit == price || valid.qty <= order.cum_qty);
        if !decrease {
            let mut open = amended;
            open.quantity = Some(crate::fixed::to_decimal(valid.qty - order.cum_qty));
            if let Some(rejection) = self.trading_gate(&validator, &open, now) {
                return Err(rejection);
            }
        }
        Ok(())
    }

    /// A refused replace: answered REJECTED with the refusal's reason and text, nothing
    /// changed; logged, alerted and counted.
    async fn refuse_replace(
        &mut self,
        incoming: &Incoming,
        refusal: &Refusal,
        correlation_id: &str,
    ) -> Result<(), EngineError> {
        let msg = incoming.msg();
        let id = echoed_id(&msg.payload, |r: &pb::ReplaceRequest| &r.client_order_id);
        self.refused(refusal, msg.subject.as_str(), correlation_id, &id);
        let ack = intake::refusal_ack(
            &refusal.account,
            &id,
            refusal.kind.reject_reason(),
            &refusal.text,
            &self.cfg.engine_id,
            now_ns(),
        );
        self.answer_replace(incoming, &ack).await;
        Ok(())
    }

    /// Answers a replace; counted by outcome, a rejection also by its reason.
    async fn answer_replace(&self, incoming: &Incoming, ack: &pb::OrderAck) {
        self.metrics.replace(ack);
        incoming.answer(ack.encode_to_vec()).await;
        debug!(status = ack.status, "replace ack sent");
    }
}

/// Every id of the request that is not one (INVALID_FIELD, all of them named).
fn check_ids(req: &pb::ReplaceRequest) -> Option<Rejection> {
    let mut errors = Vec::new();
    for (field, value, max) in [
        ("account", &req.account, MAX_ACCOUNT_BYTES),
        (
            "orig_client_order_id",
            &req.orig_client_order_id,
            MAX_CLIENT_ORDER_ID_BYTES,
        ),
        (
            "client_order_id",
            &req.client_order_id,
            MAX_CLIENT_ORDER_ID_BYTES,
        ),
    ] {
        if !valid_id(value, max) {
            errors.push(field_error(
                field,
                "pattern",
                format!(
                    "{} must be 1-{max} characters of [A-Za-z0-9_-]",
                    echo(value)
                ),
            ));
        }
    }
    (!errors.is_empty()).then_some(Rejection {
        reason: RejectReason::InvalidField,
        errors,
    })
}

/// UNKNOWN_ORDER: the request names no order of its account.
fn unknown_order(req: &pb::ReplaceRequest) -> Rejection {
    Rejection::single(
        RejectReason::UnknownOrder,
        "orig_client_order_id",
        "known_order",
        format!(
            "no order {} in account {}",
            req.orig_client_order_id, req.account
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bad id is named, with its field; good ids pass.
    #[test]
    fn ids_are_checked_together() {
        let mut req = pb::ReplaceRequest {
            account: "ACC".into(),
            orig_client_order_id: "o-1".into(),
            client_order_id: "r_1".into(),
            ..Default::default()
        };
        assert!(check_ids(&req).is_none());
        req.orig_client_order_id = "a.b".into();
        req.client_order_id = String::new();
        let rej = check_ids(&req).unwrap();
        assert_eq!(rej.reason, RejectReason::InvalidField);
        let fields: Vec<_> = rej.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["orig_client_order_id", "client_order_id"]);
        assert!(rej.errors.iter().all(|e| e.rule == "pattern"));
    }
}
