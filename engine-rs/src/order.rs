//! An order's life: the state machine (the only place a status changes), the order as the
//! engine tracks it ([`LiveOrder`], whose `record` is what the order store holds) and the
//! reports each change produces. Pure.
//!
//! A replace (contract 1.1, FIX OrderCancelReplaceRequest) is two rows of the table:
//! `ReplaceRequested` takes a resting order to PENDING_REPLACE, then `Replaced` takes it to
//! where it stands against its amended quantity ([`Standing`]): NEW (nothing filled),
//! PARTIALLY_FILLED, or FILLED when the new quantity is at or below what is already filled
//! (the order ends: order_qty = cum_qty, leaves 0). Both reports are produced by one call
//! ([`LiveOrder::replace`]) and journaled in one entry, so PENDING_REPLACE is never an
//! order's last stored state.

use crate::fixed;
use crate::proto::state::OrderRecord;
use crate::proto::v1::{self as pb, ExecType, FieldError, OrderStatus, RejectReason};

/// What happens to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Accept,
    Reject,
    Expire,
    /// A fill that leaves quantity open.
    PartialFill,
    /// A fill that completes the order.
    Fill,
    Cancel,
    /// A replace is being applied (FIX ExecType E).
    ReplaceRequested,
    /// The replace is applied (FIX ExecType 5); the order stands as [`Standing`] says.
    Replaced(Standing),
}

/// Where a replaced order stands against its amended quantity (decided by its cum_qty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Nothing filled yet.
    Unfilled,
    /// Some filled, some open.
    PartiallyFilled,
    /// The amended quantity is at or below what is already filled: the order ends.
    Done,
}

impl Standing {
    /// Where an order with `cum_qty` filled stands against quantity `qty`.
    pub fn of(cum_qty: i64, qty: i64) -> Standing {
        if cum_qty >= qty {
            Standing::Done
        } else if cum_qty == 0 {
            Standing::Unfilled
        } else {
            Standing::PartiallyFilled
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid order transition: {event:?} in state {from:?}")]
pub struct InvalidTransition {
    pub from: OrderStatus,
    pub event: Event,
}

/// The order state machine: the only place a status changes.
pub fn transition(
    from: OrderStatus,
    event: Event,
) -> Result<(OrderStatus, ExecType), InvalidTransition> {
    use Event as E;
    use OrderStatus as S;
    let to = match (from, event) {
        (S::PendingNew, E::Accept) => (S::New, ExecType::New),
        (S::PendingNew, E::Reject) => (S::Rejected, ExecType::Rejected),
        (S::PendingNew, E::Expire) => (S::Expired, ExecType::Expired),
        (S::New | S::PartiallyFilled, E::PartialFill) => (S::PartiallyFilled, ExecType::Trade),
        (S::New | S::PartiallyFilled, E::Fill) => (S::Filled, ExecType::Trade),
        (S::New | S::PartiallyFilled, E::Cancel) => (S::Canceled, ExecType::Canceled),
        (S::New | S::PartiallyFilled, E::Expire) => (S::Expired, ExecType::Expired),
        (S::New | S::PartiallyFilled, E::ReplaceRequested) => {
            (S::PendingReplace, ExecType::PendingReplace)
        }
        (S::PendingReplace, E::Replaced(Standing::Unfilled)) => (S::New, ExecType::Replaced),
        (S::PendingReplace, E::Replaced(Standing::PartiallyFilled)) => {
            (S::PartiallyFilled, ExecType::Replaced)
        }
        (S::PendingReplace, E::Replaced(Standing::Done)) => (S::Filled, ExecType::Replaced),
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

/// The reason a report of an order carries, for the order's sender (N-1 on the wire): a
/// reason added in contract 1.1 is reported to an order whose sender declared 1.0 as the 1.0
/// reason it refines (the report's text keeps the detail), because a 1.0 client cannot read
/// an enum value it does not know (its models refuse the report). `sender` is the record's
/// `sender_contract_version`; empty (not recorded) changes nothing.
pub fn reason_for_sender(reason: RejectReason, sender: &str) -> RejectReason {
    let Some(v) = crate::schema_version::parse(sender) else {
        return reason;
    };
    if v != crate::schema_version::UNDECLARED {
        return reason;
    }
    match reason {
        RejectReason::SessionEnd => RejectReason::DeadlineExceeded,
        RejectReason::MassCanceled | RejectReason::SessionLost => RejectReason::Unspecified,
        other => other,
    }
}

/// True once no further execution can happen.
pub fn is_final(s: OrderStatus) -> bool {
    matches!(
        s,
        OrderStatus::Filled | OrderStatus::Canceled | OrderStatus::Rejected | OrderStatus::Expired
    )
}

/// A client order as the engine tracks it; `record` is what is persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveOrder {
    pub key: String,
    pub record: OrderRecord,
    pub qty: i64,
    pub cum_qty: i64,
    pub cum_notional: i128,
    pub report_seq: u32,
    /// The id the order had before its latest replace (FIX OrigClOrdID); empty until it is
    /// replaced. Every report carries it from then on, so it is rebuilt from the last one.
    pub orig_client_order_id: String,
}

impl LiveOrder {
    /// A fresh order in PENDING_NEW, owned by `engine_id`, with arrival sequence `seq`.
    pub fn new(
        key: String,
        order: pb::NewOrder,
        engine_id: &str,
        seq: u64,
        correlation_id: &str,
    ) -> Self {
        let qty = order
            .quantity
            .as_ref()
            .and_then(|d| fixed::from_decimal(d).ok())
            .unwrap_or(0);
        LiveOrder {
            key,
            record: OrderRecord {
                order: Some(order),
                engine_order_id: format!("{engine_id}-{seq}"),
                engine_id: engine_id.into(),
                seq,
                status: OrderStatus::PendingNew as i32,
                ack: None,
                last_report: None,
                cum_notional_e16: "0".into(),
                correlation_id: correlation_id.into(),
                tombstone: false,
                signer: String::new(),
                alias_of: String::new(),
                current_client_order_id: String::new(),
                sender_contract_version: String::new(),
            },
            qty,
            cum_qty: 0,
            cum_notional: 0,
            report_seq: 0,
            orig_client_order_id: String::new(),
        }
    }

    /// Rebuilds the in-memory view of a persisted record.
    pub fn from_record(key: String, record: OrderRecord) -> Self {
        let order = record.order.clone().unwrap_or_default();
        let qty = order
            .quantity
            .as_ref()
            .and_then(|d| fixed::from_decimal(d).ok())
            .unwrap_or(0);
        let (cum_qty, report_seq) = record
            .last_report
            .as_ref()
            .map(|r| {
                (
                    r.cum_qty
                        .as_ref()
                        .and_then(|d| fixed::from_decimal(d).ok())
                        .unwrap_or(0),
                    r.seq,
                )
            })
            .unwrap_or((0, 0));
        let cum_notional = record.cum_notional_e16.parse().unwrap_or(0);
        let orig_client_order_id = record
            .last_report
            .as_ref()
            .map(|r| r.orig_client_order_id.clone())
            .unwrap_or_default();
        LiveOrder {
            key,
            record,
            qty,
            cum_qty,
            cum_notional,
            report_seq,
            orig_client_order_id,
        }
    }

    pub fn status(&self) -> OrderStatus {
        OrderStatus::try_from(self.record.status).unwrap_or(OrderStatus::Unspecified)
    }

    pub fn order(&self) -> &pb::NewOrder {
        static EMPTY: std::sync::OnceLock<pb::NewOrder> = std::sync::OnceLock::new();
        self.record
            .order
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(pb::NewOrder::default))
    }

    /// The id the order answers to now: its latest accepted replace's, else its own.
    pub fn client_order_id(&self) -> &str {
        if self.record.current_client_order_id.is_empty() {
            &self.order().client_order_id
        } else {
            &self.record.current_client_order_id
        }
    }

    /// The order's terms as they stand: quantity and limit price (None: a market order).
    pub fn terms(&self) -> (i64, Option<i64>) {
        let price = self
            .order()
            .limit_price
            .as_ref()
            .and_then(|d| fixed::from_decimal(d).ok());
        (self.qty, price)
    }

    pub fn leaves(&self) -> i64 {
        if is_final(self.status()) {
            0
        } else {
            self.qty - self.cum_qty
        }
    }

    /// Adopts a report published by an earlier run whose record update was lost in a crash.
    pub fn adopt(&mut self, report: pb::ExecutionReport, cum_notional: i128) {
        self.cum_qty = report
            .cum_qty
            .as_ref()
            .and_then(|d| fixed::from_decimal(d).ok())
            .unwrap_or(0);
        self.report_seq = report.seq;
        self.cum_notional = cum_notional;
        self.record.status = report.order_status;
        self.record.cum_notional_e16 = cum_notional.to_string();
        // A replace's terms (contract 1.1): the report says the order's quantity, price and
        // ids as they stand, amended or not.
        if let Some(qty) = report
            .order_qty
            .as_ref()
            .and_then(|d| fixed::from_decimal(d).ok())
        {
            self.qty = qty;
        }
        if let Some(order) = self.record.order.as_mut() {
            if report.order_qty.is_some() {
                order.quantity = report.order_qty;
            }
            if report.price.is_some() {
                order.limit_price = report.price;
            }
            if !report.orig_client_order_id.is_empty() {
                self.record.current_client_order_id = report.client_order_id.clone();
                self.orig_client_order_id = report.orig_client_order_id.clone();
            }
        }
        self.record.last_report = Some(report);
    }

    /// Takes a replace's terms and reports it (appended to `out`): PENDING_REPLACE, then
    /// REPLACED, each with `client_order_id` (the replace's id) as the report's client order id,
    /// the id the order had before as its orig_client_order_id, order_qty / leaves / price as
    /// amended and cum_qty unchanged. `qty`: the new total quantity; at or below cum_qty it
    /// ends the order (FILLED, order_qty = cum_qty, leaves 0). `price`: the new limit price.
    /// Refused (order unchanged) unless the order is NEW or PARTIALLY_FILLED.
    pub(crate) fn replace(
        &mut self,
        client_order_id: &str,
        qty: i64,
        price: pb::Decimal,
        now: i64,
        out: &mut Vec<pb::ExecutionReport>,
    ) -> Result<(), InvalidTransition> {
        transition(self.status(), Event::ReplaceRequested)?;
        let qty = qty.max(self.cum_qty);
        self.orig_client_order_id = self.client_order_id().to_string();
        self.record.current_client_order_id = client_order_id.to_string();
        self.qty = qty;
        if let Some(order) = self.record.order.as_mut() {
            order.quantity = Some(fixed::to_decimal(qty));
            order.limit_price = Some(price);
        }
        self.apply(Event::ReplaceRequested, None, None, now, out)?;
        let standing = Standing::of(self.cum_qty, self.qty);
        self.apply(Event::Replaced(standing), None, None, now, out)
    }

    /// Applies `event` and appends the resulting execution report to `out`.
    pub(crate) fn apply(
        &mut self,
        event: Event,
        fill: Option<(i64, i64)>,
        reject: Option<(RejectReason, &[FieldError], &str)>,
        now: i64,
        out: &mut Vec<pb::ExecutionReport>,
    ) -> Result<(), InvalidTransition> {
        let (status, exec_type) = transition(self.status(), event)?;
        let (last_qty, last_px) = fill.unwrap_or((0, 0));
        if fill.is_some() {
            self.cum_qty += last_qty;
            self.cum_notional += fixed::notional_e16(last_px, last_qty);
        }
        self.record.status = status as i32;
        self.record.cum_notional_e16 = self.cum_notional.to_string();
        self.report_seq += 1;
        let o = self.order();
        let (reason, errors, text) = reject.unwrap_or((RejectReason::Unspecified, &[], ""));
        let reason = reason_for_sender(reason, &self.record.sender_contract_version);
        let report = pb::ExecutionReport {
            exec_id: format!("{}-{}", self.record.engine_order_id, self.report_seq),
            engine_order_id: self.record.engine_order_id.clone(),
            client_order_id: self.client_order_id().to_string(),
            account: o.account.clone(),
            symbol: o.symbol.clone(),
            side: o.side,
            exec_type: exec_type as i32,
            order_status: status as i32,
            order_qty: Some(fixed::to_decimal(self.qty)),
            last_qty: Some(fixed::to_decimal(last_qty)),
            last_px: Some(fixed::to_decimal(last_px)),
            cum_qty: Some(fixed::to_decimal(self.cum_qty)),
            leaves_qty: Some(fixed::to_decimal(self.leaves())),
            avg_px: Some(fixed::to_decimal(fixed::avg_price(
                self.cum_notional,
                self.cum_qty,
            ))),
            transact_time_unix_ns: now,
            reason: reason as i32,
            field_errors: errors.to_vec(),
            text: text.into(),
            seq: self.report_seq,
            engine_id: self.record.engine_id.clone(),
            tags: o.tags.clone(),
            signer: self.record.signer.clone(),
            orig_client_order_id: self.orig_client_order_id.clone(),
            price: o.limit_price,
        };
        self.record.last_report = Some(report.clone());
        out.push(report);
        Ok(())
    }
}

/// An order changed by an operation, with the reports that describe the change (in order).
#[derive(Debug, Clone, PartialEq)]
pub struct Touched {
    pub order: LiveOrder,
    pub reports: Vec<pb::ExecutionReport>,
}

#[cfg(test)]
mod tests;
