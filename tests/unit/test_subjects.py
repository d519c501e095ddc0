"""Unit tests for ``bridge.subjects``, pinned to the Rust engine's ``engine-rs/src/subjects.rs``.

The Rust file is parsed, not copied: if either side renames a subject, stream, consumer, bucket
or header, these tests fail until both agree.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge import subjects

RUST_SUBJECTS = Path(__file__).resolve().parents[2] / "engine-rs" / "src" / "subjects.rs"
_CONST = re.compile(r'^pub const (?P<name>[A-Z][A-Z0-9_]*): &str = "(?P<value>[^"\\]*)";$', re.M)
_FORMAT = re.compile(r'pub fn (?P<name>\w+)\([^)]*\) -> String \{\s*format!\("(?P<fmt>[^"]*)"\)')

SHARED = [
    "SUBMIT",
    "CANCEL",
    "STATUS",
    "ORDERS_STREAM",
    "EXECUTIONS_STREAM",
    "ENGINE_CONSUMER",
    "ORDERS_KV_BUCKET",
    "LEASES_KV_BUCKET",
    "LEASE_INTAKE_KEY",
    "HEADER_MSG_ID",
    "HEADER_CORRELATION_ID",
]


def _rust_consts() -> dict[str, str]:
    return {m["name"]: m["value"] for m in _CONST.finditer(RUST_SUBJECTS.read_text("utf-8"))}


def _rust_formats() -> dict[str, str]:
    return {m["name"]: m["fmt"] for m in _FORMAT.finditer(RUST_SUBJECTS.read_text("utf-8"))}


RUST = _rust_consts()


def test_rust_file_parses() -> None:
    """The Rust constants are found, so the comparisons below are not vacuous."""
    assert set(SHARED) <= set(RUST), f"missing in {RUST_SUBJECTS}: {set(SHARED) - set(RUST)}"
    assert "QUEUE_PREFIX" in RUST


@pytest.mark.parametrize("name", SHARED)
def test_constant_matches_rust(name: str) -> None:
    """Each shared name has the same string value in Python and in Rust."""
    assert getattr(subjects, name) == RUST[name]


def test_every_rust_header_exists_in_python() -> None:
    """Every HEADER_* the engine knows is defined in Python with the same value."""
    headers = {n: v for n, v in RUST.items() if n.startswith("HEADER_")}
    assert headers
    for name, value in headers.items():
        assert getattr(subjects, name, None) == value, name


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
    """queue(account) is the Rust QUEUE_PREFIX followed by the account token."""
    assert subjects.queue("acct-1") == "bridge.v1.orders.queue.acct-1"
    assert subjects.queue("acct-1") == RUST["QUEUE_PREFIX"] + "acct-1"


def test_executions_subject_matches_rust_format() -> None:
    """executions(account, id) builds the subject the Rust executions() format! string does."""
    assert subjects.executions("acct-1", "ord-0001") == "bridge.v1.exec.acct-1.ord-0001"
    rust_format = _rust_formats()["executions"]
    assert subjects.executions("{account}", "{client_order_id}") == rust_format


def test_executions_for_account_covers_every_order() -> None:
    """The per-account wildcard is the executions() subject with '>' in place of the order."""
    assert subjects.executions_for_account("acct-1") == "bridge.v1.exec.acct-1.>"
    one = subjects.executions("acct-1", "ord-0001")
    wildcard = subjects.executions_for_account("acct-1")
    assert one.rsplit(".", 1)[0] == wildcard.rsplit(".", 1)[0]


def test_lease_symbol_key_matches_rust_format() -> None:
    """lease_symbol_key(symbol) builds the key the Rust lease_symbol_key() format! string does."""
    assert subjects.lease_symbol_key("AAPL") == "symbol.AAPL"
    assert subjects.lease_symbol_key("{symbol}") == _rust_formats()["lease_symbol_key"]


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
