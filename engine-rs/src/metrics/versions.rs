//! `bridge_engine_schema_version_requests_total{schema_version}`: order operations by the contract version
//! their sender declared (`Bridge-Schema-Version`, 1.0 when absent). The label is bounded
//! ([`crate::schema_version::labels`]): the minors this engine knows, `<major>.newer`,
//! `unsupported` and `invalid` (both refused).

use prometheus::{IntCounterVec, Opts, Registry};

use crate::schema_version::{labels, ours};

pub struct VersionMetrics {
    requests: IntCounterVec,
}

impl VersionMetrics {
    /// Registers it on `r`, a series per label value at 0.
    pub fn register(r: &Registry) -> VersionMetrics {
        let requests = IntCounterVec::new(
            Opts::new(
                "bridge_engine_schema_version_requests_total",
                "Order operations (submit, cancel, status, queued orders, replace, mass cancel, \
                 sessions) by their sender's contract version (Bridge-Schema-Version; absent = \
                 1.0).",
            ),
            &["schema_version"],
        )
        .expect("valid metric");
        r.register(Box::new(requests.clone()))
            .expect("metric registered once");
        for label in labels(ours()) {
            requests.with_label_values(&[&label]);
        }
        VersionMetrics { requests }
    }

    /// One order operation of a sender of this version (a label of
    /// [`crate::schema_version::labels`]).
    pub fn seen(&self, label: &str) {
        self.requests.with_label_values(&[label]).inc();
    }
}
