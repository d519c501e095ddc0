//! Taking an order in, without I/O: validation, the record to store and the answer, for
//! both intake paths. Pure (time and sequence numbers are passed in), so that the bounds below
//! are tested on any input without a server.
//!
//! Everything an order puts into its record in the order store, its ack and its reports is bounded here,
//! before any write: the size limits of the contract are checked ([`crate::validate`]), a
//! rejected order keeps only the fields that passed their limits, error messages quote a
//! bounded prefix of the input, and the correlation id is cut to its limit. So no input the
//! server accepts can produce a record or report the server refuses (max_payload, 1 MiB):
//! [`RECORD_BOUND`] is the proven ceiling (see the property test at the end).

use crate::ack::AckFor;
use crate::contract;
use crate::proto::state::OrderRecord;
use crate::proto::v1::{self as pb, OrderStatus, RejectReason};
use crate::validate::{
    message_size_error, tags_within_limits, truncate, valid_id, Rejection, ValidOrder, Validator,
    MAX_ACCOUNT_BYTES, MAX_CLIENT_ORDER_ID_BYTES, MAX_CORRELATION_ID_BYTES, MAX_SESSION_ID_BYTES,
    MAX_SYMBOL_BYTES,
};
use crate::venue::{LiveOrder, Touched, Venue, VenueError};

/// Upper bound of the encoded size of any order record, ack or execution report produced
/// for any input: 16 KiB, against the server's 1 MiB max_payload.
pub const RECORD_BOUND: usize = 16 * 1024;

/// The ack text of a retired client order id, and of every later order that uses it.
pub const TOMBSTONE_TEXT: &str = "client_order_id was declared unknown by a status query; a \
     later order with this id is refused; re-send under a new id";

/// The status text of a retired client order id.
pub const TOMBSTONE_STATUS_TEXT: &str = "no order with this client_order_id; the id is now \
     retired: an order sent with it later is refused and never executes";

/// An order validated and ready for its write to the order store.
pub enum Prepared {
    /// No valid key (account / client order id): answered, never stored.
    Unkeyed(pb::OrderAck),
    /// Rejected or expired: stored already final.
    Rejected(Box<Touched>),
    /// Accepted: stored as PENDING_NEW, then executed.
    Accepted(Box<LiveOrder>, ValidOrder),
}

impl Prepared {
    /// The key and record to `kv.create`, if the order has a key.
    pub fn store_entry(&self) -> Option<(&str, &OrderRecord)> {
        match self {
            Prepared::Unkeyed(_) => None,
            Prepared::Rejected(t) => Some((&t.order.key, &t.order.record)),
            Prepared::Accepted(live, _) => Some((&live.key, &live.record)),
        }
    }

    /// The live order behind a keyed intake.
    pub fn live(&self) -> Option<&LiveOrder> {
        match self {
            Prepared::Unkeyed(_) => None,
            Prepared::Rejected(t) => Some(&t.order),
            Prepared::Accepted(live, _) => Some(live),
        }
    }
}

/// What intake needs besides the order: the checks, who we are, the time, and who signed it.
pub struct Context<'a> {
    pub validator: &'a Validator<'a>,
    pub engine_id: &'a str,
    pub now: i64,
    /// Public NKey of the identity whose signature verified ("" when signatures are not
    /// checked): recorded in the order's record and every report.
    pub signer: &'a str,
}

/// True when account and client order id can form a KV key (and a subject token). Requests
/// naming anything else are answered, never looked up: a bad key must not stop the engine.
pub fn valid_key(account: &str, client_order_id: &str) -> bool {
    valid_id(account, MAX_ACCOUNT_BYTES) && valid_id(client_order_id, MAX_CLIENT_ORDER_ID_BYTES)
}

/// The correlation id as stored and logged: at most [`MAX_CORRELATION_ID_BYTES`].
pub fn bounded_correlation_id(correlation_id: &str) -> &str {
    truncate(correlation_id, MAX_CORRELATION_ID_BYTES)
}

/// The order as a rejection stores and reports it: only the fields within their limits.
/// Ids are valid here (keyed); protobuf decoding has already dropped unknown fields.
fn bounded(mut order: pb::NewOrder) -> pb::NewOrder {
    if order.symbol.len() > MAX_SYMBOL_BYTES {
        order.symbol.clear();
    }
    if !tags_within_limits(&order.tags) {
        order.tags.clear();
    }
    if order.session_id.len() > MAX_SESSION_ID_BYTES {
        order.session_id.clear();
    }
    order
}

/// Who an order with a record (`o`) is, for its ack.
fn ack_for<'a>(o: &'a LiveOrder, engine_id: &'a str, now: i64) -> AckFor<'a> {
    let order = o.order();
    AckFor {
        client_order_id: &order.client_order_id,
        account: &order.account,
        engine_order_id: &o.record.engine_order_id,
        order_status: o.record.status,
        engine_id,
        now,
    }
}

/// The REJECTED ack of a request that cannot be attributed to a record. Echoes the ids cut to
/// their limits.
pub fn unkeyed_reject(
    order: &pb::NewOrder,
    rej: &Rejection,
    engine_id: &str,
    now: i64,
) -> pb::OrderAck {
    AckFor {
        client_order_id: truncate(&order.client_order_id, MAX_CLIENT_ORDER_ID_BYTES),
        account: truncate(&order.account, MAX_ACCOUNT_BYTES),
        engine_order_id: "",
        order_status: OrderStatus::Rejected as i32,
        engine_id,
        now,
    }
    .rejected_by(rej)
}

/// Step 1 of the protocol without its write: validation (fields, sizes, risk, deadline) and
/// the record to store. `problem` is a decoding failure found before; `payload_len` is the
/// size of the raw message the order came in.
pub fn prepare(
    ctx: &Context<'_>,
    order: pb::NewOrder,
    problem: Option<Rejection>,
    payload_len: usize,
    seq: u64,
    correlation_id: &str,
) -> Result<Prepared, VenueError> {
    let checked = match problem {
        Some(r) => Err(r),
        None => {
            let checked = ctx.validator.check(&order, ctx.now);
            match (message_size_error(payload_len), checked) {
                (None, checked) => checked,
                (Some(size), Ok(_)) => Err(Rejection {
                    reason: RejectReason::InvalidField,
                    errors: vec![size],
                }),
                (Some(size), Err(r)) => Err(Rejection {
                    reason: RejectReason::InvalidField,
                    errors: std::iter::once(size).chain(r.errors).collect(),
                }),
            }
        }
    };
    if !valid_key(&order.account, &order.client_order_id) {
        // Without a valid account and id there is no key and no report subject: answer only.
        let rej = match checked {
            Err(r) => r,
            Ok(_) => Rejection::single(
                RejectReason::InvalidField,
                "client_order_id",
                "pattern",
                "account and client_order_id must be [A-Za-z0-9_-]".into(),
            ),
        };
        return Ok(Prepared::Unkeyed(unkeyed_reject(
            &order,
            &rej,
            ctx.engine_id,
            ctx.now,
        )));
    }
    let key = contract::order_key(&order.account, &order.client_order_id);
    let correlation_id = bounded_correlation_id(correlation_id);
    Ok(match checked {
        Err(rej) => {
            let mut live = LiveOrder::new(key, bounded(order), ctx.engine_id, seq, correlation_id);
            live.record.signer = ctx.signer.into();
            let text = rej.text();
            let mut touched = Venue::reject(live, rej.reason, &rej.errors, &text, ctx.now)?;
            let ack = ack_for(&touched.order, ctx.engine_id, ctx.now).rejected_by(&rej);
            touched.order.record.ack = Some(ack);
            Prepared::Rejected(Box::new(touched))
        }
        Ok(valid) => {
            let mut live = LiveOrder::new(key, order, ctx.engine_id, seq, correlation_id);
            live.record.signer = ctx.signer.into();
            let ack = ack_for(&live, ctx.engine_id, ctx.now).accepted("");
            live.record.ack = Some(ack);
            Prepared::Accepted(Box::new(live), valid)
        }
    })
}

/// The REJECTED ack of an order operation the authorization checks refused, answered without
/// a record: the subject's account and the client order id the payload seemed to carry (cut to
/// their limits: only echoed), the refusal's reason and text.
pub fn refusal_ack(
    account: &str,
    client_order_id: &str,
    reason: RejectReason,
    text: &str,
    engine_id: &str,
    now: i64,
) -> pb::OrderAck {
    AckFor {
        client_order_id: truncate(client_order_id, MAX_CLIENT_ORDER_ID_BYTES),
        account: truncate(account, MAX_ACCOUNT_BYTES),
        engine_order_id: "",
        order_status: OrderStatus::Rejected as i32,
        engine_id,
        now,
    }
    .rejected(reason, vec![], truncate(text, MAX_REFUSAL_TEXT_BYTES))
}

/// The longest refusal text an ack, record or report carries.
pub use crate::auth::MAX_REFUSAL_TEXT_BYTES;

/// A queued order the authorization checks refused, as the queued path takes in an invalid
/// order: REJECTED, stored under the subject's account (which the server let its sender use)
/// and the message's client order id, reported, never executed. Nothing else of the untrusted
/// payload is kept. Without a valid key: answered only (nobody to answer on the queued path).
pub fn refusal(
    ctx: &Context<'_>,
    account: &str,
    client_order_id: &str,
    reason: RejectReason,
    text: &str,
    seq: u64,
    correlation_id: &str,
) -> Result<Prepared, VenueError> {
    let text = truncate(text, MAX_REFUSAL_TEXT_BYTES);
    if !valid_key(account, client_order_id) {
        return Ok(Prepared::Unkeyed(refusal_ack(
            account,
            client_order_id,
            reason,
            text,
            ctx.engine_id,
            ctx.now,
        )));
    }
    let order = pb::NewOrder {
        account: account.into(),
        client_order_id: client_order_id.into(),
        ..Default::default()
    };
    let key = contract::order_key(account, client_order_id);
    let correlation_id = bounded_correlation_id(correlation_id);
    let mut live = LiveOrder::new(key, order, ctx.engine_id, seq, correlation_id);
    live.record.signer = ctx.signer.into();
    let mut touched = Venue::reject(live, reason, &[], text, ctx.now)?;
    let ack = ack_for(&touched.order, ctx.engine_id, ctx.now).rejected(reason, vec![], text);
    touched.order.record.ack = Some(ack);
    Ok(Prepared::Rejected(Box::new(touched)))
}

/// A keyed order the order store refused for good (its create can never succeed): REJECTED
/// with reason ENGINE_UNAVAILABLE and `why`, never stored. Returns the ack and the REJECTED
/// report (the only answer a queued order gets).
pub fn refused(
    live: &LiveOrder,
    why: &str,
    engine_id: &str,
    now: i64,
) -> Result<(pb::OrderAck, Vec<pb::ExecutionReport>), VenueError> {
    let fresh = LiveOrder::new(
        live.key.clone(),
        live.order().clone(),
        engine_id,
        live.record.seq,
        &live.record.correlation_id,
    );
    let text = format!(
        "the order store refused this order's record and will not accept it on a retry ({}); \
         nothing was executed",
        truncate(why, 512)
    );
    let reason = RejectReason::EngineUnavailable;
    let touched = Venue::reject(fresh, reason, &[], &text, now)?;
    let ack = ack_for(&touched.order, engine_id, now).rejected(reason, vec![], &text);
    Ok((ack, touched.reports))
}

/// The record a status query writes for an id with no record: the id is retired (see
/// `OrderRecord.tombstone`). Final REJECTED, reason UNKNOWN_ORDER, with its REJECTED ack and
/// report (published when a later order hits it).
pub fn tombstone(
    account: &str,
    client_order_id: &str,
    engine_id: &str,
    seq: u64,
    now: i64,
    correlation_id: &str,
) -> Result<OrderRecord, VenueError> {
    let order = pb::NewOrder {
        account: account.into(),
        client_order_id: client_order_id.into(),
        ..Default::default()
    };
    let key = contract::order_key(account, client_order_id);
    let live = LiveOrder::new(
        key,
        order,
        engine_id,
        seq,
        bounded_correlation_id(correlation_id),
    );
    let reason = RejectReason::UnknownOrder;
    let mut touched = Venue::reject(live, reason, &[], TOMBSTONE_TEXT, now)?;
    let ack = ack_for(&touched.order, engine_id, now).rejected(reason, vec![], TOMBSTONE_TEXT);
    touched.order.record.ack = Some(ack);
    touched.order.record.tombstone = true;
    Ok(touched.order.record)
}

/// The answer to a status query from a stored record.
pub fn status_reply(record: OrderRecord) -> pb::OrderStatusReply {
    if record.tombstone {
        return pb::OrderStatusReply {
            found: false,
            reason: RejectReason::UnknownOrder as i32,
            text: TOMBSTONE_STATUS_TEXT.into(),
            order_status: record.status,
            last_report: None,
        };
    }
    pb::OrderStatusReply {
        found: true,
        order_status: record.status,
        last_report: record.last_report,
        ..Default::default()
    }
}

pub mod batch;
pub mod counters;

pub use counters::IntakeCounters;

#[cfg(test)]
mod tests;
