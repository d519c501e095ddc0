//! Price-time-priority limit order book for one symbol of the simulated venue.
//!
//! Pure data structure: no I/O, no async, no clock. Prices and quantities are `i64`
//! fixed-point integers whose scale the caller chooses (the book never converts them);
//! order ids are `u64` values assigned by the caller.
//!
//! # Invariants
//!
//! These hold after every public call returns:
//!
//! 1. **Never crossed by matching.** If the book was not crossed before a call to
//!    [`OrderBook::submit`], then afterwards `best_bid < best_ask` whenever both exist: an
//!    incoming limit order only rests once nothing on the other side is at an acceptable price.
//!    [`OrderBook::rest`] inserts without matching and does not check; callers use it only to
//!    seed non-crossing liquidity or to restore a book that was uncrossed when it was saved.
//! 2. **Price-time priority.** An incoming order trades against the best opposite price first,
//!    and within a price level in arrival order (FIFO). Newly rested quantity joins the back of
//!    its level; a partially filled maker keeps its place.
//! 3. **Fills never exceed the incoming quantity.** For every accepted order,
//!    `sum(fill.qty) + rested + canceled == qty`, and every fill has `qty > 0`.
//! 4. **Fill prices.** A fill executes at the maker's resting price, which never violates the
//!    taker's limit (buy: `price <= limit`, sell: `price >= limit`; market orders take any price).
//! 5. **Exact maker leaves.** A resting order's leaves are reduced by exactly the quantity of its
//!    fills; [`Fill::maker_leaves`] is the value after that fill, and an order whose leaves reach
//!    zero is removed from the book at once.
//! 6. **No stale state.** Every resting order has leaves `> 0`; every price level is non-empty and
//!    its cached total equals the sum of its orders' leaves; the id index holds exactly the
//!    resting orders, so at most one resting order exists per id.
//! 7. **Errors change nothing.** A call returning `Err` leaves the book untouched.
//! 8. **FOK is all-or-nothing.** A fill-or-kill order either fills completely or produces no fills
//!    and leaves the book unchanged.
//!
//! 9. **Bounded work per order.** One incoming order makes at most [`MAX_FILLS_PER_ORDER`]
//!    fills; what it could still trade after that is canceled (never rested: it would cross),
//!    and a FOK order that would need more fills is killed. This bounds everything derived from
//!    one execution (its reports, its record writes) whatever the book holds.
//!
//! 10. **Amending keeps or loses priority, never both.** [`OrderBook::amend`] (a replace) of a
//!     resting order at its price with no more leaves reduces it in place: it keeps its place
//!     in its level. Any other amendment (a new price, more leaves) takes it out and submits it
//!     again as an incoming GTC limit order: it trades what it crosses, price-time, at the
//!     makers' prices (invariants 2-4, 9), and its remainder rests at the back of its level.
//!
//! The book treats `Day` and `Gtc` identically; expiring `Day` orders at the end of a session
//! (and any order at its deadline) is the venue's job (`venue/expiry.rs`, via
//! [`OrderBook::cancel`]). The caller bounds quantities so that the total
//! quantity resting at one price level fits in an `i64`.

use std::collections::btree_map::{BTreeMap, Entry};
use std::collections::{HashMap, VecDeque};

/// At most this many fills per incoming order (invariant 9): one execution's reports (2 per
/// fill, taker and maker, plus the taker's NEW and final reports) stay a bounded part of one
/// commit group's journal entries (`commit.rs`), and engines before contract 1.2 committed them
/// as one atomic batch, which the server limits to 1,000 messages.
pub const MAX_FILLS_PER_ORDER: usize = 400;

/// A resting order as [`OrderBook::snapshot`] lists it, in time priority within its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestingOrder {
    pub id: u64,
    pub side: Side,
    pub price: i64,
    pub leaves: i64,
}

/// Side of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// The other side of the book.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// Lower-case name (`buy`, `sell`), e.g. a metric's label value.
    pub fn label(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// Time in force of an incoming order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInForce {
    Day,
    Gtc,
    Ioc,
    Fok,
}

/// An order arriving at the book. `limit == None` means a market order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub id: u64,
    pub side: Side,
    pub limit: Option<i64>,
    pub qty: i64,
    pub tif: TimeInForce,
}

/// One execution between a resting (maker) order and the incoming (taker) order, at the maker's price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    pub maker_id: u64,
    pub taker_id: u64,
    pub price: i64,
    pub qty: i64,
    /// The maker's leaves after this fill (0 if it was fully filled and removed).
    pub maker_leaves: i64,
}

/// What happened to an incoming order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MatchOutcome {
    pub fills: Vec<Fill>,
    /// Quantity that now rests in the book (only limit orders with Day/Gtc).
    pub rested: i64,
    /// Quantity neither filled nor rested (market remainder, IOC remainder, FOK kill).
    pub canceled: i64,
}

/// Reasons the book refuses an order. The book is unchanged when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("quantity must be positive, got {0}")]
    NonPositiveQty(i64),
    #[error("order id {0} is already in the book")]
    DuplicateId(u64),
    #[error("order id {0} is not resting in the book")]
    NotResting(u64),
}

/// A resting order inside a price level.
#[derive(Debug, Clone, Copy)]
struct Resting {
    id: u64,
    leaves: i64,
}

/// All resting orders at one price, in arrival order, with their cached total leaves.
#[derive(Debug, Default)]
struct Level {
    total: i64,
    orders: VecDeque<Resting>,
}

/// Limit order book for one symbol. See the module docs for its invariants.
#[derive(Debug, Default)]
pub struct OrderBook {
    /// Bid levels; the best bid is the highest key.
    bids: BTreeMap<i64, Level>,
    /// Ask levels; the best ask is the lowest key.
    asks: BTreeMap<i64, Level>,
    /// Resting order id -> (side, price), to find its level without scanning the book.
    index: HashMap<u64, (Side, i64)>,
}

/// Whether a taker on `side` with `limit` accepts a maker resting at `price`.
fn acceptable(side: Side, limit: Option<i64>, price: i64) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(limit)) => price <= limit,
        (Side::Sell, Some(limit)) => price >= limit,
    }
}

impl OrderBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    fn levels(&self, side: Side) -> &BTreeMap<i64, Level> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    /// Levels of `side` from the best price outwards (no allocation).
    fn levels_from_best(&self, side: Side) -> impl Iterator<Item = (&i64, &Level)> + '_ {
        let (bids, asks) = match side {
            Side::Buy => (Some(self.bids.iter().rev()), None),
            Side::Sell => (None, Some(self.asks.iter())),
        };
        bids.into_iter().flatten().chain(asks.into_iter().flatten())
    }

    fn check_new(&self, id: u64, qty: i64) -> Result<(), BookError> {
        if qty <= 0 {
            return Err(BookError::NonPositiveQty(qty));
        }
        if self.index.contains_key(&id) {
            return Err(BookError::DuplicateId(id));
        }
        Ok(())
    }

    /// Quantity on the side opposite `order` at prices the order accepts, counted up to
    /// `order.qty` (stops early once enough is found). Does not mutate.
    /// Counts fills too: quantity that would take more than [`MAX_FILLS_PER_ORDER`] fills is
    /// not available.
    fn available(&self, order: &Incoming) -> i64 {
        let mut found: i64 = 0;
        let mut fills = 0;
        for (&price, level) in self.levels_from_best(order.side.opposite()) {
            if found >= order.qty || !acceptable(order.side, order.limit, price) {
                break;
            }
            for maker in &level.orders {
                if found >= order.qty || fills == MAX_FILLS_PER_ORDER {
                    return found;
                }
                found = found.saturating_add(maker.leaves);
                fills += 1;
            }
        }
        found
    }

    /// Match an incoming order with price-time priority, then rest/cancel the remainder per its TIF:
    /// market orders never rest (remainder canceled); IOC remainder canceled; FOK fills completely
    /// or not at all (check available quantity at acceptable prices first, no fills if short);
    /// Day and Gtc limit remainders rest at the back of their price level.
    ///
    /// Refuses (book unchanged) a non-positive quantity, or an id that is currently resting.
    pub fn submit(&mut self, order: Incoming) -> Result<MatchOutcome, BookError> {
        self.check_new(order.id, order.qty)?;
        let mut outcome = MatchOutcome::default();
        if order.tif == TimeInForce::Fok && self.available(&order) < order.qty {
            outcome.canceled = order.qty;
            return Ok(outcome);
        }

        let remaining = self.match_against(&order, &mut outcome.fills);
        let capped = outcome.fills.len() == MAX_FILLS_PER_ORDER;
        match (order.limit, order.tif) {
            (Some(price), TimeInForce::Day | TimeInForce::Gtc) if remaining > 0 && !capped => {
                self.insert(order.id, order.side, price, remaining);
                outcome.rested = remaining;
            }
            _ => outcome.canceled = remaining,
        }
        Ok(outcome)
    }

    /// Trade `order` against the opposite side from the best price while prices are acceptable.
    /// Appends fills and returns the taker's unfilled quantity.
    fn match_against(&mut self, order: &Incoming, fills: &mut Vec<Fill>) -> i64 {
        let Self { bids, asks, index } = self;
        let mut remaining = order.qty;
        while remaining > 0 && fills.len() < MAX_FILLS_PER_ORDER {
            let best = match order.side {
                Side::Buy => asks.first_entry(),
                Side::Sell => bids.last_entry(),
            };
            let Some(mut entry) = best else { break };
            let price = *entry.key();
            if !acceptable(order.side, order.limit, price) {
                break;
            }
            let level = entry.get_mut();
            while remaining > 0 && fills.len() < MAX_FILLS_PER_ORDER {
                let Some(maker) = level.orders.front_mut() else {
                    break;
                };
                let qty = remaining.min(maker.leaves);
                maker.leaves -= qty;
                level.total -= qty;
                remaining -= qty;
                fills.push(Fill {
                    maker_id: maker.id,
                    taker_id: order.id,
                    price,
                    qty,
                    maker_leaves: maker.leaves,
                });
                if maker.leaves == 0 {
                    let id = maker.id;
                    level.orders.pop_front();
                    index.remove(&id);
                }
            }
            if level.orders.is_empty() {
                entry.remove();
            }
        }
        remaining
    }

    /// Append a validated order to the back of its level and index it.
    fn insert(&mut self, id: u64, side: Side, price: i64, qty: i64) {
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = levels.entry(price).or_default();
        level.total += qty;
        level.orders.push_back(Resting { id, leaves: qty });
        self.index.insert(id, (side, price));
    }

    /// Put an order in the book WITHOUT matching, at the back of its price level.
    ///
    /// Used to seed liquidity and to restore resting orders after a restart: callers restore
    /// orders in their original arrival sequence so that time priority is reproduced. The book
    /// does not check whether the order crosses the opposite side; keeping the book uncrossed is
    /// the caller's responsibility here. Refuses (book unchanged) a non-positive quantity or an id
    /// that is already resting.
    pub fn rest(&mut self, id: u64, side: Side, price: i64, qty: i64) -> Result<(), BookError> {
        self.check_new(id, qty)?;
        self.insert(id, side, price, qty);
        Ok(())
    }

    /// Every resting order: bids from the best price down, then asks from the best price up,
    /// each level in time priority. Resting them in this order into an empty book with
    /// [`OrderBook::rest`] rebuilds this book exactly.
    pub fn snapshot(&self) -> Vec<RestingOrder> {
        [Side::Buy, Side::Sell]
            .into_iter()
            .flat_map(|side| {
                self.levels_from_best(side)
                    .flat_map(move |(&price, level)| {
                        level.orders.iter().map(move |o| RestingOrder {
                            id: o.id,
                            side,
                            price,
                            leaves: o.leaves,
                        })
                    })
            })
            .collect()
    }

    /// Remove a resting order; returns its leaves quantity, None if not resting.
    pub fn cancel(&mut self, id: u64) -> Option<i64> {
        let (side, price) = *self.index.get(&id)?;
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let Entry::Occupied(mut entry) = levels.entry(price) else {
            return None;
        };
        let level = entry.get_mut();
        let pos = level.orders.iter().position(|o| o.id == id)?;
        let removed = level.orders.remove(pos)?;
        level.total -= removed.leaves;
        if level.orders.is_empty() {
            entry.remove();
        }
        self.index.remove(&id);
        Some(removed.leaves)
    }

    /// Leaves quantity of a resting order.
    pub fn leaves(&self, id: u64) -> Option<i64> {
        let (side, price) = self.index.get(&id)?;
        self.levels(*side)
            .get(price)?
            .orders
            .iter()
            .find(|o| o.id == id)
            .map(|o| o.leaves)
    }

    /// Best (highest) bid as (price, total qty at that level).
    pub fn best_bid(&self) -> Option<(i64, i64)> {
        self.bids.iter().next_back().map(|(&p, l)| (p, l.total))
    }

    /// Best (lowest) ask as (price, total qty at that level).
    pub fn best_ask(&self) -> Option<(i64, i64)> {
        self.asks.iter().next().map(|(&p, l)| (p, l.total))
    }

    /// Up to `levels` aggregated levels from the best, as (price, total qty).
    pub fn depth(&self, side: Side, levels: usize) -> Vec<(i64, i64)> {
        self.levels_from_best(side)
            .take(levels)
            .map(|(&p, l)| (p, l.total))
            .collect()
    }

    /// Every level of `side` from the best price outwards, as (price, total qty, orders):
    /// the book's L2 view (market data).
    pub fn l2(&self, side: Side) -> impl Iterator<Item = (i64, i64, usize)> + '_ {
        self.levels_from_best(side)
            .map(|(&p, l)| (p, l.total, l.orders.len()))
    }

    /// Number of resting orders on one side (one pass over its price levels).
    pub fn orders(&self, side: Side) -> usize {
        let levels = match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        };
        levels.values().map(|l| l.orders.len()).sum()
    }

    /// Number of resting orders (both sides).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no order is resting.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

mod amend;

pub use amend::Amended;

#[cfg(test)]
mod tests;
