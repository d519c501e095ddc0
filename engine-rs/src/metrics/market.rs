//! Market data and input stream metrics (`bridge_engine_md_*`, `bridge_engine_feed_*`): what
//! the engine published, dropped and served, and what its input streams applied or refused.

use prometheus::{IntCounter, IntGauge, Opts, Registry};

/// The market data and input stream metrics.
pub struct MarketMetrics {
    pub updates: IntCounter,
    pub events: IntCounter,
    pub dropped: IntCounter,
    pub snapshots: IntCounter,
    pub feed_applied: IntCounter,
    pub feed_refused: IntCounter,
    pub feed_streams: IntGauge,
}

impl MarketMetrics {
    /// Registers them on `r`.
    pub fn new(r: &Registry) -> MarketMetrics {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(Opts::new(name, help)).expect("valid metric");
            r.register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let feed_streams = IntGauge::with_opts(Opts::new(
            "bridge_engine_feed_streams",
            "Open input streams.",
        ))
        .expect("valid metric");
        r.register(Box::new(feed_streams.clone()))
            .expect("metric registered once");
        MarketMetrics {
            updates: counter(
                "bridge_engine_md_updates_total",
                "Market data updates (MarketDataUpdate) published, one per symbol per flush.",
            ),
            events: counter(
                "bridge_engine_md_events_total",
                "Venue events the published market data updates carry (events / updates = coalescing).",
            ),
            dropped: counter(
                "bridge_engine_md_dropped_total",
                "Market data messages not published (publish queue full or publish failed); subscribers see a sequence gap and resync.",
            ),
            snapshots: counter(
                "bridge_engine_md_snapshots_total",
                "Market data snapshots served.",
            ),
            feed_applied: counter(
                "bridge_engine_feed_messages_applied_total",
                "Input stream messages applied.",
            ),
            feed_refused: counter(
                "bridge_engine_feed_messages_refused_total",
                "Input stream messages refused (stream not open, beyond credit, out of order).",
            ),
            feed_streams,
        }
    }
}
