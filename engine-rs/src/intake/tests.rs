//! Tests of intake: bounds on every record, ack and report, refusals and tombstones.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use prost::Message as _;

use super::*;
use crate::book::Side;
use crate::fixed::units;
use crate::limits::SymbolLimits;
use crate::proto::v1::{AckStatus, ExecType};
use crate::validate::{MAX_NEW_ORDER_BYTES, MAX_TAGS, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES};

/// nats-server's max_payload in nats/server.conf (1MB = 1 MiB).
const SERVER_MAX_PAYLOAD: usize = 1024 * 1024;

fn symbols() -> BTreeMap<String, SymbolLimits> {
    BTreeMap::from([(
        "AAPL".to_string(),
        SymbolLimits {
            max_order_qty: units(1_000_000),
            reference_price: units(100),
            seed: vec![
                (Side::Sell, units(101), units(10), 3),
                (Side::Buy, units(99), units(10), 3),
            ],
        },
    )])
}

fn with_ctx<T>(f: impl FnOnce(&Context<'_>) -> T) -> T {
    let limits = symbols();
    let validator = Validator {
        symbols: &limits,
        max_notional: units(1_000_000_000),
    };
    f(&Context {
        validator: &validator,
        engine_id: "engine-1",
        now: 1_700_000_000_000_000_000,
        signer: "",
    })
}

fn valid_order(id: &str) -> pb::NewOrder {
    pb::NewOrder {
        client_order_id: id.into(),
        account: "ACC1".into(),
        symbol: "AAPL".into(),
        side: pb::Side::Buy as i32,
        order_type: pb::OrderType::Market as i32,
        quantity: Some(pb::Decimal { units: 5, scale: 0 }),
        time_in_force: pb::TimeInForce::Ioc as i32,
        ..Default::default()
    }
}

/// Every record, ack and report a prepared order leads to, executed when accepted.
fn outputs(
    p: Prepared,
    ctx: &Context<'_>,
) -> (
    Vec<OrderRecord>,
    Vec<pb::ExecutionReport>,
    Vec<pb::OrderAck>,
) {
    let mut records = Vec::new();
    let mut reports = Vec::new();
    let mut acks = Vec::new();
    match p {
        Prepared::Unkeyed(ack) => acks.push(ack),
        Prepared::Rejected(t) => {
            acks.push(t.order.record.ack.clone().unwrap_or_default());
            records.push(t.order.record.clone());
            reports.extend(t.reports);
        }
        Prepared::Accepted(live, valid) => {
            acks.push(live.record.ack.clone().unwrap_or_default());
            records.push(live.record.clone());
            let (ack, refused) = refused(&live, &"e".repeat(5000), ctx.engine_id, ctx.now).unwrap();
            acks.push(ack);
            reports.extend(refused);
            let mut venue = Venue::new(&symbols());
            for t in venue.execute(*live, &valid, ctx.now).unwrap().into_all() {
                records.push(t.order.record);
                reports.extend(t.reports);
            }
        }
    }
    (records, reports, acks)
}

fn assert_bounded(p: Prepared, ctx: &Context<'_>) {
    let (records, reports, acks) = outputs(p, ctx);
    for r in &records {
        assert!(
            r.encoded_len() <= RECORD_BOUND,
            "record of {} bytes",
            r.encoded_len()
        );
    }
    for r in &reports {
        assert!(
            r.encoded_len() <= RECORD_BOUND,
            "report of {} bytes",
            r.encoded_len()
        );
    }
    for a in &acks {
        assert!(
            a.encoded_len() <= RECORD_BOUND,
            "ack of {} bytes",
            a.encoded_len()
        );
    }
}

/// The order of issue 9: a well-formed NewOrder with 25,000 tags (~700 KB) on either path is
/// rejected naming the whole message and the tags with their limits, and its stored record
/// and REJECTED report are a few hundred bytes, without the tags.
#[test]
fn oversized_tags_order_is_rejected_with_a_small_record() {
    let mut order = valid_order("huge-tags");
    order.tags = (0..25_000)
        .map(|i| {
            (
                format!("key-{i:06}"),
                format!("value-{i:06}-{}", "x".repeat(10)),
            )
        })
        .collect::<HashMap<_, _>>();
    let len = order.encoded_len();
    assert!(len > 600_000 && len < SERVER_MAX_PAYLOAD, "{len}");
    with_ctx(|ctx| {
        let p = prepare(ctx, order, None, len, 7, "correlation-id").unwrap();
        let Prepared::Rejected(t) = &p else {
            panic!("not rejected")
        };
        let ack = t.order.record.ack.as_ref().unwrap();
        assert_eq!(ack.reason, RejectReason::InvalidField as i32);
        let rules: Vec<(&str, &str)> = ack
            .field_errors
            .iter()
            .map(|e| (e.field.as_str(), e.rule.as_str()))
            .collect();
        assert_eq!(
            rules,
            vec![("<message>", "max_bytes"), ("tags", "max_items")]
        );
        assert!(ack.field_errors[1].message.contains(&MAX_TAGS.to_string()));
        assert!(ack.field_errors[0]
            .message
            .contains(&MAX_NEW_ORDER_BYTES.to_string()));
        assert!(
            t.order.order().tags.is_empty(),
            "rejected tags are not stored"
        );
        assert!(t.reports[0].tags.is_empty());
        assert!(
            t.order.record.encoded_len() < 2048,
            "{}",
            t.order.record.encoded_len()
        );
        assert_bounded(p, ctx);
    });
}

/// Tag keys and values over their limits are one error each, naming how many and one example.
#[test]
fn long_tag_keys_and_values_are_one_error_per_rule() {
    let mut order = valid_order("long-tags");
    order
        .tags
        .insert("k".repeat(MAX_TAG_KEY_BYTES + 1), "v".into());
    order
        .tags
        .insert("k2".into(), "v".repeat(MAX_TAG_VALUE_BYTES + 1));
    order
        .tags
        .insert("k3".into(), "é".repeat(MAX_TAG_VALUE_BYTES)); // 2 bytes each
    order
        .tags
        .insert("ok".into(), "v".repeat(MAX_TAG_VALUE_BYTES));
    let len = order.encoded_len();
    with_ctx(|ctx| {
        let Prepared::Rejected(t) = prepare(ctx, order, None, len, 1, "").unwrap() else {
            panic!("not rejected")
        };
        let errors = &t.order.record.ack.as_ref().unwrap().field_errors;
        let rules: Vec<&str> = errors.iter().map(|e| e.rule.as_str()).collect();
        assert_eq!(rules, vec!["key_max_bytes", "value_max_bytes"]);
        assert!(
            errors[1].message.starts_with("2 tag value(s)"),
            "{}",
            errors[1].message
        );
    });
}

/// A valid order at every field limit encodes under the message limit, and is accepted.
#[test]
fn order_at_every_field_limit_fits_the_message_limit() {
    let mut order = valid_order(&"c".repeat(64));
    order.account = "a".repeat(32);
    order.quantity = Some(pb::Decimal { units: 1, scale: 0 });
    order.created_at_unix_ns = i64::MAX;
    order.deadline_unix_ns = i64::MAX;
    order.tags = (0..MAX_TAGS)
        .map(|i| (format!("{i:0>32}"), "v".repeat(MAX_TAG_VALUE_BYTES)))
        .collect();
    let len = order.encoded_len();
    assert!(len <= MAX_NEW_ORDER_BYTES, "{len}");
    with_ctx(|ctx| {
        let p = prepare(ctx, order, None, len, 1, "").unwrap();
        assert!(matches!(p, Prepared::Accepted(..)));
        assert_bounded(p, ctx);
    });
}

/// A record the order store refused for good becomes a REJECTED answer naming the cause.
#[test]
fn refused_record_is_answered_rejected() {
    with_ctx(|ctx| {
        let order = valid_order("refused");
        let len = order.encoded_len();
        let Prepared::Accepted(live, _) = prepare(ctx, order, None, len, 3, "").unwrap() else {
            panic!("not accepted")
        };
        let (ack, reports) = refused(&live, "payload too large", ctx.engine_id, ctx.now).unwrap();
        assert_eq!(ack.status, AckStatus::Rejected as i32);
        assert_eq!(ack.reason, RejectReason::EngineUnavailable as i32);
        assert!(ack.text.contains("payload too large"), "{}", ack.text);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].exec_type, ExecType::Rejected as i32);
        assert_eq!(
            reports[0].exec_id,
            format!("{}-1", live.record.engine_order_id)
        );
    });
}

/// A tombstone is a final REJECTED record, answered as not found, with a REJECTED ack and
/// report that say the id is retired.
#[test]
fn tombstone_record_and_status() {
    let r = tombstone("ACC1", "gone", "engine-1", 9, 5, "correlation-id").unwrap();
    assert!(r.tombstone);
    assert_eq!(r.status, OrderStatus::Rejected as i32);
    let ack = r.ack.clone().unwrap();
    assert_eq!(
        (ack.status, ack.reason, ack.text.as_str()),
        (
            AckStatus::Rejected as i32,
            RejectReason::UnknownOrder as i32,
            TOMBSTONE_TEXT
        )
    );
    let report = r.last_report.clone().unwrap();
    assert_eq!(report.exec_type, ExecType::Rejected as i32);
    assert_eq!(report.exec_id, "engine-1-9-1");
    assert!(r.encoded_len() < 1024);
    let reply = status_reply(r);
    assert!(!reply.found);
    assert_eq!(reply.reason, RejectReason::UnknownOrder as i32);
    assert!(reply.last_report.is_none());
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9_-]{0,80}",
        1 => ".{0,40}",
        1 => (0..max).prop_map(|n| "x".repeat(n)),
        1 => (0..max / 4).prop_map(|n| "é€".repeat(n)),
    ]
}

fn tags() -> impl Strategy<Value = HashMap<String, String>> {
    prop_oneof![
        3 => prop::collection::hash_map("[a-z]{1,40}", "[a-z ]{0,80}", 0..40),
        // At the limits (the largest records an accepted order can have), and just over.
        2 => prop::collection::hash_map("[a-z]{32}", "[a-z]{64}", 28..=32),
        1 => prop::collection::hash_map("[a-z]{31,33}", "[a-zé]{60,64}", 30..=33),
        1 => (0usize..30_000, 0usize..40).prop_map(|(n, w)| {
            (0..n).map(|i| (format!("k{i}"), "v".repeat(w))).collect()
        }),
        1 => prop::collection::hash_map(text(70_000), text(70_000), 0..4),
    ]
}

fn decimal() -> impl Strategy<Value = Option<pb::Decimal>> {
    prop::option::of(
        (any::<i64>(), 0u32..12).prop_map(|(units, scale)| pb::Decimal {
            units: units % 1_000_000_000,
            scale,
        }),
    )
}

prop_compose! {
    fn any_order()(
        client_order_id in text(200_000),
        account in text(200_000),
        symbol in prop_oneof![3 => Just("AAPL".to_string()), 1 => text(200_000)],
        side in -1i32..4,
        order_type in -1i32..4,
        quantity in decimal(),
        limit_price in decimal(),
        time_in_force in -1i32..6,
        created in any::<i64>(),
        deadline in prop_oneof![Just(0i64), any::<i64>()],
        tags in tags(),
    ) -> pb::NewOrder {
        pb::NewOrder {
            client_order_id,
            account,
            symbol,
            side,
            order_type,
            quantity,
            limit_price,
            time_in_force,
            created_at_unix_ns: created,
            deadline_unix_ns: deadline,
            tags,
            session_id: String::new(),
        }
    }
}

prop_compose! {
    /// Orders that pass validation unless their tags or ids break a limit: these reach the
    /// venue, so their records and reports carry the tags.
    fn near_valid_order()(
        client_order_id in "[A-Za-z0-9_-]{1,64}",
        account in "[A-Za-z0-9_-]{1,32}",
        buy in any::<bool>(),
        limit in prop::option::of(9_000i64..11_000),
        qty in 1i64..50,
        tif in 1i32..=4,
        tags in tags(),
    ) -> pb::NewOrder {
        pb::NewOrder {
            client_order_id,
            account,
            symbol: "AAPL".into(),
            side: if buy { pb::Side::Buy } else { pb::Side::Sell } as i32,
            order_type: if limit.is_some() { pb::OrderType::Limit } else { pb::OrderType::Market } as i32,
            quantity: Some(pb::Decimal { units: qty, scale: 0 }),
            limit_price: limit.map(|units| pb::Decimal { units, scale: 2 }),
            time_in_force: tif,
            tags,
            ..Default::default()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// For any NewOrder (huge strings, tens of thousands of tags, garbage enums) and any
    /// correlation id, the stored record, the ack and every report it leads to (executed
    /// when accepted) encode under RECORD_BOUND (16 KiB), far below the server's 1 MiB.
    #[test]
    fn any_input_yields_bounded_records_and_reports(
        order in prop_oneof![any_order(), near_valid_order()],
        correlation_id in text(300_000),
        extra in 0usize..SERVER_MAX_PAYLOAD,
    ) {
        // The raw message may also carry unknown fields (dropped by decoding): any length.
        let len = order.encoded_len() + extra;
        with_ctx(|ctx| {
            let p = prepare(ctx, order, None, len, 42, &correlation_id).unwrap();
            if let Some((_, record)) = p.store_entry() {
                prop_assert!(record.correlation_id.len() <= 128);
            }
            assert_bounded(p, ctx);
            Ok(())
        })?;
    }

    /// Tombstones are bounded for any valid key and correlation id.
    #[test]
    fn tombstones_are_bounded(
        id in "[A-Za-z0-9_-]{1,64}",
        account in "[A-Za-z0-9_-]{1,32}",
        correlation_id in text(300_000),
    ) {
        let r = tombstone(&account, &id, "engine-1", u64::MAX, i64::MAX, &correlation_id).unwrap();
        prop_assert!(r.encoded_len() <= RECORD_BOUND);
    }
}

/// The limits stated in the contract (`[limit NAME = N]` in orders.proto) are the engine's.
#[test]
fn contract_states_the_engine_limits() {
    use crate::validate::*;
    let proto = include_str!("../../../schemas/bridge/v1/orders.proto");
    let stated: BTreeMap<&str, usize> = proto
        .match_indices("[limit ")
        .map(|(at, _)| {
            let rest = &proto[at + 7..];
            let body = &rest[..rest.find(']').unwrap()];
            let (name, value) = body.split_once(" = ").unwrap();
            (name, value.parse().unwrap())
        })
        .collect();
    let engine = BTreeMap::from([
        ("MAX_NEW_ORDER_BYTES", MAX_NEW_ORDER_BYTES),
        ("MAX_CLIENT_ORDER_ID_BYTES", MAX_CLIENT_ORDER_ID_BYTES),
        ("MAX_ACCOUNT_BYTES", MAX_ACCOUNT_BYTES),
        ("MAX_SYMBOL_BYTES", MAX_SYMBOL_BYTES),
        ("MAX_TAGS", MAX_TAGS),
        ("MAX_TAG_KEY_BYTES", MAX_TAG_KEY_BYTES),
        ("MAX_TAG_VALUE_BYTES", MAX_TAG_VALUE_BYTES),
        ("MAX_CORRELATION_ID_BYTES", MAX_CORRELATION_ID_BYTES),
        ("MAX_BATCH_ORDERS", super::batch::MAX_BATCH_ORDERS),
        ("MAX_BATCH_BYTES", super::batch::MAX_BATCH_BYTES),
    ]);
    assert_eq!(stated, engine);
}

mod decode;
