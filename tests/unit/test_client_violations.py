"""A security violation ends the client (fake transport): the server's permissions violation
or an engine's security refusal closes the connection at once, fails what is pending and
everything after with ``SecurityViolationError``, emits ``SECURITY_VIOLATION`` and logs one
ERROR line. Against the real server: tests/integration/test_client_security.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bridge import (
    BridgeClient,
    ConnectionEvent,
    ConnectionState,
    PartialBatchError,
    RejectReason,
    SecurityViolationError,
    contract,
)
from bridge.models import SECURITY_REASONS
from bridge.v1 import orders_pb2
from tests.unit.fake_transport import FakeTransport
from tests.unit.test_client import accepted, open_client, order, settings

SUBMIT = contract.submit("ACC1")


def violation_text(subject: str, operation: str = "Publish") -> str:
    return f'Permissions Violation for {operation} to "{subject}"'


def refusing(reason: RejectReason, text: str = "signature does not verify") -> Any:
    wire = orders_pb2.RejectReason.Value(f"REJECT_REASON_{reason.value}")

    def respond(data: bytes, _headers: dict[str, str]) -> bytes:
        new = orders_pb2.NewOrder()
        new.ParseFromString(data)
        return orders_pb2.OrderAck(
            client_order_id=new.client_order_id,
            account=new.account,
            status=orders_pb2.ACK_STATUS_REJECTED,
            reason=wire,
            text=text,
        ).SerializeToString()

    return respond


class Errors(logging.Handler):
    """The bridge's ERROR lines (their event dicts)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert isinstance(record.msg, dict)
        self.events.append(record.msg)


@pytest.fixture
def errors() -> Iterator[Errors]:
    logger = logging.getLogger("bridge")
    handler = Errors()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


async def assert_ended(bridge: BridgeClient, fake: FakeTransport) -> None:
    """Closed for good: every later operation raises the violation, nothing more is sent."""
    sent = len(fake.sent)
    assert bridge.connection_state is ConnectionState.CLOSED
    assert isinstance(bridge.security_violation, SecurityViolationError)
    assert fake.closes == 1
    assert not fake.connected
    for call in (
        lambda: bridge.submit(order("o-later")),
        lambda: bridge.cancel("ACC1", "o-1"),
        lambda: bridge.status("ACC1", "o-1"),
        lambda: bridge.enqueue(order("o-later")),
        lambda: bridge.enqueue_batch([order("o-later")]),
    ):
        with pytest.raises(SecurityViolationError) as info:
            await call()
        assert info.value.reason == bridge.security_violation.reason
    with pytest.raises(SecurityViolationError):
        async with bridge.reports("ACC1"):
            pass
    assert len(fake.sent) == sent
    await bridge.close()  # still idempotent


async def test_a_permissions_violation_fails_the_pending_request_at_once(
    errors: Errors,
) -> None:
    """A request to a subject the identity may not publish to is never answered (the server
    drops it and sends -ERR): it fails with the violation, not after its timeout."""
    fake = FakeTransport()
    events: list[ConnectionEvent] = []
    bridge = await open_client(fake, events, request_timeout_ms=60_000)
    fake.hang(SUBMIT)
    pending = asyncio.create_task(bridge.submit(order(), correlation_id="corr-1"))
    await fake.waiting.wait()
    await fake.server_error(violation_text(SUBMIT))
    with pytest.raises(SecurityViolationError) as info:
        await asyncio.wait_for(pending, 1)
    err = info.value
    assert (err.reason, err.subject, err.account) == ("PERMISSIONS_VIOLATION", SUBMIT, "ACC1")
    assert (err.client_order_id, err.correlation_id) == ("o-1", "corr-1")
    assert "permissions violation" in err.text
    assert events == [
        ConnectionEvent.CONNECTED,
        ConnectionEvent.SECURITY_VIOLATION,
        ConnectionEvent.CLOSED,
    ]
    [line] = [e for e in errors.events if e["event"] == "bridge.security_violation"]
    assert (line["reason"], line["account"], line["subject"]) == (
        "PERMISSIONS_VIOLATION",
        "ACC1",
        SUBMIT,
    )
    assert line["signer"] == bridge.signer
    assert [e["event"] for e in errors.events] == ["bridge.security_violation"]  # one line
    await assert_ended(bridge, fake)


async def test_a_violation_while_idle_closes_the_client_too() -> None:
    """E.g. a subscription the server refuses: no operation pending, the client ends all
    the same; a subject the client never built is reported as the server named it."""
    fake = FakeTransport()
    events: list[ConnectionEvent] = []
    bridge = await open_client(fake, events)
    await fake.server_error(violation_text("bridge.v1.exec.OTHER.>", "Subscription"))
    err = bridge.security_violation
    assert err is not None
    assert err.subject == "bridge.v1.exec.other.>"  # nats-py lower-cases the server's text
    assert err.account is None
    assert events[-2:] == [ConnectionEvent.SECURITY_VIOLATION, ConnectionEvent.CLOSED]
    await assert_ended(bridge, fake)


async def test_the_account_of_a_refused_report_subscription_is_found() -> None:
    """The lower-case subject of the server's error is mapped back to the account the client
    built it for (here through a JetStream consumer filter)."""
    fake = FakeTransport()
    bridge = await open_client(fake)
    stream = bridge.reports("AcMe-1")
    name = f"$JS.API.CONSUMER.CREATE.EXECUTIONS.reports-1.{stream.subject}"
    await fake.server_error(violation_text(name))
    err = bridge.security_violation
    assert err is not None
    assert err.account == "AcMe-1"


async def test_pending_queued_orders_fail_with_the_violation() -> None:
    fake = FakeTransport()
    bridge = await open_client(fake, publish_timeout_ms=60_000, order_retry_max_attempts=5)
    fake.script.extend(["hold", "hold", "hold"])
    one = asyncio.create_task(bridge.enqueue(order("o-1")))
    batch = asyncio.create_task(bridge.enqueue_batch([order("o-2"), order("o-3")]))
    while len(fake.publishes()) < 3:
        fake.published.clear()
        await fake.published.wait()
    await fake.server_error(violation_text(contract.queue("ACC1")))
    with pytest.raises(SecurityViolationError) as single:
        await asyncio.wait_for(one, 1)
    assert single.value.client_order_id == "o-1"
    with pytest.raises(SecurityViolationError) as batched:
        await asyncio.wait_for(batch, 1)
    partial = batched.value.__cause__
    assert isinstance(partial, PartialBatchError)  # what happened to each order of the batch
    assert [type(o).__name__ for o in partial.outcomes] == ["SecurityViolationError"] * 2
    assert len(fake.publishes()) == 3  # nothing was re-sent
    await assert_ended(bridge, fake)


@pytest.mark.parametrize("reason", sorted(SECURITY_REASONS))
async def test_a_security_refusal_ends_the_client_and_the_ack_stays_visible(
    reason: RejectReason, errors: Errors
) -> None:
    fake = FakeTransport()
    events: list[ConnectionEvent] = []
    bridge = await open_client(fake, events, order_retry_max_attempts=3)
    fake.respond(SUBMIT, refusing(reason, "signed_at 5 is outside the window"))
    with pytest.raises(SecurityViolationError) as info:
        await bridge.submit(order(), correlation_id="corr-7")
    err = info.value
    assert err.reason == reason.value
    assert err.text == "signed_at 5 is outside the window"
    assert err.ack is not None
    assert (err.ack.reason, err.ack.accepted) == (reason, False)
    assert (err.subject, err.account, err.correlation_id) == (SUBMIT, "ACC1", "corr-7")
    assert reason.value in str(err)
    assert len(fake.requests(SUBMIT)) == 1  # never retried
    assert events[-2:] == [ConnectionEvent.SECURITY_VIOLATION, ConnectionEvent.CLOSED]
    assert [e["reason"] for e in errors.events] == [reason.value]
    await assert_ended(bridge, fake)


async def test_a_cancel_or_status_refused_for_security_ends_the_client() -> None:
    fake = FakeTransport()
    bridge = await open_client(fake)
    reply = orders_pb2.OrderStatusReply(
        found=False, reason=orders_pb2.REJECT_REASON_NOT_ENTITLED, text="not entitled to ACC1"
    )
    fake.respond(contract.status("ACC1"), lambda _d, _h: reply.SerializeToString())
    with pytest.raises(SecurityViolationError, match="NOT_ENTITLED") as info:
        await bridge.status("ACC1", "o-1")
    assert (info.value.ack, info.value.text) == (None, "not entitled to ACC1")
    await assert_ended(bridge, fake)

    cancelling = FakeTransport()
    other = await open_client(cancelling)
    cancelling.respond(contract.cancel("ACC1"), refusing(RejectReason.UNSIGNED))
    with pytest.raises(SecurityViolationError, match="UNSIGNED"):
        await other.cancel("ACC1", "o-1")
    assert other.connection_state is ConnectionState.CLOSED


async def test_an_ordinary_rejection_or_server_error_does_not_end_the_client() -> None:
    fake = FakeTransport()
    events: list[ConnectionEvent] = []
    bridge = await open_client(fake, events)
    fake.respond(SUBMIT, refusing(RejectReason.RISK_LIMIT, "too big"))
    ack = await bridge.submit(order())
    assert ack.reason is RejectReason.RISK_LIMIT
    await fake.server_error("Slow Consumer Detected")
    assert bridge.security_violation is None
    assert bridge.connection_state is ConnectionState.CONNECTED
    fake.respond(SUBMIT, accepted)
    assert (await bridge.submit(order("o-2"))).accepted
    assert ConnectionEvent.SECURITY_VIOLATION not in events
    await bridge.close()


async def test_only_the_first_violation_counts(errors: Errors) -> None:
    fake = FakeTransport()
    events: list[ConnectionEvent] = []
    bridge = await open_client(fake, events)
    await fake.server_error(violation_text(SUBMIT))
    await fake.server_error(violation_text(contract.queue("ACC1")))
    assert events.count(ConnectionEvent.SECURITY_VIOLATION) == 1
    assert len(errors.events) == 1
    assert bridge.security_violation is not None
    # No operation of this client built that subject: it is reported as the server named it.
    assert bridge.security_violation.subject == SUBMIT.lower()
    assert bridge.security_violation.account is None


async def test_a_listener_sees_the_violation_when_it_is_told() -> None:
    fake = FakeTransport()
    seen: list[tuple[ConnectionEvent, SecurityViolationError | None]] = []
    bridge = BridgeClient(settings(), transport=fake)
    bridge.on_connection_event(lambda e: seen.append((e, bridge.security_violation)))
    await bridge.connect()
    await fake.server_error(violation_text(SUBMIT))
    event, violation = seen[1]
    assert event is ConnectionEvent.SECURITY_VIOLATION
    assert violation is not None
    assert violation.reason == "PERMISSIONS_VIOLATION"


async def test_a_listener_may_close_the_client_it_is_told_about() -> None:
    """close() waits for the violation to be handled, except when called from a listener of
    that violation (it would wait for itself)."""
    fake = FakeTransport()
    bridge = BridgeClient(settings(), transport=fake)
    closed: list[ConnectionEvent] = []

    async def on_event(event: ConnectionEvent) -> None:
        if event is ConnectionEvent.SECURITY_VIOLATION:
            await bridge.close()
            closed.append(event)

    bridge.on_connection_event(on_event)
    await bridge.connect()
    await asyncio.wait_for(fake.server_error(violation_text(SUBMIT)), 1)
    assert closed == [ConnectionEvent.SECURITY_VIOLATION]
    await asyncio.wait_for(bridge.close(), 1)
    assert fake.closes == 1
