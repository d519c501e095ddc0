//! Tests of the authorization checks: the entitlements file (shared vector, errors naming the
//! identity and field), signatures (including one made by the Python signer), the window,
//! replays and redeliveries, entitlement and account checks.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nkeys::KeyPair;

use super::entitlements::{parse, Role};
use super::replay::ReplayCache;
use super::signature::{signed_bytes, verify, Headers};
use super::*;

const T0: i64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_000_000;
const WINDOW_MS: u64 = 30_000;

/// The headers of a signature by `key`: signer, signed_at, signature.
fn sign(key: &KeyPair, subject: &str, signed_at_ns: i64, payload: &[u8]) -> [String; 3] {
    let signature = key
        .sign(&signed_bytes(subject, signed_at_ns, payload))
        .unwrap();
    [
        key.public_key(),
        signed_at_ns.to_string(),
        URL_SAFE_NO_PAD.encode(signature),
    ]
}

fn headers(h: &[String; 3]) -> Headers<'_> {
    Headers {
        signer: Some(&h[0]),
        signed_at: Some(&h[1]),
        signature: Some(&h[2]),
    }
}

fn entitlements_for(keys: &[(&str, &str, &KeyPair, &[&str])]) -> Entitlements {
    let mut text = String::from("version = 1\n");
    for (name, role, key, accounts) in keys {
        text += &format!(
            "[identities.{name}]\nrole = \"{role}\"\nnkey = \"{}\"\ncertificate_subject = \"CN={name}\"\n",
            key.public_key()
        );
        if !accounts.is_empty() {
            let list: Vec<String> = accounts.iter().map(|a| format!("{a:?}")).collect();
            text += &format!("accounts = [{}]\n", list.join(", "));
        }
    }
    parse(&text, "test").unwrap()
}

struct Fixture {
    desk_a: KeyPair,
    engine: KeyPair,
    auth: Authorizer,
}

fn fixture() -> Fixture {
    let desk_a = KeyPair::new_user();
    let all = KeyPair::new_user();
    let engine = KeyPair::new_user();
    let ents = entitlements_for(&[
        ("desk-a", "orchestrator", &desk_a, &["DESK-A"]),
        ("orchestrator", "orchestrator", &all, &["*"]),
        ("engine", "engine", &engine, &[]),
    ]);
    Fixture {
        desk_a,
        engine,
        auth: Authorizer::new(ents, WINDOW_MS),
    }
}

fn msg<'a>(subject: &'a str, payload: &'a [u8], h: &'a [String; 3]) -> Message<'a> {
    Message {
        subject,
        payload,
        headers: headers(h),
        reference_ns: T0,
        stream_seq: None,
    }
}

// ------------------------------------------------------------------ the entitlements file

/// Every [[expect]] of the shared vector holds (the Python loader is held to the same file).
#[test]
fn shared_vector_expectations_hold() {
    let text = include_str!("../../../schemas/testdata/entitlements.toml");
    let ents = parse(text, "schemas/testdata/entitlements.toml").unwrap();
    assert_eq!(ents.identities().len(), 7);
    let table: toml::Table = text.parse().unwrap();
    let cases = table["expect"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let nkey = case["nkey"].as_str().unwrap();
        let account = case["account"].as_str().unwrap();
        let want = case["entitled"].as_bool().unwrap();
        assert_eq!(ents.entitled(nkey, account), want, "{nkey} {account}");
    }
    let desk_a = ents
        .by_nkey("UAKRQBLGI2BRNQ43QCTVMMEC32VIQTD2FHWSV5D3FH5YQ4H5RJBHGGGX")
        .unwrap();
    assert_eq!(desk_a.name, "desk-a");
    assert_eq!(desk_a.role, Role::Orchestrator);
    assert_eq!(desk_a.accounts, ["DESK-A", "DESK-A2"]);
}

/// The committed dev file refers to dev keys: the engine refuses it, saying what to use.
#[test]
fn dev_keys_are_refused_naming_the_identity() {
    let text = include_str!("../../../nats/entitlements.toml");
    let err = parse(text, "nats/entitlements.toml").unwrap_err();
    assert!(
        err.field.starts_with("identities.") && err.field.ends_with(".nkey"),
        "{err}"
    );
    assert!(err.message.contains("dev:"), "{err}");
    assert!(err.to_string().contains("resolved"), "{err}");
}

/// Invalid files fail naming the identity and the field.
#[test]
fn errors_name_the_identity_and_field() {
    let key = "UAKRQBLGI2BRNQ43QCTVMMEC32VIQTD2FHWSV5D3FH5YQ4H5RJBHGGGX";
    let one = |body: &str| format!("version = 1\n[identities.desk]\n{body}\n");
    let ok = format!("role = \"orchestrator\"\nnkey = \"{key}\"\ncertificate_subject = \"CN=d\"\naccounts = [\"A\"]");
    assert!(parse(&one(&ok), "t").is_ok());
    let cases: Vec<(String, &str, &str)> = vec![
        (
            one(&format!("{ok}\ncolour = \"red\"")),
            "identities.desk.colour",
            "unknown field",
        ),
        (
            one(&ok.replace("orchestrator", "trader")),
            "identities.desk.role",
            "trader",
        ),
        (
            one(&ok.replace(key, "UABC")),
            "identities.desk.nkey",
            "public user NKey",
        ),
        (
            one(&ok.replace("[\"A\"]", "[\"a.b\"]")),
            "identities.desk.accounts",
            "a.b",
        ),
        (
            one(&ok.replace("[\"A\"]", "[\"_house\"]")),
            "identities.desk.accounts",
            "_house",
        ),
        (
            one(&ok.replace("[\"A\"]", "[]")),
            "identities.desk.accounts",
            "at least one",
        ),
        (
            one(&ok.replace("\"orchestrator\"", "\"engine\"")),
            "identities.desk.accounts",
            "trades no account",
        ),
        (
            one(&ok.replace("certificate_subject = \"CN=d\"\n", "")),
            "identities.desk.certificate_subject",
            "missing",
        ),
        (
            one(&ok.replace("accounts = [\"A\"]", "accounts = \"A\"")),
            "identities.desk.accounts",
            "invalid type",
        ),
        (
            ok.replace("role", "version = 2\n[identities.desk]\nrole"),
            "version",
            "must be 1",
        ),
        ("version = 1\n".into(), "identities", "at least one"),
        (
            "version = 1\n[identities.\"bad name\"]\nrole = \"engine\"".into(),
            "identities.bad name",
            "invalid identity name",
        ),
        (
            format!(
                "{}\n[identities.twin]\n{}",
                one(&ok),
                ok.replace("accounts = [\"A\"]", "accounts = [\"B\"]")
            ),
            "identities.twin.nkey",
            "same key as identity \"desk\"",
        ),
        ("not toml [".into(), "<file>", "not valid TOML"),
    ];
    for (text, field, words) in cases {
        let err = parse(&text, "t").expect_err(&text);
        assert_eq!(err.field, field, "{text}\n{err}");
        assert!(err.to_string().contains(words), "{text}\n{err}");
    }
}

/// A reload reports what changed, by identity name.
#[test]
fn changes_between_two_files() {
    let (a, b, c) = (
        KeyPair::new_user(),
        KeyPair::new_user(),
        KeyPair::new_user(),
    );
    let old = entitlements_for(&[
        ("a", "orchestrator", &a, &["A"]),
        ("b", "operator", &b, &["*"]),
    ]);
    let new = entitlements_for(&[
        ("a", "orchestrator", &a, &["A", "A2"]),
        ("c", "engine", &c, &[]),
    ]);
    let changes = old.changes(&new);
    assert_eq!((changes.before, changes.after), (2, 2));
    assert_eq!(changes.added, ["c"]);
    assert_eq!(changes.removed, ["b"]);
    assert_eq!(changes.changed, ["a"]);
}

// ------------------------------------------------------------------ signatures

/// A message signed by the Python signer (`bridge/security/signing.py`, written to
/// schemas/testdata/signature.json by scripts/gen_signature_vector.py) verifies here; the same
/// message tampered with (payload, subject, time or signature) does not.
#[test]
fn python_signature_verifies_and_tampering_is_refused() {
    let vector: serde_json::Value =
        serde_json::from_str(include_str!("../../../schemas/testdata/signature.json")).unwrap();
    let field = |k: &str| vector[k].as_str().unwrap().to_string();
    let (signer, subject, signed_at, signature) = (
        field("public_key"),
        field("subject"),
        field("signed_at"),
        field("signature"),
    );
    let payload: Vec<u8> = (0..field("payload_hex").len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&field("payload_hex")[i..i + 2], 16).unwrap())
        .collect();
    let h = Headers {
        signer: Some(&signer),
        signed_at: Some(&signed_at),
        signature: Some(&signature),
    };
    let signed = verify(&subject, &payload, &h).unwrap();
    assert_eq!(signed.signer, signer);
    assert_eq!(signed.signed_at_ns.to_string(), signed_at);

    let mut tampered = payload.clone();
    tampered[0] ^= 1;
    let (kind, text) = verify(&subject, &tampered, &h).unwrap_err();
    assert_eq!(kind, RefusalKind::BadSignature);
    assert!(
        text.contains("does not verify") && text.contains(&signer),
        "{text}"
    );
    let other_subject = format!("{subject}X");
    assert!(verify(&other_subject, &payload, &h).is_err());
    let later = (signed.signed_at_ns + 1).to_string();
    assert!(verify(
        &subject,
        &payload,
        &Headers {
            signed_at: Some(&later),
            ..h
        }
    )
    .is_err());
}

/// Missing and malformed headers: UNSIGNED without a signature, BAD_SIGNATURE otherwise, each
/// naming the header.
#[test]
fn missing_and_malformed_headers() {
    let key = KeyPair::new_user();
    let s = contract::submit("DESK-A");
    let h = sign(&key, &s, T0, b"order");
    let cases: Vec<(Headers<'_>, RefusalKind, &str)> = vec![
        (
            Headers::default(),
            RefusalKind::Unsigned,
            "no Bridge-Signature",
        ),
        (
            Headers {
                signature: None,
                ..headers(&h)
            },
            RefusalKind::Unsigned,
            "no Bridge-Signature",
        ),
        (
            Headers {
                signer: None,
                ..headers(&h)
            },
            RefusalKind::BadSignature,
            "no Bridge-Signer",
        ),
        (
            Headers {
                signed_at: None,
                ..headers(&h)
            },
            RefusalKind::BadSignature,
            "no Bridge-Signed-At",
        ),
        (
            Headers {
                signed_at: Some("yesterday"),
                ..headers(&h)
            },
            RefusalKind::BadSignature,
            "not a decimal",
        ),
        (
            Headers {
                signer: Some("UNOTAKEY"),
                ..headers(&h)
            },
            RefusalKind::BadSignature,
            "not a public user NKey",
        ),
        (
            Headers {
                signature: Some("!!"),
                ..headers(&h)
            },
            RefusalKind::BadSignature,
            "not 64 bytes",
        ),
    ];
    for (hs, kind, words) in cases {
        let (got, text) = verify(&s, b"order", &hs).unwrap_err();
        assert_eq!(got, kind, "{text}");
        assert!(text.contains(words), "{words}: {text}");
    }
    // Another key type (an account key) is not a signer.
    let account = KeyPair::new_account();
    let h = sign(&account, &s, T0, b"order");
    assert!(verify(&s, b"order", &headers(&h))
        .unwrap_err()
        .1
        .contains("user NKey"));
}

// ------------------------------------------------------------------ the checks

/// A signature by an entitled identity passes, with its identity and the subject's account.
#[test]
fn an_entitled_signer_passes() {
    let mut f = fixture();
    let s = contract::submit("DESK-A");
    let h = sign(&f.desk_a, &s, T0 - 5 * MS, b"order");
    let v = f.auth.check(&msg(&s, b"order", &h), T0).unwrap();
    assert_eq!(v.identity, "desk-a");
    assert_eq!(v.nkey, f.desk_a.public_key());
    assert_eq!(v.account, "DESK-A");
    assert!(v.check_account("DESK-A").is_ok());
}

/// Each refusal: its kind, reason, violation and a text with the values compared.
#[test]
fn each_refusal_names_the_check_and_the_values() {
    let mut f = fixture();
    let s = contract::submit("DESK-A");
    let stranger = KeyPair::new_user();

    let h = sign(&stranger, &s, T0, b"o");
    let r = f.auth.check(&msg(&s, b"o", &h), T0).unwrap_err();
    assert_eq!(r.kind, RefusalKind::BadSignature);
    assert_eq!(
        r.text,
        format!(
            "signer {} is not in the entitlements",
            stranger.public_key()
        )
    );
    assert_eq!(r.signer, stranger.public_key());
    assert_eq!(r.identity, None);

    let h = sign(&f.desk_a, &s, T0 - 31_000 * MS, b"o");
    let r = f.auth.check(&msg(&s, b"o", &h), T0).unwrap_err();
    assert_eq!(r.kind, RefusalKind::SignatureExpired);
    assert!(
        r.text.contains("31000 ms before the engine's clock"),
        "{}",
        r.text
    );
    assert!(r.text.contains("window 30000 ms"), "{}", r.text);
    let h = sign(&f.desk_a, &s, T0 + 31_000 * MS, b"o");
    let r = f.auth.check(&msg(&s, b"o", &h), T0).unwrap_err();
    assert!(r.text.contains("31000 ms after"), "{}", r.text);

    let other = contract::submit("DESK-B");
    let h = sign(&f.desk_a, &other, T0, b"o");
    let r = f.auth.check(&msg(&other, b"o", &h), T0).unwrap_err();
    assert_eq!(r.kind, RefusalKind::NotEntitled);
    assert_eq!(
        r.text,
        "identity desk-a is not entitled to account DESK-B (entitled: DESK-A)"
    );
    assert_eq!(r.identity.as_deref(), Some("desk-a"));
    assert_eq!(r.account, "DESK-B");

    let house = contract::submit("_house");
    let h = sign(&f.desk_a, &house, T0, b"o");
    assert_eq!(
        f.auth.check(&msg(&house, b"o", &h), T0).unwrap_err().kind,
        RefusalKind::NotEntitled
    );

    let h = sign(&f.engine, &s, T0, b"o");
    let r = f.auth.check(&msg(&s, b"o", &h), T0).unwrap_err();
    assert_eq!(r.kind, RefusalKind::NotEntitled);
    assert!(r.text.contains("role engine"), "{}", r.text);

    let h = sign(&f.desk_a, &s, T0 + 1, b"o");
    let v = f.auth.check(&msg(&s, b"o", &h), T0).unwrap();
    let r = v.check_account("DESK-B").unwrap_err();
    assert_eq!(r.kind, RefusalKind::AccountMismatch);
    assert_eq!(r.text, "subject account DESK-A != order account DESK-B");
    let r = v.check_account("_house").unwrap_err();
    assert_eq!(r.text, "subject account DESK-A != order account _house");
    // No id at all: validation's to refuse (INVALID_FIELD, nothing stored), not a mismatch.
    assert!(v.check_account("").is_ok());
    assert!(v.check_account("a.b\n").is_ok());
    assert!(v.check_account(&"A".repeat(33)).is_ok());

    for kind in RefusalKind::ALL {
        assert_eq!(
            kind.reject_reason().as_str_name(),
            format!("REJECT_REASON_{}", kind.token().to_uppercase())
        );
        assert_eq!(
            kind.violation().as_str_name(),
            format!("SECURITY_VIOLATION_KIND_{}", kind.token().to_uppercase())
        );
    }
}

/// The same signature twice is a replay (the text says where it was first seen); a queued
/// order redelivered under its stream sequence is not; another sequence is.
#[test]
fn replays_and_redeliveries() {
    let mut f = fixture();
    let s = contract::submit("DESK-A");
    let h = sign(&f.desk_a, &s, T0, b"o");
    f.auth.check(&msg(&s, b"o", &h), T0).unwrap();
    let r = f
        .auth
        .check(&msg(&s, b"o", &h), T0 + 1500 * MS)
        .unwrap_err();
    assert_eq!(r.kind, RefusalKind::Replayed);
    assert!(
        r.text.contains("seen 1500 ms ago in a request"),
        "{}",
        r.text
    );

    let q = contract::queue("DESK-A");
    let h = sign(&f.desk_a, &q, T0, b"q");
    let queued = |seq| Message {
        stream_seq: Some(seq),
        ..msg(&q, b"q", &h)
    };
    f.auth.check(&queued(7), T0).unwrap();
    f.auth.check(&queued(7), T0 + 10 * MS).unwrap();
    let r = f.auth.check(&queued(8), T0 + 20 * MS).unwrap_err();
    assert_eq!(r.kind, RefusalKind::Replayed);
    assert!(
        r.text
            .contains("in queued message 7 (now in queued message 8)"),
        "{}",
        r.text
    );
}

/// A queued order's window is measured against its stored time, not the engine's clock: an
/// order queued for longer than the window still passes.
#[test]
fn queued_orders_use_the_stored_time() {
    let mut f = fixture();
    let q = contract::queue("DESK-A");
    let h = sign(&f.desk_a, &q, T0, b"q");
    let m = Message {
        stream_seq: Some(1),
        reference_ns: T0 + 10 * MS,
        ..msg(&q, b"q", &h)
    };
    assert!(f.auth.check(&m, T0 + 3_600_000 * MS).is_ok());
    let late = Message {
        stream_seq: Some(2),
        reference_ns: T0 + 40_000 * MS,
        ..m
    };
    let r = f.auth.check(&late, T0).unwrap_err();
    assert_eq!(r.kind, RefusalKind::SignatureExpired);
    assert!(
        r.text.contains("the time the order was stored"),
        "{}",
        r.text
    );
}

/// The replay cache forgets an entry once its window has passed and never holds more than
/// its capacity.
#[test]
fn replay_cache_is_bounded() {
    let mut cache = ReplayCache::new(30_000 * MS, 3);
    let sig = |i: u8| [i; 64];
    assert!(cache.check(&sig(1), None, T0).is_none());
    assert!(cache.check(&sig(1), None, T0 + 29_999 * MS).is_some());
    assert!(
        cache.check(&sig(1), None, T0 + 30_000 * MS).is_none(),
        "expired"
    );
    for i in 2..10 {
        assert!(cache.check(&sig(i), None, T0 + 30_001 * MS).is_none());
        assert!(cache.len() <= 3);
    }
    assert_eq!(cache.len(), 3);
    assert!(cache.evicted >= 5);
    assert!(cache.check(&sig(9), None, T0 + 30_002 * MS).is_some());
}

/// Entitlements are replaced on reload; a new identity's signature passes afterwards.
#[test]
fn reload_adds_an_identity() {
    let mut f = fixture();
    let newcomer = KeyPair::new_user();
    let s = contract::submit("NEW");
    let h = sign(&newcomer, &s, T0, b"o");
    assert_eq!(
        f.auth.check(&msg(&s, b"o", &h), T0).unwrap_err().kind,
        RefusalKind::BadSignature
    );
    let changes = f.auth.replace(entitlements_for(&[
        ("desk-a", "orchestrator", &f.desk_a, &["DESK-A"]),
        ("newcomer", "orchestrator", &newcomer, &["NEW"]),
    ]));
    assert_eq!(changes.added, ["newcomer"]);
    let h = sign(&newcomer, &s, T0 + 1, b"o");
    assert_eq!(
        f.auth.check(&msg(&s, b"o", &h), T0).unwrap().identity,
        "newcomer"
    );
}

/// The account of every order subject, and nothing else.
#[test]
fn subject_accounts() {
    assert_eq!(account_of_subject(&contract::submit("A")), Some("A"));
    assert_eq!(account_of_subject(&contract::cancel("A")), Some("A"));
    assert_eq!(account_of_subject(&contract::status("A")), Some("A"));
    assert_eq!(account_of_subject(&contract::queue("A")), Some("A"));
    assert_eq!(account_of_subject(&contract::queue_batch("A")), Some("A"));
    assert_eq!(account_of_subject(&contract::mass_cancel("A")), Some("A"));
    assert_eq!(account_of_subject(&contract::replace("A")), Some("A"));
    assert_eq!(account_of_subject(&contract::queue("A.B")), None);
    assert_eq!(account_of_subject(&contract::executions("A", "o")), None);
}

/// Session requests name no account: any trading identity may sign them; an engine may not.
#[test]
fn session_requests_need_a_trading_signer_not_an_account() {
    let mut f = fixture();
    for s in [
        contract::session_open("s-1"),
        contract::session_close("s-1"),
    ] {
        let h = sign(&f.desk_a, &s, T0, b"session");
        let v = f.auth.check(&msg(&s, b"session", &h), T0).unwrap();
        assert_eq!((v.identity.as_str(), v.account.as_str()), ("desk-a", ""));
        let h = sign(&f.engine, &s, T0 + 1, b"session");
        let refused = f.auth.check(&msg(&s, b"session", &h), T0).unwrap_err();
        assert_eq!(refused.kind, RefusalKind::NotEntitled);
    }
    // A subject that only looks like one (a dot in the id) is no session subject.
    let s = format!("{}a.b", contract::SESSION_OPEN_PREFIX);
    let h = sign(&f.desk_a, &s, T0 + 2, b"session");
    let refused = f.auth.check(&msg(&s, b"session", &h), T0).unwrap_err();
    assert_eq!(refused.kind, RefusalKind::NotEntitled);
}
