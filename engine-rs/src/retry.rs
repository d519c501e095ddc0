//! The engine's one backoff policy, shared by NATS reconnects and JetStream operation retries.
//!
//! `delay(n) = min(reconnect_max_delay_ms, reconnect_initial_delay_ms * 2^n) + uniform(0,
//! reconnect_jitter_ms)` for the n-th consecutive failure (n = 0, 1, ...). The Python client
//! uses the same formula and reconnect knob names (`bridge/retry.py`; both test suites check
//! `schemas/testdata/backoff.json`), so both sides of a restart back off alike. Operation
//! retries (see [`Backoff`]) stop after `jetstream_retry_max_attempts` attempts or once
//! `jetstream_retry_deadline_ms` has passed since the first one, whichever comes first.

use std::time::{Duration, Instant};

use crate::config::Config;

/// Exponential backoff with additive jitter and a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub initial: Duration,
    pub max: Duration,
    pub jitter: Duration,
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Policy {
        Policy {
            initial: Duration::from_millis(cfg.reconnect_initial_delay_ms),
            max: Duration::from_millis(cfg.reconnect_max_delay_ms),
            jitter: Duration::from_millis(cfg.reconnect_jitter_ms),
        }
    }

    /// The capped exponential part of the n-th delay (no jitter).
    pub fn base(&self, n: usize) -> Duration {
        let factor = 1u32
            .checked_shl(u32::try_from(n).unwrap_or(u32::MAX))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The n-th delay: the base plus a uniform jitter in `[0, jitter]`.
    pub fn delay(&self, n: usize) -> Duration {
        let jitter_ms = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms == 0 {
            0
        } else {
            fastrand::u64(0..=jitter_ms)
        };
        self.base(n) + Duration::from_millis(extra)
    }
}

/// The delays between attempts of one retried operation (an iterator, so `backon` can drive
/// it): ends after `max_attempts - 1` delays or when the next attempt would start after the
/// deadline.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    retries: usize,
    max_retries: usize,
    start: Instant,
    planned: Duration,
    deadline: Instant,
}

impl Backoff {
    pub fn new(policy: Policy, max_attempts: u32, deadline: Duration) -> Backoff {
        Backoff {
            policy,
            retries: 0,
            max_retries: usize::try_from(max_attempts.saturating_sub(1)).unwrap_or(usize::MAX),
            start: Instant::now(),
            planned: Duration::ZERO,
            deadline: Instant::now() + deadline,
        }
    }

    pub fn from_config(cfg: &Config) -> Backoff {
        Backoff::new(
            Policy::from_config(cfg),
            cfg.jetstream_retry_max_attempts,
            Duration::from_millis(cfg.jetstream_retry_deadline_ms),
        )
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retries >= self.max_retries {
            return None;
        }
        let delay = self.policy.delay(self.retries);
        // Time passes at least as fast as the delays already handed out.
        let earliest = Instant::now().max(self.start + self.planned);
        if earliest + delay > self.deadline {
            return None;
        }
        self.retries += 1;
        self.planned += delay;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter_ms: u64) -> Policy {
        Policy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(1000),
            jitter: Duration::from_millis(jitter_ms),
        }
    }

    #[test]
    fn base_doubles_then_caps() {
        let p = policy(0);
        let got: Vec<u128> = (0..8).map(|n| p.base(n).as_millis()).collect();
        assert_eq!(got, vec![50, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(p.base(10_000), Duration::from_millis(1000));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy(30);
        for n in 0..200 {
            let d = p.delay(n % 7);
            let base = p.base(n % 7);
            assert!(d >= base && d <= base + Duration::from_millis(30), "{d:?}");
        }
    }

    #[test]
    fn attempts_bound_the_iterator() {
        let b = Backoff::new(policy(0), 4, Duration::from_secs(3600));
        assert_eq!(b.count(), 3, "4 attempts = 3 delays");
        assert_eq!(
            Backoff::new(policy(0), 1, Duration::from_secs(3600)).count(),
            0
        );
    }

    #[test]
    fn deadline_bounds_the_iterator() {
        // 50+100+200+400 = 750 ms fit in 800 ms, the next (800 ms) would not.
        let b = Backoff::new(policy(0), 1000, Duration::from_millis(800));
        let delays: Vec<Duration> = b.collect();
        assert_eq!(delays.len(), 4, "{delays:?}");
    }
}
