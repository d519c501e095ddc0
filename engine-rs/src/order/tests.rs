//! The state machine's table, row by row, and the replace's reports.

use super::*;
use crate::fixed::units;

use ExecType as X;
use OrderStatus as S;

/// Every row of the table: (from, event) -> (to, exec type). Anything else is refused.
const ROWS: &[(S, Event, S, X)] = &[
    (S::PendingNew, Event::Accept, S::New, X::New),
    (S::PendingNew, Event::Reject, S::Rejected, X::Rejected),
    (S::PendingNew, Event::Expire, S::Expired, X::Expired),
    (S::New, Event::PartialFill, S::PartiallyFilled, X::Trade),
    (
        S::PartiallyFilled,
        Event::PartialFill,
        S::PartiallyFilled,
        X::Trade,
    ),
    (S::New, Event::Fill, S::Filled, X::Trade),
    (S::PartiallyFilled, Event::Fill, S::Filled, X::Trade),
    (S::New, Event::Cancel, S::Canceled, X::Canceled),
    (S::PartiallyFilled, Event::Cancel, S::Canceled, X::Canceled),
    (S::New, Event::Expire, S::Expired, X::Expired),
    (S::PartiallyFilled, Event::Expire, S::Expired, X::Expired),
    // Replace (contract 1.1).
    (
        S::New,
        Event::ReplaceRequested,
        S::PendingReplace,
        X::PendingReplace,
    ),
    (
        S::PartiallyFilled,
        Event::ReplaceRequested,
        S::PendingReplace,
        X::PendingReplace,
    ),
    (
        S::PendingReplace,
        Event::Replaced(Standing::Unfilled),
        S::New,
        X::Replaced,
    ),
    (
        S::PendingReplace,
        Event::Replaced(Standing::PartiallyFilled),
        S::PartiallyFilled,
        X::Replaced,
    ),
    (
        S::PendingReplace,
        Event::Replaced(Standing::Done),
        S::Filled,
        X::Replaced,
    ),
];

const STATES: [S; 9] = [
    S::Unspecified,
    S::PendingNew,
    S::New,
    S::PartiallyFilled,
    S::Filled,
    S::Canceled,
    S::Rejected,
    S::Expired,
    S::PendingReplace,
];

const EVENTS: [Event; 10] = [
    Event::Accept,
    Event::Reject,
    Event::Expire,
    Event::PartialFill,
    Event::Fill,
    Event::Cancel,
    Event::ReplaceRequested,
    Event::Replaced(Standing::Unfilled),
    Event::Replaced(Standing::PartiallyFilled),
    Event::Replaced(Standing::Done),
];

/// Each row of the table is accepted as listed, and every other (state, event) pair of every
/// state and every event is refused.
#[test]
fn transition_table() {
    for &(from, event, to, exec) in ROWS {
        assert_eq!(
            transition(from, event),
            Ok((to, exec)),
            "{from:?} {event:?}"
        );
    }
    let mut refused = 0;
    for from in STATES {
        for event in EVENTS {
            if ROWS.iter().any(|&(f, e, _, _)| f == from && e == event) {
                continue;
            }
            assert_eq!(
                transition(from, event),
                Err(InvalidTransition { from, event }),
                "{from:?} {event:?} must be refused"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, STATES.len() * EVENTS.len() - ROWS.len());
    // No state is final and open at once; PENDING_REPLACE is live.
    for s in [S::Filled, S::Canceled, S::Rejected, S::Expired] {
        assert!(is_final(s));
    }
    assert!(!is_final(S::PendingReplace));
}

#[test]
fn standing_follows_cum_qty() {
    assert_eq!(Standing::of(0, 10), Standing::Unfilled);
    assert_eq!(Standing::of(3, 10), Standing::PartiallyFilled);
    assert_eq!(Standing::of(10, 10), Standing::Done);
    assert_eq!(Standing::of(6, 4), Standing::Done);
}

fn resting(qty: i64, price: i64) -> LiveOrder {
    let order = pb::NewOrder {
        client_order_id: "o1".into(),
        account: "A".into(),
        symbol: "AAPL".into(),
        side: pb::Side::Buy as i32,
        order_type: pb::OrderType::Limit as i32,
        quantity: Some(fixed::to_decimal(qty)),
        limit_price: Some(fixed::to_decimal(price)),
        time_in_force: pb::TimeInForce::Gtc as i32,
        ..Default::default()
    };
    let mut o = LiveOrder::new("A.o1".into(), order, "engine-1", 7, "c");
    o.apply(Event::Accept, None, None, 1, &mut Vec::new())
        .unwrap();
    o
}

fn decimal(d: &Option<pb::Decimal>) -> i64 {
    fixed::from_decimal(d.as_ref().unwrap()).unwrap()
}

/// A replace reports PENDING_REPLACE then REPLACED, both under the replace's id with the
/// previous id as orig, the amended quantity, leaves and price, cum unchanged; the next replace
/// names the first one's id as its orig, and later reports keep both ids.
#[test]
fn replace_reports_carry_the_fix_fields() {
    let mut o = resting(units(10), units(100));
    o.apply(
        Event::PartialFill,
        Some((units(4), units(100))),
        None,
        2,
        &mut Vec::new(),
    )
    .unwrap();
    let mut out = Vec::new();
    o.replace("r1", units(12), fixed::to_decimal(units(101)), 3, &mut out)
        .unwrap();
    assert_eq!(out.len(), 2);
    let (pending, replaced) = (&out[0], &out[1]);
    assert_eq!(pending.exec_type, X::PendingReplace as i32);
    assert_eq!(pending.order_status, S::PendingReplace as i32);
    assert_eq!(replaced.exec_type, X::Replaced as i32);
    assert_eq!(replaced.order_status, S::PartiallyFilled as i32);
    for r in &out {
        assert_eq!(r.client_order_id, "r1");
        assert_eq!(r.orig_client_order_id, "o1");
        assert_eq!(decimal(&r.order_qty), units(12));
        assert_eq!(decimal(&r.cum_qty), units(4));
        assert_eq!(decimal(&r.leaves_qty), units(8));
        assert_eq!(decimal(&r.price), units(101));
        assert_eq!(decimal(&r.last_qty), 0);
    }
    assert_eq!([pending.seq, replaced.seq], [3, 4]);
    assert_eq!(o.record.current_client_order_id, "r1");
    assert_eq!(o.order().client_order_id, "o1", "the original id is kept");
    assert_eq!(decimal(&o.order().quantity), units(12));

    let mut out = Vec::new();
    o.replace("r2", units(12), fixed::to_decimal(units(99)), 4, &mut out)
        .unwrap();
    assert!(out
        .iter()
        .all(|r| r.client_order_id == "r2" && r.orig_client_order_id == "r1"));
    let mut out = Vec::new();
    o.apply(Event::Cancel, None, None, 5, &mut out).unwrap();
    assert_eq!(
        (
            out[0].client_order_id.as_str(),
            out[0].orig_client_order_id.as_str()
        ),
        ("r2", "r1")
    );
    // Rebuilt from the record, the order keeps its ids and terms.
    let back = LiveOrder::from_record(o.key.clone(), o.record.clone());
    assert_eq!(back.orig_client_order_id, "r1");
    assert_eq!(back.client_order_id(), "r2");
    assert_eq!(back.terms(), (units(12), Some(units(99))));
}

/// A new quantity at or below what is filled ends the order: FILLED with order_qty = cum_qty
/// and leaves 0 (PENDING_REPLACE already shows it so: cum + leaves = order_qty).
#[test]
fn reducing_to_the_filled_quantity_ends_the_order() {
    let mut o = resting(units(10), units(100));
    o.apply(
        Event::PartialFill,
        Some((units(6), units(100))),
        None,
        2,
        &mut Vec::new(),
    )
    .unwrap();
    let mut out = Vec::new();
    o.replace("r1", units(4), fixed::to_decimal(units(100)), 3, &mut out)
        .unwrap();
    assert_eq!(o.status(), S::Filled);
    for r in &out {
        assert_eq!(decimal(&r.order_qty), units(6));
        assert_eq!(decimal(&r.cum_qty), units(6));
        assert_eq!(decimal(&r.leaves_qty), 0);
    }
    assert_eq!(out[1].order_status, S::Filled as i32);
    assert_eq!(out[1].exec_type, X::Replaced as i32);
    // A final order cannot be replaced; the refusal changes nothing.
    let before = o.clone();
    assert!(o
        .replace("r2", units(9), fixed::to_decimal(units(100)), 4, &mut out)
        .is_err());
    assert_eq!(o, before);
}

/// Recovery adopts a stored REPLACED report's terms and ids (a crash fell between the report
/// batch and the record update).
#[test]
fn adopting_a_replaced_report_takes_its_terms() {
    let mut o = resting(units(10), units(100));
    let mut amended = o.clone();
    let mut out = Vec::new();
    amended
        .replace("r1", units(7), fixed::to_decimal(units(98)), 2, &mut out)
        .unwrap();
    let last = out.pop().unwrap();
    o.adopt(last.clone(), 0);
    assert_eq!(o.terms(), (units(7), Some(units(98))));
    assert_eq!(o.client_order_id(), "r1");
    assert_eq!(o.orig_client_order_id, "o1");
    assert_eq!(o.record.last_report, Some(last));
    assert_eq!(o.record, amended.record);
}

/// N-1: a 1.0 sender's order is reported with 1.0's reasons (a 1.0 client cannot read the
/// values 1.1 added); a 1.1 sender's, or an unrecorded one, keeps the precise reason.
#[test]
fn reasons_added_in_1_1_reach_a_1_0_sender_as_the_1_0_reason_they_refine() {
    use crate::order::reason_for_sender;
    use RejectReason as R;
    for (reason, for_1_0) in [
        (R::SessionEnd, R::DeadlineExceeded),
        (R::MassCanceled, R::Unspecified),
        (R::SessionLost, R::Unspecified),
        (R::DeadlineExceeded, R::DeadlineExceeded),
        (R::TradingHalted, R::TradingHalted),
    ] {
        assert_eq!(reason_for_sender(reason, "1.0"), for_1_0, "{reason:?}");
        assert_eq!(reason_for_sender(reason, "1.1"), reason, "{reason:?}");
        assert_eq!(reason_for_sender(reason, "1.7"), reason, "{reason:?}");
        assert_eq!(reason_for_sender(reason, ""), reason, "{reason:?}");
    }
}
