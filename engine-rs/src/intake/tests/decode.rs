//! Property test of hostile input, without a server: arbitrary bytes (random, and valid
//! messages truncated or bit-flipped) decoded as each request type, with arbitrary signature
//! headers, through the authorization checks, validation and intake. Nothing panics, and
//! every answer, record and report a refusal leads to is bounded (RECORD_BOUND).

use nkeys::KeyPair;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message as _;

use super::{assert_bounded, valid_order, with_ctx};
use crate::auth::entitlements::parse;
use crate::auth::signature::Headers;
use crate::auth::{self, Authorizer};
use crate::commands::malformed;
use crate::contract;
use crate::intake::{prepare, refusal, refusal_ack, valid_key, RECORD_BOUND};
use crate::proto::v1 as pb;

/// Encoded requests of every type, to mutate.
fn samples() -> Vec<Vec<u8>> {
    let order = valid_order("ord-1");
    vec![
        order.encode_to_vec(),
        pb::CancelRequest {
            account: "ACC1".into(),
            client_order_id: "ord-1".into(),
        }
        .encode_to_vec(),
        pb::OrderStatusRequest {
            account: "ACC1".into(),
            client_order_id: "ord-1".into(),
        }
        .encode_to_vec(),
    ]
}

/// Random bytes, or a valid request truncated and with bits flipped.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..64),
        2 => vec(any::<u8>(), 0..2048),
        1 => vec(any::<u8>(), 4000..9000),
        4 => (0usize..3, any::<usize>(), vec((any::<usize>(), 0u8..8), 0..6)).prop_map(
            |(which, cut, flips)| {
                let mut b = samples()[which].clone();
                b.truncate(cut % (b.len() + 1));
                for (at, bit) in flips {
                    if !b.is_empty() {
                        let i = at % b.len();
                        b[i] ^= 1 << bit;
                    }
                }
                b
            }
        ),
    ]
}

fn header_value() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "[A-Z2-7]{0,60}",
        "U[A-Z2-7]{55}",
        "[0-9]{0,25}",
        "[A-Za-z0-9_-]{0,100}",
        ".{0,300}",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Decode -> authorize -> validate -> intake on arbitrary bytes and headers: no panic;
    /// every refusal, ack, record and report bounded.
    #[test]
    fn hostile_bytes_never_panic_and_refusals_are_bounded(
        bytes in hostile_bytes(),
        signer in header_value(),
        signed_at in header_value(),
        signature in header_value(),
        account in prop_oneof![3 => Just("ACC1".to_string()), 1 => ".{0,200}"],
    ) {
        let key = KeyPair::new_user();
        let ents = parse(
            &format!(
                "version = 1\n[identities.o]\nrole = \"orchestrator\"\nnkey = \"{}\"\n\
                 certificate_subject = \"CN=o\"\naccounts = [\"*\"]\n",
                key.public_key()
            ),
            "test",
        )
        .unwrap();
        let mut authorizer = Authorizer::new(ents, 30_000);
        let now = 1_700_000_000_000_000_000;
        for subject in [
            contract::submit(&account),
            contract::cancel(&account),
            contract::status(&account),
            contract::queue(&account),
        ] {
            let msg = auth::Message {
                subject: &subject,
                payload: &bytes,
                headers: Headers {
                    signer: signer.as_deref(),
                    signed_at: signed_at.as_deref(),
                    signature: signature.as_deref(),
                },
                reference_ns: now,
                stream_seq: Some(1),
            };
            // Random headers never verify: every message is refused, with a bounded text.
            let refused = authorizer.check(&msg, now).unwrap_err();
            prop_assert!(refused.text.len() <= crate::auth::MAX_REFUSAL_TEXT_BYTES);
            let ack = refusal_ack(&refused.account, "id", refused.kind.reject_reason(), &refused.text, "engine-1", now);
            prop_assert!(ack.encoded_len() <= RECORD_BOUND);
            with_ctx(|ctx| {
                let p = refusal(ctx, &refused.account, "ord-1", refused.kind.reject_reason(), &refused.text, 1, "c").unwrap();
                assert_bounded(p, ctx);
            });
        }
        with_ctx(|ctx| match pb::NewOrder::decode(&bytes[..]) {
            Ok(order) => {
                let p = prepare(ctx, order, None, bytes.len(), 1, "c").unwrap();
                assert_bounded(p, ctx);
            }
            Err(e) => {
                let rej = malformed(&e);
                let order = pb::NewOrder { account: account.clone(), client_order_id: "x".into(), ..Default::default() };
                let p = prepare(ctx, order, Some(rej), bytes.len(), 1, "c").unwrap();
                assert_bounded(p, ctx);
            }
        });
        if let Ok(req) = pb::CancelRequest::decode(&bytes[..]) {
            let _ = valid_key(&req.account, &req.client_order_id);
        }
        if let Ok(req) = pb::OrderStatusRequest::decode(&bytes[..]) {
            let _ = valid_key(&req.account, &req.client_order_id);
        }
    }
}
