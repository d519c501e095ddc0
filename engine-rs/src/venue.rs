//! The simulated venue: one price-time book per symbol, the client orders living in them, and
//! the order state machine that turns matching results into FIX execution reports.
//!
//! Pure: no I/O, no async, time passed in. The service layer persists the `Touched` orders and
//! publishes their reports; this module decides what they are.
//!
//! Invariants: every status change goes through [`transition`] (one table); for every order
//! `cum_qty <= qty` and `leaves = qty - cum_qty` while it is open, `0` once final; report
//! `seq` increases by one per report and `exec_id = <engine_order_id>-<seq>`, so an exec id is
//! stable across restarts and unique per execution event. Every open order rests in exactly
//! one book. A resting order past its expiry (deadline, DAY session end: `venue/expiry.rs`)
//! never trades: any execution in its book first expires every due order there
//! ([`Venue::execute`]); the engine's timer expires the rest on time.
//!
//! A replace ([`Venue::replace`], `venue/replace.rs`) amends an open order in place: its
//! reports carry the replace's id, its book keeps or loses its time priority as the book's
//! invariant 10 says, and a crossing new price trades within the same fact.
//!
//! The books hold only orders: the seeded liquidity is orders too (of the reserved account
//! `_house`, see `house.rs`), so consuming it is recorded and reported like any fill.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::book::{BookError, Fill, Incoming, OrderBook, Side, TimeInForce};
use crate::fixed;
use crate::limits::SymbolLimits;
use crate::proto::v1::{self as pb, FieldError, OrderStatus, RejectReason};
use crate::validate::ValidOrder;

pub use crate::order::{is_final, transition, Event, InvalidTransition, LiveOrder, Touched};
pub use expiry::{expiry_of, Expiry, SessionEnd};
pub use mass_cancel::MassCancelFilter;

mod expiry;
mod mass_cancel;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VenueError {
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    #[error(transparent)]
    Book(#[from] BookError),
    #[error("symbol {0:?} has no book")]
    NoBook(String),
}

/// What one execution did: orders expired in the book before it matched (each an independent
/// event), then the order itself followed by every resting order it traded with (one fact:
/// these reports are published atomically).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Executed {
    pub expired: Vec<Touched>,
    pub touched: Vec<Touched>,
}

impl Executed {
    /// Every touched order, the expired ones first.
    pub fn into_all(self) -> impl Iterator<Item = Touched> {
        self.expired.into_iter().chain(self.touched)
    }

    /// Every touched order's latest state, the expired ones first (what a commit writes).
    pub fn orders(&self) -> impl Iterator<Item = &LiveOrder> {
        self.expired.iter().chain(&self.touched).map(|t| &t.order)
    }
}

/// Why an open order cannot be put back into a book after a restart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrestorable {
    #[error("symbol {0:?} is no longer configured")]
    NoBook(String),
    #[error("a {0} order cannot rest in a book")]
    NotResting(&'static str),
    #[error("no quantity left to rest")]
    NothingLeft,
}

/// The side and price at which `order` rests, if it is a resting kind (a Day or GTC limit).
pub fn resting_terms(order: &pb::NewOrder) -> Result<(Side, i64), Unrestorable> {
    let tif = pb::TimeInForce::try_from(order.time_in_force).unwrap_or_default();
    if !matches!(tif, pb::TimeInForce::Gtc | pb::TimeInForce::Day) {
        return Err(Unrestorable::NotResting("non-Day/GTC"));
    }
    let price = order
        .limit_price
        .as_ref()
        .and_then(|d| fixed::from_decimal(d).ok())
        .ok_or(Unrestorable::NotResting("market"))?;
    let side = match pb::Side::try_from(order.side) {
        Ok(pb::Side::Buy) => Side::Buy,
        Ok(pb::Side::Sell) => Side::Sell,
        _ => return Err(Unrestorable::NotResting("side-less")),
    };
    Ok((side, price))
}

/// All books and the open orders resting in them.
#[derive(Debug, Default)]
pub struct Venue {
    books: HashMap<String, OrderBook>,
    /// Open orders by book id: exactly the orders resting in the books.
    open: HashMap<u64, LiveOrder>,
    by_key: HashMap<String, u64>,
    /// Resting orders that expire, by (expiry instant, book id) (`venue/expiry.rs`)...
    expiries: BTreeSet<(i64, u64)>,
    /// ...and each one's expiry, by book id.
    expiry_at: HashMap<u64, Expiry>,
    /// When DAY orders expire (`None`: they rest like GTC).
    day_session_end: Option<SessionEnd>,
    next_id: u64,
}

impl Venue {
    /// An empty book for every configured symbol (liquidity is placed as orders).
    pub fn new(symbols: &BTreeMap<String, SymbolLimits>) -> Self {
        let mut v = Venue::default();
        for name in symbols.keys() {
            v.books.insert(name.clone(), OrderBook::new());
        }
        v
    }

    /// Every resting order, in time priority per level (see [`OrderBook::snapshot`]).
    pub fn resting(&self) -> impl Iterator<Item = &LiveOrder> + '_ {
        let mut symbols: Vec<_> = self.books.keys().collect();
        symbols.sort();
        symbols.into_iter().flat_map(move |s| {
            self.books[s]
                .snapshot()
                .into_iter()
                .filter_map(move |r| self.open.get(&r.id))
        })
    }

    /// Puts an open order (NEW or PARTIALLY_FILLED, as stored) back into its book WITHOUT
    /// matching, at the back of its level: restoring orders in their arrival sequence rebuilds
    /// each book with its original time priority. Nothing trades and nothing is reported.
    pub fn restore(&mut self, order: LiveOrder) -> Result<(), Unrestorable> {
        let symbol = order.order().symbol.clone();
        let (side, price) = resting_terms(order.order())?;
        let leaves = order.leaves();
        if leaves <= 0 {
            return Err(Unrestorable::NothingLeft);
        }
        let book = self
            .books
            .get_mut(&symbol)
            .ok_or(Unrestorable::NoBook(symbol))?;
        self.next_id += 1;
        let id = self.next_id;
        book.rest(id, side, price, leaves)
            .map_err(|_| Unrestorable::NothingLeft)?;
        self.track(id, order);
        Ok(())
    }

    fn track(&mut self, id: u64, order: LiveOrder) {
        if let Some(e) = self.expiry(&order) {
            self.expiries.insert((e.at, id));
            self.expiry_at.insert(id, e);
        }
        self.by_key.insert(order.key.clone(), id);
        self.open.insert(id, order);
    }

    fn untrack(&mut self, id: u64) -> Option<LiveOrder> {
        let order = self.open.remove(&id)?;
        self.by_key.remove(&order.key);
        if let Some(e) = self.expiry_at.remove(&id) {
            self.expiries.remove(&(e.at, id));
        }
        Some(order)
    }

    /// Finishes an open order that recovery does not put back into a book: CANCELED (or
    /// REJECTED if it never got past PENDING_NEW), so that no order is ever neither in a book
    /// nor final.
    /// `reason` and `text` say why (e.g. RECOVERY_INVALID and what made it unrestorable).
    pub fn abandon(
        mut order: LiveOrder,
        reason: RejectReason,
        text: &str,
        now: i64,
    ) -> Result<Touched, VenueError> {
        let event = if order.status() == OrderStatus::PendingNew {
            Event::Reject
        } else {
            Event::Cancel
        };
        let mut reports = Vec::new();
        order.apply(event, None, Some((reason, &[], text)), now, &mut reports)?;
        Ok(Touched { order, reports })
    }

    pub fn book(&self, symbol: &str) -> Option<&OrderBook> {
        self.books.get(symbol)
    }

    /// The open order stored under KV key `key`, if it rests here.
    pub fn open_order(&self, key: &str) -> Option<&LiveOrder> {
        self.by_key.get(key).and_then(|id| self.open.get(id))
    }

    /// Number of open client orders resting in the books.
    pub fn open_orders(&self) -> usize {
        self.open.len()
    }

    /// Rejects (or expires, for a missed deadline) an order that never reached a book.
    pub fn reject(
        mut order: LiveOrder,
        reason: RejectReason,
        errors: &[FieldError],
        text: &str,
        now: i64,
    ) -> Result<Touched, VenueError> {
        let event = if reason == RejectReason::DeadlineExceeded {
            Event::Expire
        } else {
            Event::Reject
        };
        let mut reports = Vec::new();
        order.apply(event, None, Some((reason, errors, text)), now, &mut reports)?;
        Ok(Touched { order, reports })
    }

    /// Executes an accepted order (PENDING_NEW) against its book, after expiring the orders
    /// of that book past their expiry. See [`Executed`].
    pub fn execute(
        &mut self,
        mut order: LiveOrder,
        v: &ValidOrder,
        now: i64,
    ) -> Result<Executed, VenueError> {
        let symbol = order.order().symbol.clone();
        if !self.books.contains_key(&symbol) {
            return Err(VenueError::NoBook(symbol));
        }
        let expired = self.expire_due(Some(&symbol), now)?;
        let Some(book) = self.books.get_mut(&symbol) else {
            return Err(VenueError::NoBook(symbol));
        };
        let mut reports = Vec::new();
        if order.status() == OrderStatus::PendingNew {
            order.apply(Event::Accept, None, None, now, &mut reports)?;
        }
        let leaves = order.leaves();
        if leaves <= 0 {
            return Ok(Executed {
                expired,
                touched: vec![Touched { order, reports }],
            });
        }
        self.next_id += 1;
        let id = self.next_id;
        let outcome = book.submit(Incoming {
            id,
            side: v.side,
            limit: v.limit,
            qty: leaves,
            tif: v.tif,
        })?;

        let makers = self.trade(&mut order, &outcome.fills, now, &mut reports)?;
        if outcome.canceled > 0 {
            let text = match (v.limit, v.tif) {
                (None, _) => "market order remainder canceled: no more liquidity",
                (_, TimeInForce::Fok) => "fill-or-kill could not be filled completely",
                _ => "immediate-or-cancel remainder canceled",
            };
            order.apply(
                Event::Cancel,
                None,
                Some((RejectReason::Unspecified, &[], text)),
                now,
                &mut reports,
            )?;
        }
        if outcome.rested > 0 {
            self.track(id, order.clone());
        }
        let mut touched = vec![Touched { order, reports }];
        touched.extend(makers);
        Ok(Executed { expired, touched })
    }

    /// Applies the book's `fills` to `order` (their taker; its reports appended to `reports`)
    /// and to each maker; returns the makers touched, each once, in the order of their first
    /// fill. A maker filled completely leaves the venue.
    fn trade(
        &mut self,
        order: &mut LiveOrder,
        fills: &[Fill],
        now: i64,
        reports: &mut Vec<pb::ExecutionReport>,
    ) -> Result<Vec<Touched>, VenueError> {
        let mut makers: Vec<Touched> = Vec::new();
        for fill in fills {
            let event = if order.cum_qty + fill.qty == order.qty {
                Event::Fill
            } else {
                Event::PartialFill
            };
            order.apply(event, Some((fill.qty, fill.price)), None, now, reports)?;
            if let Some(maker) = self.open.get_mut(&fill.maker_id) {
                let event = if fill.maker_leaves == 0 {
                    Event::Fill
                } else {
                    Event::PartialFill
                };
                let mut maker_reports = Vec::new();
                maker.apply(
                    event,
                    Some((fill.qty, fill.price)),
                    None,
                    now,
                    &mut maker_reports,
                )?;
                match makers.iter_mut().find(|t| t.order.key == maker.key) {
                    Some(t) => {
                        t.order = maker.clone();
                        t.reports.extend(maker_reports);
                    }
                    None => makers.push(Touched {
                        order: maker.clone(),
                        reports: maker_reports,
                    }),
                }
                if fill.maker_leaves == 0 {
                    self.untrack(fill.maker_id);
                }
            }
        }
        Ok(makers)
    }

    /// Cancels the open order stored under `key`; None if it does not rest here.
    pub fn cancel(&mut self, key: &str, now: i64) -> Result<Option<Touched>, VenueError> {
        let Some(&id) = self.by_key.get(key) else {
            return Ok(None);
        };
        let Some(mut order) = self.untrack(id) else {
            return Ok(None);
        };
        if let Some(book) = self.books.get_mut(&order.order().symbol) {
            book.cancel(id);
        }
        let mut reports = Vec::new();
        order.apply(
            Event::Cancel,
            None,
            Some((RejectReason::Unspecified, &[], "canceled on request")),
            now,
            &mut reports,
        )?;
        Ok(Some(Touched { order, reports }))
    }
}

mod replace;
mod sessions;

pub use replace::Amendment;

#[cfg(test)]
mod tests;
