//! The engine's Prometheus metrics: exactly the `side = "engine"` entries of
//! `schemas/metrics.toml` (names, types, label names, buckets; a unit test holds them to it),
//! on a registry of their own that `/metrics` ([`crate::http`]) encodes.
//!
//! Library: tikv's `prometheus` crate, with its `process` feature for the standard
//! `process_*` collector (CPU, RSS, fds, start time, threads from `/proc`). Its metrics are
//! lock-free atomics; the label children the order path touches are resolved once here
//! ([`Metrics::new`]), so recording one is an atomic add, not a label lookup.
//!
//! Submodules: [`health`] (what `/readyz` answers, pure), [`labels`] (label values: paths,
//! outcomes, stages, and those of the protobuf enums; pure), [`refresh`] (stream and consumer figures read from JetStream
//! periodically), [`partitions`] (partition ownership of a partitioned engine).

use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::proto::v1::{self as pb, ExecType, RejectReason};

pub mod config;
pub mod health;
pub mod labels;
pub mod market;
pub mod partitions;
pub mod refresh;
pub mod sessions;
pub mod versions;

pub use health::Health;
use labels::{enum_label, EXEC_TYPE_PREFIX, REJECT_REASON_PREFIX};
pub use labels::{Outcome, Path, Stage};

/// `[buckets] stage_seconds` of the registry: per-stage engine work, microseconds to
/// milliseconds.
pub const STAGE_SECONDS: [f64; 12] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];

/// The streams whose figures are exported (`stream` label).
pub const STREAMS: [&str; 2] = [
    crate::contract::ORDERS_STREAM,
    crate::contract::EXECUTIONS_STREAM,
];

/// Per-stream gauges, one child per stream.
pub struct StreamGauges {
    pub messages: IntGaugeVec,
    pub max_messages: IntGaugeVec,
    pub bytes: IntGaugeVec,
    pub max_bytes: IntGaugeVec,
}

/// Every engine metric, registered on [`Metrics::registry`].
pub struct Metrics {
    registry: Registry,
    /// What `/readyz` answers; keeps `bridge_engine_ready` and `bridge_engine_connected`.
    pub health: Health,
    /// `orders[path][outcome]`.
    orders: [[IntCounter; 3]; 2],
    /// `replaces[outcome]`.
    replaces: [IntCounter; 3],
    rejects: IntCounterVec,
    /// `stages[stage]`.
    stages: [Histogram; 7],
    /// `reports[exec_type as usize]`.
    reports: Vec<IntCounter>,
    reports_vec: IntCounterVec,
    pub consumer_pending: IntGauge,
    pub consumer_ack_pending: IntGauge,
    redeliveries: IntCounter,
    pub streams: StreamGauges,
    book_depth: IntGaugeVec,
    recovery_seconds: Gauge,
    recovered_orders: IntGauge,
    reconnects: IntCounter,
    /// Market data and input streams.
    pub market: market::MarketMetrics,
    /// The runtime configuration's (`runtime_config`).
    pub config: config::ConfigMetrics,
    /// Orchestrator sessions (cancel on disconnect).
    pub sessions: sessions::SessionMetrics,
    /// Order operations by their sender's contract version.
    pub versions: versions::VersionMetrics,
    /// Partition ownership of a partitioned engine.
    pub partitions: partitions::PartitionMetrics,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

/// Registers `c` and hands it back (a registry error here is a programming error: a name
/// registered twice).
fn reg<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    /// Every metric of the registry, with its label children pre-created (so that a series
    /// exists, at 0, before its first event), plus the process collector. `symbols`: the
    /// configured symbols (`symbol` label of the book depth).
    pub fn new<'a>(symbols: impl IntoIterator<Item = &'a String>) -> Metrics {
        let r = Registry::new();
        let orders_vec = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "bridge_engine_orders_total",
                    "Orders decoded by the engine, by path and outcome.",
                ),
                &["path", "outcome"],
            )
            .expect("valid metric"),
        );
        let orders = Path::ALL
            .map(|p| Outcome::ALL.map(|o| orders_vec.with_label_values(&[p.label(), o.label()])));
        let replaces_vec = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "bridge_engine_replaces_total",
                    "Replace requests the engine answered, by outcome.",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
        );
        let replaces = Outcome::ALL.map(|o| replaces_vec.with_label_values(&[o.label()]));
        let rejects = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "bridge_engine_rejects_total",
                    "Rejected orders and operations by reject reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        );
        for reason in labels::reject_reasons() {
            rejects.with_label_values(&[&reason]);
        }
        let stage_vec = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "bridge_engine_stage_seconds",
                    "Time one order spends in each stage: decode, validate (and risk-check), \
                     journal (durable write), match, publish (reports), ack (reply or \
                     JetStream ack).",
                )
                .buckets(STAGE_SECONDS.to_vec()),
                &["stage"],
            )
            .expect("valid metric"),
        );
        let stages = Stage::ALL.map(|s| stage_vec.with_label_values(&[s.label()]));
        let reports_vec = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "bridge_engine_reports_total",
                    "Execution reports published (durably stored in EXECUTIONS).",
                ),
                &["exec_type"],
            )
            .expect("valid metric"),
        );
        let reports = labels::exec_types()
            .iter()
            .map(|t| reports_vec.with_label_values(&[t]))
            .collect();
        let gauge = |name: &str, help: &str| {
            reg(
                &r,
                IntGauge::with_opts(opts(name, help)).expect("valid metric"),
            )
        };
        let stream_gauge = |name: &str, help: &str| {
            let g = reg(
                &r,
                IntGaugeVec::new(opts(name, help), &["stream"]).expect("valid metric"),
            );
            for s in STREAMS {
                g.with_label_values(&[s]);
            }
            g
        };
        let counter = |name: &str, help: &str| {
            reg(
                &r,
                IntCounter::with_opts(opts(name, help)).expect("valid metric"),
            )
        };
        let book_depth = reg(
            &r,
            IntGaugeVec::new(
                opts("bridge_engine_book_depth", "Resting orders in the book."),
                &["symbol", "side"],
            )
            .expect("valid metric"),
        );
        for symbol in symbols {
            for side in labels::SIDES {
                book_depth.with_label_values(&[symbol.as_str(), side]);
            }
        }
        let health = Health::new(
            gauge(
                "bridge_engine_ready",
                "1 when /readyz answers 200: connected, consumer bound, recovery finished.",
            ),
            gauge(
                "bridge_engine_connected",
                "1 while the engine's NATS connection is up.",
            ),
        );
        let metrics = Metrics {
            health,
            orders,
            replaces,
            rejects,
            stages,
            reports,
            reports_vec,
            consumer_pending: gauge(
                "bridge_engine_consumer_pending_messages",
                "Queued orders in ORDERS not yet delivered to an engine (the ORDERS/engine \
                 consumer's num_pending).",
            ),
            consumer_ack_pending: gauge(
                "bridge_engine_consumer_ack_pending_messages",
                "Queued orders delivered to engines and not yet acked (num_ack_pending).",
            ),
            redeliveries: counter(
                "bridge_engine_redeliveries_total",
                "Queued orders this engine received more than once (JetStream redeliveries).",
            ),
            streams: StreamGauges {
                messages: stream_gauge(
                    "bridge_engine_stream_messages",
                    "Messages stored in the stream.",
                ),
                max_messages: stream_gauge(
                    "bridge_engine_stream_max_messages",
                    "The stream's max_msgs limit (-1 = none).",
                ),
                bytes: stream_gauge("bridge_engine_stream_bytes", "Bytes stored in the stream."),
                max_bytes: stream_gauge(
                    "bridge_engine_stream_max_bytes",
                    "The stream's max_bytes limit (-1 = none).",
                ),
            },
            book_depth,
            recovery_seconds: reg(
                &r,
                Gauge::with_opts(opts(
                    "bridge_engine_recovery_seconds",
                    "How long the last start-up recovery took.",
                ))
                .expect("valid metric"),
            ),
            recovered_orders: gauge(
                "bridge_engine_recovered_orders",
                "Live orders the last start-up recovery restored.",
            ),
            reconnects: counter(
                "bridge_engine_reconnects_total",
                "Reconnects of the engine's NATS connection.",
            ),
            market: market::MarketMetrics::new(&r),
            config: config::ConfigMetrics::register(&r),
            sessions: sessions::SessionMetrics::new(&r),
            versions: versions::VersionMetrics::register(&r),
            partitions: partitions::PartitionMetrics::new(&r),
            registry: r,
        };
        metrics.register_process_collector();
        metrics
    }

    /// The standard `process_*` metrics of this process (Linux only; elsewhere none).
    fn register_process_collector(&self) {
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            self.registry
                .register(Box::new(pc))
                .expect("process collector registered once");
        }
    }

    /// Every metric, in Prometheus' text exposition format.
    pub fn encode(&self) -> String {
        // The ready gauge follows the health flags; the rest is kept current by its events.
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }

    /// The registry (tests, and collectors added by the caller).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// One decoded order's outcome, from the ack it was answered with; a rejection is also
    /// counted by its reason.
    pub fn order(&self, path: Path, ack: &pb::OrderAck) {
        let outcome = Outcome::of(ack);
        self.orders[path as usize][outcome as usize].inc();
        if outcome == Outcome::Rejected {
            self.reject(ack.reason);
        }
    }

    /// One answered replace's outcome, from its ack; a rejection is also counted by its
    /// reason.
    pub fn replace(&self, ack: &pb::OrderAck) {
        let outcome = Outcome::of(ack);
        self.replaces[outcome as usize].inc();
        if outcome == Outcome::Rejected {
            self.reject(ack.reason);
        }
    }

    /// One rejected order or operation, by its `RejectReason`.
    pub fn reject(&self, reason: i32) {
        let reason = RejectReason::try_from(reason).unwrap_or(RejectReason::Unspecified);
        let label = enum_label(reason.as_str_name(), REJECT_REASON_PREFIX);
        self.rejects.with_label_values(&[&label]).inc();
    }

    /// Time spent in `stage` by one order.
    pub fn stage(&self, stage: Stage, took: Duration) {
        self.stages[stage as usize].observe(took.as_secs_f64());
    }

    /// Time spent in `stage` by each of `orders` orders handled together (a pull's batch):
    /// every one of them spent it there.
    pub fn stage_each(&self, stage: Stage, took: Duration, orders: usize) {
        let h = &self.stages[stage as usize];
        for _ in 0..orders {
            h.observe(took.as_secs_f64());
        }
    }

    /// Times `f` as `stage` of one order.
    pub fn timed<T>(&self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.stage(stage, started.elapsed());
        out
    }

    /// One execution report stored in EXECUTIONS.
    pub fn report(&self, exec_type: i32) {
        match usize::try_from(exec_type)
            .ok()
            .and_then(|i| self.reports.get(i))
        {
            Some(c) => c.inc(),
            None => self
                .reports_vec
                .with_label_values(&[&enum_label(
                    ExecType::Unspecified.as_str_name(),
                    EXEC_TYPE_PREFIX,
                )])
                .inc(),
        }
    }

    /// A queued order delivered more than once.
    pub fn redelivered(&self) {
        self.redeliveries.inc();
    }

    /// A reconnect of the NATS connection (any connection after the first).
    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// Reconnects of the NATS connection so far.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.get()
    }

    /// Resting orders of one side of one symbol's book.
    pub fn book_depth(&self, symbol: &str, side: &str, orders: usize) {
        self.book_depth
            .with_label_values(&[symbol, side])
            .set(i64::try_from(orders).unwrap_or(i64::MAX));
    }

    /// The last start-up recovery: how long it took, how many live orders it restored.
    pub fn recovery(&self, took: Duration, orders: usize) {
        self.recovery_seconds.set(took.as_secs_f64());
        self.recovered_orders
            .set(i64::try_from(orders).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests;
