//! Tests of validation: fields, sizes, symbols, risk and deadlines.

use super::*;

fn limits() -> BTreeMap<String, SymbolLimits> {
    let mut m = BTreeMap::new();
    m.insert(
        "AAPL".into(),
        SymbolLimits {
            max_order_qty: fixed::units(1000),
            reference_price: fixed::units(100),
            seed: vec![],
        },
    );
    m
}

fn order() -> pb::NewOrder {
    pb::NewOrder {
        client_order_id: "c1".into(),
        account: "ACC".into(),
        symbol: "AAPL".into(),
        side: pb::Side::Buy as i32,
        order_type: pb::OrderType::Limit as i32,
        quantity: Some(pb::Decimal {
            units: 10,
            scale: 0,
        }),
        limit_price: Some(pb::Decimal {
            units: 10125,
            scale: 2,
        }),
        time_in_force: pb::TimeInForce::Gtc as i32,
        ..Default::default()
    }
}

fn check(o: &pb::NewOrder) -> Result<ValidOrder, Rejection> {
    let l = limits();
    Validator {
        symbols: &l,
        max_notional: fixed::units(50_000),
    }
    .check(o, 1_000)
}

fn rules(r: &Rejection) -> Vec<(String, String)> {
    r.errors
        .iter()
        .map(|e| (e.field.clone(), e.rule.clone()))
        .collect()
}

/// A well-formed limit order passes and is converted to engine units.
#[test]
fn valid_limit_order() {
    let v = check(&order()).expect("valid");
    assert_eq!(v.qty, fixed::units(10));
    assert_eq!(v.limit, Some(10_125_000_000));
    assert_eq!(v.tif, TimeInForce::Gtc);
}

/// Every bad field is reported at once, each with its path and rule.
#[test]
fn collects_every_field_error() {
    let mut o = order();
    o.client_order_id = "bad id".into();
    o.side = 0;
    o.quantity = Some(pb::Decimal { units: 0, scale: 0 });
    o.limit_price = None;
    let r = check(&o).expect_err("invalid");
    assert_eq!(r.reason, RejectReason::InvalidField);
    assert_eq!(
        rules(&r),
        vec![
            ("client_order_id".into(), "pattern".into()),
            ("side".into(), "required".into()),
            ("quantity".into(), "positive".into()),
            ("limit_price".into(), "required_for_limit".into()),
        ]
    );
}

/// Market orders must not carry a price; too many decimals are refused.
#[test]
fn market_with_price_and_precision() {
    let mut o = order();
    o.order_type = pb::OrderType::Market as i32;
    o.quantity = Some(pb::Decimal { units: 1, scale: 9 });
    let r = check(&o).expect_err("invalid");
    assert_eq!(
        rules(&r),
        vec![
            ("quantity".into(), "decimal".into()),
            ("limit_price".into(), "forbidden_for_market".into()),
        ]
    );
}

/// Unknown symbols, max quantity, max notional and deadlines each have their own reason.
#[test]
fn symbol_risk_and_deadline() {
    let mut o = order();
    o.symbol = "ZZZ".into();
    assert_eq!(
        check(&o).expect_err("x").reason,
        RejectReason::UnknownSymbol
    );
    let mut o = order();
    o.quantity = Some(pb::Decimal {
        units: 1001,
        scale: 0,
    });
    let r = check(&o).expect_err("x");
    assert_eq!(
        (r.reason, rules(&r)),
        (
            RejectReason::RiskLimit,
            vec![("quantity".into(), "max_order_qty".into())]
        )
    );
    let mut o = order();
    o.quantity = Some(pb::Decimal {
        units: 600,
        scale: 0,
    });
    let r = check(&o).expect_err("x");
    assert_eq!(r.errors[0].rule, "max_order_notional");
    let mut o = order();
    o.deadline_unix_ns = 999;
    assert_eq!(
        check(&o).expect_err("x").reason,
        RejectReason::DeadlineExceeded
    );
    o.deadline_unix_ns = 1_000;
    assert!(check(&o).is_ok());
}

/// Error messages quote a bounded prefix of long input; truncation keeps UTF-8 whole.
#[test]
fn echo_and_truncate_are_bounded() {
    assert_eq!(echo("abc"), "\"abc\"");
    let long = "é".repeat(100_000);
    let shown = echo(&long);
    assert!(
        shown.len() < 120 && shown.ends_with("(200000 bytes)"),
        "{shown}"
    );
    assert_eq!(truncate(&long, 5), "éé");
    assert_eq!(truncate("short", 128), "short");
    assert!(message_size_error(MAX_NEW_ORDER_BYTES).is_none());
    let e = message_size_error(MAX_NEW_ORDER_BYTES + 1).expect("too big");
    assert_eq!(
        (e.field.as_str(), e.rule.as_str()),
        ("<message>", "max_bytes")
    );
}

/// Fixed-point values render without trailing zeros.
#[test]
fn show_renders_decimals() {
    assert_eq!(show(fixed::units(12)), "12");
    assert_eq!(show(1_250_000_000), "12.5");
}

proptest::proptest! {
    /// The engine's id checks accept exactly what the contract's id patterns (the ones the
    /// Python client validates with) match: ids, including reserved accounts and lengths around
    /// the limits, drawn from a charset with every kind of character that matters.
    #[test]
    fn ids_agree_with_the_contract_patterns(
        s in proptest::prop_oneof!["[A-Za-z0-9_-]{0,70}", "[A-Za-z0-9_.*> é-]{0,70}"]
    ) {
        let order_id = regex::Regex::new(crate::contract::CLIENT_ORDER_ID_PATTERN).unwrap();
        let account = regex::Regex::new(crate::contract::ACCOUNT_PATTERN).unwrap();
        proptest::prop_assert_eq!(
            valid_id(&s, MAX_CLIENT_ORDER_ID_BYTES),
            order_id.is_match(&s)
        );
        let engine_accepts_account =
            valid_id(&s, MAX_ACCOUNT_BYTES) && !s.starts_with(RESERVED_ACCOUNT_PREFIX);
        proptest::prop_assert_eq!(engine_accepts_account, account.is_match(&s));
    }
}
