//! Tests of the lease decisions.

use super::*;

fn holder(engine_id: &str, instance: &str) -> Holder {
    Holder {
        engine_id: engine_id.into(),
        instance: instance.into(),
        host: "h1".into(),
        pid: 42,
        taken_unix_ms: 1_700_000_000_000,
    }
}

fn put(h: &Holder, revision: u64) -> (Vec<u8>, u64) {
    (serde_json::to_vec(h).unwrap(), revision)
}

const TTL: Duration = Duration::from_secs(5);

/// A free, deleted, purged (expired with a marker) or own key is not a conflict; a key of
/// another engine id, or one that is not a holder at all, is; one of another instance of
/// this engine id is told apart.
#[test]
fn classify_by_engine_and_instance() {
    let me = holder("engine-1", "a");
    assert_eq!(classify(None, &me), KeyState::Free);
    for op in [kv::Operation::Delete, kv::Operation::Purge] {
        assert_eq!(classify(Some((op, b"", 3)), &me), KeyState::Free);
    }
    let (v, r) = put(&me, 4);
    assert_eq!(
        classify(Some((kv::Operation::Put, &v, r)), &me),
        KeyState::Ours { revision: 4 }
    );
    let older = holder("engine-1", "b");
    let (v, r) = put(&older, 5);
    assert_eq!(
        classify(Some((kv::Operation::Put, &v, r)), &me),
        KeyState::SameEngine {
            holder: older,
            revision: 5
        }
    );
    let other = holder("engine-2", "a");
    let (v, r) = put(&other, 6);
    assert_eq!(
        classify(Some((kv::Operation::Put, &v, r)), &me),
        KeyState::OtherEngine {
            holder: Some(other),
            revision: 6
        }
    );
    assert_eq!(
        classify(Some((kv::Operation::Put, b"not json", 7)), &me),
        KeyState::OtherEngine {
            holder: None,
            revision: 7
        }
    );
}

/// Held by another engine → refuse, naming it; by another instance of this engine → wait;
/// free → take. Another engine anywhere wins over waiting.
#[test]
fn plan_refuses_waits_or_takes() {
    let other = holder("engine-2", "x");
    let older = holder("engine-1", "b");
    let free = |k: &str| (k.to_string(), KeyState::Free);
    assert_eq!(
        plan(&[free("intake"), free("symbol.AAPL")], TTL),
        Plan::Take
    );
    assert_eq!(
        plan(
            &[
                free("intake"),
                ("symbol.AAPL".into(), KeyState::Ours { revision: 1 })
            ],
            TTL
        ),
        Plan::Take
    );
    let waiting = [
        free("intake"),
        (
            "symbol.AAPL".into(),
            KeyState::SameEngine {
                holder: older.clone(),
                revision: 9,
            },
        ),
    ];
    assert_eq!(
        plan(&waiting, TTL),
        Plan::Wait(vec![("symbol.AAPL".into(), older.clone(), 9)])
    );
    let refused = [
        (
            "intake".into(),
            KeyState::OtherEngine {
                holder: Some(other.clone()),
                revision: 1,
            },
        ),
        (
            "symbol.AAPL".into(),
            KeyState::OtherEngine {
                holder: Some(other.clone()),
                revision: 2,
            },
        ),
        (
            "symbol.MSFT".into(),
            KeyState::SameEngine {
                holder: older,
                revision: 3,
            },
        ),
    ];
    let Plan::Refuse(msg) = plan(&refused, TTL) else {
        panic!("expected a refusal");
    };
    assert!(
        msg.starts_with(
            "symbol AAPL and the intake (submit queue group and ORDERS consumer) are served \
             by engine engine-2 (instance x, host h1, pid 42); this deployment supports one \
             engine per symbol and one engine per intake today"
        ),
        "{msg}"
    );
    assert!(msg.contains("(TTL 5 s)"), "{msg}");
}

/// While waiting: gone → take; unchanged → wait; renewed → its holder is alive → refuse;
/// taken by another engine → refuse naming it.
#[test]
fn wait_step_follows_the_waited_revision() {
    let older = holder("engine-1", "b");
    assert_eq!(
        wait_step("intake", 9, &KeyState::Free, TTL),
        WaitStep::Expired
    );
    let same = |revision| KeyState::SameEngine {
        holder: older.clone(),
        revision,
    };
    assert_eq!(wait_step("intake", 9, &same(9), TTL), WaitStep::Waiting);
    let WaitStep::Renewed(10, msg) = wait_step("symbol.AAPL", 9, &same(10), TTL) else {
        panic!("expected a renewal");
    };
    assert!(
        msg.contains("symbol AAPL is held by a live instance"),
        "{msg}"
    );
    let taken = KeyState::OtherEngine {
        holder: Some(holder("engine-3", "z")),
        revision: 11,
    };
    let WaitStep::Alive(msg) = wait_step("intake", 9, &taken, TTL) else {
        panic!("expected a refusal");
    };
    assert!(msg.contains("served by engine engine-3"), "{msg}");
}

/// A renewal that finds its key moved on: expired → re-create; our own write → adopt;
/// anyone else's → lost.
#[test]
fn renewal_conflicts() {
    assert_eq!(
        after_conflict("intake", &KeyState::Free, TTL),
        Renewal::Recreate
    );
    assert_eq!(
        after_conflict("intake", &KeyState::Ours { revision: 7 }, TTL),
        Renewal::Adopt(7)
    );
    let taken = KeyState::OtherEngine {
        holder: Some(holder("engine-2", "x")),
        revision: 8,
    };
    let Renewal::Lost(msg) = after_conflict("symbol.AAPL", &taken, TTL) else {
        panic!("expected a loss");
    };
    assert!(
        msg.starts_with("symbol AAPL is now held by engine engine-2"),
        "{msg}"
    );
    let standby = KeyState::SameEngine {
        holder: holder("engine-1", "c"),
        revision: 9,
    };
    assert!(matches!(
        after_conflict("intake", &standby, TTL),
        Renewal::Lost(_)
    ));
}

/// The intake comes first (engines starting together meet there), then one key per symbol;
/// renewals leave three chances per TTL and the wait exceeds the TTL.
#[test]
fn keys_and_timing() {
    let symbols = ["AAPL".to_string(), "BTC-USD".to_string()];
    assert_eq!(
        lease_keys(&symbols),
        vec!["intake", "symbol.AAPL", "symbol.BTC-USD"]
    );
    assert!(renew_every(TTL) * 3 <= TTL && renew_every(TTL) > Duration::from_millis(1600));
    assert_eq!(wait_limit(TTL), Duration::from_secs(7));
    assert!(wait_limit(Duration::from_secs(60)) > Duration::from_secs(60));
    assert_eq!(poll_every(TTL), Duration::from_millis(250));
}

/// A holder survives its JSON round trip; its description names engine, instance and host.
#[test]
fn holder_round_trip_and_display() {
    let me = Holder::this_process("engine-1");
    assert_eq!(Holder::decode(&me.encode()), Some(me.clone()));
    assert_eq!(me.instance.len(), 16);
    assert_eq!(
        holder("engine-2", "x").to_string(),
        "engine engine-2 (instance x, host h1, pid 42)"
    );
}
