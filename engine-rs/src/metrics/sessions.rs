//! Session metrics (`bridge_engine_session*`): the sessions this engine watches, the
//! heartbeats it sees, the sessions it saw end and the orders it canceled for them (cancel on
//! disconnect).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::sessions::State;

/// The values of the `end` label: how a session ended.
pub const ENDS: [&str; 2] = ["closed", "lost"];

/// The session metrics.
pub struct SessionMetrics {
    pub open: IntGauge,
    pub heartbeats: IntCounter,
    ended: IntCounterVec,
    canceled: IntCounterVec,
}

impl SessionMetrics {
    /// Registers them on `r`, a series per `end` value at 0.
    pub fn new(r: &Registry) -> SessionMetrics {
        let open = IntGauge::with_opts(Opts::new(
            "bridge_engine_sessions_open",
            "Orchestrator sessions open that this engine watches (cancel on disconnect).",
        ))
        .expect("valid metric");
        let heartbeats = IntCounter::with_opts(Opts::new(
            "bridge_engine_session_heartbeats_total",
            "Heartbeats of open sessions this engine received.",
        ))
        .expect("valid metric");
        let ended = IntCounterVec::new(
            Opts::new(
                "bridge_engine_sessions_ended_total",
                "Sessions this engine saw end: closed by their orchestrator, or lost (no \
                 heartbeat for their grace).",
            ),
            &["end"],
        )
        .expect("valid metric");
        let canceled = IntCounterVec::new(
            Opts::new(
                "bridge_engine_session_orders_canceled_total",
                "Resting orders this engine canceled because their session ended (reason \
                 SESSION_LOST): lost with cancel_on_disconnect, or closed with cancel_orders.",
            ),
            &["end"],
        )
        .expect("valid metric");
        for c in [&ended, &canceled] {
            for end in ENDS {
                c.with_label_values(&[end]);
            }
        }
        r.register(Box::new(open.clone()))
            .expect("metric registered once");
        r.register(Box::new(heartbeats.clone()))
            .expect("metric registered once");
        r.register(Box::new(ended.clone()))
            .expect("metric registered once");
        r.register(Box::new(canceled.clone()))
            .expect("metric registered once");
        SessionMetrics {
            open,
            heartbeats,
            ended,
            canceled,
        }
    }

    /// A session ended as `state` says (closed or lost), and `orders` of it were canceled here.
    pub fn ended(&self, state: State, orders: usize) {
        let end = match state {
            State::Lost => "lost",
            _ => "closed",
        };
        self.ended.with_label_values(&[end]).inc();
        self.canceled
            .with_label_values(&[end])
            .inc_by(u64::try_from(orders).unwrap_or(u64::MAX));
    }

    /// Orders canceled for a session that had already ended here (its ending seen again).
    pub fn canceled_more(&self, state: State, orders: usize) {
        let end = if state == State::Lost {
            "lost"
        } else {
            "closed"
        };
        self.canceled
            .with_label_values(&[end])
            .inc_by(u64::try_from(orders).unwrap_or(u64::MAX));
    }
}
