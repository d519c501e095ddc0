//! Expiry of resting orders, on time (pure: no I/O, time passed in).
//!
//! A resting order (a DAY or GTC limit remainder) has an effective expiry instant
//! ([`Venue::expiry`], [`expiry_of`]):
//! - its `deadline_unix_ns` when it has one (FIX GTD): EXPIRED with DEADLINE_EXCEEDED;
//! - for a DAY order, the first session end ([`SessionEnd`], engine knob
//!   `day_session_end_utc`) strictly after the instant it was accepted (its ack time, stored in
//!   its record): EXPIRED with SESSION_END;
//! - the earlier of the two when both apply (the deadline on a tie).
//!
//! The instant depends only on the stored record and the configured session end, so an order
//! restored after a restart gets the same one, and what came due while the engine was down is
//! due at once. The venue keeps every resting order's instant ([`Venue::next_expiry`]: the
//! earliest, which the engine's timer sleeps until) and [`Venue::expire_due`] expires every
//! order due by `now` (`at <= now`), each one its own report.
//!
//! Session arithmetic is in Unix time, which has no leap seconds and no daylight saving: a
//! session end is the same UTC time of day every day, 86 400 s apart. A session is the half-open
//! interval (previous end, end]: an order accepted exactly at a session end belongs to the next
//! session.

use std::fmt;

use time::macros::format_description;

use super::{Event, LiveOrder, Touched, Venue, VenueError};
use crate::proto::v1::{self as pb, RejectReason};

/// Nanoseconds in a UTC day of Unix time.
pub const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// The UTC time of day at which DAY orders expire, every day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEnd {
    /// Nanoseconds after 00:00:00 UTC, in `[0, DAY_NS)`.
    ns_of_day: i64,
}

impl SessionEnd {
    /// Parses `HH:MM:SS` (24-hour clock, UTC, two digits each, e.g. `21:00:00`); the error
    /// says what is wrong.
    pub fn parse(text: &str) -> Result<SessionEnd, String> {
        let t = time::Time::parse(text, format_description!("[hour]:[minute]:[second]")).map_err(
            |e| format!("must be a UTC time of day HH:MM:SS (00:00:00 to 23:59:59): {e}"),
        )?;
        let (h, m, s) = t.as_hms();
        Ok(SessionEnd {
            ns_of_day: (i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s)) * 1_000_000_000,
        })
    }

    /// The first session end strictly after `t` (Unix ns).
    pub fn first_after(&self, t: i64) -> i64 {
        let today = t.div_euclid(DAY_NS).saturating_mul(DAY_NS);
        let end = today.saturating_add(self.ns_of_day);
        if end > t {
            end
        } else {
            end.saturating_add(DAY_NS)
        }
    }
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.ns_of_day / 1_000_000_000;
        write!(f, "{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }
}

/// When and why a resting order expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Unix ns; the order is due once `now >= at`.
    pub at: i64,
    /// DEADLINE_EXCEEDED (its deadline) or SESSION_END (a DAY order's session end).
    pub reason: RejectReason,
}

/// The instant `order` was accepted (Unix ns): the engine's ack time, stored in its record;
/// for a record without one (the house's seed orders), its arrival sequence, which is the
/// engine clock at intake too (`Engine::next_seq`).
pub fn accepted_at(order: &LiveOrder) -> i64 {
    order
        .record
        .ack
        .as_ref()
        .map(|a| a.ack_time_unix_ns)
        .filter(|t| *t > 0)
        .unwrap_or_else(|| i64::try_from(order.record.seq).unwrap_or(i64::MAX))
}

/// The effective expiry of a resting `order` (see the module docs); `None`: it rests until
/// filled or canceled (GTC without a deadline, or DAY when no session end is configured).
pub fn expiry_of(order: &LiveOrder, session_end: Option<SessionEnd>) -> Option<Expiry> {
    let o = order.order();
    let deadline = Some(o.deadline_unix_ns)
        .filter(|d| *d > 0)
        .map(|at| Expiry {
            at,
            reason: RejectReason::DeadlineExceeded,
        });
    let day = o.time_in_force == pb::TimeInForce::Day as i32;
    let session = session_end.filter(|_| day).map(|end| Expiry {
        at: end.first_after(accepted_at(order)),
        reason: RejectReason::SessionEnd,
    });
    match (deadline, session) {
        (Some(d), Some(s)) => Some(if d.at <= s.at { d } else { s }),
        (d, s) => d.or(s),
    }
}

impl Venue {
    /// This venue with DAY orders expiring at `end` every day (without: DAY rests like GTC).
    /// Set before any order rests.
    pub fn with_day_session_end(mut self, end: SessionEnd) -> Venue {
        self.day_session_end = Some(end);
        self
    }

    /// The effective expiry of `order` if it rested here.
    pub fn expiry(&self, order: &LiveOrder) -> Option<Expiry> {
        expiry_of(order, self.day_session_end)
    }

    /// The earliest expiry instant of the resting orders (Unix ns); `None`: none expires.
    pub fn next_expiry(&self) -> Option<i64> {
        self.expiries.first().map(|&(at, _)| at)
    }

    /// Expires every resting order due at `now` (`at <= now`), in `symbol`'s book only or in
    /// all books, earliest first: out of its book, one EXPIRED report each (DEADLINE_EXCEEDED
    /// or SESSION_END).
    pub fn expire_due(
        &mut self,
        symbol: Option<&str>,
        now: i64,
    ) -> Result<Vec<Touched>, VenueError> {
        let due: Vec<(u64, Expiry)> = self
            .expiries
            .range(..=(now, u64::MAX))
            .filter_map(|&(_, id)| Some((id, *self.expiry_at.get(&id)?)))
            .filter(|(id, _)| {
                symbol.is_none_or(|s| self.open.get(id).is_some_and(|o| o.order().symbol == s))
            })
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for (id, expiry) in due {
            let Some(mut order) = self.untrack(id) else {
                continue;
            };
            if let Some(book) = self.books.get_mut(&order.order().symbol) {
                book.cancel(id);
            }
            let text = match (expiry.reason, self.day_session_end) {
                (RejectReason::SessionEnd, Some(end)) => {
                    format!("DAY order: the session ended at {end} UTC")
                }
                _ => "deadline passed while resting".to_string(),
            };
            let mut reports = Vec::new();
            order.apply(
                Event::Expire,
                None,
                Some((expiry.reason, &[], &text)),
                now,
                &mut reports,
            )?;
            out.push(Touched { order, reports });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
