//! Tests of the input streams' credit: grants, refusals, bounds.

use super::*;
use crate::fixed::units;

fn msg(seq: u64, prices: &[(&str, i64)]) -> pb::FeedMessage {
    pb::FeedMessage {
        stream_id: "s1".into(),
        sequence: seq,
        reference_prices: prices
            .iter()
            .map(|(s, p)| pb::ReferencePrice {
                symbol: (*s).into(),
                price: Some(fixed::to_decimal(*p)),
            })
            .collect(),
        sent_unix_ns: 0,
    }
}

fn aapl(s: &str) -> bool {
    s == "AAPL"
}

fn rules(g: &pb::FeedGrant) -> Vec<(&str, &str)> {
    g.errors
        .iter()
        .map(|e| (e.field.as_str(), e.rule.as_str()))
        .collect()
}

/// Opening grants a window; every half window applied grants the next one.
#[test]
fn credit_is_granted_every_half_window() {
    let mut f = Feeds::new(4, 8);
    let g = f.open("s1");
    assert_eq!((g.granted_through, g.applied_through), (4, 0));
    assert!(g.errors.is_empty());
    let r = f.receive("s1", &msg(1, &[("AAPL", units(101))]), aapl);
    assert!(r.applied && r.grant.is_none());
    assert_eq!(r.prices, vec![("AAPL".to_string(), units(101))]);
    let g = f
        .receive("s1", &msg(2, &[]), aapl)
        .grant
        .expect("half a window");
    assert_eq!((g.granted_through, g.applied_through), (6, 2));
    assert!(f.receive("s1", &msg(3, &[]), aapl).grant.is_none());
    let g = f.receive("s1", &msg(4, &[]), aapl).grant.unwrap();
    assert_eq!(g.granted_through, 8);
}

/// Beyond credit, out of order, or on a stream not open: refused whole, with the error and
/// the stream's state; nothing applied.
#[test]
fn refusals_carry_the_rule() {
    let mut f = Feeds::new(2, 8);
    let r = f.receive("s1", &msg(1, &[("AAPL", 1)]), aapl);
    assert!(!r.applied && r.prices.is_empty());
    assert_eq!(
        rules(r.grant.as_ref().unwrap()),
        vec![("stream_id", "open")]
    );
    f.open("s1");
    let r = f.receive("s1", &msg(2, &[]), aapl);
    assert_eq!(
        rules(r.grant.as_ref().unwrap()),
        vec![("sequence", "in_order")]
    );
    let r = f.receive("s1", &msg(3, &[]), aapl);
    let g = r.grant.unwrap();
    assert_eq!(rules(&g), vec![("sequence", "credit")]);
    assert_eq!((g.granted_through, g.applied_through), (2, 0));
    assert!(f.receive("s1", &msg(1, &[]), aapl).applied);
    let r = f.receive("s1", &msg(1, &[]), aapl);
    assert!(!r.applied, "a replayed sequence is refused");
    let mut other = msg(2, &[]);
    other.stream_id = "s2".into();
    let g = f.receive("s1", &other, aapl).grant.unwrap();
    assert_eq!(rules(&g), vec![("stream_id", "matches_subject")]);
}

/// Invalid inputs of an applied message are skipped and reported at once; the others apply.
#[test]
fn bad_inputs_are_reported_others_applied() {
    let mut f = Feeds::new(100, 8);
    f.open("s1");
    let r = f.receive(
        "s1",
        &msg(1, &[("NOPE", units(1)), ("AAPL", 0), ("AAPL", units(7))]),
        aapl,
    );
    assert!(r.applied);
    assert_eq!(r.prices, vec![("AAPL".to_string(), units(7))]);
    let g = r.grant.expect("errors are answered at once");
    assert_eq!(
        rules(&g),
        vec![
            ("reference_prices[0].symbol", "known_symbol"),
            ("reference_prices[1].price", "positive")
        ]
    );
    assert_eq!(g.applied_through, 1);
}

/// Invalid ids are refused; at most max_streams are open (the idle one is forgotten); a
/// re-open restarts the stream at sequence 1.
#[test]
fn streams_are_bounded() {
    let mut f = Feeds::new(10, 2);
    assert_eq!(rules(&f.open("a.b")), vec![("stream_id", "pattern")]);
    assert_eq!(
        rules(&f.open(&"x".repeat(65))),
        vec![("stream_id", "pattern")]
    );
    f.open("s1");
    f.open("s2");
    assert!(f.receive("s1", &msg(1, &[]), aapl).applied);
    f.open("s3");
    assert_eq!(f.open_streams(), 2);
    let mut m = msg(1, &[]);
    m.stream_id = String::new();
    assert!(!f.receive("s2", &m, aapl).applied, "s2 was idle longest");
    assert!(f.receive("s1", &msg(2, &[]), aapl).applied);
    assert_eq!(f.open("s1").applied_through, 0);
    assert!(f.receive("s1", &msg(1, &[]), aapl).applied);
}
