use super::*;

/// `SHA-256(32 zero bytes || "report-1")`, then `SHA-256(that || "report-2")`: the same
/// vector `tests/unit/test_audit.py` holds the Python verifier to.
const VECTOR: [(&str, &str); 2] = [
    (
        "report-1",
        "c337108b2244b51c4650b943970ada8545b731ec1192b8be13e1755aff78cb27",
    ),
    (
        "report-2",
        "bde2d554ac2a328c6b7030929056e4df5e27d2e91240e6df9f04cab20daa154a",
    ),
];

fn key() -> EngineKey {
    let seed = nkeys::KeyPair::new_user().seed().expect("seed");
    EngineKey::from_seed(&seed).expect("valid seed")
}

fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// The digests follow the shared vector from genesis.
#[test]
fn links_follow_the_shared_vector() {
    let chain = Chain::new("e1", GENESIS);
    let payloads: Vec<&[u8]> = VECTOR.iter().map(|(p, _)| p.as_bytes()).collect();
    let links = chain.links(&payloads, None);
    assert_eq!(links[0].prev, GENESIS);
    assert_eq!(to_hex(&links[0].digest), VECTOR[0].1);
    assert_eq!(links[1].prev, links[0].digest);
    assert_eq!(to_hex(&links[1].digest), VECTOR[1].1);
    assert_eq!(link(&GENESIS, b"report-1"), links[0].digest);
}

/// Linking does not move the head; advancing to the batch's last digest does, and the next
/// batch continues from there exactly as one longer batch would have.
#[test]
fn the_head_moves_only_when_advanced() {
    let mut chain = Chain::new("e1", GENESIS);
    let first = chain.links(&[b"a".as_slice(), b"b"], None);
    assert_eq!(chain.head, GENESIS);
    let again = chain.links(&[b"a".as_slice(), b"b"], None);
    assert_eq!(first, again, "a retry links to identical headers");
    chain.advance(first[1].digest);
    let next = chain.links(&[b"c".as_slice()], None);
    let whole = Chain::new("e1", GENESIS).links(&[b"a".as_slice(), b"b", b"c"], None);
    assert_eq!(next[0], whole[2]);
}

/// Each link is signed over its 32 digest bytes by the engine key, deterministically, and
/// the signature verifies with the public key.
#[test]
fn links_are_signed_over_the_digest() {
    let key = key();
    let chain = Chain::new("e1", GENESIS);
    let links = chain.links(&[b"x".as_slice()], Some(&key));
    let again = chain.links(&[b"x".as_slice()], Some(&key));
    assert_eq!(links, again, "Ed25519 signatures are deterministic");
    let signature = links[0].signature.as_deref().expect("signed");
    assert!(!signature.contains('='), "no padding");
    let raw = BASE64URL_NOPAD
        .decode(signature.as_bytes())
        .expect("base64url");
    let public = nkeys::KeyPair::from_public_key(&key.public_key()).expect("public key");
    assert!(public.verify(&links[0].digest, &raw).is_ok());
}

/// The headers carry the engine id, the hex digests and (with a key) the signature.
#[test]
fn headers_name_the_chain_and_its_digests() {
    let chain = Chain::new("e1", GENESIS);
    let unsigned = chain.links(&[b"report-1".as_slice()], None);
    let h = unsigned[0].headers("e1");
    assert_eq!(header(&h, contract::HEADER_CHAIN), Some("e1"));
    assert_eq!(
        header(&h, contract::HEADER_CHAIN_PREV),
        Some("0".repeat(64).as_str())
    );
    assert_eq!(header(&h, contract::HEADER_CHAIN_DIGEST), Some(VECTOR[0].1));
    assert_eq!(header(&h, contract::HEADER_CHAIN_SIGNATURE), None);
    let signed = chain.links(&[b"report-1".as_slice()], Some(&key()));
    assert!(header(&signed[0].headers("e1"), contract::HEADER_CHAIN_SIGNATURE).is_some());
}

/// Hex digests are exactly 64 lower-case hex digits.
#[test]
fn hex_round_trips_and_refuses_other_forms() {
    let d = link(&GENESIS, b"p");
    assert_eq!(from_hex(&to_hex(&d)), Some(d));
    assert_eq!(from_hex(&to_hex(&d).to_uppercase()), None);
    assert_eq!(from_hex(&to_hex(&d)[..62]), None);
    assert_eq!(from_hex("zz"), None);
}

/// The start-up walk: this engine's report is its head (if its digest holds), another
/// engine's is skipped, an unchained one means genesis, a wrong digest is tampering.
#[test]
fn examine_finds_the_head_or_tampering() {
    let links = Chain::new("e1", GENESIS).links(&[b"one".as_slice(), b"two"], None);
    let h = links[1].headers("e1");
    let stored = Stored {
        chain: header(&h, contract::HEADER_CHAIN),
        prev: header(&h, contract::HEADER_CHAIN_PREV),
        digest: header(&h, contract::HEADER_CHAIN_DIGEST),
    };
    assert_eq!(
        examine("e1", stored, b"two"),
        Examined::Head(links[1].digest)
    );
    assert_eq!(examine("e2", stored, b"two"), Examined::Other);
    assert_eq!(
        examine("e1", Stored::default(), b"two"),
        Examined::Unchained
    );
    let Examined::Tampered(why) = examine("e1", stored, b"TWO") else {
        panic!("an altered payload must be tampering");
    };
    assert!(why.contains(contract::HEADER_CHAIN_DIGEST), "{why}");
    let bad = Stored {
        prev: Some("nothex"),
        ..stored
    };
    assert!(matches!(examine("e1", bad, b"two"), Examined::Tampered(_)));
    let missing = Stored {
        digest: None,
        ..stored
    };
    assert!(matches!(
        examine("e1", missing, b"two"),
        Examined::Tampered(_)
    ));
}
