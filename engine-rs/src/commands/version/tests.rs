//! A version refusal is answered in each endpoint's reply type, REJECTED (or not found) with
//! reason UNSUPPORTED_VERSION, the field error and the ids the request carried.

use prost::Message as _;

use super::*;
use crate::proto::v1::RejectReason;
use crate::schema_version::{check, Version};

const SPEAKS: Version = Version { major: 1, minor: 1 };

fn refused() -> Rejection {
    check(Some("2.0"), SPEAKS).rejection().expect("refused")
}

fn payload(m: &impl prost::Message) -> bytes::Bytes {
    m.encode_to_vec().into()
}

fn the_field_error(errors: &[pb::FieldError]) {
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, contract::HEADER_SCHEMA_VERSION);
    assert_eq!(errors[0].rule, "supported_major");
    assert!(errors[0].message.contains("2.0"), "{}", errors[0].message);
}

#[test]
fn a_submit_is_rejected_with_its_ids_echoed() {
    let order = pb::NewOrder {
        account: "acct-1".into(),
        client_order_id: "ord-1".into(),
        ..Default::default()
    };
    let bytes = refusal(Operation::Submit, &payload(&order), &refused(), "e1", 7);
    let ack = pb::OrderAck::decode(bytes.as_slice()).unwrap();
    assert_eq!(ack.status, AckStatus::Rejected as i32);
    assert_eq!(ack.reason, RejectReason::UnsupportedVersion as i32);
    assert_eq!(ack.order_status, OrderStatus::Rejected as i32);
    assert_eq!(
        (ack.account.as_str(), ack.client_order_id.as_str()),
        ("acct-1", "ord-1")
    );
    assert_eq!((ack.engine_id.as_str(), ack.ack_time_unix_ns), ("e1", 7));
    assert!(ack.text.contains("supported_major"), "{}", ack.text);
    the_field_error(&ack.field_errors);
}

#[test]
fn an_undecodable_payload_is_still_answered() {
    let junk = bytes::Bytes::from_static(b"\xff\xff\xff");
    for op in [Operation::Submit, Operation::Cancel, Operation::Replace] {
        let ack = pb::OrderAck::decode(refusal(op, &junk, &refused(), "e1", 1).as_slice()).unwrap();
        assert_eq!(
            ack.reason,
            RejectReason::UnsupportedVersion as i32,
            "{op:?}"
        );
        assert_eq!(ack.client_order_id, "", "{op:?}");
    }
}

#[test]
fn a_cancel_and_a_replace_are_rejected_acks() {
    let cancel = pb::CancelRequest {
        account: "acct-1".into(),
        client_order_id: "ord-1".into(),
    };
    let ack = pb::OrderAck::decode(
        refusal(Operation::Cancel, &payload(&cancel), &refused(), "e1", 1).as_slice(),
    )
    .unwrap();
    assert_eq!(ack.client_order_id, "ord-1");
    the_field_error(&ack.field_errors);
    let replace = pb::ReplaceRequest {
        account: "acct-1".into(),
        orig_client_order_id: "ord-1".into(),
        client_order_id: "ord-1-r1".into(),
        ..Default::default()
    };
    let ack = pb::OrderAck::decode(
        refusal(Operation::Replace, &payload(&replace), &refused(), "e1", 1).as_slice(),
    )
    .unwrap();
    assert_eq!(ack.status, AckStatus::Rejected as i32);
    assert_eq!(ack.client_order_id, "ord-1-r1");
    assert_eq!(ack.orig_client_order_id, "ord-1");
    the_field_error(&ack.field_errors);
}

#[test]
fn a_status_query_is_not_found_with_the_reason() {
    let req = pb::OrderStatusRequest {
        account: "acct-1".into(),
        client_order_id: "ord-1".into(),
    };
    let reply = pb::OrderStatusReply::decode(
        refusal(Operation::Status, &payload(&req), &refused(), "e1", 1).as_slice(),
    )
    .unwrap();
    assert!(!reply.found);
    assert_eq!(reply.reason, RejectReason::UnsupportedVersion as i32);
    assert!(
        reply.text.starts_with("Bridge-Schema-Version: "),
        "{}",
        reply.text
    );
}

#[test]
fn mass_cancel_and_sessions_answer_their_own_reply_types() {
    let mass = pb::MassCancelRequest {
        account: "acct-1".into(),
        request_id: "mc-1".into(),
        ..Default::default()
    };
    let reply = pb::MassCancelReply::decode(
        refusal(Operation::MassCancel, &payload(&mass), &refused(), "e1", 1).as_slice(),
    )
    .unwrap();
    assert_eq!(reply.status, AckStatus::Rejected as i32);
    assert_eq!(reply.reason, RejectReason::UnsupportedVersion as i32);
    assert_eq!(
        (reply.account.as_str(), reply.request_id.as_str()),
        ("acct-1", "mc-1")
    );
    assert_eq!(reply.canceled, 0);
    the_field_error(&reply.field_errors);
    let open = pb::SessionOpen {
        session_id: "s-1".into(),
        ..Default::default()
    };
    let close = pb::SessionClose {
        session_id: "s-1".into(),
        cancel_orders: true,
    };
    for (op, bytes) in [
        (Operation::SessionOpen, payload(&open)),
        (Operation::SessionClose, payload(&close)),
    ] {
        let ack =
            pb::SessionAck::decode(refusal(op, &bytes, &refused(), "e1", 1).as_slice()).unwrap();
        assert_eq!(ack.status, AckStatus::Rejected as i32, "{op:?}");
        assert_eq!(ack.reason, RejectReason::UnsupportedVersion as i32);
        assert_eq!(
            (ack.session_id.as_str(), ack.engine_id.as_str()),
            ("s-1", "e1")
        );
        the_field_error(&ack.field_errors);
    }
}
