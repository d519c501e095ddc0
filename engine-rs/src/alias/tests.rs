//! A replace's record: pending, settled, recreated; what one found under a replace's id means.

use super::*;
use crate::fixed::units;
use crate::order::Event;

fn order() -> LiveOrder {
    let o = pb::NewOrder {
        client_order_id: "o1".into(),
        account: "ACC".into(),
        symbol: "AAPL".into(),
        side: pb::Side::Buy as i32,
        order_type: pb::OrderType::Limit as i32,
        quantity: Some(fixed::to_decimal(units(10))),
        limit_price: Some(fixed::to_decimal(units(100))),
        time_in_force: pb::TimeInForce::Gtc as i32,
        ..Default::default()
    };
    let mut live = LiveOrder::new("ACC.o1".into(), o, "e1", 3, "c");
    live.apply(Event::Accept, None, None, 1, &mut Vec::new())
        .unwrap();
    live
}

fn request(id: &str, qty: Option<i64>, price: Option<i64>) -> pb::ReplaceRequest {
    pb::ReplaceRequest {
        account: "ACC".into(),
        orig_client_order_id: "o1".into(),
        client_order_id: id.into(),
        quantity: qty.map(fixed::to_decimal),
        limit_price: price.map(fixed::to_decimal),
        created_at_unix_ns: 5,
    }
}

/// The pending record: under the replace's id, pointing at the order, ACCEPTED ack with the
/// orig id, the replace's terms (absent = unchanged), the order's last report as the marker.
#[test]
fn a_pending_alias() {
    let o = order();
    let (key, rec) = pending(
        &request("r1", None, Some(units(99))),
        &o,
        "e1",
        9,
        7,
        "corr",
        "SIG",
    );
    assert_eq!(key, "ACC.r1");
    assert!(is_pending(&rec));
    assert_eq!(rec.alias_of, "o1");
    assert_eq!(rec.engine_order_id, o.record.engine_order_id);
    assert_eq!(rec.seq, 9);
    let ack = rec.ack.as_ref().unwrap();
    assert_eq!(
        (
            ack.client_order_id.as_str(),
            ack.orig_client_order_id.as_str()
        ),
        ("r1", "o1")
    );
    assert_eq!(ack.status, pb::AckStatus::Accepted as i32);
    assert_eq!(rec.last_report, o.record.last_report);
    let a = amendment(&rec, &o, 11);
    assert_eq!(
        a,
        Amendment {
            client_order_id: "r1".into(),
            qty: units(10),
            price: units(99),
            seq: 11
        }
    );
    let (_, rec) = pending(
        &request("r1", Some(units(4)), None),
        &o,
        "e1",
        9,
        7,
        "c",
        "",
    );
    assert_eq!(amendment(&rec, &o, 11).price, units(100));
    assert_eq!(amendment(&rec, &o, 11).qty, units(4));
}

/// Settled applied: ACCEPTED with the order's status, the REPLACED report's status and the
/// report itself kept; settled too late: REJECTED TOO_LATE. Neither is pending any more.
#[test]
fn settling() {
    let mut o = order();
    let (_, mut rec) = pending(
        &request("r1", Some(units(4)), None),
        &o,
        "e1",
        9,
        7,
        "c",
        "",
    );
    let mut pending_copy = rec.clone();
    o.replace(
        "r1",
        units(4),
        fixed::to_decimal(units(100)),
        8,
        &mut Vec::new(),
    )
    .unwrap();
    let ack = settle(&mut rec, Some(&o), 9);
    assert!(!is_pending(&rec));
    assert_eq!(ack.status, pb::AckStatus::Accepted as i32);
    assert_eq!(ack.order_status, OrderStatus::New as i32);
    assert_eq!(rec.status, OrderStatus::New as i32);
    assert_eq!(rec.ack, Some(ack));
    assert_eq!(rec.last_report, o.record.last_report);
    let ack = settle(&mut pending_copy, None, 9);
    assert_eq!(ack.reason, RejectReason::TooLate as i32);
    assert_eq!(pending_copy.status, OrderStatus::Rejected as i32);
    assert!(!is_pending(&pending_copy));
}

/// After a restart: unapplied while the order has not moved since, applied once the order
/// answers to the replace's id, too late otherwise.
#[test]
fn pending_state_after_a_restart() {
    let mut o = order();
    let (_, rec) = pending(
        &request("r1", Some(units(4)), None),
        &o,
        "e1",
        9,
        7,
        "c",
        "",
    );
    assert_eq!(pending_state(&rec, &o, true), Pending::Unapplied);
    assert_eq!(pending_state(&rec, &o, false), Pending::TooLate);
    let mut replaced = o.clone();
    replaced
        .replace(
            "r1",
            units(4),
            fixed::to_decimal(units(100)),
            8,
            &mut Vec::new(),
        )
        .unwrap();
    assert_eq!(pending_state(&rec, &replaced, true), Pending::Applied);
    assert_eq!(pending_state(&rec, &replaced, false), Pending::Applied);
    o.apply(Event::Expire, None, None, 9, &mut Vec::new())
        .unwrap();
    assert_eq!(pending_state(&rec, &o, false), Pending::TooLate);
}

/// A re-sent replace of the same order is answered with its ack, as a duplicate; an id used
/// by an order, by another order's replace, or retired, refuses it (INVALID_FIELD, unique).
#[test]
fn what_a_found_record_means() {
    let o = order();
    let req = request("r1", Some(units(4)), None);
    let (_, rec) = pending(&req, &o, "e1", 9, 7, "c", "");
    let mut applied = rec.clone();
    let mut replaced = o.clone();
    replaced
        .replace(
            "r1",
            units(4),
            fixed::to_decimal(units(100)),
            8,
            &mut Vec::new(),
        )
        .unwrap();
    let first = settle(&mut applied, Some(&replaced), 9);
    let again = found(applied, &req, "o1", OrderStatus::Filled as i32, "e1", 10);
    assert!(again.duplicate);
    assert_eq!(
        again,
        pb::OrderAck {
            duplicate: true,
            order_status: OrderStatus::Filled as i32,
            ..first
        }
    );
    let taken = |record: OrderRecord| {
        let ack = found(record, &req, "o1", 0, "e1", 10);
        assert!(!ack.duplicate);
        assert_eq!(ack.reason, RejectReason::InvalidField as i32);
        assert_eq!(ack.field_errors[0].field, "client_order_id");
        assert_eq!(ack.field_errors[0].rule, "unique");
        assert_eq!(ack.orig_client_order_id, "o1");
        ack.text
    };
    assert!(taken(o.record.clone()).contains("client order id of an order"));
    let mut other = rec.clone();
    other.alias_of = "o2".into();
    assert!(taken(other).contains("replace of order o2"));
    let mut retired = o.record.clone();
    retired.tombstone = true;
    assert!(taken(retired).contains("retired"));
}

/// A NewOrder under a replace's id is rejected, naming the order the replace amended.
#[test]
fn an_order_under_a_replace_id() {
    let (_, rec) = pending(
        &request("r1", Some(units(4)), None),
        &order(),
        "e1",
        9,
        7,
        "c",
        "",
    );
    let ack = id_taken_by_replace(&rec, "e1", 3);
    assert_eq!(ack.status, pb::AckStatus::Rejected as i32);
    assert_eq!(ack.client_order_id, "r1");
    assert!(ack.field_errors[0].message.contains("order o1"));
    assert!(!ack.duplicate);
}

/// A missing record is rebuilt from the replaced order: settled, under its current id.
#[test]
fn recreated_from_the_order() {
    let mut o = order();
    o.replace(
        "r2",
        units(12),
        fixed::to_decimal(units(101)),
        8,
        &mut Vec::new(),
    )
    .unwrap();
    let (key, rec) = recreated(&o, "e1", 20, 9);
    assert_eq!(key, "ACC.r2");
    assert_eq!(rec.alias_of, "o1");
    assert!(!is_pending(&rec));
    let ack = rec.ack.unwrap();
    assert_eq!(
        (
            ack.client_order_id.as_str(),
            ack.orig_client_order_id.as_str()
        ),
        ("r2", "o1")
    );
    assert_eq!(ack.status, pb::AckStatus::Accepted as i32);
}

/// The amended order: the request's quantity and price where present.
#[test]
fn the_amended_order() {
    let o = order();
    let a = amended(o.order(), &request("r1", Some(units(3)), None));
    assert_eq!(a.quantity, Some(fixed::to_decimal(units(3))));
    assert_eq!(a.limit_price, o.order().limit_price);
    assert_eq!(a.client_order_id, "o1");
}
