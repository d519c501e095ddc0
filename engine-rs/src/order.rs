//! An order's life: the state machine (the only place a status changes), the order as the
//! engine tracks it ([`LiveOrder`], whose `record` is what the order store holds) and the
//! reports each change produces. Pure.

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
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
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
            },
            qty,
            cum_qty: 0,
            cum_notional: 0,
            report_seq: 0,
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
        LiveOrder {
            key,
            record,
            qty,
            cum_qty,
            cum_notional,
            report_seq,
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
        self.record.last_report = Some(report);
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
        let report = pb::ExecutionReport {
            exec_id: format!("{}-{}", self.record.engine_order_id, self.report_seq),
            engine_order_id: self.record.engine_order_id.clone(),
            client_order_id: o.client_order_id.clone(),
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
            orig_client_order_id: String::new(),
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
mod tests {
    use super::*;

    /// The transition table accepts the FIX life cycle and refuses everything else.
    #[test]
    fn transition_table() {
        use OrderStatus as S;
        assert_eq!(
            transition(S::PendingNew, Event::Accept),
            Ok((S::New, ExecType::New))
        );
        assert_eq!(
            transition(S::New, Event::Fill),
            Ok((S::Filled, ExecType::Trade))
        );
        assert_eq!(
            transition(S::PartiallyFilled, Event::Cancel),
            Ok((S::Canceled, ExecType::Canceled))
        );
        for final_state in [S::Filled, S::Canceled, S::Rejected, S::Expired] {
            for ev in [
                Event::Accept,
                Event::Fill,
                Event::PartialFill,
                Event::Cancel,
                Event::Reject,
            ] {
                assert!(
                    transition(final_state, ev).is_err(),
                    "{final_state:?} {ev:?}"
                );
            }
        }
        assert!(transition(S::PendingNew, Event::Fill).is_err());
        assert!(transition(S::New, Event::Accept).is_err());
    }
}
