//! Tests of the market data core: level diffs, sequences, quotes, trades, snapshots; and the
//! property a subscriber relies on: the first snapshot plus every update is the book.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::book::{Incoming, TimeInForce};
use crate::fixed::units;
use crate::limits::SymbolLimits;
use crate::validate::ValidOrder;
use crate::venue::{LiveOrder, Venue};

const SYM: &str = "AAPL";

fn md() -> MarketData {
    MarketData::new("1".into(), [&SYM.to_string()])
}

fn lvl(qty: i64, orders: u32) -> Level {
    Level { qty, orders }
}

fn px(l: &pb::PriceLevel) -> (i64, i64, u32) {
    (
        fixed::from_decimal(&l.price.unwrap()).unwrap(),
        fixed::from_decimal(&l.quantity.unwrap()).unwrap(),
        l.orders,
    )
}

fn limit(id: u64, side: Side, price: i64, qty: i64) -> Incoming {
    Incoming {
        id,
        side,
        limit: Some(price),
        qty,
        tif: TimeInForce::Gtc,
    }
}

/// Changed, added and removed levels, best first on each side; equal levels are left out.
#[test]
fn changes_list_what_differs_best_first() {
    let old = BTreeMap::from([(1, lvl(5, 1)), (2, lvl(5, 1)), (3, lvl(5, 1))]);
    let new = BTreeMap::from([(2, lvl(5, 1)), (3, lvl(7, 2)), (4, lvl(1, 1))]);
    let bids: Vec<_> = changes(&old, &new, Side::Buy).iter().map(px).collect();
    assert_eq!(bids, vec![(4, 1, 1), (3, 7, 2), (1, 0, 0)]);
    let asks: Vec<_> = changes(&old, &new, Side::Sell).iter().map(px).collect();
    assert_eq!(asks, vec![(1, 0, 0), (3, 7, 2), (4, 1, 1)]);
    assert!(changes(&new, &new, Side::Buy).is_empty());
}

/// A touched book publishes its levels with sequence 1, 2, ...; the quote only when the top
/// changed; a touch that changed nothing publishes nothing.
#[test]
fn flush_sequences_updates_and_quotes() {
    let mut m = md();
    let mut book = OrderBook::new();
    assert_eq!(m.snapshot(SYM, 0).sequence, 0);
    book.submit(limit(1, Side::Buy, units(99), units(5)))
        .unwrap();
    book.submit(limit(2, Side::Sell, units(101), units(5)))
        .unwrap();
    m.touch(SYM, 2, 10);
    assert!(m.pending());
    let out = m.flush(|_| Some(&book));
    assert!(!m.pending());
    assert_eq!(out.len(), 1);
    let u = &out[0].update;
    assert_eq!((u.sequence, u.events, u.venue_time_unix_ns), (1, 2, 10));
    assert_eq!(
        u.bids.iter().map(px).collect::<Vec<_>>(),
        vec![(units(99), units(5), 1)]
    );
    let q = out[0].quote.as_ref().expect("top changed");
    assert_eq!(q.sequence, 1);
    assert_eq!(px(q.ask.as_ref().unwrap()), (units(101), units(5), 1));

    // Deeper level: an update without a quote.
    book.submit(limit(3, Side::Buy, units(98), units(1)))
        .unwrap();
    m.touch(SYM, 1, 20);
    let out = m.flush(|_| Some(&book));
    assert_eq!(out[0].update.sequence, 2);
    assert!(out[0].quote.is_none());

    // Nothing changed: nothing published, the sequence stays.
    m.touch(SYM, 1, 30);
    assert!(m.flush(|_| Some(&book)).is_empty());
    assert_eq!(m.sequence(SYM), Some(2));
}

/// An unknown symbol's snapshot is only an error naming the field and rule.
#[test]
fn unknown_symbol_snapshot_is_an_error() {
    let s = md().snapshot("NOPE", 0);
    assert_eq!(s.errors.len(), 1);
    assert_eq!(
        (s.errors[0].field.as_str(), s.errors[0].rule.as_str()),
        ("symbol", "known_symbol")
    );
    assert!(s.bids.is_empty() && s.session.is_empty());
}

fn venue() -> Venue {
    let limits = BTreeMap::from([(
        SYM.to_string(),
        SymbolLimits {
            max_order_qty: units(1_000_000),
            reference_price: units(100),
            seed: vec![],
        },
    )]);
    Venue::new(&limits)
}

fn order(id: &str, side: Side, limit: Option<i64>, qty: i64, seq: u64) -> (LiveOrder, ValidOrder) {
    let order = pb::NewOrder {
        client_order_id: id.into(),
        account: "ACC".into(),
        symbol: SYM.into(),
        side: if side == Side::Buy {
            pb::Side::Buy
        } else {
            pb::Side::Sell
        } as i32,
        quantity: Some(fixed::to_decimal(qty)),
        ..Default::default()
    };
    let live = LiveOrder::new(format!("ACC.{id}"), order, "e1", seq, "c");
    let tif = if limit.is_some() {
        TimeInForce::Gtc
    } else {
        TimeInForce::Ioc
    };
    (
        live,
        ValidOrder {
            side,
            limit,
            qty,
            tif,
        },
    )
}

/// An execution's fills become the update's trades (aggressor exec id, maker's price,
/// aggressor side), each with the update's sequence.
#[test]
fn executions_become_trades() {
    let mut v = venue();
    let mut m = md();
    for (i, price) in [(1, 101), (2, 102)] {
        let (live, valid) = order(
            &format!("s{i}"),
            Side::Sell,
            Some(units(price)),
            units(3),
            i,
        );
        let e = v.execute(live, &valid, 5).unwrap();
        m.executed(SYM, &e, 5);
    }
    m.flush(|s| v.book(s));
    let (live, valid) = order("b1", Side::Buy, None, units(5), 3);
    let e = v.execute(live, &valid, 7).unwrap();
    m.executed(SYM, &e, 7);
    let out = m.flush(|s| v.book(s));
    let u = &out[0].update;
    assert_eq!(u.sequence, 2);
    assert_eq!(u.events, 3, "the order and its two fills");
    let trades: Vec<_> = u
        .trades
        .iter()
        .map(|t| {
            (
                fixed::from_decimal(&t.price.unwrap()).unwrap(),
                fixed::from_decimal(&t.quantity.unwrap()).unwrap(),
                t.aggressor_side,
                t.sequence,
            )
        })
        .collect();
    assert_eq!(
        trades,
        vec![
            (units(101), units(3), pb::Side::Buy as i32, 2),
            (units(102), units(2), pb::Side::Buy as i32, 2)
        ]
    );
    let taker = &e.touched[0].reports;
    let fills: Vec<_> = taker
        .iter()
        .filter(|r| r.exec_type == ExecType::Trade as i32)
        .map(|r| r.exec_id.clone())
        .collect();
    assert_eq!(
        u.trades
            .iter()
            .map(|t| t.trade_id.clone())
            .collect::<Vec<_>>(),
        fills
    );
    assert_eq!(
        u.asks.iter().map(px).collect::<Vec<_>>(),
        vec![(units(101), 0, 0), (units(102), units(1), 1)]
    );
}

/// One step of a random order flow.
#[derive(Debug, Clone)]
enum Step {
    Limit(bool, i64, i64),
    Market(bool, i64),
    Cancel(usize),
    Flush,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (any::<bool>(), 95i64..106, 1i64..20).prop_map(|(b, p, q)| Step::Limit(b, p, q)),
        1 => (any::<bool>(), 1i64..30).prop_map(|(b, q)| Step::Market(b, q)),
        2 => (0usize..64).prop_map(Step::Cancel),
        2 => Just(Step::Flush),
    ]
}

proptest! {
    /// Whatever orders the book takes and however the flushes coalesce them: the snapshot
    /// taken first plus every update after it (in sequence, no hole) is the published view,
    /// which is the book at the last flush; and the snapshot of a subscriber joining midway
    /// plus the updates after it is the same book.
    #[test]
    fn snapshot_plus_updates_is_the_book(steps in proptest::collection::vec(step(), 1..200), join in 0usize..200) {
        let mut m = md();
        let mut book = OrderBook::new();
        let first = m.snapshot(SYM, 0);
        let mut mirror = L2::default();
        mirror.apply(&first.bids, &first.asks).unwrap();
        let mut late: Option<(L2, u64)> = None;
        let mut expected = first.sequence;
        let mut ids = Vec::new();
        let mut next_id = 0;
        let mut updates = Vec::new();
        for (i, s) in steps.iter().chain([Step::Flush].iter()).enumerate() {
            if i == join {
                let snap = m.snapshot(SYM, 0);
                let mut l2 = L2::default();
                l2.apply(&snap.bids, &snap.asks).unwrap();
                late = Some((l2, snap.sequence));
            }
            match *s {
                Step::Limit(buy, p, q) => {
                    next_id += 1;
                    let side = if buy { Side::Buy } else { Side::Sell };
                    book.submit(limit(next_id, side, units(p), units(q))).unwrap();
                    ids.push(next_id);
                    m.touch(SYM, 1, 0);
                }
                Step::Market(buy, q) => {
                    next_id += 1;
                    let side = if buy { Side::Buy } else { Side::Sell };
                    book.submit(Incoming { id: next_id, side, limit: None, qty: units(q), tif: TimeInForce::Ioc }).unwrap();
                    m.touch(SYM, 1, 0);
                }
                Step::Cancel(k) => {
                    if !ids.is_empty() {
                        book.cancel(ids[k % ids.len()]);
                        m.touch(SYM, 1, 0);
                    }
                }
                Step::Flush => {
                    for f in m.flush(|_| Some(&book)) {
                        updates.push(f.update);
                    }
                }
            }
        }
        for u in &updates {
            prop_assert_eq!(u.sequence, expected + 1);
            expected = u.sequence;
            mirror.apply(&u.bids, &u.asks).unwrap();
            if let Some((l2, seq)) = late.as_mut() {
                if u.sequence > *seq {
                    prop_assert_eq!(u.sequence, *seq + 1);
                    *seq = u.sequence;
                    l2.apply(&u.bids, &u.asks).unwrap();
                }
            }
        }
        let truth = L2::of(&book);
        prop_assert_eq!(&mirror, &truth);
        let last = m.snapshot(SYM, 0);
        let mut from_last = L2::default();
        from_last.apply(&last.bids, &last.asks).unwrap();
        prop_assert_eq!(&from_last, &truth);
        if let Some((l2, _)) = late {
            prop_assert_eq!(&l2, &truth);
        }
    }
}
