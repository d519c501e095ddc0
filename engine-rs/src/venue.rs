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
//! one book. A resting order whose deadline has passed never trades: any execution in its
//! book first expires every due order there ([`Venue::execute`]).
//!
//! The books hold only orders: the seeded liquidity is orders too (of the reserved account
//! `_house`, see `house.rs`), so consuming it is recorded and reported like any fill.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::book::{BookError, Incoming, OrderBook, Side, TimeInForce};
use crate::config::SymbolLimits;
use crate::fixed;
use crate::proto::state::OrderRecord;
use crate::proto::v1::{self as pb, ExecType, FieldError, OrderStatus, RejectReason};
use crate::validate::ValidOrder;

/// What happens to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Accept,
    Reject,
    Expire,
    /// A fill that leaves quantity open.
    PartialFill,
    /// A fill that completes the order.
    Fill,
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid order transition: {event:?} in state {from:?}")]
pub struct InvalidTransition {
    pub from: OrderStatus,
    pub event: Event,
}

/// The order state machine: the only place a status changes.
pub fn transition(
    from: OrderStatus,
    event: Event,
) -> Result<(OrderStatus, ExecType), InvalidTransition> {
    use Event as E;
    use OrderStatus as S;
    let to = match (from, event) {
        (S::PendingNew, E::Accept) => (S::New, ExecType::New),
        (S::PendingNew, E::Reject) => (S::Rejected, ExecType::Rejected),
        (S::PendingNew, E::Expire) => (S::Expired, ExecType::Expired),
        (S::New | S::PartiallyFilled, E::PartialFill) => (S::PartiallyFilled, ExecType::Trade),
        (S::New | S::PartiallyFilled, E::Fill) => (S::Filled, ExecType::Trade),
        (S::New | S::PartiallyFilled, E::Cancel) => (S::Canceled, ExecType::Canceled),
        (S::New | S::PartiallyFilled, E::Expire) => (S::Expired, ExecType::Expired),
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

/// True once no further execution can happen.
pub fn is_final(s: OrderStatus) -> bool {
    matches!(
        s,
        OrderStatus::Filled | OrderStatus::Canceled | OrderStatus::Rejected | OrderStatus::Expired
    )
}

/// A client order as the engine tracks it; `record` is what is persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveOrder {
    pub key: String,
    pub record: OrderRecord,
    pub qty: i64,
    pub cum_qty: i64,
    pub cum_notional: i128,
    pub report_seq: u32,
    /// KV revision of the persisted record (for compare-and-set updates).
    pub revision: u64,
}

impl LiveOrder {
    /// A fresh order in PENDING_NEW, owned by `engine_id`, with arrival sequence `seq`.
    pub fn new(
        key: String,
        order: pb::NewOrder,
        engine_id: &str,
        seq: u64,
        correlation_id: &str,
    ) -> Self {
        let qty = order
            .quantity
            .as_ref()
            .and_then(|d| fixed::from_decimal(d).ok())
            .unwrap_or(0);
        LiveOrder {
            key,
            record: OrderRecord {
                order: Some(order),
                engine_order_id: format!("{engine_id}-{seq}"),
                engine_id: engine_id.into(),
                seq,
                status: OrderStatus::PendingNew as i32,
                ack: None,
                last_report: None,
                cum_notional_e16: "0".into(),
                correlation_id: correlation_id.into(),
                tombstone: false,
            },
            qty,
            cum_qty: 0,
            cum_notional: 0,
            report_seq: 0,
            revision: 0,
        }
    }

    /// Rebuilds the in-memory view of a persisted record.
    pub fn from_record(key: String, record: OrderRecord, revision: u64) -> Self {
        let order = record.order.clone().unwrap_or_default();
        let qty = order
            .quantity
            .as_ref()
            .and_then(|d| fixed::from_decimal(d).ok())
            .unwrap_or(0);
        let (cum_qty, report_seq) = record
            .last_report
            .as_ref()
            .map(|r| {
                (
                    r.cum_qty
                        .as_ref()
                        .and_then(|d| fixed::from_decimal(d).ok())
                        .unwrap_or(0),
                    r.seq,
                )
            })
            .unwrap_or((0, 0));
        let cum_notional = record.cum_notional_e16.parse().unwrap_or(0);
        LiveOrder {
            key,
            record,
            qty,
            cum_qty,
            cum_notional,
            report_seq,
            revision,
        }
    }

    pub fn status(&self) -> OrderStatus {
        OrderStatus::try_from(self.record.status).unwrap_or(OrderStatus::Unspecified)
    }

    pub fn order(&self) -> &pb::NewOrder {
        static EMPTY: std::sync::OnceLock<pb::NewOrder> = std::sync::OnceLock::new();
        self.record
            .order
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(pb::NewOrder::default))
    }

    pub fn leaves(&self) -> i64 {
        if is_final(self.status()) {
            0
        } else {
            self.qty - self.cum_qty
        }
    }

    /// Adopts a report published by an earlier run whose record update was lost in a crash.
    pub fn adopt(&mut self, report: pb::ExecutionReport, cum_notional: i128) {
        self.cum_qty = report
            .cum_qty
            .as_ref()
            .and_then(|d| fixed::from_decimal(d).ok())
            .unwrap_or(0);
        self.report_seq = report.seq;
        self.cum_notional = cum_notional;
        self.record.status = report.order_status;
        self.record.cum_notional_e16 = cum_notional.to_string();
        self.record.last_report = Some(report);
    }

    /// Applies `event` and appends the resulting execution report to `out`.
    fn apply(
        &mut self,
        event: Event,
        fill: Option<(i64, i64)>,
        reject: Option<(RejectReason, &[FieldError], &str)>,
        now: i64,
        out: &mut Vec<pb::ExecutionReport>,
    ) -> Result<(), InvalidTransition> {
        let (status, exec_type) = transition(self.status(), event)?;
        let (last_qty, last_px) = fill.unwrap_or((0, 0));
        if fill.is_some() {
            self.cum_qty += last_qty;
            self.cum_notional += fixed::notional_e16(last_px, last_qty);
        }
        self.record.status = status as i32;
        self.record.cum_notional_e16 = self.cum_notional.to_string();
        self.report_seq += 1;
        let o = self.order();
        let (reason, errors, text) = reject.unwrap_or((RejectReason::Unspecified, &[], ""));
        let report = pb::ExecutionReport {
            exec_id: format!("{}-{}", self.record.engine_order_id, self.report_seq),
            engine_order_id: self.record.engine_order_id.clone(),
            client_order_id: o.client_order_id.clone(),
            account: o.account.clone(),
            symbol: o.symbol.clone(),
            side: o.side,
            exec_type: exec_type as i32,
            order_status: status as i32,
            order_qty: Some(fixed::to_decimal(self.qty)),
            last_qty: Some(fixed::to_decimal(last_qty)),
            last_px: Some(fixed::to_decimal(last_px)),
            cum_qty: Some(fixed::to_decimal(self.cum_qty)),
            leaves_qty: Some(fixed::to_decimal(self.leaves())),
            avg_px: Some(fixed::to_decimal(fixed::avg_price(
                self.cum_notional,
                self.cum_qty,
            ))),
            transact_time_unix_ns: now,
            reason: reason as i32,
            field_errors: errors.to_vec(),
            text: text.into(),
            seq: self.report_seq,
            engine_id: self.record.engine_id.clone(),
            tags: o.tags.clone(),
        };
        self.record.last_report = Some(report.clone());
        out.push(report);
        Ok(())
    }
}

/// An order changed by an operation, with the reports that describe the change (in order).
#[derive(Debug, Clone, PartialEq)]
pub struct Touched {
    pub order: LiveOrder,
    pub reports: Vec<pb::ExecutionReport>,
}

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
    /// Resting orders with a deadline, by (deadline, book id).
    deadlines: BTreeSet<(i64, u64)>,
    next_id: u64,
}

/// An order's deadline (Unix ns), if it has one.
fn deadline(order: &LiveOrder) -> Option<i64> {
    Some(order.order().deadline_unix_ns).filter(|d| *d > 0)
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

    /// Puts an open order (NEW or PARTIALLY_FILLED, as journaled) back into its book WITHOUT
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
        if let Some(d) = deadline(&order) {
            self.deadlines.insert((d, id));
        }
        self.by_key.insert(order.key.clone(), id);
        self.open.insert(id, order);
    }

    fn untrack(&mut self, id: u64) -> Option<LiveOrder> {
        let order = self.open.remove(&id)?;
        self.by_key.remove(&order.key);
        if let Some(d) = deadline(&order) {
            self.deadlines.remove(&(d, id));
        }
        Some(order)
    }

    /// Expires every resting order whose deadline is at or before `now` (in `symbol`'s book
    /// only, or in all books): out of its book, EXPIRED report.
    pub fn expire_due(
        &mut self,
        symbol: Option<&str>,
        now: i64,
    ) -> Result<Vec<Touched>, VenueError> {
        let due: Vec<u64> = self
            .deadlines
            .range(..=(now, u64::MAX))
            .map(|&(_, id)| id)
            .filter(|id| {
                symbol.is_none_or(|s| self.open.get(id).is_some_and(|o| o.order().symbol == s))
            })
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            let Some(mut order) = self.untrack(id) else {
                continue;
            };
            if let Some(book) = self.books.get_mut(&order.order().symbol) {
                book.cancel(id);
            }
            let mut reports = Vec::new();
            order.apply(
                Event::Expire,
                None,
                Some((
                    RejectReason::DeadlineExceeded,
                    &[],
                    "deadline passed while resting",
                )),
                now,
                &mut reports,
            )?;
            out.push(Touched { order, reports });
        }
        Ok(out)
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

    /// Records the KV revision written for a resting order.
    pub fn set_revision(&mut self, key: &str, revision: u64) {
        if let Some(o) = self.by_key.get(key).and_then(|id| self.open.get_mut(id)) {
            o.revision = revision;
        }
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
    /// of that book whose deadline has passed. See [`Executed`].
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

        let mut makers: Vec<Touched> = Vec::new();
        for fill in &outcome.fills {
            let event = if order.cum_qty + fill.qty == order.qty {
                Event::Fill
            } else {
                Event::PartialFill
            };
            order.apply(event, Some((fill.qty, fill.price)), None, now, &mut reports)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Side;
    use crate::fixed::units;

    fn symbols() -> BTreeMap<String, SymbolLimits> {
        let mut m = BTreeMap::new();
        m.insert(
            "AAPL".into(),
            SymbolLimits {
                max_order_qty: units(1_000_000),
                reference_price: units(100),
                seed: vec![
                    (Side::Sell, units(101), units(10), 1),
                    (Side::Sell, units(102), units(10), 1),
                ],
            },
        );
        m
    }

    /// A venue with the house's seed of [`symbols`] placed (ids 1 and 2 of engine e1).
    fn seeded() -> Venue {
        let limits = symbols();
        let mut venue = Venue::new(&limits);
        let seeds = crate::house::seed_orders(&limits, "e1", "g").unwrap();
        let placed = crate::house::place(&mut venue, seeds, "e1", 1000, 0).unwrap();
        assert_eq!(placed.len(), 2);
        venue
    }

    fn live(id: &str, qty: i64, seq: u64) -> LiveOrder {
        let order = pb::NewOrder {
            client_order_id: id.into(),
            account: "ACC".into(),
            symbol: "AAPL".into(),
            side: pb::Side::Buy as i32,
            quantity: Some(fixed::to_decimal(qty)),
            ..Default::default()
        };
        LiveOrder::new(format!("ACC.{id}"), order, "e1", seq, "cid")
    }

    fn valid(side: Side, limit: Option<i64>, qty: i64, tif: TimeInForce) -> ValidOrder {
        ValidOrder {
            side,
            limit,
            qty,
            tif,
        }
    }

    fn kinds(t: &Touched) -> Vec<(ExecType, OrderStatus)> {
        t.reports
            .iter()
            .map(|r| {
                (
                    ExecType::try_from(r.exec_type).unwrap(),
                    OrderStatus::try_from(r.order_status).unwrap(),
                )
            })
            .collect()
    }

    /// The transition table accepts the FIX life cycle and refuses everything else.
    #[test]
    fn transition_table() {
        use OrderStatus as S;
        assert_eq!(
            transition(S::PendingNew, Event::Accept),
            Ok((S::New, ExecType::New))
        );
        assert_eq!(
            transition(S::New, Event::Fill),
            Ok((S::Filled, ExecType::Trade))
        );
        assert_eq!(
            transition(S::PartiallyFilled, Event::Cancel),
            Ok((S::Canceled, ExecType::Canceled))
        );
        for final_state in [S::Filled, S::Canceled, S::Rejected, S::Expired] {
            for ev in [
                Event::Accept,
                Event::Fill,
                Event::PartialFill,
                Event::Cancel,
                Event::Reject,
            ] {
                assert!(
                    transition(final_state, ev).is_err(),
                    "{final_state:?} {ev:?}"
                );
            }
        }
        assert!(transition(S::PendingNew, Event::Fill).is_err());
        assert!(transition(S::New, Event::Accept).is_err());
    }

    /// A market order sweeps two levels: NEW, two TRADEs, then the unfilled remainder CANCELED.
    #[test]
    fn market_order_partial_fill_then_cancel() {
        let mut venue = seeded();
        let t = venue
            .execute(
                live("m1", units(25), 1),
                &valid(Side::Buy, None, units(25), TimeInForce::Ioc),
                7,
            )
            .unwrap()
            .touched;
        assert_eq!(
            t.len(),
            3,
            "the two house orders it traded with are reported too"
        );
        assert_eq!(
            kinds(&t[0]),
            vec![
                (ExecType::New, OrderStatus::New),
                (ExecType::Trade, OrderStatus::PartiallyFilled),
                (ExecType::Trade, OrderStatus::PartiallyFilled),
                (ExecType::Canceled, OrderStatus::Canceled),
            ]
        );
        let last = t[0].reports.last().unwrap();
        assert_eq!(last.cum_qty, Some(fixed::to_decimal(units(20))));
        assert_eq!(last.leaves_qty, Some(fixed::to_decimal(0)));
        assert_eq!(last.avg_px, Some(fixed::to_decimal(units(1015) / 10)));
        let ids: Vec<_> = t[0].reports.iter().map(|r| r.exec_id.clone()).collect();
        assert_eq!(ids, vec!["e1-1-1", "e1-1-2", "e1-1-3", "e1-1-4"]);
        assert_eq!(venue.open_orders(), 0);
    }

    /// A resting limit order is hit later: both sides get TRADE reports, the maker is filled.
    #[test]
    fn resting_order_is_hit_and_reported() {
        let mut venue = Venue::new(&BTreeMap::from([(
            "AAPL".to_string(),
            SymbolLimits {
                max_order_qty: units(100),
                reference_price: units(1),
                seed: vec![],
            },
        )]));
        let bid = venue
            .execute(
                live("b1", units(5), 1),
                &valid(Side::Buy, Some(units(100)), units(5), TimeInForce::Gtc),
                1,
            )
            .unwrap()
            .touched;
        assert_eq!(kinds(&bid[0]), vec![(ExecType::New, OrderStatus::New)]);
        assert!(venue.open_order("ACC.b1").is_some());
        let mut seller = live("s1", units(8), 2);
        seller.record.order.as_mut().unwrap().side = pb::Side::Sell as i32;
        let t = venue
            .execute(
                seller,
                &valid(Side::Sell, Some(units(99)), units(8), TimeInForce::Day),
                2,
            )
            .unwrap()
            .touched;
        assert_eq!(t.len(), 2);
        assert_eq!(
            kinds(&t[0]),
            vec![
                (ExecType::New, OrderStatus::New),
                (ExecType::Trade, OrderStatus::PartiallyFilled)
            ]
        );
        assert_eq!(kinds(&t[1]), vec![(ExecType::Trade, OrderStatus::Filled)]);
        assert_eq!(
            t[1].reports[0].last_px,
            Some(fixed::to_decimal(units(100))),
            "maker's price"
        );
        assert!(venue.open_order("ACC.b1").is_none());
        assert!(
            venue.open_order("ACC.s1").is_some(),
            "seller remainder rests"
        );
        let c = venue.cancel("ACC.s1", 3).unwrap().unwrap();
        assert_eq!(kinds(&c), vec![(ExecType::Canceled, OrderStatus::Canceled)]);
        assert_eq!(c.reports[0].cum_qty, Some(fixed::to_decimal(units(5))));
        assert!(venue.cancel("ACC.s1", 4).unwrap().is_none());
    }

    /// FOK that cannot fill is canceled without any trade.
    #[test]
    fn fok_kill() {
        let mut venue = seeded();
        let t = venue
            .execute(
                live("f1", units(30), 1),
                &valid(Side::Buy, Some(units(105)), units(30), TimeInForce::Fok),
                1,
            )
            .unwrap()
            .touched;
        assert_eq!(
            kinds(&t[0]),
            vec![
                (ExecType::New, OrderStatus::New),
                (ExecType::Canceled, OrderStatus::Canceled)
            ]
        );
        assert_eq!(
            venue.book("AAPL").unwrap().best_ask(),
            Some((units(101), units(10)))
        );
    }

    /// Rejection and deadline expiry are reports from PENDING_NEW, with the reason attached.
    #[test]
    fn reject_and_expire() {
        let errs = [FieldError {
            field: "quantity".into(),
            rule: "positive".into(),
            message: "m".into(),
        }];
        let t = Venue::reject(
            live("r1", 0, 1),
            RejectReason::InvalidField,
            &errs,
            "bad",
            1,
        )
        .unwrap();
        assert_eq!(kinds(&t), vec![(ExecType::Rejected, OrderStatus::Rejected)]);
        assert_eq!(t.reports[0].field_errors.len(), 1);
        let t = Venue::reject(
            live("x1", units(1), 2),
            RejectReason::DeadlineExceeded,
            &[],
            "late",
            1,
        )
        .unwrap();
        assert_eq!(kinds(&t), vec![(ExecType::Expired, OrderStatus::Expired)]);
    }

    /// A recovered record resumes with its report sequence and cumulative quantity.
    #[test]
    fn from_record_round_trip() {
        let mut venue = seeded();
        let t = venue
            .execute(
                live("p1", units(5), 1),
                &valid(Side::Buy, Some(units(101)), units(5), TimeInForce::Gtc),
                1,
            )
            .unwrap()
            .touched;
        let o = &t[0].order;
        let back = LiveOrder::from_record(o.key.clone(), o.record.clone(), 9);
        assert_eq!(
            (back.cum_qty, back.report_seq, back.cum_notional, back.qty),
            (o.cum_qty, o.report_seq, o.cum_notional, o.qty)
        );
        assert_eq!(back.status(), OrderStatus::Filled);
    }
}
