//! The version rule, case by case: absent = 1.0, any minor of the engine's major, another
//! major and an unparsable header refused with their field error; bounded metric labels.

use super::*;

const SPEAKS: Version = Version { major: 1, minor: 1 };

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

#[test]
fn parses_major_dot_minor_only() {
    assert_eq!(parse("1.1"), Some(v(1, 1)));
    assert_eq!(parse("1.0"), Some(v(1, 0)));
    assert_eq!(parse("2.17"), Some(v(2, 17)));
    assert_eq!(parse("01.007"), Some(v(1, 7)));
    for bad in [
        "",
        "1",
        "1.",
        ".1",
        "1.1.0",
        " 1.1",
        "1.1 ",
        "v1.1",
        "1,1",
        "+1.1",
        "-1.1",
        "1.x",
        "1.١",
        "9999999999.0",
        "1.0000000000",
    ] {
        assert_eq!(parse(bad), None, "{bad:?}");
    }
}

#[test]
fn the_engine_speaks_the_contract_version() {
    assert_eq!(ours().to_string(), crate::contract::CONTRACT_VERSION);
}

#[test]
fn absent_is_one_dot_zero() {
    let c = check(None, SPEAKS);
    assert_eq!(
        c,
        Checked::Accepted {
            version: UNDECLARED,
            declared: false
        }
    );
    assert_eq!(UNDECLARED, v(1, 0));
    assert!(c.rejection().is_none());
    assert_eq!(c.label(SPEAKS), "1.0");
    assert_eq!(c.span_value(), "1.0");
}

#[test]
fn every_minor_of_the_major_is_accepted_a_newer_one_too() {
    for (header, label) in [("1.0", "1.0"), ("1.1", "1.1"), ("1.7", "1.newer")] {
        let c = check(Some(header), SPEAKS);
        assert!(
            matches!(c, Checked::Accepted { declared: true, .. }),
            "{header}"
        );
        assert!(c.rejection().is_none(), "{header}");
        assert_eq!(c.label(SPEAKS), label);
        assert_eq!(c.span_value(), header);
    }
}

#[test]
fn another_major_is_refused_naming_both_versions() {
    for header in ["2.0", "0.9", "3.1"] {
        let c = check(Some(header), SPEAKS);
        let r = c.rejection().expect("refused");
        assert_eq!(r.reason, RejectReason::UnsupportedVersion);
        assert_eq!(r.errors.len(), 1);
        let e = &r.errors[0];
        assert_eq!(e.field, contract::HEADER_SCHEMA_VERSION);
        assert_eq!(e.rule, "supported_major");
        assert!(e.message.contains(header), "{}", e.message);
        assert!(e.message.contains("contract 1.1"), "{}", e.message);
        assert_eq!(c.label(SPEAKS), "unsupported");
        assert_eq!(c.span_value(), header);
    }
}

#[test]
fn an_unparsable_header_is_refused_as_format() {
    let c = check(Some("v2"), SPEAKS);
    let r = c.rejection().expect("refused");
    assert_eq!(r.reason, RejectReason::UnsupportedVersion);
    let e = &r.errors[0];
    assert_eq!(
        (e.field.as_str(), e.rule.as_str()),
        (contract::HEADER_SCHEMA_VERSION, "format")
    );
    assert!(e.message.contains("\"v2\""), "{}", e.message);
    assert!(e.message.contains("contract 1.1"), "{}", e.message);
    assert_eq!(c.label(SPEAKS), "invalid");
    assert_eq!(check(Some(""), SPEAKS).label(SPEAKS), "invalid");
    // A long header is cut in the span and echoed bounded in the message.
    let long = "x".repeat(500);
    let c = check(Some(&long), SPEAKS);
    assert_eq!(c.span_value().len(), 16);
    assert!(c.rejection().unwrap().errors[0].message.len() < 300);
}

#[test]
fn labels_are_bounded_and_cover_every_outcome() {
    let all = labels(SPEAKS);
    assert_eq!(all, ["1.0", "1.1", "1.newer", "unsupported", "invalid"]);
    for header in [
        None,
        Some("1.0"),
        Some("1.1"),
        Some("1.9"),
        Some("1.123456"),
        Some("2.0"),
        Some("junk"),
    ] {
        let label = check(header, SPEAKS).label(SPEAKS);
        assert!(all.contains(&label), "{header:?} -> {label}");
    }
}

#[test]
fn the_refusal_text_joins_the_field_errors() {
    let t = check(Some("2.0"), SPEAKS).rejection().unwrap().text();
    assert!(t.starts_with("Bridge-Schema-Version: "), "{t}");
    assert!(t.ends_with("[supported_major]"), "{t}");
}

#[test]
fn the_metric_registry_declares_exactly_these_labels() {
    let doc: toml::Table = include_str!("../../../schemas/metrics.toml")
        .parse()
        .expect("metrics.toml parses");
    let declared: Vec<&str> = doc["labels"]["schema_version"]
        .as_array()
        .expect("[labels] schema_version")
        .iter()
        .map(|v| v.as_str().expect("a label value"))
        .collect();
    assert_eq!(declared, labels(ours()));
}
