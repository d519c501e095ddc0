use crate::contract;
use async_nats::HeaderMap;

use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, *v);
    }
    h
}

#[test]
fn the_specs_example_parses_and_is_sent_on_unchanged() {
    let p = parse(EXAMPLE).expect("valid");
    assert_eq!((p.trace_id, p.parent_id, p.flags), (TRACE, PARENT, "01"));
    assert_eq!(p.header(), EXAMPLE);
}

#[test]
fn invalid_values_restart_the_trace() {
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
    ] {
        assert_eq!(parse(bad), None, "{bad:?}");
    }
}

#[test]
fn a_higher_version_is_read_by_its_first_55_characters() {
    let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
    let p = parse(later).expect("a higher version joins the trace");
    assert_eq!(p.trace_id, TRACE);
    assert_eq!(
        p.header(),
        EXAMPLE,
        "sent on as version 00, unknown fields dropped"
    );
    assert!(parse(&later[..55]).is_some());
}

#[test]
fn a_valid_traceparent_names_the_trace_and_a_correlation_id_stays_the_join_key() {
    let h = headers(&[
        (contract::HEADER_TRACEPARENT, EXAMPLE),
        (contract::HEADER_CORRELATION_ID, "batch-7"),
    ]);
    let t = Trace::of(Some(&h));
    assert_eq!(t.correlation_id, "batch-7");
    assert_eq!(t.trace_id, TRACE);
    assert_eq!(t.traceparent, EXAMPLE);
}

#[test]
fn without_a_correlation_id_the_trace_id_is_the_correlation_id() {
    let t = Trace::of(Some(&headers(&[(contract::HEADER_TRACEPARENT, EXAMPLE)])));
    assert_eq!(t.correlation_id, TRACE);
    assert_eq!(t.trace_id, TRACE);
}

#[test]
fn without_a_valid_traceparent_a_hex_correlation_id_is_the_trace_id() {
    let h = headers(&[
        (contract::HEADER_TRACEPARENT, "garbage"),
        (contract::HEADER_CORRELATION_ID, TRACE),
    ]);
    let t = Trace::of(Some(&h));
    assert_eq!(
        (t.correlation_id.as_str(), t.trace_id.as_str()),
        (TRACE, TRACE)
    );
    let p = parse(&t.traceparent).expect("a fresh, valid traceparent");
    assert_eq!(p.trace_id, TRACE);
    assert_ne!(p.parent_id, PARENT);
    assert_eq!(Trace::recovered(TRACE).trace_id, TRACE);
}

#[test]
fn otherwise_a_fresh_trace_is_started() {
    let t = Trace::of(Some(&headers(&[(
        contract::HEADER_CORRELATION_ID,
        "not-hex",
    )])));
    assert_eq!(t.correlation_id, "not-hex");
    assert!(is_trace_id(&t.trace_id), "{}", t.trace_id);
    assert_eq!(
        parse(&t.traceparent).map(|p| p.trace_id),
        Some(t.trace_id.as_str())
    );
    let none = Trace::of(None);
    assert!(is_trace_id(&none.trace_id));
    assert_eq!(none.correlation_id, none.trace_id);
    assert_ne!(Trace::of(None).trace_id, none.trace_id);
}

#[test]
fn the_ids_ride_on_what_the_engine_sends() {
    let t = Trace::of(Some(&headers(&[(contract::HEADER_TRACEPARENT, EXAMPLE)])));
    let mut out = HeaderMap::new();
    t.insert_into(&mut out);
    assert_eq!(
        out.get(contract::HEADER_TRACEPARENT).map(|v| v.as_str()),
        Some(EXAMPLE)
    );
    assert_eq!(
        out.get(contract::HEADER_CORRELATION_ID).map(|v| v.as_str()),
        Some(TRACE)
    );
}

#[test]
fn ids_drawn_are_valid() {
    for _ in 0..64 {
        assert!(is_trace_id(&new_trace_id()));
        let span = new_span_id();
        assert!(lower_hex(&span, 16) && not_zero(&span));
    }
}
