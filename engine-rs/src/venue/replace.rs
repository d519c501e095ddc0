//! Applying a replace (FIX OrderCancelReplaceRequest) to an open order: [`Venue::replace`].
//!
//! One replace is one fact: the order's PENDING_REPLACE and REPLACED reports, then every fill a
//! crossing new price causes (the order's TRADE reports and its makers'), published as one
//! journal entry. A quantity decrease at the same price keeps the order's place in its level;
//! anything else takes it to the back of its new level (book invariant 10) and gives it a new
//! arrival sequence, so that recovery, which restores orders in sequence order, rebuilds the
//! same priority. The order's stored terms (its `NewOrder`'s quantity and limit price) are
//! amended and its record's `current_client_order_id` is the replace's id; its key in the
//! order store, its engine order id and its deadline do not change.

use super::{Executed, Touched, Venue, VenueError};
use crate::fixed;
use crate::order::{transition, Event};
use crate::proto::v1::RejectReason;

/// A replace's terms, validated, in engine units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amendment {
    /// The replace's own client order id: the order's id from now on.
    pub client_order_id: String,
    /// The new total quantity, fills included; at or below cum_qty it ends the order.
    pub qty: i64,
    /// The new limit price.
    pub price: i64,
    /// The order's arrival sequence from now on if it loses its time priority.
    pub seq: u64,
}

impl Venue {
    /// Applies `amendment` to the open order stored under `key`, after expiring the due
    /// orders of its book (each its own fact, in `expired`). `touched` is the replaced order
    /// (its reports: PENDING_REPLACE, REPLACED, then any TRADE, or a CANCELED remainder past
    /// the book's fill limit) followed by every maker it traded with; empty when the order
    /// does not rest here (any more: it may have just expired).
    pub fn replace(
        &mut self,
        key: &str,
        amendment: &Amendment,
        now: i64,
    ) -> Result<Executed, VenueError> {
        let Some(symbol) = self.open_order(key).map(|o| o.order().symbol.clone()) else {
            return Ok(Executed::default());
        };
        if !self.books.contains_key(&symbol) {
            return Err(VenueError::NoBook(symbol));
        }
        let expired = self.expire_due(Some(&symbol), now)?;
        let Some((id, status)) = self
            .by_key
            .get(key)
            .and_then(|&id| self.open.get(&id).map(|o| (id, o.status())))
        else {
            return Ok(Executed {
                expired,
                touched: Vec::new(),
            });
        };
        // Refused before anything changes (an open order is NEW or PARTIALLY_FILLED).
        transition(status, Event::ReplaceRequested)?;
        let Some(mut order) = self.untrack(id) else {
            return Err(VenueError::NoBook(symbol));
        };
        let Some(book) = self.books.get_mut(&symbol) else {
            return Err(VenueError::NoBook(symbol));
        };
        let price = fixed::to_decimal(amendment.price);
        let mut reports = Vec::new();
        let id_ = amendment.client_order_id.as_str();
        if amendment.qty <= order.cum_qty {
            // Reduced to what is filled: the order ends (FILLED), out of its book.
            book.cancel(id);
            order.replace(id_, amendment.qty, price, now, &mut reports)?;
            return Ok(Executed {
                expired,
                touched: vec![Touched { order, reports }],
            });
        }
        let amended = match book.amend(id, amendment.price, amendment.qty - order.cum_qty) {
            Ok(a) => a,
            Err(e) => {
                self.track(id, order);
                return Err(e.into());
            }
        };
        order.replace(id_, amendment.qty, price, now, &mut reports)?;
        if !amended.kept_priority {
            order.record.seq = amendment.seq;
        }
        let makers = self.trade(&mut order, &amended.outcome.fills, now, &mut reports)?;
        if amended.outcome.canceled > 0 {
            order.apply(
                Event::Cancel,
                None,
                Some((
                    RejectReason::Unspecified,
                    &[],
                    "replace remainder canceled: more fills than one execution may make",
                )),
                now,
                &mut reports,
            )?;
        }
        if amended.outcome.rested > 0 {
            self.track(id, order.clone());
        }
        let mut touched = vec![Touched { order, reports }];
        touched.extend(makers);
        Ok(Executed { expired, touched })
    }
}

#[cfg(test)]
mod tests;
