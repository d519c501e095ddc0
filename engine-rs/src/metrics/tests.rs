//! The engine's metrics are exactly the registry's (`schemas/metrics.toml`, side "engine"),
//! and recording moves the right series.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::proto::MetricType;

use super::*;
use crate::proto::v1 as pb;

const REGISTRY: &str = include_str!("../../../schemas/metrics.toml");

/// A metric as the registry describes it: type, label names (sorted), bucket bounds.
type Described = (String, Vec<String>, Option<Vec<f64>>);

/// name -> (type, label names sorted, bucket bounds) of the registry's engine metrics (the
/// exposition sorts label names).
fn registry() -> BTreeMap<String, Described> {
    let doc: toml::Table = REGISTRY.parse().expect("metrics.toml parses");
    let buckets = doc["buckets"].as_table().expect("[buckets]");
    let mut out = BTreeMap::new();
    for (name, m) in doc["metrics"].as_table().expect("[metrics]") {
        if m["side"].as_str() != Some("engine") {
            continue;
        }
        let mut labels: Vec<String> = m["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|l| l.as_str().expect("label").to_string())
            .collect();
        labels.sort();
        let bounds = m.get("buckets").map(|b| {
            buckets[b.as_str().expect("bucket set name")]
                .as_array()
                .expect("bounds")
                .iter()
                .map(|v| v.as_float().expect("float bound"))
                .collect()
        });
        let kind = m["type"].as_str().expect("type").to_string();
        out.insert(name.clone(), (kind, labels, bounds));
    }
    out
}

fn type_name(t: MetricType) -> &'static str {
    match t {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        _ => "other",
    }
}

/// Every exported family, as the registry describes it.
#[test]
fn exports_exactly_the_registry() {
    let metrics = Metrics::new(&["ACME".to_string()]);
    let mut exported = BTreeMap::new();
    for family in metrics.registry().gather() {
        let first = &family.get_metric()[0];
        let mut labels: Vec<String> = first
            .get_label()
            .iter()
            .map(|l| l.name().to_string())
            .collect();
        labels.sort();
        let bounds = (family.get_field_type() == MetricType::HISTOGRAM).then(|| {
            first
                .get_histogram()
                .get_bucket()
                .iter()
                .map(|b| b.upper_bound())
                .collect::<Vec<f64>>()
        });
        exported.insert(
            family.name().to_string(),
            (
                type_name(family.get_field_type()).to_string(),
                labels,
                bounds,
            ),
        );
    }
    assert_eq!(exported, registry());
}

fn value(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    for family in metrics.registry().gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let ok = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if ok {
                return match family.get_field_type() {
                    MetricType::COUNTER => m.get_counter().get_value(),
                    MetricType::GAUGE => m.get_gauge().get_value(),
                    MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
                    _ => f64::NAN,
                };
            }
        }
    }
    panic!("no series {name} {labels:?}");
}

/// Orders are counted by path and by the outcome their ack answers; a rejection by reason.
#[test]
fn orders_count_by_path_outcome_and_reason() {
    let m = Metrics::new(&[]);
    let accepted = pb::OrderAck {
        status: pb::AckStatus::Accepted as i32,
        ..Default::default()
    };
    let rejected = pb::OrderAck {
        status: pb::AckStatus::Rejected as i32,
        reason: pb::RejectReason::UnknownSymbol as i32,
        ..Default::default()
    };
    let duplicate = pb::OrderAck {
        duplicate: true,
        ..accepted.clone()
    };
    m.order(Path::Sync, &accepted);
    m.order(Path::Sync, &accepted);
    m.order(Path::Queued, &rejected);
    m.order(Path::Queued, &duplicate);
    let orders = |path, outcome| {
        value(
            &m,
            "bridge_engine_orders_total",
            &[("path", path), ("outcome", outcome)],
        )
    };
    assert_eq!(orders("sync", "accepted"), 2.0);
    assert_eq!(orders("sync", "rejected"), 0.0);
    assert_eq!(orders("queued", "rejected"), 1.0);
    assert_eq!(orders("queued", "duplicate"), 1.0);
    let reason = |r| value(&m, "bridge_engine_rejects_total", &[("reason", r)]);
    assert_eq!(reason("unknown_symbol"), 1.0);
    assert_eq!(reason("risk_limit"), 0.0);
}

/// Replaces are counted by the outcome their ack answers; a rejection also by reason.
#[test]
fn replaces_count_by_outcome_and_reason() {
    let m = Metrics::new(&[]);
    let accepted = pb::OrderAck {
        status: pb::AckStatus::Accepted as i32,
        ..Default::default()
    };
    let too_late = pb::OrderAck {
        status: pb::AckStatus::Rejected as i32,
        reason: pb::RejectReason::TooLate as i32,
        ..Default::default()
    };
    m.replace(&accepted);
    m.replace(&pb::OrderAck {
        duplicate: true,
        ..accepted.clone()
    });
    m.replace(&too_late);
    m.replace(&too_late);
    let replaces = |o| value(&m, "bridge_engine_replaces_total", &[("outcome", o)]);
    assert_eq!(
        (
            replaces("accepted"),
            replaces("duplicate"),
            replaces("rejected")
        ),
        (1.0, 1.0, 2.0)
    );
    assert_eq!(
        value(&m, "bridge_engine_rejects_total", &[("reason", "too_late")]),
        2.0
    );
}

/// Stages, reports, redeliveries, book depth, recovery and reconnects land in their series.
#[test]
fn every_recorder_moves_its_series() {
    let m = Metrics::new(&["ACME".to_string()]);
    m.stage(Stage::Journal, Duration::from_micros(300));
    m.stage_each(Stage::Ack, Duration::from_micros(20), 3);
    assert_eq!(m.timed(Stage::Match, || 7), 7);
    let stage = |s| value(&m, "bridge_engine_stage_seconds", &[("stage", s)]);
    assert_eq!(
        (
            stage("journal"),
            stage("ack"),
            stage("match"),
            stage("decode")
        ),
        (1.0, 3.0, 1.0, 0.0)
    );
    m.report(pb::ExecType::Trade as i32);
    m.report(99);
    let report = |t| value(&m, "bridge_engine_reports_total", &[("exec_type", t)]);
    assert_eq!((report("trade"), report("unspecified")), (1.0, 1.0));
    m.redelivered();
    m.reconnected();
    assert_eq!(value(&m, "bridge_engine_redeliveries_total", &[]), 1.0);
    assert_eq!(value(&m, "bridge_engine_reconnects_total", &[]), 1.0);
    assert_eq!(
        value(
            &m,
            "bridge_engine_book_depth",
            &[("symbol", "ACME"), ("side", "sell")]
        ),
        0.0
    );
    m.book_depth("ACME", "sell", 4);
    assert_eq!(
        value(
            &m,
            "bridge_engine_book_depth",
            &[("symbol", "ACME"), ("side", "sell")]
        ),
        4.0
    );
    m.recovery(Duration::from_millis(1500), 2);
    assert_eq!(value(&m, "bridge_engine_recovery_seconds", &[]), 1.5);
    assert_eq!(value(&m, "bridge_engine_recovered_orders", &[]), 2.0);
    let text = m.encode();
    assert!(text.contains("# TYPE bridge_engine_stage_seconds histogram"));
    assert!(text.contains("process_cpu_seconds_total"));
}
