//! The shared vector, the overlay of the documents on the file's limits, the kill switch and
//! the signer check.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::documents::{self, Trading};
use super::in_force::{Applied, InForce};
use super::signer;
use super::state::{Positions, TradingState};
use crate::book::Side;
use crate::fixed;
use crate::limits::{Limits, SymbolLimits};
use crate::proto::v1::{self as pb, RejectReason};

const VECTOR: &str = include_str!("../../../schemas/testdata/config_documents.json");

/// Every case of the shared vector gives exactly its (field, rule) pairs.
#[test]
fn shared_vector() {
    let vector: Value = serde_json::from_str(VECTOR).unwrap();
    let cases = vector["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let key = case["document"].as_str().unwrap();
        let body = match case.get("raw") {
            Some(raw) => raw.as_str().unwrap().as_bytes().to_vec(),
            None => serde_json::to_vec(&case["body"]).unwrap(),
        };
        let mut want: Vec<(String, String)> = case["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["field"].as_str().unwrap().to_string(),
                    e["rule"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        want.sort();
        let got: Vec<(String, String)> = match documents::parse(key, &body) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| (e.field, e.rule)).collect(),
        };
        assert_eq!(got, want, "case {case}");
    }
}

fn file() -> Limits {
    let symbol = |qty: i64, price: i64| SymbolLimits {
        max_order_qty: fixed::units(qty),
        reference_price: fixed::units(price),
        seed: Vec::new(),
    };
    Limits {
        symbols: BTreeMap::from([
            ("AAPL".to_string(), symbol(100, 190)),
            ("MSFT".to_string(), symbol(50, 400)),
        ]),
        max_notional: fixed::units(1_000_000),
    }
}

fn put(f: &mut InForce, key: &str, revision: u64, body: &Value) -> Vec<String> {
    let (value, doc) = f.check(key, body.to_string().as_bytes()).unwrap();
    let applied = Applied {
        revision,
        value,
        doc,
        signer: "op".into(),
    };
    f.install(key, Some(applied)).diff
}

/// Risk overrides the file's values it names; symbols removes the ones left out; a delete
/// puts the file's values back; the diff names each changed leaf.
#[test]
fn documents_overlay_the_file() {
    let mut f = InForce::new(file());
    let diff = put(
        &mut f,
        "risk",
        3,
        &json!({"version": 1, "symbols": {"AAPL": {"max_order_qty": "5"}}}),
    );
    assert_eq!(f.limits.symbols["AAPL"].max_order_qty, fixed::units(5));
    assert_eq!(f.limits.symbols["AAPL"].reference_price, fixed::units(190));
    assert_eq!(f.limits.symbols["MSFT"], file().symbols["MSFT"]);
    assert!(
        diff.contains(&"symbols.AAPL.max_order_qty: - -> \"5\"".to_string()),
        "{diff:?}"
    );
    let diff = put(
        &mut f,
        "risk",
        4,
        &json!({"version": 1, "max_order_notional": "10", "symbols": {"AAPL": {"max_order_qty": "7"}}}),
    );
    assert_eq!(
        diff,
        vec![
            "max_order_notional: - -> \"10\"",
            "symbols.AAPL.max_order_qty: \"5\" -> \"7\""
        ]
    );
    assert_eq!(f.limits.max_notional, fixed::units(10));
    put(
        &mut f,
        "symbols",
        5,
        &json!({"version": 1, "enabled": ["MSFT"]}),
    );
    assert!(!f.limits.symbols.contains_key("AAPL"));
    f.install("risk", None);
    assert_eq!(f.limits.max_notional, file().max_notional);
    f.install("symbols", None);
    assert_eq!(f.limits, file());
}

/// A symbol the engine has no book for is refused with its path.
#[test]
fn unknown_symbols_are_refused() {
    let f = InForce::new(file());
    let pairs = |key: &str, body: Value| -> Vec<(String, String)> {
        f.check(key, body.to_string().as_bytes())
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.rule))
            .collect()
    };
    assert_eq!(
        pairs(
            "risk",
            json!({"version": 1, "symbols": {"TSLA": {"max_order_qty": "1"}}})
        ),
        vec![("symbols.TSLA".to_string(), "known_symbol".to_string())]
    );
    assert_eq!(
        pairs(
            "symbols",
            json!({"version": 1, "enabled": ["AAPL", "TSLA"]})
        ),
        vec![("enabled.1".to_string(), "known_symbol".to_string())]
    );
    assert_eq!(
        pairs(
            "trading_state",
            json!({"version": 1, "state": "ACTIVE", "symbols": {"X": "HALTED"}})
        ),
        vec![("symbols.X".to_string(), "known_symbol".to_string())]
    );
}

fn order(symbol: &str) -> pb::NewOrder {
    pb::NewOrder {
        symbol: symbol.into(),
        account: "ACC1".into(),
        ..Default::default()
    }
}

/// HALTED refuses, a symbol's own entry overrides the venue's, REDUCE_ONLY takes only what
/// reduces the position (counting resting orders).
#[test]
fn kill_switch() {
    let t = TradingState {
        venue: Trading::Halted,
        reason: "test".into(),
        symbols: BTreeMap::from([("MSFT".to_string(), Trading::ReduceOnly)]),
        accounts: BTreeMap::new(),
    };
    let u = fixed::units;
    let err = t
        .admit(&order("AAPL"), Side::Buy, u(1), 0, || 0)
        .unwrap_err();
    assert_eq!(err.reason, RejectReason::TradingHalted);
    assert!(!TradingState::default().restricts("ACC1", "AAPL"));
    let msft = order("MSFT");
    let reduce = |side, qty, position, resting| {
        t.admit(&msft, side, u(qty), u(position), || u(resting))
            .map_err(|r| r.reason)
    };
    assert_eq!(reduce(Side::Sell, 5, 10, 0), Ok(()));
    assert_eq!(reduce(Side::Sell, 5, 10, 6), Err(RejectReason::ReduceOnly));
    assert_eq!(reduce(Side::Sell, 11, 10, 0), Err(RejectReason::ReduceOnly));
    assert_eq!(reduce(Side::Buy, 1, 10, 0), Err(RejectReason::ReduceOnly));
    assert_eq!(reduce(Side::Buy, 3, -3, 0), Ok(()));
    assert_eq!(reduce(Side::Sell, 1, 0, 0), Err(RejectReason::ReduceOnly));
}

/// The per-account switch: a HALTED account is refused everywhere (field account), other
/// accounts trade; the strictest of the account's and the symbol's state wins; a REDUCE_ONLY
/// account takes only reducing orders, even where the symbol is ACTIVE.
#[test]
fn per_account_kill_switch() {
    let doc = |v: serde_json::Value| match documents::parse(
        crate::contract::CONFIG_TRADING_STATE_KEY,
        v.to_string().as_bytes(),
    ) {
        Ok((_, documents::Document::TradingState(t))) => TradingState::from_doc(&t),
        other => panic!("{other:?}"),
    };
    let t = doc(json!({
        "version": 1,
        "state": "ACTIVE",
        "symbols": {"MSFT": "REDUCE_ONLY", "IBM": "HALTED"},
        "accounts": {"ACC1": "HALTED", "ACC2": "REDUCE_ONLY", "ACC3": "ACTIVE"}
    }));
    let u = fixed::units;
    let of = |account: &str, symbol: &str| pb::NewOrder {
        account: account.into(),
        symbol: symbol.into(),
        ..Default::default()
    };
    let verdict = |account: &str, symbol: &str, side, qty, position| {
        t.admit(&of(account, symbol), side, u(qty), u(position), || 0)
            .map_err(|r| (r.reason, r.errors[0].field.clone()))
    };
    assert!(t.restricts("ACC1", "AAPL"));
    assert!(!t.restricts("ACC3", "AAPL"));
    assert!(!t.restricts("OTHER", "AAPL"));
    let halted = verdict("ACC1", "AAPL", Side::Buy, 1, 0).unwrap_err();
    assert_eq!(halted, (RejectReason::TradingHalted, "account".to_string()));
    let text = t
        .admit(&of("ACC1", "AAPL"), Side::Buy, u(1), 0, || 0)
        .unwrap_err()
        .text();
    assert!(text.contains("account \"ACC1\" is HALTED"), "{text}");
    // Even a reducing order of a HALTED account in a REDUCE_ONLY symbol: HALTED wins.
    assert_eq!(
        verdict("ACC1", "MSFT", Side::Sell, 1, 5).unwrap_err().0,
        RejectReason::TradingHalted
    );
    // A HALTED symbol stays HALTED for an ACTIVE account (the symbol's text).
    assert_eq!(
        verdict("ACC3", "IBM", Side::Buy, 1, 0).unwrap_err(),
        (RejectReason::TradingHalted, "symbol".to_string())
    );
    // A REDUCE_ONLY account: reducing orders only, wherever.
    assert_eq!(verdict("ACC2", "AAPL", Side::Sell, 3, 5), Ok(()));
    assert_eq!(
        verdict("ACC2", "AAPL", Side::Buy, 1, 5).unwrap_err().0,
        RejectReason::ReduceOnly
    );
    assert_eq!(verdict("OTHER", "AAPL", Side::Buy, 1, 0), Ok(()));
    assert_eq!(verdict("ACC3", "AAPL", Side::Buy, 1, 0), Ok(()));
}

#[test]
fn positions_add_fills() {
    let mut p = Positions::default();
    p.fill("A", "AAPL", Side::Buy, 10);
    p.fill("A", "AAPL", Side::Sell, 4);
    assert_eq!(p.of("A", "AAPL"), 6);
    assert_eq!(p.of("A", "MSFT"), 0);
}

/// Unsigned: taken without entitlements, refused with them; a bad signature always refused.
#[test]
fn signer_check() {
    let key = nkeys::KeyPair::new_user();
    let subject = "$KV.bridge_config.risk";
    let payload = b"{}";
    assert_eq!(
        signer::check(subject, payload, None, None).unwrap(),
        signer::UNSIGNED
    );
    let ents = crate::auth::Entitlements::default();
    assert_eq!(
        signer::check(subject, payload, None, Some(&ents))
            .unwrap_err()
            .rule,
        "unsigned"
    );
    let at = 1_700_000_000_000_000_000i64;
    let sig = key
        .sign(&crate::auth::signature::signed_bytes(subject, at, payload))
        .unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert(crate::contract::HEADER_SIGNER, key.public_key().as_str());
    h.insert(crate::contract::HEADER_SIGNED_AT, at.to_string().as_str());
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig);
    h.insert(crate::contract::HEADER_SIGNATURE, b64.as_str());
    assert_eq!(
        signer::check(subject, payload, Some(&h), None).unwrap(),
        key.public_key()
    );
    assert_eq!(
        signer::check(subject, b"{ }", Some(&h), None)
            .unwrap_err()
            .rule,
        "signature"
    );
    // Not an identity of the file.
    assert_eq!(
        signer::check(subject, payload, Some(&h), Some(&ents))
            .unwrap_err()
            .rule,
        "signer_role"
    );
}
