//! Recovery's decisions, pure: how an open record read back after a restart is brought up to
//! the last report EXECUTIONS holds for it, and what then becomes of it (written, executed,
//! retired or put back into its book). `recovery.rs` does the I/O around them.

use crate::fixed;
use crate::house;
use crate::order::{is_final, LiveOrder};
use crate::proto::v1::{self as pb, OrderStatus, RejectReason};
use crate::validate::Rejection;

/// What recovery does with one open record (after [`adopt_report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconcile {
    /// Final: its last report is stored, only the record lagged: write the record.
    Write,
    /// Acknowledged, never executed (PENDING_NEW): execute it against the restored book.
    Execute,
    /// Seeded liquidity of a replaced seed generation: finish it (CANCELED), with this text.
    Retire(&'static str),
    /// Resting (NEW / PARTIALLY_FILLED): put it back into its book without matching; write
    /// the record too when a stored report was adopted.
    Restore { write: bool },
}

/// Brings `live` up to `stored`, the last report EXECUTIONS holds for its order, if that is
/// newer than the record (a crash fell between an execution's report batch and its record
/// update). True when adopted.
pub fn adopt_report(live: &mut LiveOrder, stored: Option<pb::ExecutionReport>) -> bool {
    let Some(report) = stored.filter(|r| r.seq > live.report_seq) else {
        return false;
    };
    let decimal = |d: &Option<pb::Decimal>| {
        d.as_ref()
            .and_then(|d| fixed::from_decimal(d).ok())
            .unwrap_or(0)
    };
    let avg = decimal(&report.avg_px);
    let cum = decimal(&report.cum_qty);
    live.adopt(report, fixed::notional_e16(avg, cum));
    true
}

/// Whether an adopted report's terms (quantity, limit price) cost the order its time
/// priority against the record's: a new price or more quantity (a replace that lost it).
pub fn loses_priority(before: (i64, Option<i64>), after: (i64, Option<i64>)) -> bool {
    after.1 != before.1 || after.0 > before.0
}

/// The decision for one open record of `engine_id`, whose stored report was adopted or not.
pub fn reconcile(
    live: &LiveOrder,
    adopted: bool,
    engine_id: &str,
    seed_generation: &str,
) -> Reconcile {
    let status = live.status();
    if is_final(status) {
        Reconcile::Write
    } else if status == OrderStatus::PendingNew {
        Reconcile::Execute
    } else if house::is_other_generation(live.order(), engine_id, seed_generation) {
        Reconcile::Retire("house liquidity of a replaced seed_generation")
    } else {
        Reconcile::Restore { write: adopted }
    }
}

/// The reason an acknowledged order that cannot execute after a restart is finished with: a
/// missed deadline stays DEADLINE_EXCEEDED; anything else is RECOVERY_INVALID.
pub fn recovered_rejection(rejection: &Rejection) -> RejectReason {
    if rejection.reason == RejectReason::DeadlineExceeded {
        RejectReason::DeadlineExceeded
    } else {
        RejectReason::RecoveryInvalid
    }
}

/// The records recovery writes, one per key: the last state of each (the order store takes
/// one write per key and revision). An order restored with an adopted report and then expired
/// at once (its deadline or session end passed while the engine was down) is written once,
/// EXPIRED.
pub fn last_states(writes: Vec<LiveOrder>) -> Vec<LiveOrder> {
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut out: Vec<LiveOrder> = Vec::with_capacity(writes.len());
    for w in writes {
        match at.get(&w.key) {
            Some(&i) => out[i] = w,
            None => {
                at.insert(w.key.clone(), out.len());
                out.push(w);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One write per key, the last state winning, in first-seen order.
    #[test]
    fn one_write_per_key_the_last_state() {
        let writes = vec![
            live("A", "x", OrderStatus::New),
            live("A", "y", OrderStatus::New),
            live("A", "x", OrderStatus::Expired),
        ];
        let out = last_states(writes);
        let got: Vec<_> = out.iter().map(|o| (o.key.as_str(), o.status())).collect();
        assert_eq!(
            got,
            vec![("A.x", OrderStatus::Expired), ("A.y", OrderStatus::New)]
        );
    }

    fn live(account: &str, id: &str, status: OrderStatus) -> LiveOrder {
        let order = pb::NewOrder {
            account: account.into(),
            client_order_id: id.into(),
            quantity: Some(fixed::to_decimal(fixed::units(10))),
            ..Default::default()
        };
        let mut live = LiveOrder::new(format!("{account}.{id}"), order, "engine-1", 1, "c");
        live.record.status = status as i32;
        live
    }

    fn report(seq: u32, status: OrderStatus, cum: i64, avg: i64) -> pb::ExecutionReport {
        pb::ExecutionReport {
            seq,
            order_status: status as i32,
            cum_qty: Some(fixed::to_decimal(cum)),
            avg_px: Some(fixed::to_decimal(avg)),
            ..Default::default()
        }
    }

    /// Final records are written, pending ones executed, resting ones restored (written only
    /// when a stored report was adopted), and house orders of another generation retired.
    #[test]
    fn decisions() {
        let e = "engine-1";
        for st in [
            OrderStatus::Filled,
            OrderStatus::Canceled,
            OrderStatus::Rejected,
            OrderStatus::Expired,
        ] {
            assert_eq!(
                reconcile(&live("A", "o", st), false, e, "1"),
                Reconcile::Write
            );
        }
        let pending = live("A", "o", OrderStatus::PendingNew);
        assert_eq!(reconcile(&pending, false, e, "1"), Reconcile::Execute);
        let resting = live("A", "o", OrderStatus::PartiallyFilled);
        assert_eq!(
            reconcile(&resting, true, e, "1"),
            Reconcile::Restore { write: true }
        );
        assert_eq!(
            reconcile(&live("A", "o", OrderStatus::New), false, e, "1"),
            Reconcile::Restore { write: false }
        );
        let seed = live(house::HOUSE_ACCOUNT, "engine-1-1-AAPL-0", OrderStatus::New);
        assert_eq!(
            reconcile(&seed, false, e, "1"),
            Reconcile::Restore { write: false }
        );
        assert!(matches!(
            reconcile(&seed, false, e, "2"),
            Reconcile::Retire(_)
        ));
        // A house order that was acknowledged but never executed still executes.
        let pending_seed = live(
            house::HOUSE_ACCOUNT,
            "engine-1-1-AAPL-1",
            OrderStatus::PendingNew,
        );
        assert_eq!(reconcile(&pending_seed, false, e, "2"), Reconcile::Execute);
    }

    /// Only a stored report newer than the record is adopted, with its quantities and
    /// notional; an older or missing one changes nothing.
    #[test]
    fn adopting_the_stored_report() {
        let mut o = live("A", "o", OrderStatus::New);
        o.report_seq = 2;
        let before = o.clone();
        assert!(!adopt_report(&mut o, None));
        assert!(!adopt_report(
            &mut o,
            Some(report(
                2,
                OrderStatus::Filled,
                fixed::units(10),
                fixed::units(5)
            ))
        ));
        assert_eq!(o, before);
        let newer = report(
            3,
            OrderStatus::PartiallyFilled,
            fixed::units(4),
            fixed::units(5),
        );
        assert!(adopt_report(&mut o, Some(newer.clone())));
        assert_eq!(o.report_seq, 3);
        assert_eq!(o.cum_qty, fixed::units(4));
        assert_eq!(o.status(), OrderStatus::PartiallyFilled);
        assert_eq!(
            o.cum_notional,
            fixed::notional_e16(fixed::units(5), fixed::units(4))
        );
        assert_eq!(o.record.last_report, Some(newer));
    }

    /// A new price or more quantity loses priority; less quantity, or nothing new, keeps it.
    #[test]
    fn priority_after_an_adopted_replace() {
        let at = |qty: i64, price: i64| (fixed::units(qty), Some(fixed::units(price)));
        assert!(!loses_priority(at(10, 100), at(10, 100)));
        assert!(!loses_priority(at(10, 100), at(6, 100)));
        assert!(loses_priority(at(10, 100), at(12, 100)));
        assert!(loses_priority(at(10, 100), at(10, 99)));
        assert!(loses_priority(at(10, 100), at(6, 101)));
    }

    /// A missed deadline keeps its reason after a restart; any other refusal is
    /// RECOVERY_INVALID.
    #[test]
    fn rejection_reason_after_a_restart() {
        let rej = |reason| Rejection {
            reason,
            errors: vec![],
        };
        assert_eq!(
            recovered_rejection(&rej(RejectReason::DeadlineExceeded)),
            RejectReason::DeadlineExceeded
        );
        assert_eq!(
            recovered_rejection(&rej(RejectReason::UnknownSymbol)),
            RejectReason::RecoveryInvalid
        );
    }
}
