//! Expiry that happens on time: resting GTD orders at their deadline and DAY orders at the
//! session end (`day_session_end_utc`), even if no other order arrives; and the engine's one
//! timer ([`Engine::next_timer`], [`Engine::on_timer`]) that drives every timed duty (expiry,
//! session grace).
//!
//! The venue knows each resting order's expiry instant (`venue/expiry.rs`, pure); the timer
//! sleeps until the earliest one and then expires everything due, exactly like a cancel: each
//! expired order's EXPIRED report is its own fact (published atomically, under the order's
//! stored correlation id), its market data is touched and its record written back. The
//! reports are counted by `bridge_engine_reports_total{exec_type="expired"}`.
//!
//! Across a restart nothing is lost: recovery restores the resting orders (same instants, from
//! their records), expires at once what came due while the engine was down, and the timer takes
//! the rest from there.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::info;

use crate::engine::{now_ns, Engine};
use crate::error::EngineError;
use crate::proto::v1::RejectReason;
use crate::publish::Tagged;
use crate::trace::Trace;

/// The longest the expiry timer sleeps before looking at the wall clock again: expiry instants
/// are wall-clock (Unix) times, the timer a monotonic one, and the two drift apart while NTP
/// slews the clock (up to 0.5 ms/s), so a far instant is approached in steps this long.
pub const MAX_EXPIRY_SLEEP: Duration = Duration::from_secs(60);

impl Engine {
    /// When the engine next has timed work to do: the earliest of its duties' instants
    /// (`None`: none). The run loop sleeps until then and calls [`Engine::on_timer`].
    pub fn next_timer(&self) -> Option<tokio::time::Instant> {
        [self.expiry_timer(), self.session_timer()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Does every timed duty that is due now.
    pub async fn on_timer(&mut self) -> Result<(), EngineError> {
        self.on_expiry_timer().await?;
        self.on_session_timer().await
    }

    /// When the next resting order expires (`None`: none has an expiry).
    pub fn expiry_timer(&self) -> Option<tokio::time::Instant> {
        let at = self.venue.next_expiry()?;
        Some(tokio::time::Instant::now() + until(at, now_ns()))
    }

    /// Expires every resting order due by now: EXPIRED reports (each order its own fact),
    /// market data, records written back.
    pub async fn on_expiry_timer(&mut self) -> Result<(), EngineError> {
        let now = now_ns();
        if self.venue.next_expiry().is_none_or(|at| at > now) {
            return Ok(());
        }
        let expired = self.venue.expire_due(None, now)?;
        if expired.is_empty() {
            return Ok(());
        }
        // No request caused this: each order's reports carry its own stored ids.
        let traces: Vec<Trace> = expired
            .iter()
            .map(|t| Trace::recovered(&t.order.record.correlation_id))
            .collect();
        let groups: Vec<Vec<Tagged<'_>>> = expired
            .iter()
            .zip(&traces)
            .map(|(t, trace)| t.reports.iter().map(|r| (r, trace)).collect())
            .collect();
        self.commit(groups, expired.iter().map(|t| &t.order).collect())
            .await?;
        let mut symbols: BTreeMap<String, u32> = BTreeMap::new();
        for t in &expired {
            let order = t.order.order();
            *symbols.entry(order.symbol.clone()).or_default() += 1;
            let reason = t.reports.last().map_or(0, |r| r.reason);
            info!(
                key = %t.order.key,
                engine_order_id = %t.order.record.engine_order_id,
                reason = RejectReason::try_from(reason).map_or("?", |r| r.as_str_name()),
                "resting order expired"
            );
        }
        for (symbol, events) in &symbols {
            self.md.touch(symbol, *events, now);
        }
        self.observe_books(symbols.keys().map(String::as_str));
        Ok(())
    }
}

/// How long to sleep from wall-clock `now` until wall-clock `at` (Unix ns): zero if it has
/// passed, at most [`MAX_EXPIRY_SLEEP`].
pub fn until(at: i64, now: i64) -> Duration {
    let wait = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
    Duration::from_nanos(wait).min(MAX_EXPIRY_SLEEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_until_the_instant_at_most_a_minute() {
        let s = 1_000_000_000;
        assert_eq!(until(10 * s, 10 * s), Duration::ZERO);
        assert_eq!(until(10 * s, 11 * s), Duration::ZERO, "passed: at once");
        assert_eq!(until(10 * s + 1, 10 * s), Duration::from_nanos(1));
        assert_eq!(until(40 * s, 10 * s), Duration::from_secs(30));
        assert_eq!(until(i64::MAX, 0), MAX_EXPIRY_SLEEP);
        assert_eq!(until(0, i64::MIN), MAX_EXPIRY_SLEEP);
    }
}
