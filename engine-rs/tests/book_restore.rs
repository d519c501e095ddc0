//! The book's restore path and its bound on work per order, through the public API: a book
//! rebuilt from its snapshot is the same book (same levels, same time priority, same future
//! fills), and no incoming order makes more than `MAX_FILLS_PER_ORDER` fills.

use bridge_engine::book::{Incoming, OrderBook, Side, TimeInForce, MAX_FILLS_PER_ORDER};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Submit {
        side: Side,
        limit: Option<i64>,
        qty: i64,
        tif: TimeInForce,
    },
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    let tif = prop_oneof![
        Just(TimeInForce::Gtc),
        Just(TimeInForce::Day),
        Just(TimeInForce::Ioc),
        Just(TimeInForce::Fok)
    ];
    prop_oneof![
        4 => (side, proptest::option::weighted(0.9, 95i64..=105), 1i64..=20, tif).prop_map(
            |(side, limit, qty, tif)| Op::Submit { side, limit, qty, tif }
        ),
        1 => (0usize..64).prop_map(Op::Cancel),
    ]
}

/// Applies `ops` with ids 1, 2, ...; returns the book.
fn run(ops: &[Op]) -> OrderBook {
    let mut book = OrderBook::new();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Submit {
                side,
                limit,
                qty,
                tif,
            } => {
                let id = i as u64 + 1;
                book.submit(Incoming {
                    id,
                    side,
                    limit,
                    qty,
                    tif,
                })
                .expect("valid order");
            }
            Op::Cancel(k) => {
                let _ = book.cancel(k as u64 + 1);
            }
        }
    }
    book
}

fn restore(book: &OrderBook) -> OrderBook {
    let mut restored = OrderBook::new();
    for o in book.snapshot() {
        restored
            .rest(o.id, o.side, o.price, o.leaves)
            .expect("snapshot ids are unique and leaves positive");
    }
    restored
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// For any sequence of operations, snapshot then restore gives an equal book: same resting
    /// orders in the same priority, and the same fills for the same next order.
    #[test]
    fn snapshot_then_restore_is_the_same_book(ops in proptest::collection::vec(op(), 0..80),
                                             probe_side in prop_oneof![Just(Side::Buy), Just(Side::Sell)]) {
        let mut original = run(&ops);
        let mut restored = restore(&original);
        prop_assert_eq!(restored.snapshot(), original.snapshot());
        prop_assert_eq!(restored.best_bid(), original.best_bid());
        prop_assert_eq!(restored.best_ask(), original.best_ask());
        let probe = Incoming { id: 1_000_000, side: probe_side, limit: None, qty: 1_000, tif: TimeInForce::Ioc };
        prop_assert_eq!(restored.submit(probe), original.submit(probe));
    }
}

/// A taker that could trade with more makers than the bound makes exactly the bound's number
/// of fills; its remainder is canceled, even for a GTC limit (resting it would cross).
#[test]
fn fills_per_order_are_bounded_and_the_remainder_canceled() {
    let mut book = OrderBook::new();
    let makers = MAX_FILLS_PER_ORDER as u64 + 50;
    for id in 1..=makers {
        book.rest(id, Side::Sell, 100, 1).expect("rest");
    }
    let out = book
        .submit(Incoming {
            id: 10_000,
            side: Side::Buy,
            limit: Some(100),
            qty: 1_000,
            tif: TimeInForce::Gtc,
        })
        .expect("submit");
    assert_eq!(out.fills.len(), MAX_FILLS_PER_ORDER);
    assert_eq!(out.rested, 0);
    assert_eq!(out.canceled, 1_000 - MAX_FILLS_PER_ORDER as i64);
    assert_eq!(book.best_ask(), Some((100, 50)));
    assert_eq!(book.best_bid(), None);
}

/// A fill-or-kill order that would need more fills than the bound is killed, book unchanged.
#[test]
fn fok_needing_more_fills_than_the_bound_is_killed() {
    let mut book = OrderBook::new();
    let makers = MAX_FILLS_PER_ORDER as u64 + 1;
    for id in 1..=makers {
        book.rest(id, Side::Sell, 100, 1).expect("rest");
    }
    let before = book.snapshot();
    let out = book
        .submit(Incoming {
            id: 10_000,
            side: Side::Buy,
            limit: Some(100),
            qty: makers as i64,
            tif: TimeInForce::Fok,
        })
        .expect("submit");
    assert!(out.fills.is_empty());
    assert_eq!(out.canceled, makers as i64);
    assert_eq!(book.snapshot(), before);
}
