//! Tests of the order book: price-time matching, bounds and snapshots.

use super::*;
use proptest::prelude::*;

fn limit(id: u64, side: Side, price: i64, qty: i64, tif: TimeInForce) -> Incoming {
    Incoming {
        id,
        side,
        limit: Some(price),
        qty,
        tif,
    }
}

fn market(id: u64, side: Side, qty: i64) -> Incoming {
    Incoming {
        id,
        side,
        limit: None,
        qty,
        tif: TimeInForce::Ioc,
    }
}

fn fill(maker_id: u64, taker_id: u64, price: i64, qty: i64, maker_leaves: i64) -> Fill {
    Fill {
        maker_id,
        taker_id,
        price,
        qty,
        maker_leaves,
    }
}

/// Asks at 101 x5 (ids 1,2), 102 x5 (id 3), 103 x5 (id 4); bids at 99 x5 (id 5), 98 x5 (id 6).
fn seeded() -> OrderBook {
    let mut b = OrderBook::new();
    b.rest(1, Side::Sell, 101, 5).unwrap();
    b.rest(2, Side::Sell, 101, 5).unwrap();
    b.rest(3, Side::Sell, 102, 5).unwrap();
    b.rest(4, Side::Sell, 103, 5).unwrap();
    b.rest(5, Side::Buy, 99, 5).unwrap();
    b.rest(6, Side::Buy, 98, 5).unwrap();
    b
}

/// Checks the structural invariants (6) directly against the private representation.
fn assert_consistent(b: &OrderBook) {
    let mut count = 0;
    for (side, levels) in [(Side::Buy, &b.bids), (Side::Sell, &b.asks)] {
        for (&price, level) in levels {
            assert!(!level.orders.is_empty(), "empty level {price}");
            assert_eq!(
                level.total,
                level.orders.iter().map(|o| o.leaves).sum::<i64>()
            );
            for o in &level.orders {
                assert!(o.leaves > 0);
                assert_eq!(b.index.get(&o.id), Some(&(side, price)));
                count += 1;
            }
        }
    }
    assert_eq!(count, b.index.len());
    assert_eq!(b.len(), count);
    assert_eq!(b.orders(Side::Buy) + b.orders(Side::Sell), count);
    assert_eq!(b.is_empty(), count == 0);
}

/// Resting orders are counted per side.
#[test]
fn orders_counts_each_side() {
    let mut b = seeded();
    assert_eq!((b.orders(Side::Buy), b.orders(Side::Sell)), (2, 4));
    b.cancel(1);
    assert_eq!((b.orders(Side::Buy), b.orders(Side::Sell)), (2, 3));
    assert_eq!((Side::Buy.label(), Side::Sell.label()), ("buy", "sell"));
}

fn total_resting(b: &OrderBook) -> i64 {
    [Side::Buy, Side::Sell]
        .into_iter()
        .flat_map(|s| b.depth(s, usize::MAX))
        .map(|(_, q)| q)
        .sum()
}

/// `Side::opposite` swaps buy and sell.
#[test]
fn side_opposite() {
    assert_eq!(Side::Buy.opposite(), Side::Sell);
    assert_eq!(Side::Sell.opposite(), Side::Buy);
}

/// A buy trades the lowest ask first even when a worse ask arrived earlier.
#[test]
fn price_priority() {
    let mut b = OrderBook::new();
    b.rest(1, Side::Sell, 105, 5).unwrap();
    b.rest(2, Side::Sell, 101, 5).unwrap();
    b.rest(3, Side::Sell, 103, 5).unwrap();
    let out = b
        .submit(limit(10, Side::Buy, 110, 12, TimeInForce::Day))
        .unwrap();
    assert_eq!(
        out.fills,
        vec![
            fill(2, 10, 101, 5, 0),
            fill(3, 10, 103, 5, 0),
            fill(1, 10, 105, 2, 3)
        ]
    );
    assert_eq!((out.rested, out.canceled), (0, 0));
    assert_eq!(b.best_ask(), Some((105, 3)));
    assert_consistent(&b);
}

/// Within one price level, orders trade in arrival order (FIFO), for bids too.
#[test]
fn time_priority_fifo_within_level() {
    let mut b = OrderBook::new();
    b.rest(7, Side::Buy, 100, 3).unwrap();
    b.rest(3, Side::Buy, 100, 3).unwrap();
    b.rest(5, Side::Buy, 100, 3).unwrap();
    let out = b
        .submit(limit(9, Side::Sell, 100, 7, TimeInForce::Ioc))
        .unwrap();
    assert_eq!(
        out.fills,
        vec![
            fill(7, 9, 100, 3, 0),
            fill(3, 9, 100, 3, 0),
            fill(5, 9, 100, 1, 2)
        ]
    );
    assert_eq!(b.leaves(5), Some(2));
    assert_eq!(b.len(), 1);
    assert_consistent(&b);
}

/// A partially filled maker reports exact leaves, keeps them, and keeps its queue place.
#[test]
fn partial_maker_fill_reports_leaves() {
    let mut b = seeded();
    let out = b
        .submit(limit(10, Side::Buy, 101, 3, TimeInForce::Gtc))
        .unwrap();
    assert_eq!(out.fills, vec![fill(1, 10, 101, 3, 2)]);
    assert_eq!(b.leaves(1), Some(2));
    assert_eq!(b.best_ask(), Some((101, 7)));
    let out = b
        .submit(limit(11, Side::Buy, 101, 3, TimeInForce::Gtc))
        .unwrap();
    assert_eq!(
        out.fills,
        vec![fill(1, 11, 101, 2, 0), fill(2, 11, 101, 1, 4)]
    );
    assert_eq!(b.leaves(1), None);
    assert_consistent(&b);
}

/// A market order sweeps several levels at the makers' prices and cancels what is left.
#[test]
fn market_sweeps_levels_and_cancels_remainder() {
    let mut b = seeded();
    let out = b.submit(market(10, Side::Buy, 25)).unwrap();
    assert_eq!(
        out.fills,
        vec![
            fill(1, 10, 101, 5, 0),
            fill(2, 10, 101, 5, 0),
            fill(3, 10, 102, 5, 0),
            fill(4, 10, 103, 5, 0),
        ]
    );
    assert_eq!((out.rested, out.canceled), (0, 5));
    assert_eq!(b.best_ask(), None);
    assert_eq!(b.best_bid(), Some((99, 5)));
    assert_consistent(&b);
}

/// A market order into an empty side fills nothing, cancels everything, and never rests (even Gtc).
#[test]
fn market_into_empty_book_cancels_all() {
    let mut b = OrderBook::new();
    let mut order = market(1, Side::Sell, 10);
    order.tif = TimeInForce::Gtc;
    let out = b.submit(order).unwrap();
    assert_eq!(
        out,
        MatchOutcome {
            fills: vec![],
            rested: 0,
            canceled: 10
        }
    );
    assert!(b.is_empty());
    assert_eq!(b.leaves(1), None);
}

/// An IOC limit fills what it can within its limit; the remainder is canceled, not rested.
#[test]
fn ioc_partial_remainder_canceled_not_rested() {
    let mut b = seeded();
    let out = b
        .submit(limit(10, Side::Buy, 101, 15, TimeInForce::Ioc))
        .unwrap();
    assert_eq!(
        out.fills,
        vec![fill(1, 10, 101, 5, 0), fill(2, 10, 101, 5, 0)]
    );
    assert_eq!((out.rested, out.canceled), (0, 5));
    assert_eq!(b.leaves(10), None);
    assert_eq!(b.best_bid(), Some((99, 5)));
    assert_eq!(b.best_ask(), Some((102, 5)));
    assert_consistent(&b);
}

/// A FOK short of quantity at acceptable prices is killed with no fills and the book unchanged.
#[test]
fn fok_killed_when_short() {
    let mut b = seeded();
    let before = (b.depth(Side::Buy, 10), b.depth(Side::Sell, 10), b.len());
    // 10 available at <= 101, 15 at <= 102: 16 is short at limit 102.
    let out = b
        .submit(limit(10, Side::Buy, 102, 16, TimeInForce::Fok))
        .unwrap();
    assert_eq!(
        out,
        MatchOutcome {
            fills: vec![],
            rested: 0,
            canceled: 16
        }
    );
    let after = (b.depth(Side::Buy, 10), b.depth(Side::Sell, 10), b.len());
    assert_eq!(before, after);
    assert_eq!(b.leaves(1), Some(5));
    assert_consistent(&b);
}

/// A FOK with enough quantity across several acceptable levels fills completely.
#[test]
fn fok_fills_across_levels() {
    let mut b = seeded();
    let out = b
        .submit(limit(10, Side::Buy, 102, 15, TimeInForce::Fok))
        .unwrap();
    assert_eq!(
        out.fills,
        vec![
            fill(1, 10, 101, 5, 0),
            fill(2, 10, 101, 5, 0),
            fill(3, 10, 102, 5, 0)
        ]
    );
    assert_eq!((out.rested, out.canceled), (0, 0));
    assert_eq!(b.best_ask(), Some((103, 5)));
    // A market FOK sell of exactly the bid quantity also fills.
    let mut order = market(11, Side::Sell, 10);
    order.tif = TimeInForce::Fok;
    let out = b.submit(order).unwrap();
    assert_eq!(out.fills.iter().map(|f| f.qty).sum::<i64>(), 10);
    assert_eq!(b.best_bid(), None);
    assert_consistent(&b);
}

/// A limit remainder rests at its limit price and is later hit by an opposite order.
#[test]
fn limit_remainder_rests_then_hit() {
    let mut b = seeded();
    let out = b
        .submit(limit(10, Side::Buy, 101, 14, TimeInForce::Day))
        .unwrap();
    assert_eq!(out.fills.len(), 2);
    assert_eq!((out.rested, out.canceled), (4, 0));
    assert_eq!(b.leaves(10), Some(4));
    assert_eq!(b.best_bid(), Some((101, 4)));
    assert_eq!(b.best_ask(), Some((102, 5)));
    let out = b
        .submit(limit(11, Side::Sell, 100, 6, TimeInForce::Gtc))
        .unwrap();
    assert_eq!(out.fills, vec![fill(10, 11, 101, 4, 0)]);
    // 2 left at limit 100 does not reach the 99 bid, so it rests as the new best ask.
    assert_eq!((out.rested, out.canceled), (2, 0));
    assert_eq!(b.best_ask(), Some((100, 2)));
    assert_eq!(b.best_bid(), Some((99, 5)));
    assert_consistent(&b);
}

/// Cancel returns the leaves of a resting order and removes it (and its emptied level).
#[test]
fn cancel_returns_leaves_and_removes() {
    let mut b = seeded();
    b.submit(limit(10, Side::Buy, 101, 2, TimeInForce::Ioc))
        .unwrap();
    assert_eq!(b.cancel(1), Some(3));
    assert_eq!(b.leaves(1), None);
    assert_eq!(b.cancel(1), None);
    assert_eq!(b.best_ask(), Some((101, 5)));
    assert_eq!(b.cancel(2), Some(5));
    assert_eq!(b.best_ask(), Some((102, 5)));
    assert_eq!(b.len(), 4);
    assert_consistent(&b);
}

/// Canceling an id that is not resting returns None and changes nothing.
#[test]
fn cancel_unknown_is_none() {
    let mut b = seeded();
    assert_eq!(b.cancel(999), None);
    assert_eq!(b.len(), 6);
    assert_eq!(OrderBook::new().cancel(1), None);
}

/// Resting ids are unique across both sides; an id is reusable once it no longer rests.
#[test]
fn duplicate_id_rejected() {
    let mut b = seeded();
    assert_eq!(
        b.submit(limit(1, Side::Buy, 50, 1, TimeInForce::Gtc)),
        Err(BookError::DuplicateId(1))
    );
    assert_eq!(
        b.rest(5, Side::Sell, 200, 1),
        Err(BookError::DuplicateId(5))
    );
    assert_eq!(b.len(), 6);
    assert_eq!(b.cancel(5), Some(5));
    assert_eq!(b.rest(5, Side::Sell, 200, 1), Ok(()));
    assert_consistent(&b);
}

/// Zero and negative quantities are refused by both submit and rest, with the book unchanged.
#[test]
fn non_positive_qty_rejected() {
    let mut b = seeded();
    assert_eq!(
        b.submit(market(10, Side::Buy, 0)),
        Err(BookError::NonPositiveQty(0))
    );
    assert_eq!(
        b.submit(limit(10, Side::Buy, 101, -3, TimeInForce::Fok)),
        Err(BookError::NonPositiveQty(-3))
    );
    assert_eq!(
        b.rest(10, Side::Buy, 90, 0),
        Err(BookError::NonPositiveQty(0))
    );
    assert_eq!(b.len(), 6);
    assert_eq!(b.best_ask(), Some((101, 10)));
    assert_eq!(
        BookError::NonPositiveQty(-3).to_string(),
        "quantity must be positive, got -3"
    );
    assert_eq!(
        BookError::DuplicateId(7).to_string(),
        "order id 7 is already in the book"
    );
}

/// Depth aggregates each level's quantity, ordered from the best price, truncated to `levels`.
#[test]
fn depth_aggregates_levels() {
    let mut b = seeded();
    b.rest(7, Side::Buy, 99, 4).unwrap();
    assert_eq!(b.depth(Side::Sell, 10), vec![(101, 10), (102, 5), (103, 5)]);
    assert_eq!(b.depth(Side::Sell, 2), vec![(101, 10), (102, 5)]);
    assert_eq!(b.depth(Side::Buy, 10), vec![(99, 9), (98, 5)]);
    assert_eq!(b.depth(Side::Buy, 0), vec![]);
    assert_eq!(b.best_bid(), Some((99, 9)));
    assert!(OrderBook::new().depth(Side::Buy, 5).is_empty());
    assert_eq!(OrderBook::new().best_bid(), None);
}

/// `rest` inserts at the back of the level without matching, even at a crossing price.
#[test]
fn rest_does_not_match() {
    let mut b = seeded();
    b.rest(10, Side::Buy, 105, 7).unwrap();
    assert_eq!(b.best_bid(), Some((105, 7)));
    assert_eq!(b.best_ask(), Some((101, 10)));
    assert_eq!(b.leaves(10), Some(7));
    assert_eq!(b.leaves(1), Some(5));
    // Restored orders keep the sequence they were rested in.
    b.rest(11, Side::Sell, 101, 1).unwrap();
    let out = b.submit(market(12, Side::Buy, 11)).unwrap();
    let makers: Vec<u64> = out.fills.iter().map(|f| f.maker_id).collect();
    assert_eq!(makers, vec![1, 2, 11]);
    assert_consistent(&b);
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        id_pick: Option<usize>,
        side: Side,
        limit: Option<i64>,
        qty: i64,
        tif: TimeInForce,
    },
    Cancel(usize),
}

fn side_strategy() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

fn tif_strategy() -> impl Strategy<Value = TimeInForce> {
    prop_oneof![
        Just(TimeInForce::Day),
        Just(TimeInForce::Gtc),
        Just(TimeInForce::Ioc),
        Just(TimeInForce::Fok),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop::option::weighted(0.1, any::<usize>()),
            side_strategy(),
            prop::option::weighted(0.85, 90i64..=110),
            prop_oneof![10 => 1i64..=40, 1 => -2i64..=0],
            tif_strategy(),
        )
            .prop_map(|(id_pick, side, limit, qty, tif)| Op::Submit {
                id_pick,
                side,
                limit,
                qty,
                tif,
            }),
        2 => any::<usize>().prop_map(Op::Cancel),
    ]
}

/// Independent restatement of the taker's price constraint (not reusing `acceptable`).
fn within_limit(side: Side, limit: Option<i64>, price: i64) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => price <= l,
        (Side::Sell, Some(l)) => price >= l,
    }
}

/// Opposite-side quantity at prices `within_limit`, computed from the public `depth`.
fn reachable(b: &OrderBook, side: Side, limit: Option<i64>) -> i64 {
    b.depth(side.opposite(), usize::MAX)
        .into_iter()
        .filter(|&(p, _)| within_limit(side, limit, p))
        .map(|(_, q)| q)
        .sum()
}

fn assert_uncrossed(b: &OrderBook) {
    if let (Some((bid, _)), Some((ask, _))) = (b.best_bid(), b.best_ask()) {
        assert!(bid < ask, "crossed: bid {bid} >= ask {ask}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random submits/cancels keep the book uncrossed, consistent, and quantity-conserving.
    #[test]
    fn random_ops_preserve_invariants(ops in prop::collection::vec(op_strategy(), 1..120)) {
        let mut b = OrderBook::new();
        let mut issued: Vec<u64> = Vec::new();
        let mut next_id = 1u64;
        for op in ops {
            let before = total_resting(&b);
            let len_before = b.len();
            match op {
                Op::Submit { id_pick, side, limit, qty, tif } => {
                    let id = match id_pick {
                        Some(i) if !issued.is_empty() => issued[i % issued.len()],
                        _ => {
                            next_id += 1;
                            next_id
                        }
                    };
                    issued.push(id);
                    let was_resting = b.leaves(id).is_some();
                    let order = Incoming { id, side, limit, qty, tif };
                    let available = reachable(&b, side, limit);
                    match b.submit(order) {
                        Err(e) => {
                            let expected = if qty <= 0 {
                                BookError::NonPositiveQty(qty)
                            } else {
                                BookError::DuplicateId(id)
                            };
                            prop_assert!(qty <= 0 || was_resting);
                            prop_assert_eq!(e, expected);
                            prop_assert_eq!(total_resting(&b), before);
                            prop_assert_eq!(b.len(), len_before);
                        }
                        Ok(out) => {
                            prop_assert!(qty > 0 && !was_resting);
                            let filled: i64 = out.fills.iter().map(|f| f.qty).sum();
                            prop_assert_eq!(filled + out.rested + out.canceled, qty);
                            prop_assert!(out.rested >= 0 && out.canceled >= 0);
                            for f in &out.fills {
                                prop_assert!(f.qty > 0);
                                prop_assert_eq!(f.taker_id, id);
                                prop_assert!(f.maker_leaves >= 0);
                                prop_assert!(within_limit(side, limit, f.price));
                                let leaves = b.leaves(f.maker_id);
                                if f.maker_leaves == 0 {
                                    prop_assert_eq!(leaves, None);
                                } else {
                                    prop_assert_eq!(leaves, Some(f.maker_leaves));
                                }
                            }
                            // Fill prices move away from the taker: ascending for buys.
                            for w in out.fills.windows(2) {
                                match side {
                                    Side::Buy => prop_assert!(w[0].price <= w[1].price),
                                    Side::Sell => prop_assert!(w[0].price >= w[1].price),
                                }
                            }
                            let can_rest = limit.is_some()
                                && matches!(tif, TimeInForce::Day | TimeInForce::Gtc);
                            if !can_rest {
                                prop_assert_eq!(out.rested, 0);
                            }
                            if out.rested > 0 {
                                prop_assert_eq!(b.leaves(id), Some(out.rested));
                            } else {
                                prop_assert_eq!(b.leaves(id), None);
                            }
                            if tif == TimeInForce::Fok {
                                prop_assert!(out.canceled == 0 || out.canceled == qty);
                                prop_assert_eq!(out.canceled == 0, available >= qty);
                            }
                            // Anything not filled with liquidity left at an acceptable price
                            // would be a missed match.
                            if (out.canceled > 0 && tif != TimeInForce::Fok) || out.rested > 0 {
                                prop_assert_eq!(reachable(&b, side, limit), 0);
                            }
                            prop_assert_eq!(total_resting(&b), before + out.rested - filled);
                        }
                    }
                }
                Op::Cancel(pick) => {
                    let id = if issued.is_empty() { 0 } else { issued[pick % issued.len()] };
                    let expected = b.leaves(id);
                    let got = b.cancel(id);
                    prop_assert_eq!(got, expected);
                    prop_assert_eq!(b.leaves(id), None);
                    prop_assert_eq!(total_resting(&b), before - got.unwrap_or(0));
                    prop_assert_eq!(b.len(), len_before - usize::from(got.is_some()));
                }
            }
            assert_uncrossed(&b);
            assert_consistent(&b);
        }
    }

    /// FIFO across random resting sizes: a sweep fills makers of one level in insertion order.
    #[test]
    fn sweep_fills_in_insertion_order(
        sizes in prop::collection::vec(1i64..=20, 1..20),
        take in 1i64..=400,
    ) {
        let mut b = OrderBook::new();
        for (i, &q) in sizes.iter().enumerate() {
            b.rest(i as u64 + 1, Side::Sell, 100, q).unwrap();
        }
        let total: i64 = sizes.iter().sum();
        let out = b.submit(market(1000, Side::Buy, take)).unwrap();
        let mut remaining = take;
        for (f, (i, &q)) in out.fills.iter().zip(sizes.iter().enumerate()) {
            prop_assert_eq!(f.maker_id, i as u64 + 1);
            let expect = remaining.min(q);
            prop_assert_eq!(f.qty, expect);
            prop_assert_eq!(f.maker_leaves, q - expect);
            remaining -= expect;
        }
        prop_assert_eq!(out.canceled, (take - total).max(0));
        prop_assert_eq!(total_resting(&b), (total - take).max(0));
        assert_consistent(&b);
    }
}
