//! The session rules, with time passed in: no test sleeps.

use std::time::{Duration, Instant};

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn record(id: &str, grace_ms: u32, cancel_on_disconnect: bool) -> SessionRecord {
    SessionRecord {
        session_id: id.into(),
        grace_ms,
        cancel_on_disconnect,
        signer: "UALICE".into(),
        ..Default::default()
    }
}

const BOUNDS: GraceBounds = GraceBounds {
    default_ms: 5000,
    min_ms: 250,
    max_ms: 300_000,
};

#[test]
fn grace_in_force_is_the_default_or_the_request_clamped_to_the_bounds() {
    assert_eq!(BOUNDS.in_force(0), 5000);
    assert_eq!(BOUNDS.in_force(1500), 1500);
    assert_eq!(BOUNDS.in_force(1), 250);
    assert_eq!(BOUNDS.in_force(u32::MAX), 300_000);
    // Bounds configured upside down: the minimum wins.
    let odd = GraceBounds {
        default_ms: 10,
        min_ms: 500,
        max_ms: 100,
    };
    assert_eq!(odd.in_force(0), 500);
    assert_eq!(heartbeat_ms(2000), 500);
    assert_eq!(heartbeat_ms(2), 1);
}

#[test]
fn the_contract_pattern_is_the_one_checked() {
    assert_eq!(crate::contract::SESSION_ID_PATTERN, "^[A-Za-z0-9_-]{1,64}$");
    assert!(valid_session_id("algo-1_A"));
    assert!(valid_session_id(&"a".repeat(MAX_SESSION_ID_BYTES)));
    assert!(!valid_session_id(&"a".repeat(MAX_SESSION_ID_BYTES + 1)));
    assert!(!valid_session_id(""));
    assert!(!valid_session_id("a.b"));
    assert!(!valid_session_id("a*"));
}

#[test]
fn an_open_session_is_lost_one_grace_after_it_was_last_seen() {
    let t0 = Instant::now();
    let mut s = Sessions::default();
    assert_eq!(s.apply(record("a", 1000, true), 1, t0), Applied::Opened);
    assert_eq!(s.next_deadline(), Some(t0 + ms(1000)));
    assert!(s.due(t0 + ms(999)).is_empty());
    // Heartbeats move the deadline.
    assert!(s.heartbeat("a", t0 + ms(900)));
    assert_eq!(s.next_deadline(), Some(t0 + ms(1900)));
    assert!(s.due(t0 + ms(1899)).is_empty());
    assert_eq!(s.due(t0 + ms(1900)), vec!["a".to_string()]);
    // A heartbeat delivered late (older than the last one) never moves it back.
    assert!(s.heartbeat("a", t0 + ms(100)));
    assert_eq!(s.next_deadline(), Some(t0 + ms(1900)));
}

#[test]
fn losing_ends_the_session_here_once_and_says_what_to_write() {
    let t0 = Instant::now();
    let mut s = Sessions::default();
    s.apply(record("a", 1000, true), 7, t0);
    s.apply(record("b", 3000, false), 8, t0);
    assert_eq!(s.due(t0 + ms(1000)), vec!["a".to_string()]);
    let lost = s.lose("a", 42, "engine-1").expect("open");
    assert!(lost.closed && lost.lost && lost.cancel_orders);
    assert_eq!(
        (lost.ended_at_unix_ns, lost.engine_id.as_str()),
        (42, "engine-1")
    );
    assert_eq!(
        s.get("a").map(|x| (x.state(), x.revision)),
        Some((State::Lost, 7))
    );
    // It fires once: no longer due, no second loss, heartbeats no longer count.
    assert!(s.due(t0 + ms(2000)).is_empty());
    assert_eq!(s.lose("a", 43, "engine-1"), None);
    assert!(!s.heartbeat("a", t0 + ms(1500)));
    assert_eq!(s.next_deadline(), Some(t0 + ms(3000)));
    // Without cancel on disconnect the loss is only tracked: its orders are kept.
    let b = s.lose("b", 44, "engine-1").expect("open");
    assert!(b.lost && !b.cancel_orders);
    assert_eq!(s.open_count(), 0);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn own_writes_and_stale_revisions_are_not_applied_twice() {
    let t0 = Instant::now();
    let mut s = Sessions::default();
    s.apply(record("a", 1000, true), 5, t0);
    let lost = s.lose("a", 1, "engine-1").expect("open");
    s.stored("a", 9);
    // The watch delivers our own write, then an old revision: nothing to do.
    assert_eq!(s.apply(lost.clone(), 9, t0), Applied::Unchanged);
    assert_eq!(s.apply(record("a", 1000, true), 5, t0), Applied::Unchanged);
    // Another engine declared it lost first (a newer revision): canceling again is harmless.
    assert_eq!(
        s.apply(lost, 10, t0),
        Applied::Ended {
            state: State::Lost,
            cancel: true,
            was_open: false
        }
    );
}

#[test]
fn another_engine_ending_it_cancels_here_unless_orders_are_kept() {
    let t0 = Instant::now();
    let mut s = Sessions::default();
    s.apply(record("a", 1000, true), 1, t0);
    let mut closed = record("a", 1000, true);
    closed.closed = true;
    assert_eq!(
        s.apply(closed.clone(), 2, t0),
        Applied::Ended {
            state: State::Closed,
            cancel: false,
            was_open: true
        }
    );
    assert_eq!(s.next_deadline(), None);
    // Closed again, now with cancel_orders: cancel.
    closed.cancel_orders = true;
    assert_eq!(
        s.apply(closed.clone(), 3, t0),
        Applied::Ended {
            state: State::Closed,
            cancel: true,
            was_open: false
        }
    );
    // An ended record seen for the first time (an engine starting): cancel if it says so.
    let mut fresh = Sessions::default();
    assert_eq!(
        fresh.apply(closed, 3, t0),
        Applied::Ended {
            state: State::Closed,
            cancel: true,
            was_open: false
        }
    );
}

#[test]
fn reopening_renews_the_grace_and_a_lost_session_comes_back() {
    let t0 = Instant::now();
    let mut s = Sessions::default();
    s.apply(record("a", 1000, true), 1, t0);
    assert_eq!(
        s.apply(record("a", 2000, true), 2, t0 + ms(800)),
        Applied::Opened
    );
    assert_eq!(s.next_deadline(), Some(t0 + ms(2800)));
    s.lose("a", 1, "engine-1");
    assert!(!s.is_open("a"));
    assert_eq!(
        s.apply(record("a", 2000, true), 4, t0 + ms(5000)),
        Applied::Opened
    );
    assert!(s.is_open("a"));
    assert_eq!(s.next_deadline(), Some(t0 + ms(7000)));
}

#[test]
fn an_engine_that_could_not_see_restarts_every_grace() {
    let t0 = Instant::now();
    let mut s = Sessions::default();
    s.apply(record("a", 1000, true), 1, t0);
    s.apply(record("b", 3000, true), 2, t0 + ms(500));
    // Disconnected from t0 + 100 to t0 + 4000: nobody is lost for what the engine missed.
    s.blind_until(t0 + ms(4000));
    assert!(s.due(t0 + ms(4999)).is_empty());
    assert_eq!(s.due(t0 + ms(5000)), vec!["a".to_string()]);
    assert_eq!(s.next_deadline(), Some(t0 + ms(5000)));
    assert_eq!(s.get("b").and_then(Session::deadline), Some(t0 + ms(7000)));
}

#[test]
fn a_forgotten_session_is_neither_timed_nor_open() {
    let t0 = Instant::now();
    let mut s = Sessions::default();
    s.apply(record("a", 1000, true), 1, t0);
    assert!(s.forget("a").is_some());
    assert_eq!(s.next_deadline(), None);
    assert!(!s.heartbeat("a", t0));
    assert!(s.check_order("a", "UALICE").is_err());
}

#[test]
fn orders_may_name_only_an_open_session_of_their_signer() {
    let t0 = Instant::now();
    let mut s = Sessions::default();
    assert_eq!(s.check_order("", "UALICE"), Ok(()));
    let rule = |r: Result<(), Rejection>| {
        let r = r.expect_err("refused");
        assert_eq!(r.reason, RejectReason::InvalidField);
        assert_eq!(r.errors[0].field, "session_id");
        (r.errors[0].rule.clone(), r.errors[0].message.clone())
    };
    assert_eq!(rule(s.check_order("a", "UALICE")).0, RULE_OPEN_SESSION);
    s.apply(record("a", 1000, true), 1, t0);
    assert_eq!(s.check_order("a", "UALICE"), Ok(()));
    // Signatures not checked (no signer): any order may name it.
    assert_eq!(s.check_order("a", ""), Ok(()));
    assert_eq!(rule(s.check_order("a", "UBOB")).0, RULE_SESSION_OWNER);
    s.lose("a", 1, "engine-1");
    let (r, why) = rule(s.check_order("a", "UALICE"));
    assert_eq!(r, RULE_OPEN_SESSION);
    assert!(why.contains("lost"), "{why}");
    let mut closed = record("a", 1000, true);
    closed.closed = true;
    s.apply(closed, 5, t0);
    let (r, why) = rule(s.check_order("a", "UALICE"));
    assert_eq!(r, RULE_OPEN_SESSION);
    assert!(why.contains("closed"), "{why}");
}

#[test]
fn the_grace_knobs_must_describe_usable_bounds() {
    let mut cfg = crate::config::Config::default();
    assert_eq!(
        cfg.session_grace().expect("defaults are valid"),
        GraceBounds {
            default_ms: 5000,
            min_ms: 250,
            max_ms: 300_000
        }
    );
    cfg.session_min_grace_ms = 0;
    assert!(cfg.session_grace().is_err());
    cfg.session_min_grace_ms = 400_000;
    assert!(cfg.session_grace().is_err());
    cfg.session_min_grace_ms = 250;
    cfg.session_default_grace_ms = 100;
    assert!(cfg.session_grace().is_err());
    cfg.session_default_grace_ms = 5000;
    cfg.session_max_grace_ms = u64::from(u32::MAX) + 1;
    assert!(cfg.session_grace().is_err());
}

#[test]
fn the_validator_checks_an_orders_session_id_pattern() {
    use crate::fixed;
    use crate::limits::SymbolLimits;
    use crate::proto::v1 as pb;
    use crate::validate::Validator;

    let mut symbols = std::collections::BTreeMap::new();
    symbols.insert(
        "AAPL".to_string(),
        SymbolLimits {
            max_order_qty: fixed::units(1000),
            reference_price: fixed::units(100),
            seed: vec![],
        },
    );
    let v = Validator {
        symbols: &symbols,
        max_notional: fixed::units(1_000_000),
    };
    let order = |session_id: &str| pb::NewOrder {
        client_order_id: "c1".into(),
        account: "ACC".into(),
        symbol: "AAPL".into(),
        side: pb::Side::Buy as i32,
        order_type: pb::OrderType::Limit as i32,
        quantity: Some(fixed::to_decimal(fixed::units(1))),
        limit_price: Some(fixed::to_decimal(fixed::units(100))),
        time_in_force: pb::TimeInForce::Gtc as i32,
        session_id: session_id.into(),
        ..Default::default()
    };
    assert!(v.check(&order(""), 0).is_ok());
    assert!(v.check(&order("algo-1"), 0).is_ok());
    for bad in ["a.b", "a b", &"x".repeat(MAX_SESSION_ID_BYTES + 1)] {
        let r = v.check(&order(bad), 0).expect_err("refused");
        let rules: Vec<_> = r
            .errors
            .iter()
            .map(|e| (e.field.as_str(), e.rule.as_str()))
            .collect();
        assert_eq!(rules, [("session_id", "pattern")], "{bad}");
    }
}
