//! Batch decoding, case by case: what prost encodes comes back order by order with each order's
//! own size; unknown fields are skipped; everything else that is not an OrderBatch, and a
//! batch over its bounds, is refused whole with where it went wrong.

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message as _;

use super::*;

fn order(id: &str) -> pb::NewOrder {
    pb::NewOrder {
        client_order_id: id.into(),
        account: "ACC".into(),
        symbol: "AAPL".into(),
        side: pb::Side::Buy as i32,
        order_type: pb::OrderType::Market as i32,
        quantity: Some(crate::fixed::to_decimal(5)),
        time_in_force: pb::TimeInForce::Ioc as i32,
        created_at_unix_ns: 1_700_000_000_123_456_789,
        ..Default::default()
    }
}

fn batch(orders: Vec<pb::NewOrder>) -> Bytes {
    Bytes::from(pb::OrderBatch { orders }.encode_to_vec())
}

#[test]
fn a_batch_decodes_into_its_orders_in_order_with_their_sizes() {
    let orders: Vec<_> = (0..5).map(|i| order(&format!("o-{i}"))).collect();
    let decoded = decode(&batch(orders.clone())).expect("decodes");
    assert_eq!(decoded.len(), 5);
    for (got, want) in decoded.iter().zip(&orders) {
        assert_eq!(&got.order, want);
        assert_eq!(got.encoded_len, want.encoded_len());
    }
    assert_eq!(
        echoed_ids(&batch(orders)),
        ["o-0", "o-1", "o-2", "o-3", "o-4"]
    );
}

#[test]
fn an_empty_batch_has_no_orders() {
    assert_eq!(decode(&Bytes::new()).expect("decodes"), vec![]);
}

#[test]
fn concatenated_length_delimited_orders_are_a_batch() {
    // What the Python client sends: each order encoded once, framed as field 1, concatenated.
    let mut raw = Vec::new();
    for id in ["a", "b"] {
        let encoded = order(id).encode_to_vec();
        raw.push(0x0a);
        prost::encoding::encode_varint(encoded.len() as u64, &mut raw);
        raw.extend_from_slice(&encoded);
    }
    let ids: Vec<_> = decode(&Bytes::from(raw))
        .expect("decodes")
        .into_iter()
        .map(|o| o.order.client_order_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
}

#[test]
fn unknown_fields_of_a_later_minor_are_skipped() {
    let mut raw = batch(vec![order("a")]).to_vec();
    raw.extend_from_slice(&[0x10, 0x96, 0x01]); // field 2, varint 150
    raw.extend_from_slice(&[0x19, 1, 2, 3, 4, 5, 6, 7, 8]); // field 3, fixed64
    raw.extend_from_slice(&[0x25, 1, 2, 3, 4]); // field 4, fixed32
    raw.extend_from_slice(&[0x2a, 0x02, b'h', b'i']); // field 5, bytes
    raw.extend_from_slice(&batch(vec![order("b")]));
    let ids: Vec<_> = decode(&Bytes::from(raw))
        .expect("decodes")
        .into_iter()
        .map(|o| o.order.client_order_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
}

#[test]
fn what_is_not_an_order_batch_is_refused_whole_saying_where() {
    let good = batch(vec![order("a")]).to_vec();
    let cases: Vec<(Vec<u8>, BatchError)> = vec![
        (
            good[..good.len() - 1].to_vec(),
            BatchError::Wire {
                what: "truncated field",
                at: 0,
            },
        ),
        (
            vec![0x0a],
            BatchError::Wire {
                what: "truncated field",
                at: 0,
            },
        ),
        (
            vec![0x80],
            BatchError::Wire {
                what: "truncated field key",
                at: 0,
            },
        ),
        (
            vec![0x08, 0x01],
            BatchError::Wire {
                what: "orders is not length-delimited",
                at: 0,
            },
        ),
        (
            vec![0x0b],
            BatchError::Wire {
                what: "unsupported wire type (a group)",
                at: 0,
            },
        ),
        (
            vec![0x02, 0x00],
            BatchError::Wire {
                what: "field number out of range",
                at: 0,
            },
        ),
        (
            [good.as_slice(), &[0x0a, 0x02, 0x0a, 0xff]].concat(),
            BatchError::Order {
                index: 1,
                error: String::new(),
            },
        ),
    ];
    for (raw, want) in cases {
        let got = decode(&Bytes::from(raw.clone())).expect_err("refused");
        match (&got, &want) {
            (BatchError::Order { index, .. }, BatchError::Order { index: want, .. }) => {
                assert_eq!(index, want, "{raw:?}");
                assert!(
                    got.to_string().contains("not a bridge.v1.NewOrder"),
                    "{got}"
                );
            }
            _ => assert_eq!(got, want, "{raw:?}"),
        }
        assert!(echoed_ids(&Bytes::from(raw)).is_empty());
    }
}

#[test]
fn a_garbage_payload_is_not_a_batch() {
    // A single NewOrder is not a batch: its field 1 (client_order_id) is no NewOrder.
    let single = Bytes::from(order("a").encode_to_vec());
    assert!(matches!(
        decode(&single),
        Err(BatchError::Order { .. } | BatchError::Wire { .. })
    ));
}

#[test]
fn the_bounds_are_the_contracts() {
    let small = order("x");
    let at_limit: Vec<_> = (0..MAX_BATCH_ORDERS).map(|_| small.clone()).collect();
    assert_eq!(
        decode(&batch(at_limit.clone()))
            .expect("at the limit")
            .len(),
        MAX_BATCH_ORDERS
    );
    let over: Vec<_> = (0..=MAX_BATCH_ORDERS).map(|_| small.clone()).collect();
    let raw = batch(over);
    if raw.len() <= MAX_BATCH_BYTES {
        assert_eq!(decode(&raw), Err(BatchError::TooManyOrders));
    }
    let big = Bytes::from(vec![0u8; MAX_BATCH_BYTES + 1]);
    assert_eq!(
        decode(&big),
        Err(BatchError::TooLarge {
            len: MAX_BATCH_BYTES + 1
        })
    );
    let msg = BatchError::TooLarge { len: 70_000 }.to_string();
    assert!(msg.contains("61440"), "{msg}");
}

proptest! {
    /// Any bytes: never a panic, and whatever decodes is exactly what prost reads.
    #[test]
    fn arbitrary_bytes_never_panic_and_agree_with_prost(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let raw = Bytes::from(raw);
        if let Ok(orders) = decode(&raw) {
            let prost = pb::OrderBatch::decode(raw.clone()).expect("prost agrees");
            prop_assert_eq!(orders.into_iter().map(|o| o.order).collect::<Vec<_>>(), prost.orders);
        }
    }

    /// Any batch of valid orders round-trips, in order.
    #[test]
    fn any_batch_round_trips(ids in proptest::collection::vec("[A-Za-z0-9_-]{1,64}", 0..50)) {
        let orders: Vec<_> = ids.iter().map(|id| order(id)).collect();
        let decoded = decode(&batch(orders.clone())).expect("decodes");
        prop_assert_eq!(decoded.into_iter().map(|o| o.order).collect::<Vec<_>>(), orders);
    }
}
