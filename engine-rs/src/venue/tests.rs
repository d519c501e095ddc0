//! Tests of the venue: matching, reports and restoring.

use super::*;
use crate::book::Side;
use crate::fixed::units;
use crate::proto::v1::ExecType;

fn symbols() -> BTreeMap<String, SymbolLimits> {
    let mut m = BTreeMap::new();
    m.insert(
        "AAPL".into(),
        SymbolLimits {
            max_order_qty: units(1_000_000),
            reference_price: units(100),
            seed: vec![
                (Side::Sell, units(101), units(10), 1),
                (Side::Sell, units(102), units(10), 1),
            ],
        },
    );
    m
}

/// A venue with the house's seed of [`symbols`] placed (ids 1 and 2 of engine e1).
fn seeded() -> Venue {
    let limits = symbols();
    let mut venue = Venue::new(&limits);
    let seeds = crate::house::seed_orders(&limits, "e1", "g").unwrap();
    let placed = crate::house::place(&mut venue, seeds, "e1", 1000, 0).unwrap();
    assert_eq!(placed.len(), 2);
    venue
}

fn live(id: &str, qty: i64, seq: u64) -> LiveOrder {
    let order = pb::NewOrder {
        client_order_id: id.into(),
        account: "ACC".into(),
        symbol: "AAPL".into(),
        side: pb::Side::Buy as i32,
        quantity: Some(fixed::to_decimal(qty)),
        ..Default::default()
    };
    LiveOrder::new(format!("ACC.{id}"), order, "e1", seq, "correlation-id")
}

fn valid(side: Side, limit: Option<i64>, qty: i64, tif: TimeInForce) -> ValidOrder {
    ValidOrder {
        side,
        limit,
        qty,
        tif,
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

/// A market order sweeps two levels: NEW, two TRADEs, then the unfilled remainder CANCELED.
#[test]
fn market_order_partial_fill_then_cancel() {
    let mut venue = seeded();
    let t = venue
        .execute(
            live("m1", units(25), 1),
            &valid(Side::Buy, None, units(25), TimeInForce::Ioc),
            7,
        )
        .unwrap()
        .touched;
    assert_eq!(
        t.len(),
        3,
        "the two house orders it traded with are reported too"
    );
    assert_eq!(
        kinds(&t[0]),
        vec![
            (ExecType::New, OrderStatus::New),
            (ExecType::Trade, OrderStatus::PartiallyFilled),
            (ExecType::Trade, OrderStatus::PartiallyFilled),
            (ExecType::Canceled, OrderStatus::Canceled),
        ]
    );
    let last = t[0].reports.last().unwrap();
    assert_eq!(last.cum_qty, Some(fixed::to_decimal(units(20))));
    assert_eq!(last.leaves_qty, Some(fixed::to_decimal(0)));
    assert_eq!(last.avg_px, Some(fixed::to_decimal(units(1015) / 10)));
    let ids: Vec<_> = t[0].reports.iter().map(|r| r.exec_id.clone()).collect();
    assert_eq!(ids, vec!["e1-1-1", "e1-1-2", "e1-1-3", "e1-1-4"]);
    assert_eq!(venue.open_orders(), 0);
}

/// A resting limit order is hit later: both sides get TRADE reports, the maker is filled.
#[test]
fn resting_order_is_hit_and_reported() {
    let mut venue = Venue::new(&BTreeMap::from([(
        "AAPL".to_string(),
        SymbolLimits {
            max_order_qty: units(100),
            reference_price: units(1),
            seed: vec![],
        },
    )]));
    let bid = venue
        .execute(
            live("b1", units(5), 1),
            &valid(Side::Buy, Some(units(100)), units(5), TimeInForce::Gtc),
            1,
        )
        .unwrap()
        .touched;
    assert_eq!(kinds(&bid[0]), vec![(ExecType::New, OrderStatus::New)]);
    assert!(venue.open_order("ACC.b1").is_some());
    let mut seller = live("s1", units(8), 2);
    seller.record.order.as_mut().unwrap().side = pb::Side::Sell as i32;
    let t = venue
        .execute(
            seller,
            &valid(Side::Sell, Some(units(99)), units(8), TimeInForce::Day),
            2,
        )
        .unwrap()
        .touched;
    assert_eq!(t.len(), 2);
    assert_eq!(
        kinds(&t[0]),
        vec![
            (ExecType::New, OrderStatus::New),
            (ExecType::Trade, OrderStatus::PartiallyFilled)
        ]
    );
    assert_eq!(kinds(&t[1]), vec![(ExecType::Trade, OrderStatus::Filled)]);
    assert_eq!(
        t[1].reports[0].last_px,
        Some(fixed::to_decimal(units(100))),
        "maker's price"
    );
    assert!(venue.open_order("ACC.b1").is_none());
    assert!(
        venue.open_order("ACC.s1").is_some(),
        "seller remainder rests"
    );
    let c = venue.cancel("ACC.s1", 3).unwrap().unwrap();
    assert_eq!(kinds(&c), vec![(ExecType::Canceled, OrderStatus::Canceled)]);
    assert_eq!(c.reports[0].cum_qty, Some(fixed::to_decimal(units(5))));
    assert!(venue.cancel("ACC.s1", 4).unwrap().is_none());
}

/// FOK that cannot fill is canceled without any trade.
#[test]
fn fok_kill() {
    let mut venue = seeded();
    let t = venue
        .execute(
            live("f1", units(30), 1),
            &valid(Side::Buy, Some(units(105)), units(30), TimeInForce::Fok),
            1,
        )
        .unwrap()
        .touched;
    assert_eq!(
        kinds(&t[0]),
        vec![
            (ExecType::New, OrderStatus::New),
            (ExecType::Canceled, OrderStatus::Canceled)
        ]
    );
    assert_eq!(
        venue.book("AAPL").unwrap().best_ask(),
        Some((units(101), units(10)))
    );
}

/// Rejection and deadline expiry are reports from PENDING_NEW, with the reason attached.
#[test]
fn reject_and_expire() {
    let errs = [FieldError {
        field: "quantity".into(),
        rule: "positive".into(),
        message: "m".into(),
    }];
    let t = Venue::reject(
        live("r1", 0, 1),
        RejectReason::InvalidField,
        &errs,
        "bad",
        1,
    )
    .unwrap();
    assert_eq!(kinds(&t), vec![(ExecType::Rejected, OrderStatus::Rejected)]);
    assert_eq!(t.reports[0].field_errors.len(), 1);
    let t = Venue::reject(
        live("x1", units(1), 2),
        RejectReason::DeadlineExceeded,
        &[],
        "late",
        1,
    )
    .unwrap();
    assert_eq!(kinds(&t), vec![(ExecType::Expired, OrderStatus::Expired)]);
}

/// A recovered record resumes with its report sequence and cumulative quantity.
#[test]
fn from_record_round_trip() {
    let mut venue = seeded();
    let t = venue
        .execute(
            live("p1", units(5), 1),
            &valid(Side::Buy, Some(units(101)), units(5), TimeInForce::Gtc),
            1,
        )
        .unwrap()
        .touched;
    let o = &t[0].order;
    let back = LiveOrder::from_record(o.key.clone(), o.record.clone());
    assert_eq!(
        (back.cum_qty, back.report_seq, back.cum_notional, back.qty),
        (o.cum_qty, o.report_seq, o.cum_notional, o.qty)
    );
    assert_eq!(back.status(), OrderStatus::Filled);
}
