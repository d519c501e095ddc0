//! Expiry with injected time: the session arithmetic, the boundaries, several orders due at
//! once, DAY orders around the session end, restored orders, and orders that end before
//! their expiry. Nothing sleeps: every instant is an argument.

use std::collections::BTreeMap;

use super::*;
use crate::book::{Side, TimeInForce};
use crate::fixed::{self, units};
use crate::limits::SymbolLimits;
use crate::proto::v1::{ExecType, OrderStatus};
use crate::validate::ValidOrder;

const S: i64 = 1_000_000_000;
/// 2024-03-01 00:00:00 UTC.
const DAY0: i64 = 19_783 * DAY_NS;
/// The session end the tests configure: 21:00:00 UTC.
const END: &str = "21:00:00";
/// 2024-03-01 21:00:00 UTC.
const E: i64 = DAY0 + 21 * 3600 * S;

fn venue() -> Venue {
    let mut m = BTreeMap::new();
    m.insert(
        "AAPL".to_string(),
        SymbolLimits {
            max_order_qty: units(1_000_000),
            reference_price: units(100),
            seed: vec![],
        },
    );
    Venue::new(&m).with_day_session_end(SessionEnd::parse(END).unwrap())
}

/// A limit order of `id` (buy at 100 unless `sell`), accepted (acked) at `accepted`.
fn order(id: &str, tif: pb::TimeInForce, deadline: i64, accepted: i64, sell: bool) -> LiveOrder {
    let side = if sell { pb::Side::Sell } else { pb::Side::Buy };
    let o = pb::NewOrder {
        client_order_id: id.into(),
        account: "ACC".into(),
        symbol: "AAPL".into(),
        side: side as i32,
        order_type: pb::OrderType::Limit as i32,
        quantity: Some(fixed::to_decimal(units(10))),
        limit_price: Some(fixed::to_decimal(units(100))),
        time_in_force: tif as i32,
        deadline_unix_ns: deadline,
        ..Default::default()
    };
    let seq = u64::try_from(accepted).unwrap();
    let mut live = LiveOrder::new(format!("ACC.{id}"), o, "e1", seq, "c");
    live.record.ack = Some(pb::OrderAck {
        ack_time_unix_ns: accepted,
        ..Default::default()
    });
    live
}

fn valid(o: &LiveOrder, qty: i64) -> ValidOrder {
    let tif = match pb::TimeInForce::try_from(o.order().time_in_force).unwrap() {
        pb::TimeInForce::Day => TimeInForce::Day,
        pb::TimeInForce::Ioc => TimeInForce::Ioc,
        _ => TimeInForce::Gtc,
    };
    let side = if o.order().side == pb::Side::Sell as i32 {
        Side::Sell
    } else {
        Side::Buy
    };
    ValidOrder {
        side,
        limit: Some(units(100)),
        qty,
        tif,
    }
}

/// Rests `o` (accepted at its ack time) in `venue` at `now`.
fn rest(venue: &mut Venue, o: LiveOrder, now: i64) -> LiveOrder {
    let v = valid(&o, o.qty);
    let ex = venue.execute(o, &v, now).unwrap();
    assert!(ex.expired.is_empty());
    let t = ex.touched.into_iter().next().unwrap();
    assert_eq!(t.order.status(), OrderStatus::New);
    t.order
}

fn expired(t: &Touched) -> (&str, RejectReason) {
    assert_eq!(t.reports.len(), 1);
    let r = &t.reports[0];
    assert_eq!(r.exec_type, ExecType::Expired as i32);
    assert_eq!(r.order_status, OrderStatus::Expired as i32);
    assert_eq!(r.leaves_qty, Some(fixed::to_decimal(0)));
    (
        r.client_order_id.as_str(),
        RejectReason::try_from(r.reason).unwrap(),
    )
}

#[test]
fn session_end_parses_hh_mm_ss_and_nothing_else() {
    for ok in ["00:00:00", "09:30:00", "21:00:00", "23:59:59"] {
        assert_eq!(SessionEnd::parse(ok).unwrap().to_string(), ok);
    }
    for bad in [
        "",
        "24:00:00",
        "9:30:00",
        "21:00",
        "21:00:00Z",
        "21:60:00",
        "21:00:61",
        "noon",
        " 21:00:00",
    ] {
        let err = SessionEnd::parse(bad).unwrap_err();
        assert!(err.contains("HH:MM:SS"), "{bad:?}: {err}");
    }
}

#[test]
fn first_session_end_is_strictly_after() {
    let end = SessionEnd::parse(END).unwrap();
    assert_eq!(end.first_after(DAY0), E);
    assert_eq!(end.first_after(E - 1), E);
    assert_eq!(
        end.first_after(E),
        E + DAY_NS,
        "accepted at the end: next session"
    );
    assert_eq!(end.first_after(E + 1), E + DAY_NS);
    assert_eq!(end.first_after(DAY0 + DAY_NS - 1), E + DAY_NS);
    let midnight = SessionEnd::parse("00:00:00").unwrap();
    assert_eq!(midnight.first_after(DAY0 - 1), DAY0);
    assert_eq!(midnight.first_after(DAY0), DAY0 + DAY_NS);
    assert_eq!(midnight.first_after(E), DAY0 + DAY_NS);
}

#[test]
fn expiry_of_each_kind() {
    let end = Some(SessionEnd::parse(END).unwrap());
    let at = |o: &LiveOrder| expiry_of(o, end).map(|e| (e.at, e.reason));
    let gtc = order("g", pb::TimeInForce::Gtc, 0, DAY0, false);
    assert_eq!(at(&gtc), None, "GTC without a deadline never expires");
    let gtd = order("d", pb::TimeInForce::Gtc, E + 5, DAY0, false);
    assert_eq!(at(&gtd), Some((E + 5, RejectReason::DeadlineExceeded)));
    let day = order("day", pb::TimeInForce::Day, 0, DAY0, false);
    assert_eq!(at(&day), Some((E, RejectReason::SessionEnd)));
    assert_eq!(
        expiry_of(&day, None),
        None,
        "no session end: DAY rests like GTC"
    );
    let day_gtd = order("dd", pb::TimeInForce::Day, E - 1, DAY0, false);
    assert_eq!(at(&day_gtd), Some((E - 1, RejectReason::DeadlineExceeded)));
    let day_late = order("dl", pb::TimeInForce::Day, E + 1, DAY0, false);
    assert_eq!(at(&day_late), Some((E, RejectReason::SessionEnd)));
    let tie = order("dt", pb::TimeInForce::Day, E, DAY0, false);
    assert_eq!(at(&tie), Some((E, RejectReason::DeadlineExceeded)));
}

/// Due exactly at the deadline, not one nanosecond before; the timer is gone afterwards.
#[test]
fn gtd_expires_exactly_at_its_deadline() {
    let mut v = venue();
    let d = DAY0 + 10 * S;
    rest(
        &mut v,
        order("g1", pb::TimeInForce::Gtc, d, DAY0, false),
        DAY0,
    );
    assert_eq!(v.next_expiry(), Some(d));
    assert!(v.expire_due(None, d - 1).unwrap().is_empty());
    assert_eq!(v.open_orders(), 1);
    let out = v.expire_due(None, d).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(expired(&out[0]), ("g1", RejectReason::DeadlineExceeded));
    assert_eq!(out[0].reports[0].transact_time_unix_ns, d);
    assert_eq!(out[0].reports[0].text, "deadline passed while resting");
    assert_eq!(v.next_expiry(), None);
    assert_eq!(v.open_orders(), 0);
    assert_eq!(v.book("AAPL").unwrap().orders(Side::Buy), 0);
    assert!(v.expire_due(None, d + DAY_NS).unwrap().is_empty());
}

/// Several orders due at once expire together, earliest first, each its own report; those
/// not yet due stay, and the next instant is theirs.
#[test]
fn several_due_at_once() {
    let mut v = venue();
    let now = DAY0 + S;
    rest(
        &mut v,
        order("late", pb::TimeInForce::Gtc, E + 3 * S, now, false),
        now,
    );
    rest(
        &mut v,
        order("b", pb::TimeInForce::Gtc, E - 2 * S, now, false),
        now,
    );
    rest(
        &mut v,
        order("day", pb::TimeInForce::Day, 0, now, false),
        now,
    );
    rest(
        &mut v,
        order("a", pb::TimeInForce::Gtc, E - 3 * S, now, false),
        now,
    );
    rest(
        &mut v,
        order("gtc", pb::TimeInForce::Gtc, 0, now, false),
        now,
    );
    assert_eq!(v.next_expiry(), Some(E - 3 * S));
    let out = v.expire_due(None, E).unwrap();
    let got: Vec<_> = out.iter().map(expired).collect();
    assert_eq!(
        got,
        vec![
            ("a", RejectReason::DeadlineExceeded),
            ("b", RejectReason::DeadlineExceeded),
            ("day", RejectReason::SessionEnd),
        ]
    );
    assert_eq!(
        out[2].reports[0].text,
        "DAY order: the session ended at 21:00:00 UTC"
    );
    assert_eq!(v.open_orders(), 2);
    assert_eq!(v.next_expiry(), Some(E + 3 * S));
}

/// A DAY order accepted one nanosecond before the session end expires at it; one accepted
/// at or after it belongs to the next session.
#[test]
fn day_accepted_around_the_session_end() {
    let mut v = venue();
    rest(
        &mut v,
        order("before", pb::TimeInForce::Day, 0, E - 1, false),
        E - 1,
    );
    assert_eq!(v.next_expiry(), Some(E));
    let out = v.expire_due(None, E).unwrap();
    assert_eq!(
        out.iter().map(expired).collect::<Vec<_>>(),
        vec![("before", RejectReason::SessionEnd)]
    );
    rest(&mut v, order("at", pb::TimeInForce::Day, 0, E, false), E);
    rest(
        &mut v,
        order("after", pb::TimeInForce::Day, 0, E + 1, false),
        E + 1,
    );
    assert_eq!(v.next_expiry(), Some(E + DAY_NS));
    assert!(v.expire_due(None, E + DAY_NS - 1).unwrap().is_empty());
    assert_eq!(v.expire_due(None, E + DAY_NS).unwrap().len(), 2);
}

/// After a restart, a restored order (rebuilt from its stored record) has the same expiry;
/// one that came due while the engine was down is due at once.
#[test]
fn restored_orders_compute_the_same_instant() {
    let mut before = venue();
    let now = E - 60 * S;
    let gtd = rest(
        &mut before,
        order("g", pb::TimeInForce::Gtc, E + 7, now, false),
        now,
    );
    let day = rest(
        &mut before,
        order("d", pb::TimeInForce::Day, 0, now, false),
        now,
    );
    let mut after = venue();
    for o in [&gtd, &day] {
        let back = LiveOrder::from_record(o.key.clone(), o.record.clone());
        assert_eq!(after.expiry(&back), before.expiry(o));
        after.restore(back).unwrap();
    }
    assert_eq!(after.next_expiry(), before.next_expiry());
    assert_eq!(after.next_expiry(), Some(E));
    // Restarted after both instants: both due at once, with their own reasons.
    let out = after.expire_due(None, E + 3600 * S).unwrap();
    let got: Vec<_> = out.iter().map(expired).collect();
    assert_eq!(
        got,
        vec![
            ("d", RejectReason::SessionEnd),
            ("g", RejectReason::DeadlineExceeded)
        ]
    );
    assert_eq!(
        out[1].reports[0].seq,
        gtd.report_seq + 1,
        "the report sequence goes on"
    );
}

/// An order filled or canceled before its expiry leaves no timer; a partial fill keeps it.
#[test]
fn filled_or_canceled_orders_leave_no_timer() {
    let mut v = venue();
    let now = DAY0;
    let d = E;
    rest(&mut v, order("s1", pb::TimeInForce::Gtc, d, now, true), now);
    rest(&mut v, order("s2", pb::TimeInForce::Day, 0, now, true), now);
    assert_eq!(v.next_expiry(), Some(d));
    // A buy of 15 fills s1 (10) and half of s2: s1's timer goes, s2's stays.
    let mut taker = order("t", pb::TimeInForce::Ioc, 0, now, false);
    taker.qty = units(15);
    taker.record.order.as_mut().unwrap().quantity = Some(fixed::to_decimal(units(15)));
    let v_taker = valid(&taker, units(15));
    let ex = v.execute(taker, &v_taker, now + 1).unwrap();
    assert!(ex.expired.is_empty());
    let statuses: Vec<_> = ex
        .touched
        .iter()
        .map(|t| (t.order.order().client_order_id.clone(), t.order.status()))
        .collect();
    assert!(
        statuses.contains(&("s1".into(), OrderStatus::Filled)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("s2".into(), OrderStatus::PartiallyFilled)),
        "{statuses:?}"
    );
    assert_eq!(v.next_expiry(), Some(E), "s2's session end");
    assert!(v.cancel("ACC.s2", now + 2).unwrap().is_some());
    assert_eq!(v.next_expiry(), None);
    assert!(v.expire_due(None, E + DAY_NS).unwrap().is_empty());
}

/// An execution in the book first expires the due orders there, DAY ones included: a due
/// order never trades, even before the timer fires.
#[test]
fn an_execution_expires_due_orders_first() {
    let mut v = venue();
    rest(
        &mut v,
        order("day", pb::TimeInForce::Day, 0, DAY0, true),
        DAY0,
    );
    let taker = order("t", pb::TimeInForce::Ioc, 0, E, false);
    let vt = valid(&taker, taker.qty);
    let ex = v.execute(taker, &vt, E).unwrap();
    assert_eq!(
        ex.expired.iter().map(expired).collect::<Vec<_>>(),
        vec![("day", RejectReason::SessionEnd)]
    );
    assert!(ex.touched[0]
        .reports
        .iter()
        .all(|r| r.exec_type != ExecType::Trade as i32));
    assert_eq!(v.next_expiry(), None);
}
