//! The runtime configuration's metrics: the revision in force per document, and refusals.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::runtime_config::documents::ENGINE_DOCUMENTS;

pub struct ConfigMetrics {
    revision: IntGaugeVec,
    refused: IntCounterVec,
}

impl ConfigMetrics {
    /// Registers both on `r`, a series per engine document at 0.
    pub fn register(r: &Registry) -> ConfigMetrics {
        let revision = IntGaugeVec::new(
            Opts::new(
                "bridge_engine_config_revision",
                "KV revision of the runtime configuration document in force (0: none applied).",
            ),
            &["document"],
        )
        .expect("valid metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "bridge_engine_config_refused_total",
                "Runtime configuration revisions refused (invalid, or badly signed).",
            ),
            &["document"],
        )
        .expect("valid metric");
        r.register(Box::new(revision.clone()))
            .expect("metric registered once");
        r.register(Box::new(refused.clone()))
            .expect("metric registered once");
        for d in ENGINE_DOCUMENTS {
            revision.with_label_values(&[d]);
            refused.with_label_values(&[d]);
        }
        ConfigMetrics { revision, refused }
    }

    pub fn applied(&self, document: &str, revision: u64) {
        self.revision
            .with_label_values(&[document])
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
    }

    pub fn refused(&self, document: &str) {
        self.refused.with_label_values(&[document]).inc();
    }
}
