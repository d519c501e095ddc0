"""The v1 names of ``bridge.contract`` (generated from ``schemas/bridge/v1/contract.toml``).

The engine's Rust module is generated from the same file (``engine-rs/build.rs``), so the two
cannot differ; these tests pin the values themselves, which are part of the wire contract.
"""

from __future__ import annotations

import importlib
import sys

import pytest

from bridge import contract


def test_documented_subject_values() -> None:
    """The request-reply subjects, streams, consumer, bucket and headers have their v1 names."""
    assert contract.PREFIX == "bridge.v1"
    assert contract.submit("ACC1") == "bridge.v1.orders.submit.ACC1"
    assert contract.cancel("ACC1") == "bridge.v1.orders.cancel.ACC1"
    assert contract.status("ACC1") == "bridge.v1.orders.status.ACC1"
    assert contract.SUBMIT_ALL == "bridge.v1.orders.submit.*"
    assert contract.CANCEL_ALL == "bridge.v1.orders.cancel.*"
    assert contract.STATUS_ALL == "bridge.v1.orders.status.*"
    assert contract.ORDERS_STREAM == "ORDERS"
    assert contract.EXECUTIONS_STREAM == "EXECUTIONS"
    assert contract.ENGINE_CONSUMER == "engine"
    assert contract.ORDERS_KV_BUCKET == "bridge_orders"
    assert contract.LEASES_KV_BUCKET == "bridge_leases"
    assert contract.LEASE_INTAKE_KEY == "intake"
    assert contract.HEADER_MSG_ID == "Nats-Msg-Id"
    assert contract.HEADER_CORRELATION_ID == "Bridge-Correlation-Id"
    assert contract.HEADER_SCHEMA == "Bridge-Schema"


def test_queue_subject() -> None:
    """queue(account) is QUEUE_PREFIX followed by the account token."""
    assert contract.queue("acct-1") == "bridge.v1.orders.queue.acct-1"
    assert contract.queue("acct-1") == contract.QUEUE_PREFIX + "acct-1"


def test_executions_for_account_covers_every_order() -> None:
    """The per-account wildcard is the executions() subject with '>' in place of the order."""
    assert contract.executions_for_account("acct-1") == "bridge.v1.exec.acct-1.>"
    one = contract.executions("acct-1", "ord-0001")
    wildcard = contract.executions_for_account("acct-1")
    assert one.rsplit(".", 1)[0] == wildcard.rsplit(".", 1)[0]


def test_inbox_prefix() -> None:
    """Each role gets its own inbox prefix under _INBOX; an orchestrator identity its own
    under its role's."""
    assert contract.inbox_prefix("orchestrator") == "_INBOX.orchestrator"
    assert contract.inbox_prefix("engine") == "_INBOX.engine"
    assert contract.identity_inbox_prefix("orchestrator", "UABC") == "_INBOX.orchestrator.UABC"


def test_order_subjects_carry_the_account_as_their_last_token() -> None:
    """What each engine serves is the per-account subject with '*' for the account."""
    for one, every in (
        (contract.submit, contract.SUBMIT_ALL),
        (contract.cancel, contract.CANCEL_ALL),
        (contract.status, contract.STATUS_ALL),
    ):
        assert one("ACC1").rsplit(".", 1) == [every.rsplit(".", 1)[0], "ACC1"]
        assert every.endswith(".*")


def test_built_subjects_stay_in_the_bridge_namespace() -> None:
    """Every built order subject starts with the bridge.v1 prefix and has no empty token."""
    built = [
        contract.submit("a"),
        contract.cancel("a"),
        contract.status("a"),
        contract.queue("a"),
        contract.executions("a", "o"),
        contract.executions_for_account("a"),
    ]
    for subject in built:
        assert subject.startswith(contract.PREFIX + ".")
        assert "" not in subject.split("."), subject


def test_keys() -> None:
    """Order records and symbol leases are keyed as the engine's store expects."""
    assert contract.order_key("acct-1", "ord-1") == "acct-1.ord-1"
    assert contract.lease_symbol_key("AAPL") == "symbol.AAPL"


def test_the_old_module_name_still_imports_and_warns() -> None:
    """bridge.subjects (the pre-contract name) re-exports the contract for one more version."""
    sys.modules.pop("bridge.subjects", None)
    with pytest.warns(DeprecationWarning, match="bridge.contract"):
        old = importlib.import_module("bridge.subjects")
    assert old.queue("A") == contract.queue("A")
    assert old.submit("A") == contract.submit("A")


@pytest.mark.parametrize(
    ("old_name", "now", "function"),
    [
        ("SUBMIT", contract.SUBMIT_ALL, "submit"),
        ("CANCEL", contract.CANCEL_ALL, "cancel"),
        ("STATUS", contract.STATUS_ALL, "status"),
    ],
)
def test_the_old_single_order_subjects_name_the_wildcards_with_a_warning(
    old_name: str, now: str, function: str
) -> None:
    """bridge.subjects.SUBMIT (one subject before accounts became a token) still resolves: to
    what engines serve, warning that senders use the per-account function."""
    sys.modules.pop("bridge.subjects", None)
    with pytest.warns(DeprecationWarning, match="bridge.contract"):
        old = importlib.import_module("bridge.subjects")
    with pytest.warns(DeprecationWarning, match=rf"contract\.{function}\(account\)"):
        assert getattr(old, old_name) == now
    with pytest.raises(AttributeError):
        _ = old.NOT_A_NAME
