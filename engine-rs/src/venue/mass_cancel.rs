//! Mass cancel in the venue (pure): every open order of one account resting in this venue's
//! books, optionally only one symbol's and/or one side's, out of its book and CANCELED with
//! reason MASS_CANCELED (FIX OrderMassCancelRequest, 35=q).
//!
//! Each canceled order is its own fact (one report): the caller commits them as one group
//! (journaled in as many entries as their size needs, then published). Orders are canceled in arrival order (book id),
//! so their reports are too. A second mass cancel with the same filter finds nothing left: the
//! canceled orders are final and out of every book (idempotent by construction).

use super::{Event, Touched, Venue, VenueError};
use crate::proto::v1::{self as pb, RejectReason};

/// Which open orders a mass cancel takes: one account's, optionally only one symbol's and/or
/// one side's (`None`: every symbol / both sides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MassCancelFilter {
    pub account: String,
    pub symbol: Option<String>,
    pub side: Option<pb::Side>,
}

impl MassCancelFilter {
    /// Does `order` fall under this filter?
    pub fn matches(&self, order: &pb::NewOrder) -> bool {
        order.account == self.account
            && self.symbol.as_ref().is_none_or(|s| order.symbol == *s)
            && self.side.is_none_or(|s| order.side == s as i32)
    }
}

impl Venue {
    /// Cancels every open order matching `filter`: out of its book, a CANCELED report with
    /// reason MASS_CANCELED and `text`. The canceled orders in arrival order; none when nothing
    /// matches (a re-sent request).
    pub fn mass_cancel(
        &mut self,
        filter: &MassCancelFilter,
        text: &str,
        now: i64,
    ) -> Result<Vec<Touched>, VenueError> {
        let mut ids: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| filter.matches(o.order()))
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(mut order) = self.untrack(id) else {
                continue;
            };
            if let Some(book) = self.books.get_mut(&order.order().symbol) {
                book.cancel(id);
            }
            let mut reports = Vec::new();
            order.apply(
                Event::Cancel,
                None,
                Some((RejectReason::MassCanceled, &[], text)),
                now,
                &mut reports,
            )?;
            out.push(Touched { order, reports });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::book::{Side, TimeInForce};
    use crate::fixed::{self, units};
    use crate::limits::SymbolLimits;
    use crate::proto::v1::{ExecType, OrderStatus};
    use crate::validate::ValidOrder;
    use crate::venue::LiveOrder;

    fn venue() -> Venue {
        let mut m = BTreeMap::new();
        for s in ["AAPL", "MSFT"] {
            m.insert(
                s.to_string(),
                SymbolLimits {
                    max_order_qty: units(1_000_000),
                    reference_price: units(100),
                    seed: vec![],
                },
            );
        }
        Venue::new(&m)
    }

    /// Rests a GTC limit order (far from the other side, so nothing trades).
    fn rest(v: &mut Venue, id: &str, account: &str, symbol: &str, side: pb::Side, seq: u64) {
        let (price, book_side) = match side {
            pb::Side::Buy => (units(90), Side::Buy),
            _ => (units(110), Side::Sell),
        };
        let order = pb::NewOrder {
            client_order_id: id.into(),
            account: account.into(),
            symbol: symbol.into(),
            side: side as i32,
            order_type: pb::OrderType::Limit as i32,
            quantity: Some(fixed::to_decimal(units(5))),
            limit_price: Some(fixed::to_decimal(price)),
            time_in_force: pb::TimeInForce::Gtc as i32,
            ..Default::default()
        };
        let live = LiveOrder::new(format!("{account}.{id}"), order, "e1", seq, "");
        let valid = ValidOrder {
            side: book_side,
            limit: Some(price),
            qty: units(5),
            tif: TimeInForce::Gtc,
        };
        let done = v.execute(live, &valid, 1).unwrap();
        assert_eq!(done.touched.len(), 1, "nothing trades");
    }

    fn filter(symbol: Option<&str>, side: Option<pb::Side>) -> MassCancelFilter {
        MassCancelFilter {
            account: "ACC".into(),
            symbol: symbol.map(str::to_string),
            side,
        }
    }

    fn canceled_ids(t: &[Touched]) -> Vec<&str> {
        t.iter()
            .map(|t| t.order.order().client_order_id.as_str())
            .collect()
    }

    fn populated() -> Venue {
        let mut v = venue();
        rest(&mut v, "a1", "ACC", "AAPL", pb::Side::Buy, 1);
        rest(&mut v, "a2", "ACC", "AAPL", pb::Side::Sell, 2);
        rest(&mut v, "m1", "ACC", "MSFT", pb::Side::Buy, 3);
        rest(&mut v, "o1", "OTHER", "AAPL", pb::Side::Buy, 4);
        v
    }

    /// Every open order of the account, in arrival order, each CANCELED / MASS_CANCELED with
    /// leaves 0; the other account's order keeps resting; a second run finds nothing.
    #[test]
    fn cancels_the_accounts_orders_once() {
        let mut v = populated();
        let done = v
            .mass_cancel(&filter(None, None), "mass cancel r1", 7)
            .unwrap();
        assert_eq!(canceled_ids(&done), ["a1", "a2", "m1"]);
        for t in &done {
            assert_eq!(t.reports.len(), 1);
            let r = &t.reports[0];
            assert_eq!(r.exec_type, ExecType::Canceled as i32);
            assert_eq!(r.order_status, OrderStatus::Canceled as i32);
            assert_eq!(r.reason, RejectReason::MassCanceled as i32);
            assert_eq!(r.text, "mass cancel r1");
            assert_eq!(r.leaves_qty, Some(fixed::to_decimal(0)));
            assert_eq!(r.transact_time_unix_ns, 7);
            assert!(v.open_order(&t.order.key).is_none());
        }
        assert_eq!(v.open_orders(), 1);
        assert!(v.open_order("OTHER.o1").is_some());
        assert_eq!(v.book("AAPL").unwrap().orders(Side::Buy), 1);
        assert_eq!(v.book("AAPL").unwrap().orders(Side::Sell), 0);
        assert!(v
            .mass_cancel(&filter(None, None), "again", 8)
            .unwrap()
            .is_empty());
    }

    /// A symbol and/or a side narrow it down; what they leave out keeps resting.
    #[test]
    fn symbol_and_side_filters() {
        let mut v = populated();
        let done = v
            .mass_cancel(&filter(Some("AAPL"), Some(pb::Side::Sell)), "", 1)
            .unwrap();
        assert_eq!(canceled_ids(&done), ["a2"]);
        let done = v
            .mass_cancel(&filter(None, Some(pb::Side::Buy)), "", 1)
            .unwrap();
        assert_eq!(canceled_ids(&done), ["a1", "m1"]);
        assert!(v.open_order("OTHER.o1").is_some());

        let mut v = populated();
        let done = v.mass_cancel(&filter(Some("MSFT"), None), "", 1).unwrap();
        assert_eq!(canceled_ids(&done), ["m1"]);
        assert!(v
            .mass_cancel(&filter(Some("IBM"), None), "", 1)
            .unwrap()
            .is_empty());
        assert_eq!(v.open_orders(), 3);
    }

    /// A partially filled order is canceled with its fills kept: cum stays, leaves goes to 0.
    #[test]
    fn partially_filled_order_keeps_its_fills() {
        let mut v = venue();
        rest(&mut v, "big", "ACC", "AAPL", pb::Side::Sell, 1);
        let taker = pb::NewOrder {
            client_order_id: "t".into(),
            account: "TAKER".into(),
            symbol: "AAPL".into(),
            side: pb::Side::Buy as i32,
            order_type: pb::OrderType::Market as i32,
            quantity: Some(fixed::to_decimal(units(2))),
            time_in_force: pb::TimeInForce::Ioc as i32,
            ..Default::default()
        };
        let live = LiveOrder::new("TAKER.t".into(), taker, "e1", 2, "");
        let valid = ValidOrder {
            side: Side::Buy,
            limit: None,
            qty: units(2),
            tif: TimeInForce::Ioc,
        };
        v.execute(live, &valid, 2).unwrap();
        let done = v.mass_cancel(&filter(None, None), "", 3).unwrap();
        let r = &done[0].reports[0];
        assert_eq!(r.cum_qty, Some(fixed::to_decimal(units(2))));
        assert_eq!(r.order_qty, Some(fixed::to_decimal(units(5))));
        assert_eq!(r.leaves_qty, Some(fixed::to_decimal(0)));
        assert_eq!(r.order_status, OrderStatus::Canceled as i32);
    }
}
