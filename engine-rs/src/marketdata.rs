//! The venue's market data, pure (no I/O, time passed in): per symbol the last published L2
//! view of the book (price -> total quantity and order count, per side), its sequence, and
//! what happened since the last publication (trades, venue events). [`MarketData::flush`]
//! turns that into the messages to publish (subjects: `contract::md_*`):
//!
//! - one [`pb::MarketDataUpdate`] per symbol whose book changed or traded: the levels that
//!   differ between the published view and the book now (quantity 0 = removed), the trades in
//!   the order they happened, `sequence` = previous + 1 (no hole), `events` = the venue events
//!   it coalesces (one per order executed or canceled, plus one per fill and per expiry);
//! - a [`pb::Quote`] when the top of book (best bid and ask: price, quantity, orders) changed;
//! - every trade again on its own ([`pb::Trade`], the tape).
//!
//! Snapshots ([`MarketData::snapshot`]) are of the published view, never of the live book:
//! a snapshot at sequence `n` is exactly what updates `1..=n` built, whatever is pending.
//! The session is the engine's start time (Unix ns, as a string): sequences restart with it.

use std::collections::{BTreeMap, BTreeSet};

use crate::book::{OrderBook, Side};
use crate::fixed::{self, FixedError};
use crate::proto::v1::{self as pb, ExecType};
use crate::validate::{echo, field_error};
use crate::venue::Executed;

#[cfg(test)]
mod tests;

/// One price level of the L2 view: total resting quantity and how many orders make it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub qty: i64,
    pub orders: u32,
}

/// The L2 view of one book.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2 {
    pub bids: BTreeMap<i64, Level>,
    pub asks: BTreeMap<i64, Level>,
}

/// Best bid and best ask, with their levels.
type Top = (Option<(i64, Level)>, Option<(i64, Level)>);

impl L2 {
    /// The book's levels now.
    pub fn of(book: &OrderBook) -> L2 {
        let side = |side| {
            book.l2(side)
                .map(|(price, qty, orders)| {
                    let orders = u32::try_from(orders).unwrap_or(u32::MAX);
                    (price, Level { qty, orders })
                })
                .collect()
        };
        L2 {
            bids: side(Side::Buy),
            asks: side(Side::Sell),
        }
    }

    /// Best bid (highest) and best ask (lowest).
    pub fn top(&self) -> Top {
        (
            self.bids.iter().next_back().map(|(p, l)| (*p, *l)),
            self.asks.iter().next().map(|(p, l)| (*p, *l)),
        )
    }

    /// Applies level changes as a subscriber does: quantity 0 removes the level, any other
    /// quantity replaces it.
    pub fn apply(
        &mut self,
        bids: &[pb::PriceLevel],
        asks: &[pb::PriceLevel],
    ) -> Result<(), FixedError> {
        for (levels, changes) in [(&mut self.bids, bids), (&mut self.asks, asks)] {
            for c in changes {
                let price = fixed::from_decimal(&c.price.unwrap_or_default())?;
                let qty = fixed::from_decimal(&c.quantity.unwrap_or_default())?;
                if qty == 0 {
                    levels.remove(&price);
                } else {
                    levels.insert(
                        price,
                        Level {
                            qty,
                            orders: c.orders,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Both sides as wire levels, best first.
    pub fn wire(&self) -> (Vec<pb::PriceLevel>, Vec<pb::PriceLevel>) {
        (
            self.bids.iter().rev().map(|(p, l)| level(*p, *l)).collect(),
            self.asks.iter().map(|(p, l)| level(*p, *l)).collect(),
        )
    }
}

fn level(price: i64, l: Level) -> pb::PriceLevel {
    pb::PriceLevel {
        price: Some(fixed::to_decimal(price)),
        quantity: Some(fixed::to_decimal(l.qty)),
        orders: l.orders,
    }
}

/// The levels of one side that differ from `old` to `new`, each with its new total
/// (quantity 0, orders 0 = removed), best first (`side` says which end is best).
pub fn changes(
    old: &BTreeMap<i64, Level>,
    new: &BTreeMap<i64, Level>,
    side: Side,
) -> Vec<pb::PriceLevel> {
    let mut out = Vec::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((pa, _)), Some((pb_, lb))) if pa == pb_ => {
                let (price, new_level) = (**pb_, **lb);
                if a.next().map(|(_, l)| *l) != Some(new_level) {
                    out.push(level(price, new_level));
                }
                b.next();
            }
            (Some((pa, _)), Some((pb_, _))) if pa > pb_ => {
                let (p, l) = b.next().expect("peeked");
                out.push(level(*p, *l));
            }
            (Some(_), _) => {
                let (p, _) = a.next().expect("peeked");
                out.push(level(*p, Level { qty: 0, orders: 0 }));
            }
            (None, Some(_)) => {
                let (p, l) = b.next().expect("peeked");
                out.push(level(*p, *l));
            }
        }
    }
    if side == Side::Buy {
        out.reverse();
    }
    out
}

/// The market data of one symbol.
#[derive(Debug, Default)]
struct Symbol {
    /// The book as the last published update left it.
    view: L2,
    sequence: u64,
    /// Trades not yet published, in the order they happened.
    trades: Vec<pb::Trade>,
    /// Venue events not yet published, and when the first of them happened.
    events: u32,
    first_event_ns: i64,
}

/// What one flush publishes for one symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct Flushed {
    pub symbol: String,
    pub update: pb::MarketDataUpdate,
    /// The new top of book, when it changed.
    pub quote: Option<pb::Quote>,
}

/// Every configured symbol's market data; see the module doc.
#[derive(Debug)]
pub struct MarketData {
    session: String,
    symbols: BTreeMap<String, Symbol>,
    /// Symbols touched since the last flush.
    dirty: BTreeSet<String>,
}

impl MarketData {
    /// Empty views at sequence 0 for these symbols, in `session`.
    pub fn new<'a>(session: String, symbols: impl IntoIterator<Item = &'a String>) -> MarketData {
        MarketData {
            session,
            symbols: symbols
                .into_iter()
                .map(|s| (s.clone(), Symbol::default()))
                .collect(),
            dirty: BTreeSet::new(),
        }
    }

    pub fn session(&self) -> &str {
        &self.session
    }

    /// Whether something waits for the next flush.
    pub fn pending(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The sequence of `symbol`'s last published update (0: none yet).
    pub fn sequence(&self, symbol: &str) -> Option<u64> {
        self.symbols.get(symbol).map(|s| s.sequence)
    }

    /// `events` venue events changed (or may have changed) `symbol`'s book at `now`.
    pub fn touch(&mut self, symbol: &str, events: u32, now: i64) {
        let Some(s) = self.symbols.get_mut(symbol) else {
            return;
        };
        if s.events == 0 {
            s.first_event_ns = now;
        }
        s.events = s.events.saturating_add(events);
        if !self.dirty.contains(symbol) {
            self.dirty.insert(symbol.to_string());
        }
    }

    /// Marks every symbol touched (e.g. after recovery restored the books).
    pub fn touch_all(&mut self, now: i64) {
        let names: Vec<String> = self.symbols.keys().cloned().collect();
        for s in names {
            self.touch(&s, 0, now);
        }
    }

    /// An execution in `symbol`'s book: its trades (the taker's fills: the aggressor's exec
    /// id is the trade id) and its events (the order, each fill, each expiry).
    pub fn executed(&mut self, symbol: &str, executed: &Executed, now: i64) {
        let mut trades: Vec<pb::Trade> = Vec::new();
        if let Some(taker) = executed.touched.first() {
            for r in &taker.reports {
                if r.exec_type == ExecType::Trade as i32 {
                    trades.push(pb::Trade {
                        symbol: symbol.to_string(),
                        trade_id: r.exec_id.clone(),
                        price: r.last_px,
                        quantity: r.last_qty,
                        aggressor_side: r.side,
                        transact_time_unix_ns: r.transact_time_unix_ns,
                        sequence: 0,
                    });
                }
            }
        }
        let events = 1 + executed.expired.len() + trades.len();
        self.touch(symbol, u32::try_from(events).unwrap_or(u32::MAX), now);
        if let Some(s) = self.symbols.get_mut(symbol) {
            s.trades.extend(trades);
        }
    }

    /// The messages for every touched symbol (see the module doc), the views moved to the
    /// books now. `book(symbol)`: the venue's book of a symbol.
    pub fn flush<'b>(&mut self, book: impl Fn(&str) -> Option<&'b OrderBook>) -> Vec<Flushed> {
        let mut out = Vec::new();
        for name in std::mem::take(&mut self.dirty) {
            let (Some(s), Some(book)) = (self.symbols.get_mut(&name), book(&name)) else {
                continue;
            };
            let now = L2::of(book);
            let bids = changes(&s.view.bids, &now.bids, Side::Buy);
            let asks = changes(&s.view.asks, &now.asks, Side::Sell);
            let events = std::mem::take(&mut s.events);
            if bids.is_empty() && asks.is_empty() && s.trades.is_empty() {
                continue;
            }
            s.sequence += 1;
            let top_before = s.view.top();
            s.view = now;
            let top = s.view.top();
            let mut trades = std::mem::take(&mut s.trades);
            for t in &mut trades {
                t.sequence = s.sequence;
            }
            let quote = (top != top_before).then(|| pb::Quote {
                symbol: name.clone(),
                bid: top.0.map(|(p, l)| level(p, l)),
                ask: top.1.map(|(p, l)| level(p, l)),
                sequence: s.sequence,
                session: self.session.clone(),
                venue_time_unix_ns: s.first_event_ns,
            });
            out.push(Flushed {
                update: pb::MarketDataUpdate {
                    symbol: name.clone(),
                    sequence: s.sequence,
                    session: self.session.clone(),
                    bids,
                    asks,
                    trades,
                    venue_time_unix_ns: s.first_event_ns,
                    events,
                },
                quote,
                symbol: name,
            });
        }
        out
    }

    /// `symbol`'s published view and its sequence (an unknown symbol: only the error).
    pub fn snapshot(&self, symbol: &str, now: i64) -> pb::MarketDataSnapshot {
        let Some(s) = self.symbols.get(symbol) else {
            return pb::MarketDataSnapshot {
                symbol: symbol.to_string(),
                errors: vec![field_error(
                    "symbol",
                    "known_symbol",
                    format!("{} is not traded by this engine", echo(symbol)),
                )],
                ..Default::default()
            };
        };
        let (bids, asks) = s.view.wire();
        pb::MarketDataSnapshot {
            symbol: symbol.to_string(),
            sequence: s.sequence,
            session: self.session.clone(),
            bids,
            asks,
            venue_time_unix_ns: now,
            errors: vec![],
        }
    }
}
