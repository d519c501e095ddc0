//! Partition metrics (`bridge_engine_partition*`) of a partitioned engine (`partitioned =
//! true`, `crate::partitions`): how many partitions this process holds, and how its ownership
//! changed. An unpartitioned engine exports them at 0.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// How a partition's ownership changed in this process (the `change` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Its lease created (`kv.create`): an instance starts recovering it.
    Taken = 0,
    /// Given back: rebalancing, SIGTERM, or its instance ended by itself.
    Released = 1,
    /// A renewal found the lease gone or someone else's: its instance was aborted.
    Lost = 2,
    /// Its journal append failed because a newer owner fenced it.
    Fenced = 3,
}

impl Change {
    pub const ALL: [Change; 4] = [
        Change::Taken,
        Change::Released,
        Change::Lost,
        Change::Fenced,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Change::Taken => "taken",
            Change::Released => "released",
            Change::Lost => "lost",
            Change::Fenced => "fenced",
        }
    }
}

/// The partition metrics.
pub struct PartitionMetrics {
    owned: IntGauge,
    /// `changes[change as usize]`.
    changes: [IntCounter; 4],
}

impl PartitionMetrics {
    /// Registers them on `r`, a series per `change` value at 0.
    pub fn new(r: &Registry) -> PartitionMetrics {
        let owned = IntGauge::with_opts(Opts::new(
            "bridge_engine_partitions_owned",
            "Symbol partitions this engine process holds the lease of (partitioned = true).",
        ))
        .expect("valid metric");
        let changes = IntCounterVec::new(
            Opts::new(
                "bridge_engine_partition_changes_total",
                "Partition ownership changes in this engine process: taken, released \
                 (rebalancing, SIGTERM), lost (lease not renewed within its TTL), fenced (a \
                 newer owner wrote the partition's journal).",
            ),
            &["change"],
        )
        .expect("valid metric");
        r.register(Box::new(owned.clone()))
            .expect("metric registered once");
        r.register(Box::new(changes.clone()))
            .expect("metric registered once");
        PartitionMetrics {
            owned,
            changes: Change::ALL.map(|c| changes.with_label_values(&[c.label()])),
        }
    }

    /// `n` partitions changed as `change` says; this process holds `owned` now.
    pub fn changed(&self, change: Change, n: usize, owned: usize) {
        self.changes[change as usize].inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        self.owned.set(i64::try_from(owned).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_count_and_the_gauge_follows() {
        let r = Registry::new();
        let m = PartitionMetrics::new(&r);
        m.changed(Change::Taken, 1, 1);
        m.changed(Change::Taken, 1, 2);
        m.changed(Change::Fenced, 1, 1);
        m.changed(Change::Released, 1, 0);
        assert_eq!(m.owned.get(), 0);
        let got = Change::ALL.map(|c| m.changes[c as usize].get());
        assert_eq!(got, [2, 1, 0, 1]);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&r.gather())
            .expect("encodes");
        assert!(text.contains("bridge_engine_partition_changes_total{change=\"lost\"} 0"));
    }
}
