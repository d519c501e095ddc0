"""The v1 names of ``bridge.contract`` (generated from ``schemas/bridge/v1/contract.toml``).

The engine's Rust module is generated from the same file (``engine-rs/build.rs``), so the two
cannot differ; these tests pin the values themselves, which are part of the wire contract.
"""

from __future__ import annotations

from bridge import contract as subjects


def test_documented_subject_values() -> None:
    """The request-reply subjects, streams, consumer, bucket and headers have their v1 names."""
    assert subjects.PREFIX == "bridge.v1"
    assert subjects.SUBMIT == "bridge.v1.orders.submit"
    assert subjects.CANCEL == "bridge.v1.orders.cancel"
    assert subjects.STATUS == "bridge.v1.orders.status"
    assert subjects.ORDERS_STREAM == "ORDERS"
    assert subjects.EXECUTIONS_STREAM == "EXECUTIONS"
    assert subjects.ENGINE_CONSUMER == "engine"
    assert subjects.ORDERS_KV_BUCKET == "bridge_orders"
    assert subjects.LEASES_KV_BUCKET == "bridge_leases"
    assert subjects.LEASE_INTAKE_KEY == "intake"
    assert subjects.HEADER_MSG_ID == "Nats-Msg-Id"
    assert subjects.HEADER_CORRELATION_ID == "Bridge-Correlation-Id"
    assert subjects.HEADER_SCHEMA == "Bridge-Schema"


def test_queue_subject() -> None:
    """queue(account) is QUEUE_PREFIX followed by the account token."""
    assert subjects.queue("acct-1") == "bridge.v1.orders.queue.acct-1"
    assert subjects.queue("acct-1") == subjects.QUEUE_PREFIX + "acct-1"


def test_executions_for_account_covers_every_order() -> None:
    """The per-account wildcard is the executions() subject with '>' in place of the order."""
    assert subjects.executions_for_account("acct-1") == "bridge.v1.exec.acct-1.>"
    one = subjects.executions("acct-1", "ord-0001")
    wildcard = subjects.executions_for_account("acct-1")
    assert one.rsplit(".", 1)[0] == wildcard.rsplit(".", 1)[0]


def test_inbox_prefix() -> None:
    """Each role gets its own inbox prefix under _INBOX."""
    assert subjects.inbox_prefix("orchestrator") == "_INBOX.orchestrator"
    assert subjects.inbox_prefix("engine") == "_INBOX.engine"


def test_built_subjects_stay_in_the_bridge_namespace() -> None:
    """Every built order subject starts with the bridge.v1 prefix and has no empty token."""
    built = [
        subjects.SUBMIT,
        subjects.CANCEL,
        subjects.STATUS,
        subjects.queue("a"),
        subjects.executions("a", "o"),
        subjects.executions_for_account("a"),
    ]
    for subject in built:
        assert subject.startswith(subjects.PREFIX + ".")
        assert "" not in subject.split("."), subject


def test_keys() -> None:
    """Order records and symbol leases are keyed as the engine's store expects."""
    assert subjects.order_key("acct-1", "ord-1") == "acct-1.ord-1"
    assert subjects.lease_symbol_key("AAPL") == "symbol.AAPL"
