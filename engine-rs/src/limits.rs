//! Risk limits as the pure core sees them: per-symbol limits and seed in fixed point, and the
//! largest notional of one order. The configuration converts into [`Limits`] once at start-up.

use std::collections::BTreeMap;

use crate::book::Side;
use crate::validate::Validator;

/// Per-symbol limits and seed in fixed point, validated once at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolLimits {
    pub max_order_qty: i64,
    pub reference_price: i64,
    /// Seeded liquidity: (side, price, quantity, how many orders of that quantity).
    pub seed: Vec<(Side, i64, i64, u32)>,
}

/// Every configured symbol's limits and the notional limit of one order.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub symbols: BTreeMap<String, SymbolLimits>,
    pub max_notional: i64,
}

impl Limits {
    /// The checks of a new order under these limits.
    pub fn validator(&self) -> Validator<'_> {
        Validator {
            symbols: &self.symbols,
            max_notional: self.max_notional,
        }
    }

    /// The limits an order acknowledged before a restart executes under: it was accepted
    /// with the limits of its time, so no quantity or notional limit applies again; the
    /// symbols (their books) and the deadline are still checked.
    pub fn relaxed(&self) -> Limits {
        Limits {
            symbols: self
                .symbols
                .iter()
                .map(|(s, l)| {
                    let mut l = l.clone();
                    l.max_order_qty = i64::MAX;
                    (s.clone(), l)
                })
                .collect(),
            max_notional: i64::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed;

    fn limits() -> Limits {
        Limits {
            symbols: BTreeMap::from([(
                "AAPL".to_string(),
                SymbolLimits {
                    max_order_qty: fixed::units(100),
                    reference_price: fixed::units(190),
                    seed: vec![(Side::Sell, fixed::units(191), fixed::units(10), 2)],
                },
            )]),
            max_notional: fixed::units(1000),
        }
    }

    /// Relaxed limits lift the quantity and notional limits only: same symbols, same
    /// reference prices and seed.
    #[test]
    fn relaxed_lifts_quantity_and_notional_only() {
        let strict = limits();
        let relaxed = strict.relaxed();
        assert_eq!(relaxed.max_notional, i64::MAX);
        let aapl = &relaxed.symbols["AAPL"];
        assert_eq!(aapl.max_order_qty, i64::MAX);
        assert_eq!(aapl.reference_price, strict.symbols["AAPL"].reference_price);
        assert_eq!(aapl.seed, strict.symbols["AAPL"].seed);
        assert_eq!(
            relaxed.symbols.keys().collect::<Vec<_>>(),
            strict.symbols.keys().collect::<Vec<_>>()
        );
    }
}
