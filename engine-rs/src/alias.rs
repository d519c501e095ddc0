//! Replace aliases (contract 1.1), pure: the record a replace leaves under its own client order
//! id, what a record found under that id means, and the terms a replace gives its order.
//!
//! A replace is idempotent by its own `client_order_id`, like a `NewOrder`: the engine
//! `kv.create`s a record at `<account>.<replace id>` before it changes anything, so the atomic
//! create is the deduplication point for every engine sharing the order store (a status query
//! that retired the id first, an order or another replace that took it, a re-sent copy). That
//! record, the alias, has `alias_of` = the client order id of the order it amends (the key of
//! the order's record), `ack` = the replace's answer, and lives in two states:
//!
//! - **pending** (status PENDING_REPLACE): taken in, not yet applied. Its `order` holds the
//!   replace's terms (quantity and/or limit price, absent = unchanged) and its `last_report`
//!   the order's last report when the replace was taken in, so that recovery can tell whether
//!   the replace was applied before a crash ([`pending_state`]) and apply it if not.
//! - **settled**: applied (status = the one its REPLACED report gave the order, `ack`
//!   ACCEPTED, `last_report` = that REPLACED report) or found too late (REJECTED, TOO_LATE).
//!
//! Cancel, status and replace name an order by its original id or by any of its replaces'
//! ids: a record with `alias_of` set is followed to the order's. Only pending aliases are
//! ever read back by recovery (see `store.rs`).

use crate::ack::AckFor;
use crate::contract;
use crate::fixed;
use crate::order::LiveOrder;
use crate::proto::state::OrderRecord;
use crate::proto::v1::{self as pb, OrderStatus, RejectReason};
use crate::validate::{field_error, Rejection};
use crate::venue::Amendment;

/// The text of a replace's ACCEPTED ack.
pub const REPLACED_TEXT: &str = "replaced";

/// True for a pending alias (a replace taken in, not yet applied).
pub fn is_pending(record: &OrderRecord) -> bool {
    !record.alias_of.is_empty() && record.status == OrderStatus::PendingReplace as i32
}

/// The NewOrder a replace makes of `order`: its quantity and limit price replaced by the
/// request's where present. What validation checks.
pub fn amended(order: &pb::NewOrder, req: &pb::ReplaceRequest) -> pb::NewOrder {
    let mut out = order.clone();
    if req.quantity.is_some() {
        out.quantity = req.quantity;
    }
    if req.limit_price.is_some() {
        out.limit_price = req.limit_price;
    }
    out
}

/// Who a replace's ack is about: the replace's id, its order's engine order id.
fn ack_for<'a>(
    replace_id: &'a str,
    account: &'a str,
    engine_order_id: &'a str,
    order_status: OrderStatus,
    engine_id: &'a str,
    now: i64,
) -> AckFor<'a> {
    AckFor {
        client_order_id: replace_id,
        account,
        engine_order_id,
        order_status: order_status as i32,
        engine_id,
        now,
    }
}

/// A replace's REJECTED ack for `reason` (nothing changed), with `orig` as its
/// orig_client_order_id.
pub fn rejected(
    req: &pb::ReplaceRequest,
    engine_order_id: &str,
    rejection: &Rejection,
    engine_id: &str,
    now: i64,
) -> pb::OrderAck {
    let mut ack = ack_for(
        &req.client_order_id,
        &req.account,
        engine_order_id,
        OrderStatus::Unspecified,
        engine_id,
        now,
    )
    .rejected_by(rejection);
    ack.orig_client_order_id = req.orig_client_order_id.clone();
    ack
}

/// The pending alias of a replace taken in for `order` (an open order): its key and record.
pub fn pending(
    req: &pb::ReplaceRequest,
    order: &LiveOrder,
    engine_id: &str,
    seq: u64,
    now: i64,
    correlation_id: &str,
    signer: &str,
) -> (String, OrderRecord) {
    let o = order.order();
    let terms = pb::NewOrder {
        client_order_id: req.client_order_id.clone(),
        account: req.account.clone(),
        symbol: o.symbol.clone(),
        side: o.side,
        order_type: o.order_type,
        time_in_force: o.time_in_force,
        quantity: req.quantity,
        limit_price: req.limit_price,
        created_at_unix_ns: req.created_at_unix_ns,
        ..Default::default()
    };
    let mut ack = ack_for(
        &req.client_order_id,
        &req.account,
        &order.record.engine_order_id,
        OrderStatus::PendingReplace,
        engine_id,
        now,
    )
    .accepted(REPLACED_TEXT);
    ack.orig_client_order_id = req.orig_client_order_id.clone();
    let record = OrderRecord {
        order: Some(terms),
        engine_order_id: order.record.engine_order_id.clone(),
        engine_id: engine_id.into(),
        seq,
        status: OrderStatus::PendingReplace as i32,
        ack: Some(ack),
        last_report: order.record.last_report.clone(),
        cum_notional_e16: "0".into(),
        correlation_id: crate::intake::bounded_correlation_id(correlation_id).into(),
        tombstone: false,
        signer: signer.into(),
        alias_of: o.client_order_id.clone(),
        current_client_order_id: String::new(),
        sender_contract_version: String::new(),
    };
    (
        contract::order_key(&req.account, &req.client_order_id),
        record,
    )
}

/// The settled record of `order`'s latest replace, rebuilt from the order (its current id
/// and last report), for recovery when it is missing: its key and record.
pub fn recreated(order: &LiveOrder, engine_id: &str, seq: u64, now: i64) -> (String, OrderRecord) {
    let o = order.order();
    let replace_id = order.client_order_id().to_string();
    let mut ack = ack_for(
        &replace_id,
        &o.account,
        &order.record.engine_order_id,
        order.status(),
        engine_id,
        now,
    )
    .accepted(REPLACED_TEXT);
    ack.orig_client_order_id = order.orig_client_order_id.clone();
    let record = OrderRecord {
        order: Some(pb::NewOrder {
            client_order_id: replace_id.clone(),
            account: o.account.clone(),
            symbol: o.symbol.clone(),
            side: o.side,
            order_type: o.order_type,
            time_in_force: o.time_in_force,
            ..Default::default()
        }),
        engine_order_id: order.record.engine_order_id.clone(),
        engine_id: engine_id.into(),
        seq,
        status: order.record.status,
        ack: Some(ack),
        last_report: order.record.last_report.clone(),
        cum_notional_e16: "0".into(),
        correlation_id: order.record.correlation_id.clone(),
        tombstone: false,
        signer: order.record.signer.clone(),
        alias_of: o.client_order_id.clone(),
        current_client_order_id: String::new(),
        sender_contract_version: String::new(),
    };
    (contract::order_key(&o.account, &replace_id), record)
}

/// The amendment a pending alias makes to `order`: absent terms stay as they are; `seq` is
/// the order's arrival sequence if it loses its time priority.
pub fn amendment(alias: &OrderRecord, order: &LiveOrder, seq: u64) -> Amendment {
    let terms = alias.order.clone().unwrap_or_default();
    let (qty, price) = order.terms();
    let units = |d: &Option<pb::Decimal>| d.as_ref().and_then(|d| fixed::from_decimal(d).ok());
    Amendment {
        client_order_id: terms.client_order_id,
        qty: units(&terms.quantity).unwrap_or(qty),
        price: units(&terms.limit_price).or(price).unwrap_or(0),
        seq,
    }
}

/// Settles a pending alias: applied (`replaced`: its order after the replace, whose reports
/// include the REPLACED one) -> ACCEPTED with the order's status; else REJECTED TOO_LATE.
/// Returns the ack to answer.
pub fn settle(alias: &mut OrderRecord, replaced: Option<&LiveOrder>, now: i64) -> pb::OrderAck {
    let mut ack = alias.ack.clone().unwrap_or_default();
    ack.ack_time_unix_ns = now;
    match replaced {
        Some(order) => {
            ack.order_status = order.record.status;
            alias.status = order
                .record
                .last_report
                .as_ref()
                .filter(|r| r.exec_type == pb::ExecType::Replaced as i32)
                .map_or(order.record.status, |r| r.order_status);
            alias.last_report = order.record.last_report.clone();
        }
        None => {
            ack.status = pb::AckStatus::Rejected as i32;
            ack.reason = RejectReason::TooLate as i32;
            ack.order_status = OrderStatus::Unspecified as i32;
            ack.text = "the order ended before the replace could be applied".into();
            alias.status = OrderStatus::Rejected as i32;
        }
    }
    alias.ack = Some(ack.clone());
    ack
}

/// Whether a pending alias's replace was applied before a restart, judged from its order's
/// state after recovery brought it up to its last stored report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Nothing happened to the order since the replace was taken in: apply it now.
    Unapplied,
    /// The order answers to the replace's id: it was applied (only its alias lagged).
    Applied,
    /// The order changed otherwise (it ended during recovery): too late.
    TooLate,
}

/// See [`Pending`]. `order`: the alias's order as recovery left it, and whether it rests in a
/// book.
pub fn pending_state(alias: &OrderRecord, order: &LiveOrder, open: bool) -> Pending {
    let replace_id = alias
        .order
        .as_ref()
        .map_or("", |o| o.client_order_id.as_str());
    let exec = |r: &Option<pb::ExecutionReport>| r.as_ref().map(|r| r.exec_id.clone());
    if order.record.current_client_order_id == replace_id && !replace_id.is_empty() {
        Pending::Applied
    } else if open && exec(&order.record.last_report) == exec(&alias.last_report) {
        Pending::Unapplied
    } else {
        Pending::TooLate
    }
}

/// The answer to a replace whose own id already has a record: a re-sent replace of the same
/// order is answered with its original ack (duplicate); any other use of the id refuses it.
pub fn found(
    record: OrderRecord,
    req: &pb::ReplaceRequest,
    original: &str,
    order_status: i32,
    engine_id: &str,
    now: i64,
) -> pb::OrderAck {
    if record.alias_of == original && !record.tombstone {
        let mut ack = record.ack.unwrap_or_default();
        ack.duplicate = true;
        if ack.status == pb::AckStatus::Accepted as i32 {
            ack.order_status = order_status;
        }
        return ack;
    }
    let used = if record.tombstone {
        "was retired by a status query (an order or replace sent with it later is refused)"
            .to_string()
    } else if record.alias_of.is_empty() {
        "is already the client order id of an order".to_string()
    } else {
        format!(
            "is already the id of a replace of order {}",
            record.alias_of
        )
    };
    let rejection = Rejection {
        reason: RejectReason::InvalidField,
        errors: vec![field_error(
            "client_order_id",
            "unique",
            format!(
                "{} {used}; a replace needs an id of its own",
                req.client_order_id
            ),
        )],
    };
    rejected(req, "", &rejection, engine_id, now)
}

/// The answer to a NewOrder whose client order id is already a replace's: REJECTED, never a
/// duplicate of the replace.
pub fn id_taken_by_replace(record: &OrderRecord, engine_id: &str, now: i64) -> pb::OrderAck {
    let terms = record.order.clone().unwrap_or_default();
    AckFor {
        client_order_id: &terms.client_order_id,
        account: &terms.account,
        engine_order_id: "",
        order_status: OrderStatus::Rejected as i32,
        engine_id,
        now,
    }
    .rejected(
        RejectReason::InvalidField,
        vec![field_error(
            "client_order_id",
            "unique",
            format!(
                "{} is already the id of a replace of order {}; send the order under a new id",
                terms.client_order_id, record.alias_of
            ),
        )],
        "client_order_id is already a replace's id",
    )
}

#[cfg(test)]
mod tests;
