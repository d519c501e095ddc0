//! What `/readyz` answers (pure: four flags, no I/O). The engine is ready when it is
//! connected, its ORDERS consumer is bound, start-up recovery has finished and its request
//! subscriptions are registered (intake subscribed); `/healthz` only says the process runs.
//!
//! Each flag is set where its event happens (connection events, binding, the end of
//! recovery, the subscriptions) and keeps `bridge_engine_ready` / `bridge_engine_connected`
//! in step.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::IntGauge;
use serde::Serialize;

/// The readiness conditions, as `/readyz`'s JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub connected: bool,
    pub consumer_bound: bool,
    pub recovery_finished: bool,
    pub intake_subscribed: bool,
}

/// The readiness flags, shared by the engine, its connection callback and the HTTP server.
pub struct Health {
    connected: AtomicBool,
    consumer_bound: AtomicBool,
    recovery_finished: AtomicBool,
    intake_subscribed: AtomicBool,
    ready_gauge: IntGauge,
    connected_gauge: IntGauge,
}

impl Health {
    /// All conditions false; `ready` and `connected` are the gauges it keeps current.
    pub fn new(ready: IntGauge, connected: IntGauge) -> Health {
        Health {
            connected: AtomicBool::new(false),
            consumer_bound: AtomicBool::new(false),
            recovery_finished: AtomicBool::new(false),
            intake_subscribed: AtomicBool::new(false),
            ready_gauge: ready,
            connected_gauge: connected,
        }
    }

    /// The conditions now.
    pub fn readiness(&self) -> Readiness {
        let connected = self.connected.load(Ordering::Acquire);
        let consumer_bound = self.consumer_bound.load(Ordering::Acquire);
        let recovery_finished = self.recovery_finished.load(Ordering::Acquire);
        let intake_subscribed = self.intake_subscribed.load(Ordering::Acquire);
        Readiness {
            ready: connected && consumer_bound && recovery_finished && intake_subscribed,
            connected,
            consumer_bound,
            recovery_finished,
            intake_subscribed,
        }
    }

    /// The NATS connection is up (true) or lost (false).
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        self.connected_gauge.set(i64::from(up));
        self.update();
    }

    /// The ORDERS consumer is bound (true), or being re-bound (false).
    pub fn set_consumer_bound(&self, bound: bool) {
        self.consumer_bound.store(bound, Ordering::Release);
        self.update();
    }

    /// Start-up recovery has finished.
    pub fn set_recovery_finished(&self) {
        self.recovery_finished.store(true, Ordering::Release);
        self.update();
    }

    /// The request subscriptions are registered server-side (true), or drained (false).
    pub fn set_intake_subscribed(&self, subscribed: bool) {
        self.intake_subscribed.store(subscribed, Ordering::Release);
        self.update();
    }

    fn update(&self) {
        self.ready_gauge.set(i64::from(self.readiness().ready));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> (Health, IntGauge, IntGauge) {
        let ready = IntGauge::new("r", "r").expect("gauge");
        let connected = IntGauge::new("c", "c").expect("gauge");
        (
            Health::new(ready.clone(), connected.clone()),
            ready,
            connected,
        )
    }

    /// Ready only when all four conditions hold; losing any one makes it not ready again, and
    /// the gauges follow.
    #[test]
    fn ready_needs_every_condition() {
        let (h, ready, connected) = health();
        assert!(!h.readiness().ready);
        h.set_connected(true);
        h.set_consumer_bound(true);
        h.set_recovery_finished();
        assert!(!h.readiness().ready, "not subscribed yet");
        assert_eq!(ready.get(), 0);
        h.set_intake_subscribed(true);
        assert!(h.readiness().ready);
        assert_eq!((ready.get(), connected.get()), (1, 1));
        h.set_connected(false);
        let r = h.readiness();
        assert!(!r.ready && !r.connected && r.consumer_bound && r.recovery_finished);
        assert_eq!((ready.get(), connected.get()), (0, 0));
        h.set_connected(true);
        h.set_consumer_bound(false);
        assert_eq!(ready.get(), 0);
    }

    /// The JSON body names each condition.
    #[test]
    fn body_names_each_condition() {
        let (h, _, _) = health();
        h.set_connected(true);
        let body = serde_json::to_value(h.readiness()).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"ready": false, "connected": true, "consumer_bound": false,
                               "recovery_finished": false, "intake_subscribed": false})
        );
    }
}
