//! Amending a resting order, as a replace does (invariant 10 of the book): a quantity decrease
//! at the same price keeps the order's time priority; a new price or more quantity loses it.

use super::{BookError, Incoming, MatchOutcome, OrderBook, Side, TimeInForce};

/// What [`OrderBook::amend`] did to a resting order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amended {
    /// True when the order kept its place in its level (reduced in place, nothing traded).
    pub kept_priority: bool,
    /// As an incoming order (priority lost): its fills at the new price, what rests again and
    /// what was canceled (only beyond [`super::MAX_FILLS_PER_ORDER`] fills). Priority kept:
    /// no fills, `rested` = the new leaves.
    pub outcome: MatchOutcome,
}

impl OrderBook {
    /// Amends resting order `id` to `leaves` at `price`. The same price with no more leaves
    /// reduces it in place (time priority kept). Anything else takes it out of the book and
    /// submits it again under the same id as a GTC limit order: it trades with the opposite
    /// side while the new price crosses (price-time, at the makers' prices) and its remainder
    /// rests at the back of its new level (time priority lost).
    ///
    /// Refuses (book unchanged) an id that is not resting or non-positive leaves.
    pub fn amend(&mut self, id: u64, price: i64, leaves: i64) -> Result<Amended, BookError> {
        let &(side, at) = self.index.get(&id).ok_or(BookError::NotResting(id))?;
        if leaves <= 0 {
            return Err(BookError::NonPositiveQty(leaves));
        }
        if price == at && self.reduce_in_place(id, side, price, leaves) {
            return Ok(Amended {
                kept_priority: true,
                outcome: MatchOutcome {
                    fills: Vec::new(),
                    rested: leaves,
                    canceled: 0,
                },
            });
        }
        self.cancel(id);
        // Cannot be refused: the id was just freed and the quantity is positive.
        let outcome = self.submit(Incoming {
            id,
            side,
            limit: Some(price),
            qty: leaves,
            tif: TimeInForce::Gtc,
        })?;
        Ok(Amended {
            kept_priority: false,
            outcome,
        })
    }

    /// Lowers resting order `id` (at `price` on `side`) to `leaves` where it stands; false
    /// (nothing changed) when that would not be a decrease or keep it as it is.
    fn reduce_in_place(&mut self, id: u64, side: Side, price: i64, leaves: i64) -> bool {
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let Some(level) = levels.get_mut(&price) else {
            return false;
        };
        let Some(order) = level.orders.iter_mut().find(|o| o.id == id) else {
            return false;
        };
        if leaves > order.leaves {
            return false;
        }
        level.total -= order.leaves - leaves;
        order.leaves = leaves;
        true
    }
}

#[cfg(test)]
mod tests;
