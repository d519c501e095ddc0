//! The venue's own orders: the seeded liquidity of every configured symbol, placed as GTC
//! limit orders of the reserved account `_house` (no client may use an account starting with
//! `_`, see `validate.rs`).
//!
//! Seeded liquidity is ordinary orders so that it behaves like any other: consuming it is
//! reported (TRADE reports on `bridge.v1.exec._house.<id>`, so what was bought equals what was
//! sold in EXECUTIONS), stored in the order store (consumed liquidity stays consumed across
//! restarts) and
//! restored in its time priority. Each seed order has a stable id,
//! `<engine_id>-<seed_generation>-<symbol>-<n>`, and is placed once: a restart finds it in the
//! order store. Changing `seed_generation` replaces the house's liquidity: the live orders of
//! other generations are canceled and the configured seed is placed afresh.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

use crate::book::TimeInForce;
use crate::contract;
use crate::fixed;
use crate::limits::SymbolLimits;
use crate::proto::v1 as pb;
use crate::validate::{valid_id, ValidOrder, MAX_CLIENT_ORDER_ID_BYTES};
use crate::venue::{LiveOrder, Touched, Venue, VenueError};

/// The account of the venue's own orders.
pub const HOUSE_ACCOUNT: &str = "_house";

/// A configuration whose seed ids cannot be order ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "seed order id {0:?} is not 1-{MAX_CLIENT_ORDER_ID_BYTES} characters of [A-Za-z0-9_-]: \
     shorten engine_id, seed_generation or the symbol"
)]
pub struct BadSeedId(pub String);

/// A seed order and how it executes.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedOrder {
    pub key: String,
    pub order: pb::NewOrder,
    pub valid: ValidOrder,
}

/// The id prefix of one engine's seed orders of one generation.
fn prefix(engine_id: &str, generation: &str) -> String {
    format!("{engine_id}-{generation}-")
}

/// The seed orders `symbols` configure, in placement order (per symbol, per level, per order).
pub fn seed_orders(
    symbols: &BTreeMap<String, SymbolLimits>,
    engine_id: &str,
    generation: &str,
) -> Result<Vec<SeedOrder>, BadSeedId> {
    let mut out = Vec::new();
    for (symbol, limits) in symbols {
        let mut n = 0u32;
        for &(side, price, qty, orders) in &limits.seed {
            for _ in 0..orders {
                n += 1;
                let id = format!("{}{symbol}-{n}", prefix(engine_id, generation));
                if !valid_id(&id, MAX_CLIENT_ORDER_ID_BYTES) {
                    return Err(BadSeedId(id));
                }
                let order = pb::NewOrder {
                    client_order_id: id.clone(),
                    account: HOUSE_ACCOUNT.into(),
                    symbol: symbol.clone(),
                    side: match side {
                        crate::book::Side::Buy => pb::Side::Buy,
                        crate::book::Side::Sell => pb::Side::Sell,
                    } as i32,
                    order_type: pb::OrderType::Limit as i32,
                    quantity: Some(fixed::to_decimal(qty)),
                    limit_price: Some(fixed::to_decimal(price)),
                    time_in_force: pb::TimeInForce::Gtc as i32,
                    ..Default::default()
                };
                out.push(SeedOrder {
                    key: contract::order_key(HOUSE_ACCOUNT, &id),
                    order,
                    valid: ValidOrder {
                        side,
                        limit: Some(price),
                        qty,
                        tif: TimeInForce::Gtc,
                    },
                });
            }
        }
    }
    Ok(out)
}

/// Places `seeds` in `venue` as the service does at a first start (without I/O): each seed
/// order is accepted and executed like any order, with arrival sequences from `first_seq`.
/// For benchmarks and tests of a seeded venue.
pub fn place(
    venue: &mut Venue,
    seeds: Vec<SeedOrder>,
    engine_id: &str,
    first_seq: u64,
    now: i64,
) -> Result<Vec<Touched>, VenueError> {
    let mut out = Vec::new();
    for (seq, seed) in (first_seq..).zip(seeds) {
        let live = LiveOrder::new(seed.key, seed.order, engine_id, seq, "");
        out.extend(venue.execute(live, &seed.valid, now)?.into_all());
    }
    Ok(out)
}

/// True for the order store key of a house order.
pub fn is_house_key(key: &str) -> bool {
    key.strip_prefix(HOUSE_ACCOUNT)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// True for a house order of `engine_id` placed under another seed generation.
pub fn is_other_generation(order: &pb::NewOrder, engine_id: &str, generation: &str) -> bool {
    order.account == HOUSE_ACCOUNT
        && !order
            .client_order_id
            .starts_with(&prefix(engine_id, generation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Side;
    use crate::fixed::units;

    fn symbols() -> BTreeMap<String, SymbolLimits> {
        BTreeMap::from([(
            "AAPL".to_string(),
            SymbolLimits {
                max_order_qty: units(1000),
                reference_price: units(100),
                seed: vec![
                    (Side::Sell, units(101), units(10), 2),
                    (Side::Buy, units(99), units(5), 1),
                ],
            },
        )])
    }

    /// Every configured seed order becomes one GTC limit order of the house, with a stable id.
    #[test]
    fn seed_orders_are_house_gtc_limits_with_stable_ids() {
        let seeds = seed_orders(&symbols(), "e1", "g1").unwrap();
        let ids: Vec<_> = seeds
            .iter()
            .map(|s| s.order.client_order_id.as_str())
            .collect();
        assert_eq!(ids, ["e1-g1-AAPL-1", "e1-g1-AAPL-2", "e1-g1-AAPL-3"]);
        assert!(seeds.iter().all(|s| is_house_key(&s.key)));
        assert_eq!(seeds[2].valid.side, Side::Buy);
        assert_eq!(seeds[0].order.time_in_force, pb::TimeInForce::Gtc as i32);
        assert!(!is_other_generation(&seeds[0].order, "e1", "g1"));
        assert!(is_other_generation(&seeds[0].order, "e1", "g2"));
        assert!(!is_house_key("ACC.x"));
        assert!(!is_house_key("_housekeeping.x"));
    }

    /// A seed id that cannot be an order id is a configuration error naming it.
    #[test]
    fn overlong_seed_ids_are_refused() {
        let long = "e".repeat(60);
        let err = seed_orders(&symbols(), &long, "g1").unwrap_err();
        assert!(err.0.starts_with(&long));
    }
}
