//! Amending resting orders: which order fills first shows whether priority was kept or lost.

use super::super::{Fill, MAX_FILLS_PER_ORDER};
use super::*;
use proptest::prelude::*;

fn sell(id: u64, price: i64, qty: i64) -> Incoming {
    Incoming {
        id,
        side: Side::Sell,
        limit: Some(price),
        qty,
        tif: TimeInForce::Ioc,
    }
}

/// Which makers an incoming sell at `price` for `qty` fills, in order.
fn fill_order(b: &mut OrderBook, price: i64, qty: i64) -> Vec<u64> {
    b.submit(sell(99, price, qty))
        .unwrap()
        .fills
        .iter()
        .map(|f| f.maker_id)
        .collect()
}

/// Two bids at 100: 1 (first) and 2.
fn two_bids() -> OrderBook {
    let mut b = OrderBook::new();
    b.rest(1, Side::Buy, 100, 10).unwrap();
    b.rest(2, Side::Buy, 100, 10).unwrap();
    b
}

/// A quantity decrease at the same price keeps time priority: the amended order still fills
/// first, for its reduced quantity.
#[test]
fn reducing_keeps_priority() {
    let mut b = two_bids();
    let a = b.amend(1, 100, 4).unwrap();
    assert!(a.kept_priority);
    assert_eq!(a.outcome.rested, 4);
    assert!(a.outcome.fills.is_empty());
    assert_eq!(b.leaves(1), Some(4));
    assert_eq!(b.best_bid(), Some((100, 14)));
    assert_eq!(fill_order(&mut b, 100, 6), vec![1, 2]);
    assert_eq!((b.leaves(1), b.leaves(2)), (None, Some(8)));
}

/// Same price, same quantity: nothing changes, priority kept.
#[test]
fn an_unchanged_amendment_keeps_priority() {
    let mut b = two_bids();
    assert!(b.amend(1, 100, 10).unwrap().kept_priority);
    assert_eq!(fill_order(&mut b, 100, 1), vec![1]);
}

/// A quantity increase loses time priority: the other order at the level fills first.
#[test]
fn increasing_loses_priority() {
    let mut b = two_bids();
    let a = b.amend(1, 100, 15).unwrap();
    assert!(!a.kept_priority);
    assert_eq!(a.outcome.rested, 15);
    assert_eq!(b.best_bid(), Some((100, 25)));
    assert_eq!(fill_order(&mut b, 100, 12), vec![2, 1]);
}

/// A price change loses time priority, even back to the old price.
#[test]
fn a_price_change_loses_priority() {
    let mut b = two_bids();
    assert!(!b.amend(1, 99, 10).unwrap().kept_priority);
    assert_eq!(b.depth(Side::Buy, 5), vec![(100, 10), (99, 10)]);
    assert!(!b.amend(1, 100, 10).unwrap().kept_priority);
    assert_eq!(fill_order(&mut b, 100, 11), vec![2, 1]);
    // Moved away from a level, the order joins the back of its new one.
    let mut b = two_bids();
    b.rest(3, Side::Buy, 99, 5).unwrap();
    b.amend(1, 99, 10).unwrap();
    assert_eq!(fill_order(&mut b, 99, 25), vec![2, 3, 1]);
}

/// A new price that crosses trades at once, as an incoming order would: best price first, at
/// the makers' prices, then the remainder rests at the new price.
#[test]
fn a_crossing_price_trades_at_the_makers_prices() {
    let mut b = OrderBook::new();
    b.rest(1, Side::Buy, 100, 10).unwrap();
    b.rest(5, Side::Sell, 103, 3).unwrap();
    b.rest(6, Side::Sell, 103, 2).unwrap();
    b.rest(7, Side::Sell, 104, 4).unwrap();
    b.rest(8, Side::Sell, 105, 4).unwrap();
    let a = b.amend(1, 104, 12).unwrap();
    assert!(!a.kept_priority);
    let fill = |maker_id, price, qty, maker_leaves| Fill {
        maker_id,
        taker_id: 1,
        price,
        qty,
        maker_leaves,
    };
    assert_eq!(
        a.outcome.fills,
        vec![fill(5, 103, 3, 0), fill(6, 103, 2, 0), fill(7, 104, 4, 0)]
    );
    assert_eq!((a.outcome.rested, a.outcome.canceled), (3, 0));
    assert_eq!(b.best_bid(), Some((104, 3)));
    assert_eq!(b.best_ask(), Some((105, 4)));
    assert_eq!(b.leaves(1), Some(3));
    // Filled completely by the crossing: nothing rests, the id is free.
    let mut b = OrderBook::new();
    b.rest(1, Side::Buy, 100, 5).unwrap();
    b.rest(5, Side::Sell, 103, 9).unwrap();
    let a = b.amend(1, 103, 5).unwrap();
    assert_eq!(a.outcome.rested, 0);
    assert_eq!(b.leaves(1), None);
    assert_eq!(b.leaves(5), Some(4));
}

/// Refusals change nothing.
#[test]
fn refusals_change_nothing() {
    let mut b = two_bids();
    let before = b.snapshot();
    assert_eq!(b.amend(3, 100, 1), Err(BookError::NotResting(3)));
    assert_eq!(b.amend(1, 100, 0), Err(BookError::NonPositiveQty(0)));
    assert_eq!(b.amend(1, 101, -5), Err(BookError::NonPositiveQty(-5)));
    assert_eq!(b.snapshot(), before);
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
    if let (Some((bid, _)), Some((ask, _))) = (b.best_bid(), b.best_ask()) {
        assert!(bid < ask, "crossed: bid {bid} >= ask {ask}");
    }
}

/// The ids of `price`'s level on `side`, in time priority.
fn queue(b: &OrderBook, side: Side, price: i64) -> Vec<u64> {
    b.snapshot()
        .into_iter()
        .filter(|r| r.side == side && r.price == price)
        .map(|r| r.id)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random amendments of a random uncrossed book keep every invariant: uncrossed,
    /// consistent, quantity conserved (fills + rested + canceled = the new leaves), fills at
    /// acceptable prices; a kept priority leaves the order where it stood in its level, a lost
    /// one puts what rests at the back of its new level.
    #[test]
    fn amendments_keep_the_invariants(
        bids in prop::collection::vec((95i64..=100, 1i64..=20), 0..12),
        asks in prop::collection::vec((101i64..=106, 1i64..=20), 0..12),
        amends in prop::collection::vec((0usize..24, 93i64..=108, -2i64..=30), 1..20),
    ) {
        let mut b = OrderBook::new();
        let mut id = 0u64;
        for (side, orders) in [(Side::Buy, &bids), (Side::Sell, &asks)] {
            for &(price, qty) in orders {
                id += 1;
                b.rest(id, side, price, qty).unwrap();
            }
        }
        for (pick, price, leaves) in amends {
            let resting = b.snapshot();
            let Some(target) = resting.get(pick % resting.len().max(1)).copied() else {
                break;
            };
            let total_before: i64 = resting.iter().map(|r| r.leaves).sum();
            let before_queue = queue(&b, target.side, target.price);
            match b.amend(target.id, price, leaves) {
                Err(e) => {
                    prop_assert!(leaves <= 0);
                    prop_assert_eq!(e, BookError::NonPositiveQty(leaves));
                    prop_assert_eq!(b.snapshot(), resting);
                }
                Ok(a) => {
                    let filled: i64 = a.outcome.fills.iter().map(|f| f.qty).sum();
                    prop_assert_eq!(filled + a.outcome.rested + a.outcome.canceled, leaves);
                    prop_assert!(a.outcome.fills.len() <= MAX_FILLS_PER_ORDER);
                    let kept = price == target.price && leaves <= target.leaves;
                    prop_assert_eq!(a.kept_priority, kept);
                    for f in &a.outcome.fills {
                        prop_assert_eq!(f.taker_id, target.id);
                        match target.side {
                            Side::Buy => prop_assert!(f.price <= price),
                            Side::Sell => prop_assert!(f.price >= price),
                        }
                    }
                    if kept {
                        prop_assert_eq!(queue(&b, target.side, price), before_queue);
                    } else if a.outcome.rested > 0 {
                        let level = queue(&b, target.side, price);
                        prop_assert_eq!(level.last(), Some(&target.id));
                    }
                    prop_assert_eq!(b.leaves(target.id), (a.outcome.rested > 0).then_some(a.outcome.rested));
                    let total: i64 = b.snapshot().iter().map(|r| r.leaves).sum();
                    prop_assert_eq!(total, total_before - target.leaves + a.outcome.rested - filled);
                }
            }
            assert_consistent(&b);
        }
    }
}
