//! Cancel on disconnect in the venue: every resting order naming a session, canceled at once
//! (reason SESSION_LOST). Pure, like the rest of the venue.

use super::{Event, Touched, Venue, VenueError};
use crate::proto::v1::RejectReason;

impl Venue {
    /// Cancels every resting order of this venue whose `NewOrder.session_id` is `session_id`,
    /// with reason SESSION_LOST and `text`, in time priority per book (see [`Venue::resting`]).
    pub fn cancel_session(
        &mut self,
        session_id: &str,
        text: &str,
        now: i64,
    ) -> Result<Vec<Touched>, VenueError> {
        if session_id.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| o.order().session_id == session_id)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable(); // book ids grow with arrival: oldest first
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
                Some((RejectReason::SessionLost, &[], text)),
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

    use crate::book::{Side, TimeInForce};
    use crate::fixed;
    use crate::limits::SymbolLimits;
    use crate::proto::v1::{self as pb, ExecType, OrderStatus, RejectReason};
    use crate::validate::ValidOrder;
    use crate::venue::{LiveOrder, Venue};

    fn venue() -> Venue {
        let mut symbols = BTreeMap::new();
        for s in ["AAPL", "MSFT"] {
            symbols.insert(
                s.to_string(),
                SymbolLimits {
                    max_order_qty: fixed::units(1000),
                    reference_price: fixed::units(100),
                    seed: vec![],
                },
            );
        }
        Venue::new(&symbols)
    }

    fn rest(v: &mut Venue, id: &str, symbol: &str, session: &str, price: i64) {
        let order = pb::NewOrder {
            client_order_id: id.into(),
            account: "ACC".into(),
            symbol: symbol.into(),
            side: pb::Side::Buy as i32,
            order_type: pb::OrderType::Limit as i32,
            quantity: Some(fixed::to_decimal(fixed::units(10))),
            limit_price: Some(fixed::to_decimal(fixed::units(price))),
            time_in_force: pb::TimeInForce::Gtc as i32,
            session_id: session.into(),
            ..Default::default()
        };
        let live = LiveOrder::new(format!("ACC.{id}"), order, "engine-1", 1, "");
        let valid = ValidOrder {
            side: Side::Buy,
            limit: Some(fixed::units(price)),
            qty: fixed::units(10),
            tif: TimeInForce::Gtc,
        };
        v.execute(live, &valid, 1).expect("rests");
    }

    #[test]
    fn cancels_exactly_the_resting_orders_of_the_session() {
        let mut v = venue();
        rest(&mut v, "a1", "AAPL", "s1", 99);
        rest(&mut v, "b1", "AAPL", "s2", 98);
        rest(&mut v, "a2", "MSFT", "s1", 97);
        rest(&mut v, "n1", "MSFT", "", 96);
        let touched = v
            .cancel_session("s1", "session s1 lost", 5)
            .expect("cancels");
        let ids: Vec<_> = touched
            .iter()
            .map(|t| t.order.order().client_order_id.as_str())
            .collect();
        assert_eq!(ids, ["a1", "a2"]);
        for t in &touched {
            let r = t.reports.last().expect("a report");
            assert_eq!(r.exec_type, ExecType::Canceled as i32);
            assert_eq!(r.order_status, OrderStatus::Canceled as i32);
            assert_eq!(r.reason, RejectReason::SessionLost as i32);
            assert_eq!(r.text, "session s1 lost");
            assert_eq!(r.leaves_qty, Some(fixed::to_decimal(0)));
        }
        assert_eq!(v.open_orders(), 2);
        assert_eq!(v.book("AAPL").map(|b| b.orders(Side::Buy)), Some(1));
        assert_eq!(v.book("MSFT").map(|b| b.orders(Side::Buy)), Some(1));
        // Nothing left of it: a second cancel finds nothing; "" names no session.
        assert!(v.cancel_session("s1", "", 6).expect("ok").is_empty());
        assert!(v.cancel_session("", "", 6).expect("ok").is_empty());
    }
}
