"""``BridgeClient.cancel_all`` over the fake transport: the request on the wire, the result
model, input checked before sending, retries, a security refusal ends the client, and the
trading_state document's per-account entry (``documents.with_account_state``). Against the real
engine: tests/integration/test_mass_cancel.py."""

from __future__ import annotations

from typing import Any

import nats.errors
import pytest

from bridge import (
    AckStatus,
    EngineUnavailableError,
    InvalidOrderError,
    MassCancelIncompleteError,
    MassCancelResult,
    RejectReason,
    SecurityViolationError,
    Side,
    contract,
)
from bridge.runtime_config import documents
from bridge.v1 import common_pb2, lifecycle_pb2, orders_pb2
from tests.unit.fake_transport import FakeTransport
from tests.unit.test_client import open_client

SUBJECT = contract.mass_cancel("ACC1")


def answering(
    canceled: int = 3,
    status: int = orders_pb2.ACK_STATUS_ACCEPTED,
    reason: int = orders_pb2.REJECT_REASON_UNSPECIFIED,
    engine_ids: tuple[str, ...] = ("engine-1",),
    text: str = "",
) -> Any:
    """An engine answering every mass cancel with this reply, echoing account and id."""

    def respond(data: bytes, _headers: dict[str, str]) -> bytes:
        req = lifecycle_pb2.MassCancelRequest.FromString(data)
        return lifecycle_pb2.MassCancelReply(
            account=req.account,
            request_id=req.request_id,
            status=status,  # type: ignore[arg-type]
            reason=reason,  # type: ignore[arg-type]
            canceled=canceled,
            engine_ids=list(engine_ids),
            text=text,
        ).SerializeToString()

    return respond


async def test_the_request_on_the_wire_and_the_result() -> None:
    """Account, symbol, side and request id go out as a signed MassCancelRequest on the
    account's subject; the reply is a typed, complete result."""
    fake = FakeTransport()
    fake.respond(SUBJECT, answering(canceled=3, engine_ids=("engine-1", "engine-2")))
    bridge = await open_client(fake)
    try:
        result = await bridge.cancel_all("ACC1", symbol="AAPL", side=Side.SELL, request_id="r-1")
    finally:
        await bridge.close()
    assert isinstance(result, MassCancelResult)
    assert (result.account, result.request_id, result.canceled) == ("ACC1", "r-1", 3)
    assert result.engine_ids == ("engine-1", "engine-2")
    assert result.status is AckStatus.ACCEPTED
    assert result.reason is RejectReason.NONE
    assert result.complete
    assert result.raise_for_status() is result
    (sent,) = fake.requests(SUBJECT)
    req = lifecycle_pb2.MassCancelRequest.FromString(sent.data)
    assert (req.account, req.symbol, req.side, req.request_id) == (
        "ACC1",
        "AAPL",
        orders_pb2.SIDE_SELL,
        "r-1",
    )
    assert sent.headers[contract.HEADER_SCHEMA] == "bridge.v1.MassCancelRequest"
    assert contract.HEADER_SIGNATURE in sent.headers


async def test_defaults_every_symbol_both_sides_and_a_fresh_request_id() -> None:
    fake = FakeTransport()
    fake.respond(SUBJECT, answering(canceled=0))
    bridge = await open_client(fake)
    try:
        first = await bridge.cancel_all("ACC1")
        second = await bridge.cancel_all("ACC1")
    finally:
        await bridge.close()
    reqs = [lifecycle_pb2.MassCancelRequest.FromString(s.data) for s in fake.requests(SUBJECT)]
    assert [(r.symbol, r.side) for r in reqs] == [("", orders_pb2.SIDE_UNSPECIFIED)] * 2
    assert reqs[0].request_id.startswith("mc-")
    assert reqs[0].request_id != reqs[1].request_id
    assert (first.canceled, second.canceled) == (0, 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"account": "no.dots"}, "account"),
        ({"account": "_house"}, "account"),
        ({"symbol": "A B"}, "symbol"),
        ({"symbol": ""}, "symbol"),
        ({"request_id": "x" * 65}, "request_id"),
        ({"request_id": "a.b"}, "request_id"),
        ({"side": "BUY?"}, "side"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_sent(
    kwargs: dict[str, Any], field: str
) -> None:
    fake = FakeTransport()
    bridge = await open_client(fake)
    try:
        account = kwargs.pop("account", "ACC1")
        with pytest.raises(InvalidOrderError) as info:
            await bridge.cancel_all(account, **kwargs)
    finally:
        await bridge.close()
    assert [e.field for e in info.value.errors] == [field]
    assert "MassCancelRequest" in str(info.value)
    assert fake.sent == []


async def test_an_incomplete_mass_cancel_is_returned_and_raises_on_request() -> None:
    """REJECTED / ENGINE_UNAVAILABLE: what was canceled and where, the rest named; the client
    stays open (no security matter)."""
    fake = FakeTransport()
    fake.respond(
        SUBJECT,
        answering(
            canceled=2,
            status=orders_pb2.ACK_STATUS_REJECTED,
            reason=orders_pb2.REJECT_REASON_ENGINE_UNAVAILABLE,
            text="incomplete: engine engine-2 not running",
        ),
    )
    bridge = await open_client(fake)
    try:
        result = await bridge.cancel_all("ACC1", request_id="r-2")
        assert not result.complete
        assert (result.reason, result.canceled) == (RejectReason.ENGINE_UNAVAILABLE, 2)
        with pytest.raises(MassCancelIncompleteError) as info:
            result.raise_for_status(correlation_id="c-1")
        err = info.value
        assert err.result is result
        assert err.reason == "ENGINE_UNAVAILABLE"
        assert err.correlation_id == "c-1"
        assert "engine engine-2 not running" in str(err)
        assert bridge.security_violation is None
    finally:
        await bridge.close()


async def test_invalid_fields_reported_by_the_engine_are_typed() -> None:
    def invalid(data: bytes, _headers: dict[str, str]) -> bytes:
        return lifecycle_pb2.MassCancelReply(
            account="ACC1",
            status=orders_pb2.ACK_STATUS_REJECTED,
            reason=orders_pb2.REJECT_REASON_INVALID_FIELD,
            field_errors=[common_pb2.FieldError(field="side", rule="enum", message="bad")],
        ).SerializeToString()

    fake = FakeTransport()
    fake.respond(SUBJECT, invalid)
    bridge = await open_client(fake)
    try:
        result = await bridge.cancel_all("ACC1")
    finally:
        await bridge.close()
    assert result.reason is RejectReason.INVALID_FIELD
    with pytest.raises(MassCancelIncompleteError) as info:
        result.raise_for_status()
    assert [(e.field, e.rule) for e in info.value.errors] == [("side", "enum")]


async def test_a_security_refusal_ends_the_client() -> None:
    fake = FakeTransport()
    fake.respond(
        SUBJECT,
        answering(
            canceled=0,
            status=orders_pb2.ACK_STATUS_REJECTED,
            reason=orders_pb2.REJECT_REASON_NOT_ENTITLED,
            text="identity desk is not entitled to account ACC1",
        ),
    )
    bridge = await open_client(fake)
    try:
        with pytest.raises(SecurityViolationError) as info:
            await bridge.cancel_all("ACC1")
        assert info.value.reason == "NOT_ENTITLED"
        assert "mass cancel" in str(info.value)
        assert info.value.account == "ACC1"
        assert bridge.security_violation is not None
    finally:
        await bridge.close()


async def test_transient_failures_are_retried_then_typed() -> None:
    """Idempotent, so retried like a cancel; no engine at all: EngineUnavailableError."""
    fake = FakeTransport()
    calls = 0
    answer = answering(canceled=1)

    def flaky(data: bytes, headers: dict[str, str]) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise nats.errors.NoRespondersError
        return bytes(answer(data, headers))

    fake.respond(SUBJECT, flaky)
    bridge = await open_client(fake, order_retry_max_attempts=3)
    try:
        result = await bridge.cancel_all("ACC1", request_id="same")
        assert result.canceled == 1
        ids = {
            lifecycle_pb2.MassCancelRequest.FromString(s.data).request_id
            for s in fake.requests(SUBJECT)
        }
        assert (calls, ids) == (2, {"same"})
        with pytest.raises(EngineUnavailableError):
            await bridge.cancel_all("OTHER")
    finally:
        await bridge.close()


def test_account_entries_of_the_trading_state_document() -> None:
    """Set and lift one account's state; everything else is kept, the input unchanged, and
    the result valid against the schema."""
    assert documents.with_account_state(None, "ACC1", "HALTED") == {
        "version": 1,
        "state": "ACTIVE",
        "accounts": {"ACC1": "HALTED"},
    }
    before = {
        "version": 1,
        "state": "REDUCE_ONLY",
        "reason": "drill",
        "symbols": {"AAPL": "HALTED"},
        "accounts": {"ACC2": "REDUCE_ONLY"},
    }
    halted = documents.with_account_state(before, "ACC1", "HALTED")
    assert halted["accounts"] == {"ACC2": "REDUCE_ONLY", "ACC1": "HALTED"}
    assert before["accounts"] == {"ACC2": "REDUCE_ONLY"}
    assert {k: v for k, v in halted.items() if k != "accounts"} == {
        k: v for k, v in before.items() if k != "accounts"
    }
    lifted = documents.with_account_state(halted, "ACC2", None)
    lifted = documents.with_account_state(lifted, "ACC1", None)
    assert "accounts" not in lifted
    assert documents.with_account_state(lifted, "NOBODY", None) == lifted
    for doc in (halted, lifted):
        assert documents.validate("trading_state", documents.canonical(doc)).ok
    bad = documents.with_account_state(None, "no.dots", "HALTED")
    assert not documents.validate("trading_state", documents.canonical(bad)).ok
