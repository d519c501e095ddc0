//! Golden wire vectors shared with Python (see schemas/testdata/README.md).
//!
//! * `<name>.py.bin` is written by `scripts/gen_golden.py` (Python protobuf, deterministic).
//!   These tests decode every one with prost and assert it field by field against the values
//!   hard-coded below, which must match the builders in gen_golden.py.
//! * The same logical messages are built here and encoded with prost. prost encodes a proto
//!   `map` from a `HashMap`, whose iteration order changes from run to run, so the comparison
//!   uses a canonical form: prost's encoding of the message without its map, followed by
//!   prost's encoding of each map entry in key order (the map is the highest-numbered field of
//!   every message that has one, so this is still field-number order). That is exactly what
//!   Python's `SerializeToString(deterministic=True)` produces, and it is what `<name>.rs.bin`
//!   holds. The plain prost encoding is checked to decode back to the same message.
//! * `BRIDGE_WRITE_GOLDEN=1 cargo test --test golden` (re)writes the `.rs.bin` files; without
//!   it the committed `.rs.bin` files must equal what prost encodes now.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::path::PathBuf;

use bridge_engine::proto::v1::{
    AckStatus, CancelRequest, Decimal, ExecType, ExecutionReport, FieldError, NewOrder, OrderAck,
    OrderStatus, OrderStatusReply, OrderStatusRequest, OrderType, RejectReason, Side, TimeInForce,
};
use prost::Message;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/testdata")
}

fn read(file: &str) -> Vec<u8> {
    let path = testdata().join(file);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (run `python scripts/gen_golden.py`, then \
             `BRIDGE_WRITE_GOLDEN=1 cargo test --test golden`)",
            path.display()
        )
    })
}

fn dec(units: i64, scale: u32) -> Option<Decimal> {
    Some(Decimal { units, scale })
}

fn tags(entries: &[(&str, &str)]) -> HashMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Builders: the same logical messages as scripts/gen_golden.py.
// ---------------------------------------------------------------------------------------------

fn new_order_limit() -> NewOrder {
    NewOrder {
        client_order_id: "ord-0001".into(),
        account: "acct-1".into(),
        symbol: "ACME".into(),
        side: Side::Buy as i32,
        order_type: OrderType::Limit as i32,
        quantity: dec(5, 1),
        limit_price: dec(10125, 2),
        time_in_force: TimeInForce::Gtc as i32,
        created_at_unix_ns: 1_700_000_000_000_000_000,
        deadline_unix_ns: 1_700_000_005_000_000_000,
        tags: tags(&[("strategy", "mm-1"), ("desk", "alpha")]),
        session_id: String::new(),
    }
}

fn new_order_market_minimal() -> NewOrder {
    NewOrder {
        client_order_id: "ord-0002".into(),
        account: "acct-1".into(),
        symbol: "ACME".into(),
        side: Side::Sell as i32,
        order_type: OrderType::Market as i32,
        quantity: dec(3, 0),
        time_in_force: TimeInForce::Ioc as i32,
        ..Default::default()
    }
}

fn cancel_request() -> CancelRequest {
    CancelRequest {
        account: "acct-1".into(),
        client_order_id: "ord-0001".into(),
    }
}

fn order_status_request() -> OrderStatusRequest {
    OrderStatusRequest {
        account: "acct-1".into(),
        client_order_id: "ord-0001".into(),
    }
}

fn order_ack_rejected() -> OrderAck {
    OrderAck {
        client_order_id: "ord-0003".into(),
        account: "acct-1".into(),
        engine_order_id: "e1-3".into(),
        status: AckStatus::Rejected as i32,
        reason: RejectReason::InvalidField as i32,
        field_errors: vec![
            FieldError {
                field: "limit_price".into(),
                rule: "required_for_limit".into(),
                message: "a LIMIT order needs a price".into(),
            },
            FieldError {
                field: "quantity".into(),
                rule: "positive".into(),
                message: "quantity must be greater than 0".into(),
            },
        ],
        order_status: OrderStatus::Rejected as i32,
        duplicate: true,
        ack_time_unix_ns: 1_700_000_000_123_456_789,
        engine_id: "e1".into(),
        text: "2 invalid fields".into(),
        orig_client_order_id: String::new(),
    }
}

fn execution_report_trade() -> ExecutionReport {
    ExecutionReport {
        exec_id: "e1-1-2".into(),
        engine_order_id: "e1-1".into(),
        client_order_id: "ord-0001".into(),
        account: "acct-1".into(),
        symbol: "ACME".into(),
        side: Side::Buy as i32,
        exec_type: ExecType::Trade as i32,
        order_status: OrderStatus::PartiallyFilled as i32,
        order_qty: dec(5, 1),
        last_qty: dec(2, 1),
        last_px: dec(10125, 2),
        cum_qty: dec(2, 1),
        leaves_qty: dec(3, 1),
        avg_px: dec(10_125_000_000, 8),
        transact_time_unix_ns: 1_700_000_001_500_000_000,
        text: "partial fill".into(),
        seq: 2,
        engine_id: "e1".into(),
        tags: tags(&[("strategy", "mm-1"), ("desk", "alpha")]),
        ..Default::default()
    }
}

fn status_report_new() -> ExecutionReport {
    ExecutionReport {
        exec_id: "e1-1-1".into(),
        engine_order_id: "e1-1".into(),
        client_order_id: "ord-0001".into(),
        account: "acct-1".into(),
        symbol: "ACME".into(),
        side: Side::Buy as i32,
        exec_type: ExecType::New as i32,
        order_status: OrderStatus::New as i32,
        order_qty: dec(5, 1),
        last_qty: dec(0, 0),
        last_px: dec(0, 0),
        cum_qty: dec(0, 0),
        leaves_qty: dec(5, 1),
        avg_px: dec(0, 0),
        transact_time_unix_ns: 1_700_000_000_200_000_000,
        seq: 1,
        engine_id: "e1".into(),
        // One entry only: a nested map is encoded deterministically only when it has one entry.
        tags: tags(&[("desk", "alpha")]),
        ..Default::default()
    }
}

fn order_status_reply() -> OrderStatusReply {
    OrderStatusReply {
        found: true,
        last_report: Some(status_report_new()),
        order_status: OrderStatus::New as i32,
        text: "resting".into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical (deterministic) prost encodings.
// ---------------------------------------------------------------------------------------------

/// prost's encoding of `head` (map cleared) followed by each map entry in key order, each entry
/// encoded by prost as a message holding only that one entry.
fn canonical_with_map<M: Message + Default>(
    head: &M,
    map: &HashMap<String, String>,
    only_entry: impl Fn(HashMap<String, String>) -> M,
) -> Vec<u8> {
    let mut out = head.encode_to_vec();
    let sorted: BTreeMap<&String, &String> = map.iter().collect();
    for (k, v) in sorted {
        out.extend(only_entry(HashMap::from([(k.clone(), v.clone())])).encode_to_vec());
    }
    out
}

fn canonical_new_order(m: &NewOrder) -> Vec<u8> {
    let head = NewOrder {
        tags: HashMap::new(),
        ..m.clone()
    };
    canonical_with_map(&head, &m.tags, |tags| NewOrder {
        tags,
        ..Default::default()
    })
}

fn canonical_execution_report(m: &ExecutionReport) -> Vec<u8> {
    let head = ExecutionReport {
        tags: HashMap::new(),
        ..m.clone()
    };
    canonical_with_map(&head, &m.tags, |tags| ExecutionReport {
        tags,
        ..Default::default()
    })
}

fn canonical_status_reply(m: &OrderStatusReply) -> Vec<u8> {
    let nested_tags = m.last_report.as_ref().map_or(0, |r| r.tags.len());
    assert!(
        nested_tags <= 1,
        "a nested map with {nested_tags} entries has no deterministic prost encoding"
    );
    m.encode_to_vec()
}

fn canonical_plain<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

// ---------------------------------------------------------------------------------------------
// Field-by-field expectations (hard-coded; must match scripts/gen_golden.py).
// ---------------------------------------------------------------------------------------------

fn check_new_order_limit(m: &NewOrder) {
    assert_eq!(m.client_order_id, "ord-0001");
    assert_eq!(m.account, "acct-1");
    assert_eq!(m.symbol, "ACME");
    assert_eq!(m.side, Side::Buy as i32);
    assert_eq!(m.order_type, OrderType::Limit as i32);
    assert_eq!(m.quantity, Some(Decimal { units: 5, scale: 1 }));
    assert_eq!(
        m.limit_price,
        Some(Decimal {
            units: 10125,
            scale: 2
        })
    );
    assert_eq!(m.time_in_force, TimeInForce::Gtc as i32);
    assert_eq!(m.created_at_unix_ns, 1_700_000_000_000_000_000);
    assert_eq!(m.deadline_unix_ns, 1_700_000_005_000_000_000);
    assert_eq!(m.tags.len(), 2);
    assert_eq!(m.tags["desk"], "alpha");
    assert_eq!(m.tags["strategy"], "mm-1");
}

fn check_new_order_market_minimal(m: &NewOrder) {
    assert_eq!(m.client_order_id, "ord-0002");
    assert_eq!(m.account, "acct-1");
    assert_eq!(m.symbol, "ACME");
    assert_eq!(m.side, Side::Sell as i32);
    assert_eq!(m.order_type, OrderType::Market as i32);
    assert_eq!(m.quantity, Some(Decimal { units: 3, scale: 0 }));
    assert_eq!(m.limit_price, None);
    assert_eq!(m.time_in_force, TimeInForce::Ioc as i32);
    assert_eq!(m.created_at_unix_ns, 0);
    assert_eq!(m.deadline_unix_ns, 0);
    assert!(m.tags.is_empty());
}

fn check_cancel_request(m: &CancelRequest) {
    assert_eq!(m.account, "acct-1");
    assert_eq!(m.client_order_id, "ord-0001");
}

fn check_order_status_request(m: &OrderStatusRequest) {
    assert_eq!(m.account, "acct-1");
    assert_eq!(m.client_order_id, "ord-0001");
}

fn check_order_ack_rejected(m: &OrderAck) {
    assert_eq!(m.client_order_id, "ord-0003");
    assert_eq!(m.account, "acct-1");
    assert_eq!(m.engine_order_id, "e1-3");
    assert_eq!(m.status, AckStatus::Rejected as i32);
    assert_eq!(m.reason, RejectReason::InvalidField as i32);
    assert_eq!(m.field_errors.len(), 2);
    assert_eq!(m.field_errors[0].field, "limit_price");
    assert_eq!(m.field_errors[0].rule, "required_for_limit");
    assert_eq!(m.field_errors[0].message, "a LIMIT order needs a price");
    assert_eq!(m.field_errors[1].field, "quantity");
    assert_eq!(m.field_errors[1].rule, "positive");
    assert_eq!(m.field_errors[1].message, "quantity must be greater than 0");
    assert_eq!(m.order_status, OrderStatus::Rejected as i32);
    assert!(m.duplicate);
    assert_eq!(m.ack_time_unix_ns, 1_700_000_000_123_456_789);
    assert_eq!(m.engine_id, "e1");
    assert_eq!(m.text, "2 invalid fields");
}

fn check_execution_report_trade(m: &ExecutionReport) {
    assert_eq!(m.exec_id, "e1-1-2");
    assert_eq!(m.engine_order_id, "e1-1");
    assert_eq!(m.client_order_id, "ord-0001");
    assert_eq!(m.account, "acct-1");
    assert_eq!(m.symbol, "ACME");
    assert_eq!(m.side, Side::Buy as i32);
    assert_eq!(m.exec_type, ExecType::Trade as i32);
    assert_eq!(m.order_status, OrderStatus::PartiallyFilled as i32);
    assert_eq!(m.order_qty, dec(5, 1));
    assert_eq!(m.last_qty, dec(2, 1));
    assert_eq!(m.last_px, dec(10125, 2));
    assert_eq!(m.cum_qty, dec(2, 1));
    assert_eq!(m.leaves_qty, dec(3, 1));
    assert_eq!(m.avg_px, dec(10_125_000_000, 8));
    assert_eq!(m.transact_time_unix_ns, 1_700_000_001_500_000_000);
    assert_eq!(m.reason, RejectReason::Unspecified as i32);
    assert!(m.field_errors.is_empty());
    assert_eq!(m.text, "partial fill");
    assert_eq!(m.seq, 2);
    assert_eq!(m.engine_id, "e1");
    assert_eq!(m.tags.len(), 2);
    assert_eq!(m.tags["desk"], "alpha");
    assert_eq!(m.tags["strategy"], "mm-1");
}

fn check_order_status_reply(m: &OrderStatusReply) {
    assert!(m.found);
    assert_eq!(m.reason, RejectReason::Unspecified as i32);
    assert_eq!(m.text, "resting");
    assert_eq!(m.order_status, OrderStatus::New as i32);
    let r = m.last_report.as_ref().expect("last_report is set");
    assert_eq!(r.exec_id, "e1-1-1");
    assert_eq!(r.engine_order_id, "e1-1");
    assert_eq!(r.client_order_id, "ord-0001");
    assert_eq!(r.account, "acct-1");
    assert_eq!(r.symbol, "ACME");
    assert_eq!(r.side, Side::Buy as i32);
    assert_eq!(r.exec_type, ExecType::New as i32);
    assert_eq!(r.order_status, OrderStatus::New as i32);
    assert_eq!(r.order_qty, dec(5, 1));
    // Present-but-zero decimals stay present (Some), distinct from absent.
    assert_eq!(r.last_qty, dec(0, 0));
    assert_eq!(r.last_px, dec(0, 0));
    assert_eq!(r.cum_qty, dec(0, 0));
    assert_eq!(r.leaves_qty, dec(5, 1));
    assert_eq!(r.avg_px, dec(0, 0));
    assert_eq!(r.transact_time_unix_ns, 1_700_000_000_200_000_000);
    assert_eq!(r.reason, RejectReason::Unspecified as i32);
    assert!(r.field_errors.is_empty());
    assert_eq!(r.text, "");
    assert_eq!(r.seq, 1);
    assert_eq!(r.engine_id, "e1");
    assert_eq!(r.tags, tags(&[("desk", "alpha")]));
}

// ---------------------------------------------------------------------------------------------
// The vector table.
// ---------------------------------------------------------------------------------------------

type Check = Box<dyn Fn(&[u8])>;

struct Vector {
    name: &'static str,
    /// Deterministic prost encoding of the built message (the `.rs.bin` content).
    canonical: Vec<u8>,
    /// Decodes bytes as this vector's type and asserts every field against hard-coded values.
    check_fields: Check,
    /// Decodes bytes and asserts they equal the built message; also round-trips the plain
    /// (map order unspecified) prost encoding.
    check_same: Check,
}

fn vector<M>(name: &'static str, msg: M, canonical: fn(&M) -> Vec<u8>, check: fn(&M)) -> Vector
where
    M: Message + Default + Clone + PartialEq + Debug + 'static,
{
    let expected = msg.clone();
    Vector {
        name,
        canonical: canonical(&msg),
        check_fields: Box::new(move |bytes| {
            let decoded =
                M::decode(bytes).unwrap_or_else(|e| panic!("{name}: prost cannot decode: {e}"));
            check(&decoded);
        }),
        check_same: Box::new(move |bytes| {
            let decoded =
                M::decode(bytes).unwrap_or_else(|e| panic!("{name}: prost cannot decode: {e}"));
            assert_eq!(decoded, expected, "{name}: decoded message differs");
            let plain = expected.encode_to_vec();
            let back = M::decode(plain.as_slice()).expect("plain prost encoding decodes");
            assert_eq!(back, expected, "{name}: plain prost round trip differs");
        }),
    }
}

fn vectors() -> Vec<Vector> {
    vec![
        vector(
            "new_order_limit",
            new_order_limit(),
            canonical_new_order,
            check_new_order_limit,
        ),
        vector(
            "new_order_market_minimal",
            new_order_market_minimal(),
            canonical_new_order,
            check_new_order_market_minimal,
        ),
        vector(
            "cancel_request",
            cancel_request(),
            canonical_plain,
            check_cancel_request,
        ),
        vector(
            "order_status_request",
            order_status_request(),
            canonical_plain,
            check_order_status_request,
        ),
        vector(
            "order_ack_rejected",
            order_ack_rejected(),
            canonical_plain,
            check_order_ack_rejected,
        ),
        vector(
            "execution_report_trade",
            execution_report_trade(),
            canonical_execution_report,
            check_execution_report_trade,
        ),
        vector(
            "order_status_reply",
            order_status_reply(),
            canonical_status_reply,
            check_order_status_reply,
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

/// Every `.py.bin` / `.rs.bin` in schemas/testdata belongs to a vector known here, and vice versa.
#[test]
fn vector_files_match_the_vector_table() {
    let known: BTreeSet<&str> = vectors().iter().map(|v| v.name).collect();
    let mut py = BTreeSet::new();
    for entry in std::fs::read_dir(testdata()).expect("schemas/testdata exists") {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = file.strip_suffix(".py.bin") {
            assert!(
                known.contains(stem),
                "{file}: unknown vector; add it to tests/golden.rs"
            );
            py.insert(stem.to_owned());
        } else if let Some(stem) = file.strip_suffix(".rs.bin") {
            assert!(known.contains(stem), "{file}: stale vector with no builder");
        }
    }
    let missing: Vec<_> = known.iter().filter(|n| !py.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "missing .py.bin for {missing:?}: run `python scripts/gen_golden.py`"
    );
}

/// prost decodes every Python-encoded vector to exactly the expected field values.
#[test]
fn python_vectors_decode_field_by_field() {
    for v in vectors() {
        let bytes = read(&format!("{}.py.bin", v.name));
        (v.check_fields)(&bytes);
        (v.check_same)(&bytes);
    }
}

/// prost encodes the same logical messages to the very bytes Python produced.
#[test]
fn prost_encoding_matches_python_vectors() {
    for v in vectors() {
        let py = read(&format!("{}.py.bin", v.name));
        assert_eq!(
            hex(&v.canonical),
            hex(&py),
            "{}: prost (canonical) and Python encodings differ",
            v.name
        );
        // The canonical bytes are valid prost input for the same message, too.
        (v.check_fields)(&v.canonical);
        (v.check_same)(&v.canonical);
    }
}

/// The committed `.rs.bin` files are what prost encodes now (`BRIDGE_WRITE_GOLDEN=1` rewrites).
#[test]
fn rust_vectors_are_current() {
    let write = std::env::var("BRIDGE_WRITE_GOLDEN").is_ok_and(|v| v == "1");
    for v in vectors() {
        let file = format!("{}.rs.bin", v.name);
        if write {
            std::fs::write(testdata().join(&file), &v.canonical).expect("write .rs.bin");
        }
        let committed = read(&file);
        assert_eq!(
            hex(&committed),
            hex(&v.canonical),
            "{file} differs from what prost encodes now; if the change is intended (it breaks \
             the wire contract!) regenerate with `BRIDGE_WRITE_GOLDEN=1 cargo test --test golden`"
        );
        (v.check_fields)(&committed);
    }
}

/// Contract 1.0's vectors, frozen in schemas/released/v1.0/testdata (both encodings), decode
/// with today's prost types to exactly the values above, and prost encodes those to the very
/// same bytes: nothing read from 1.0 is lost or changed (tests/unit/test_released_contract.py
/// does the same in Python).
#[test]
fn released_1_0_vectors_decode_the_same() {
    let released =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/released/v1.0/testdata");
    let vectors = vectors();
    let mut seen = 0;
    for entry in std::fs::read_dir(&released).expect("schemas/released/v1.0/testdata exists") {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = file
            .strip_suffix(".py.bin")
            .or_else(|| file.strip_suffix(".rs.bin"))
        else {
            continue;
        };
        let v = vectors
            .iter()
            .find(|v| v.name == stem)
            .unwrap_or_else(|| panic!("{file}: a 1.0 vector without a builder here"));
        let bytes = std::fs::read(released.join(&file)).expect("read a frozen vector");
        (v.check_fields)(&bytes);
        (v.check_same)(&bytes);
        assert_eq!(
            hex(&v.canonical),
            hex(&bytes),
            "{file}: prost re-encodes it otherwise"
        );
        seen += 1;
    }
    assert_eq!(seen, 14, "seven 1.0 vectors, two encodings each");
}
