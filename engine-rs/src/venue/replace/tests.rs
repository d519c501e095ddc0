//! Replacing open orders in the venue: reports, priority, crossing, ending, deadlines, restore.

use std::collections::BTreeMap;

use super::*;
use crate::book::{Side, TimeInForce};
use crate::fixed::units;
use crate::limits::SymbolLimits;
use crate::order::LiveOrder;
use crate::proto::v1::{self as pb, ExecType, OrderStatus};
use crate::validate::ValidOrder;

fn venue() -> Venue {
    Venue::new(&BTreeMap::from([(
        "AAPL".to_string(),
        SymbolLimits {
            max_order_qty: units(1000),
            reference_price: units(100),
            seed: vec![],
        },
    )]))
}

fn limit(id: &str, side: Side, price: i64, qty: i64, seq: u64, deadline: i64) -> LiveOrder {
    let order = pb::NewOrder {
        client_order_id: id.into(),
        account: "ACC".into(),
        symbol: "AAPL".into(),
        side: match side {
            Side::Buy => pb::Side::Buy,
            Side::Sell => pb::Side::Sell,
        } as i32,
        order_type: pb::OrderType::Limit as i32,
        quantity: Some(fixed::to_decimal(qty)),
        limit_price: Some(fixed::to_decimal(price)),
        time_in_force: pb::TimeInForce::Gtc as i32,
        deadline_unix_ns: deadline,
        ..Default::default()
    };
    LiveOrder::new(format!("ACC.{id}"), order, "e1", seq, "c")
}

/// Executes a GTC limit order; returns what it touched.
fn place(v: &mut Venue, id: &str, side: Side, price: i64, qty: i64, seq: u64) -> Vec<Touched> {
    place_until(v, id, side, price, qty, seq, 0)
}

fn place_until(
    v: &mut Venue,
    id: &str,
    side: Side,
    price: i64,
    qty: i64,
    seq: u64,
    deadline: i64,
) -> Vec<Touched> {
    let valid = ValidOrder {
        side,
        limit: Some(price),
        qty,
        tif: TimeInForce::Gtc,
    };
    v.execute(limit(id, side, price, qty, seq, deadline), &valid, 1)
        .unwrap()
        .touched
}

fn amend(id: &str, qty: i64, price: i64, seq: u64) -> Amendment {
    Amendment {
        client_order_id: id.into(),
        qty,
        price,
        seq,
    }
}

fn kinds(t: &Touched) -> Vec<(ExecType, OrderStatus)> {
    t.reports
        .iter()
        .map(|r| {
            (
                ExecType::try_from(r.exec_type).unwrap(),
                OrderStatus::try_from(r.order_status).unwrap(),
            )
        })
        .collect()
}

fn dec(d: &Option<pb::Decimal>) -> i64 {
    fixed::from_decimal(d.as_ref().unwrap()).unwrap()
}

/// Which orders (by original id) a sell of `qty` at `price` fills, in order.
fn hit_by_sell(v: &mut Venue, qty: i64, price: i64, seq: u64) -> Vec<String> {
    let t = place(v, &format!("s{seq}"), Side::Sell, price, qty, seq);
    t[1..]
        .iter()
        .map(|m| m.order.order().client_order_id.clone())
        .collect()
}

/// A quantity decrease keeps priority: reports PENDING_REPLACE then REPLACED under the new id,
/// the record amended, the arrival sequence kept; the order still fills first.
#[test]
fn reduce_keeps_priority_and_amends_the_record() {
    let mut v = venue();
    place(&mut v, "b1", Side::Buy, units(99), units(10), 1);
    place(&mut v, "b2", Side::Buy, units(99), units(10), 2);
    let e = v
        .replace("ACC.b1", &amend("r1", units(6), units(99), 50), 2)
        .unwrap();
    assert!(e.expired.is_empty());
    assert_eq!(e.touched.len(), 1);
    let t = &e.touched[0];
    assert_eq!(
        kinds(t),
        vec![
            (ExecType::PendingReplace, OrderStatus::PendingReplace),
            (ExecType::Replaced, OrderStatus::New),
        ]
    );
    for r in &t.reports {
        assert_eq!(
            (r.client_order_id.as_str(), r.orig_client_order_id.as_str()),
            ("r1", "b1")
        );
        assert_eq!(
            (dec(&r.order_qty), dec(&r.leaves_qty), dec(&r.cum_qty)),
            (units(6), units(6), 0)
        );
    }
    assert_eq!(
        t.order.record.seq, 1,
        "priority kept: same arrival sequence"
    );
    assert_eq!(t.order.record.current_client_order_id, "r1");
    assert_eq!(dec(&t.order.order().quantity), units(6));
    assert_eq!(v.open_order("ACC.b1").unwrap().record, t.order.record);
    assert_eq!(hit_by_sell(&mut v, units(8), units(99), 3), ["b1", "b2"]);
}

/// A quantity increase or a price change loses priority and takes a new arrival sequence.
#[test]
fn increase_or_new_price_loses_priority() {
    for (qty, price) in [(units(12), units(99)), (units(10), units(98))] {
        let mut v = venue();
        place(&mut v, "b1", Side::Buy, units(99), units(10), 1);
        place(&mut v, "b2", Side::Buy, units(98), units(10), 2);
        place(&mut v, "b3", Side::Buy, units(99), units(10), 3);
        let e = v
            .replace("ACC.b1", &amend("r1", qty, price, 50), 2)
            .unwrap();
        assert_eq!(e.touched[0].order.record.seq, 50);
        let want: &[&str] = if price == units(99) {
            &["b3", "b1", "b2"]
        } else {
            &["b3", "b2", "b1"]
        };
        assert_eq!(hit_by_sell(&mut v, units(40), units(98), 4), want);
    }
}

/// A new price that crosses trades at once, at the makers' prices, in the same fact: the
/// order's PENDING_REPLACE, REPLACED, TRADEs, then the makers' TRADEs; bought = sold.
#[test]
fn a_crossing_price_trades_in_the_same_fact() {
    let mut v = venue();
    place(&mut v, "a1", Side::Sell, units(101), units(3), 1);
    place(&mut v, "a2", Side::Sell, units(102), units(3), 2);
    place(&mut v, "b1", Side::Buy, units(99), units(10), 3);
    let e = v
        .replace("ACC.b1", &amend("r1", units(10), units(102), 50), 2)
        .unwrap();
    let t = &e.touched;
    assert_eq!(t.len(), 3);
    assert_eq!(
        kinds(&t[0]),
        vec![
            (ExecType::PendingReplace, OrderStatus::PendingReplace),
            (ExecType::Replaced, OrderStatus::New),
            (ExecType::Trade, OrderStatus::PartiallyFilled),
            (ExecType::Trade, OrderStatus::PartiallyFilled),
        ]
    );
    let prices: Vec<i64> = t[0].reports[2..].iter().map(|r| dec(&r.last_px)).collect();
    assert_eq!(prices, [units(101), units(102)]);
    assert!(t[0].reports.iter().all(|r| r.client_order_id == "r1"));
    assert_eq!(kinds(&t[1]), vec![(ExecType::Trade, OrderStatus::Filled)]);
    assert_eq!(kinds(&t[2]), vec![(ExecType::Trade, OrderStatus::Filled)]);
    let bought: i64 = t[0].reports.iter().map(|r| dec(&r.last_qty)).sum();
    let sold: i64 = t[1..]
        .iter()
        .flat_map(|m| &m.reports)
        .map(|r| dec(&r.last_qty))
        .sum();
    assert_eq!((bought, sold), (units(6), units(6)));
    let last = t[0].reports.last().unwrap();
    assert_eq!(
        (dec(&last.cum_qty), dec(&last.leaves_qty)),
        (units(6), units(4))
    );
    let book = v.book("AAPL").unwrap();
    assert_eq!(book.best_bid(), Some((units(102), units(4))));
    assert_eq!(book.best_ask(), None);
}

/// A new quantity at or below what is filled ends the order: FILLED by the REPLACED report,
/// order_qty = cum_qty, out of the book; a replace of it afterwards finds nothing.
#[test]
fn reduce_to_filled_ends_the_order() {
    let mut v = venue();
    place(&mut v, "b1", Side::Buy, units(99), units(10), 1);
    hit_by_sell(&mut v, units(6), units(99), 2);
    let e = v
        .replace("ACC.b1", &amend("r1", units(5), units(99), 50), 3)
        .unwrap();
    let t = &e.touched[0];
    assert_eq!(
        kinds(t),
        vec![
            (ExecType::PendingReplace, OrderStatus::PendingReplace),
            (ExecType::Replaced, OrderStatus::Filled),
        ]
    );
    let last = t.reports.last().unwrap();
    assert_eq!(
        (
            dec(&last.order_qty),
            dec(&last.cum_qty),
            dec(&last.leaves_qty)
        ),
        (units(6), units(6), 0)
    );
    assert!(v.open_order("ACC.b1").is_none());
    assert!(v.book("AAPL").unwrap().is_empty());
    let again = v
        .replace("ACC.b1", &amend("r2", units(9), units(99), 51), 4)
        .unwrap();
    assert!(again.touched.is_empty());
}

/// An order whose deadline passed is expired first and not replaced; a replaced order keeps
/// its deadline (it still expires on time after losing its priority).
#[test]
fn deadlines_stay_tracked() {
    let mut v = venue();
    place_until(&mut v, "b1", Side::Buy, units(99), units(10), 1, 100);
    let e = v
        .replace("ACC.b1", &amend("r1", units(5), units(99), 50), 101)
        .unwrap();
    assert!(e.touched.is_empty());
    assert_eq!(
        kinds(&e.expired[0]),
        vec![(ExecType::Expired, OrderStatus::Expired)]
    );

    let mut v = venue();
    place_until(&mut v, "b1", Side::Buy, units(99), units(10), 1, 100);
    v.replace("ACC.b1", &amend("r1", units(12), units(98), 50), 50)
        .unwrap();
    assert!(v.expire_due(None, 99).unwrap().is_empty());
    let expired = v.expire_due(None, 100).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].reports[0].client_order_id, "r1");
    assert_eq!(v.open_orders(), 0);
}

/// Restoring the open orders in arrival-sequence order (what recovery does) rebuilds the same
/// book, priority included, after replaces that kept and lost it.
#[test]
fn restoring_by_sequence_rebuilds_priority() {
    let mut v = venue();
    for (i, id) in ["b1", "b2", "b3", "b4"].into_iter().enumerate() {
        place(&mut v, id, Side::Buy, units(99), units(10), i as u64 + 1);
    }
    v.replace("ACC.b1", &amend("r1", units(12), units(99), 10), 2)
        .unwrap();
    v.replace("ACC.b3", &amend("r3", units(4), units(99), 11), 3)
        .unwrap();
    v.replace("ACC.b2", &amend("r2", units(10), units(98), 12), 4)
        .unwrap();
    let snapshot = |v: &Venue| {
        v.resting()
            .map(|o| (o.key.clone(), o.leaves()))
            .collect::<Vec<_>>()
    };
    let before = snapshot(&v);
    assert_eq!(
        before.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["ACC.b3", "ACC.b4", "ACC.b1", "ACC.b2"]
    );
    let mut records: Vec<_> = v
        .resting()
        .map(|o| LiveOrder::from_record(o.key.clone(), o.record.clone()))
        .collect();
    records.sort_by_key(|o| o.record.seq);
    let mut back = venue();
    for o in records {
        back.restore(o).unwrap();
    }
    assert_eq!(snapshot(&back), before);
}

/// Replacing an order that does not rest here changes nothing and reports nothing.
#[test]
fn unknown_order() {
    let mut v = venue();
    place(&mut v, "b1", Side::Buy, units(99), units(10), 1);
    let e = v
        .replace("ACC.nope", &amend("r1", units(5), units(99), 50), 2)
        .unwrap();
    assert_eq!(e, Executed::default());
    assert_eq!(v.open_orders(), 1);
}
