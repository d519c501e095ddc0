"""The client's retry policy: the backoff formula, what is retried, the limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from pydantic import ValidationError
from tenacity import AsyncRetrying

from bridge import (
    BackpressureError,
    BridgeSettings,
    ClientClosedError,
    ConnectionFailedError,
    EngineUnavailableError,
    FieldIssue,
    InvalidOrderError,
    OrderRejectedError,
    OutcomeUnknownError,
    ProtocolError,
    PublishError,
    StreamFullError,
)
from bridge.retry import backoff_delay, is_transient, request_retrying, with_retries


def settings(**kw: object) -> BridgeSettings:
    base: dict[str, object] = {
        "reconnect_initial_delay_ms": 50,
        "reconnect_max_delay_ms": 1000,
        "reconnect_jitter_ms": 0,
    }
    return BridgeSettings(**{**base, **kw})  # type: ignore[arg-type]


def test_backoff_doubles_then_caps() -> None:
    s = settings()
    assert [round(backoff_delay(s, n), 3) for n in range(7)] == [
        0.05,
        0.1,
        0.2,
        0.4,
        0.8,
        1.0,
        1.0,
    ]
    assert backoff_delay(s, 10_000) == 1.0


def test_jitter_is_added_within_its_bound() -> None:
    s = settings(reconnect_jitter_ms=30)
    for n in range(100):
        d = backoff_delay(s, n % 6)
        base = backoff_delay(settings(), n % 6)
        assert base <= d <= base + 0.030


@pytest.mark.parametrize(
    "exc",
    [
        OutcomeUnknownError("timeout"),
        EngineUnavailableError("no responders"),
        ConnectionFailedError("reconnecting"),
        PublishError("503", transient=True),
    ],
)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        InvalidOrderError([FieldIssue("quantity", "gt", "must be > 0")]),
        StreamFullError("full", err_code=10077),
        PublishError("permission denied"),
        BackpressureError("max_inflight"),
        OrderRejectedError("rejected", reason="RISK_LIMIT"),
        ProtocolError("garbage"),
        ClientClosedError("closed"),
        ValueError("not ours"),
    ],
)
def test_permanent_failures_are_not_retried(exc: BaseException) -> None:
    assert not is_transient(exc)


async def run(policy: AsyncRetrying, op: Callable[[], Awaitable[None]]) -> None:
    async for attempt in policy:
        with attempt:
            await op()


async def test_retries_stop_after_max_attempts_and_reraise_the_last_error() -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        raise OutcomeUnknownError(f"attempt {calls}", client_order_id="o1")

    s = settings(order_retry_max_attempts=3, reconnect_initial_delay_ms=1, reconnect_max_delay_ms=1)
    with pytest.raises(OutcomeUnknownError, match="attempt 3"):
        await run(request_retrying(s, "test"), flaky)
    assert calls == 3


async def test_permanent_error_is_raised_at_once() -> None:
    calls = 0

    async def full() -> None:
        nonlocal calls
        calls += 1
        raise StreamFullError("full")

    with pytest.raises(StreamFullError):
        await run(request_retrying(settings(order_retry_max_attempts=5), "test"), full)
    assert calls == 1


@pytest.mark.parametrize(
    ("knobs", "word"),
    [
        ({"max_reconnect_attempts": 0}, "max_reconnect_attempts"),
        ({"max_reconnect_attempts": -2}, "max_reconnect_attempts"),
        ({"reconnect_initial_delay_ms": 5000}, "reconnect_initial_delay_ms"),
        ({"order_retry_max_attempts": 0}, "order_retry_max_attempts"),
        ({"backpressure_wait_ms": -1}, "backpressure_wait_ms"),
    ],
)
def test_nonsensical_retry_knobs_are_refused(knobs: dict[str, object], word: str) -> None:
    with pytest.raises(ValidationError, match=word):
        settings(**knobs)


def test_rejected_ack_raises_with_reason_and_fields() -> None:
    from bridge.models import OrderAck
    from bridge.v1 import common_pb2, orders_pb2

    msg = orders_pb2.OrderAck(
        client_order_id="c1",
        account="A",
        status=orders_pb2.ACK_STATUS_REJECTED,
        reason=orders_pb2.REJECT_REASON_RISK_LIMIT,
        text="notional above limit",
        field_errors=[common_pb2.FieldError(field="quantity", rule="max", message="too big")],
    )
    ack = OrderAck.from_proto(msg)
    with pytest.raises(OrderRejectedError) as caught:
        ack.raise_for_status(correlation_id="k1")
    assert caught.value.reason == "RISK_LIMIT"
    assert caught.value.errors == (FieldIssue("quantity", "max", "too big"),)
    assert caught.value.client_order_id == "c1"
    assert caught.value.correlation_id == "k1"


async def test_client_makes_exactly_retry_max_attempts_with_the_same_ids() -> None:
    """The client's first attempt runs outside tenacity; the total is still the limit."""
    seen: list[str] = []

    async def unanswered() -> None:
        seen.append("o1")
        raise OutcomeUnknownError("no answer", client_order_id="o1", correlation_id="k1")

    policy = settings(order_retry_max_attempts=4, reconnect_initial_delay_ms=1)
    with pytest.raises(OutcomeUnknownError):
        await with_retries(policy, "test", unanswered)
    assert seen == ["o1"] * 4

    seen.clear()

    async def full() -> None:
        seen.append("o2")
        raise StreamFullError("full", client_order_id="o2")

    with pytest.raises(StreamFullError):
        await with_retries(policy, "test", full)
    assert seen == ["o2"]
