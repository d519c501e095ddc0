//! The shared backoff vectors (`schemas/testdata/backoff.json`, checked by the Python suite
//! too): the engine's policy computes every case's base delay exactly, and its jittered delay
//! stays within [base, base + jitter].

use std::time::Duration;

use bridge_engine::retry::Policy;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    jitter_ms: u64,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    initial_delay_ms: u64,
    max_delay_ms: u64,
    failures: usize,
    base_delay_ms: u64,
}

fn vectors() -> Vectors {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/testdata/backoff.json"
    );
    let text = std::fs::read_to_string(path).expect("schemas/testdata/backoff.json");
    serde_json::from_str(&text).expect("backoff vectors parse")
}

#[test]
fn base_delays_match_the_shared_vectors() {
    let v = vectors();
    assert!(!v.cases.is_empty());
    for c in &v.cases {
        let policy = Policy {
            initial: Duration::from_millis(c.initial_delay_ms),
            max: Duration::from_millis(c.max_delay_ms),
            jitter: Duration::from_millis(v.jitter_ms),
        };
        assert_eq!(
            policy.base(c.failures),
            Duration::from_millis(c.base_delay_ms),
            "initial {} max {} failures {}",
            c.initial_delay_ms,
            c.max_delay_ms,
            c.failures
        );
    }
}

#[test]
fn jittered_delays_stay_within_base_and_base_plus_jitter() {
    let v = vectors();
    let jitter = Duration::from_millis(v.jitter_ms);
    for c in &v.cases {
        let policy = Policy {
            initial: Duration::from_millis(c.initial_delay_ms),
            max: Duration::from_millis(c.max_delay_ms),
            jitter,
        };
        let base = Duration::from_millis(c.base_delay_ms);
        for _ in 0..50 {
            let d = policy.delay(c.failures);
            assert!(d >= base && d <= base + jitter, "{d:?} for {base:?}");
        }
    }
}
