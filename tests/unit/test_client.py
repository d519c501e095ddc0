"""``BridgeClient``'s own logic through the in-memory transport (``fake_transport``): retries
and their ids, how failures map to errors, backpressure, partial batches and connection events.
The same paths against a real server and engine: tests/integration and tests/faults."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import nats.errors
import pytest
import structlog

from bridge import (
    BackpressureError,
    BridgeClient,
    BridgeSettings,
    ClientClosedError,
    ConnectionEvent,
    ConnectionFailedError,
    ConnectionState,
    EngineUnavailableError,
    Order,
    OrderType,
    OutcomeUnknownError,
    PartialBatchError,
    ProtocolError,
    PublishError,
    QueuedOrder,
    Side,
    StreamFullError,
    contract,
)
from bridge.retry import is_transient
from bridge.v1 import orders_pb2
from tests.unit.fake_transport import FakeTransport, new_user_seed

SEED = new_user_seed()


def settings(**kw: Any) -> BridgeSettings:
    base: dict[str, Any] = {
        "nkey_seed": SEED,
        "reconnect_initial_delay_ms": 1,
        "reconnect_max_delay_ms": 2,
        "reconnect_jitter_ms": 0,
        "order_retry_max_attempts": 1,
    }
    return BridgeSettings(**{**base, **kw})


def order(client_order_id: str = "o-1") -> Order:
    return Order(
        client_order_id=client_order_id,
        account="ACC1",
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        limit_price=Decimal("189.99"),
        quantity=Decimal("100"),
    )


def accepted(data: bytes, _headers: dict[str, str]) -> bytes:
    """The engine's answer to a submit: ACCEPTED, echoing the ids."""
    new = orders_pb2.NewOrder()
    new.ParseFromString(data)
    ack = orders_pb2.OrderAck(
        client_order_id=new.client_order_id,
        account=new.account,
        engine_order_id="e-1",
        status=orders_pb2.ACK_STATUS_ACCEPTED,
    )
    return ack.SerializeToString()


def failing(*errors: BaseException) -> Any:
    """A responder raising ``errors`` in turn, then answering ACCEPTED."""
    pending = list(errors)

    def respond(data: bytes, headers: dict[str, str]) -> bytes:
        if pending:
            raise pending.pop(0)
        return accepted(data, headers)

    return respond


def client_order_id_of(data: bytes) -> str:
    new = orders_pb2.NewOrder()
    new.ParseFromString(data)
    return new.client_order_id


def state_of(bridge: BridgeClient) -> ConnectionState:
    return bridge.connection_state  # read anew each time (mypy would narrow the property)


@pytest.fixture
def fake() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def events() -> list[ConnectionEvent]:
    return []


async def open_client(
    fake: FakeTransport, events: list[ConnectionEvent] | None = None, **kw: Any
) -> BridgeClient:
    client = BridgeClient(settings(**kw), transport=fake)
    if events is not None:
        client.on_connection_event(events.append)
    await client.connect()
    return client


@pytest.fixture
async def client(fake: FakeTransport, events: list[ConnectionEvent]) -> AsyncIterator[BridgeClient]:
    bridge = await open_client(fake, events, order_retry_max_attempts=3)
    yield bridge
    await bridge.close()


# -- request-reply -------------------------------------------------------------------------


async def test_submit_sends_the_order_with_its_ids_and_returns_the_ack(
    fake: FakeTransport, client: BridgeClient
) -> None:
    fake.respond(contract.submit("ACC1"), accepted)
    ack = await client.submit(order(), correlation_id="corr-1")
    assert ack.accepted
    assert ack.client_order_id == "o-1"
    [sent] = fake.requests(contract.submit("ACC1"))
    assert client_order_id_of(sent.data) == "o-1"
    assert sent.headers[contract.HEADER_CORRELATION_ID] == "corr-1"
    assert sent.headers[contract.HEADER_SCHEMA] == "bridge.v1.NewOrder"
    assert client.engine_available is True


async def test_retries_resend_the_same_order_and_correlation_id(
    fake: FakeTransport, client: BridgeClient, events: list[ConnectionEvent]
) -> None:
    """Two failures a retry may cure, then an answer: three attempts, one order, one id."""
    fake.respond(
        contract.submit("ACC1"),
        failing(nats.errors.NoRespondersError(), nats.errors.TimeoutError()),
    )
    ack = await client.submit(order())
    assert ack.accepted
    sent = fake.requests(contract.submit("ACC1"))
    assert [client_order_id_of(s.data) for s in sent] == ["o-1"] * 3
    assert len({s.headers[contract.HEADER_CORRELATION_ID] for s in sent}) == 1
    assert events[1:] == [ConnectionEvent.ENGINE_UNAVAILABLE, ConnectionEvent.ENGINE_AVAILABLE]


async def test_attempts_stop_at_order_retry_max_attempts(
    fake: FakeTransport, client: BridgeClient
) -> None:
    fake.respond(contract.submit("ACC1"), failing(*[nats.errors.TimeoutError()] * 5))
    with pytest.raises(OutcomeUnknownError):
        await client.submit(order())
    assert len(fake.requests(contract.submit("ACC1"))) == 3


async def test_no_responders_is_engine_unavailable(
    fake: FakeTransport, events: list[ConnectionEvent]
) -> None:
    """No engine subscribed (no responder registered): EngineUnavailableError with both ids."""
    bridge = await open_client(fake, events)
    with pytest.raises(EngineUnavailableError) as info:
        await bridge.submit(order(), correlation_id="corr-2")
    assert (info.value.client_order_id, info.value.correlation_id) == ("o-1", "corr-2")
    assert bridge.engine_available is False
    assert events == [ConnectionEvent.CONNECTED, ConnectionEvent.ENGINE_UNAVAILABLE]


@pytest.mark.parametrize(
    "error", [nats.errors.TimeoutError(), TimeoutError(), nats.errors.ConnectionClosedError()]
)
async def test_no_answer_after_sending_is_outcome_unknown(
    fake: FakeTransport, error: BaseException
) -> None:
    bridge = await open_client(fake)
    fake.respond(contract.cancel("ACC1"), failing(error))
    with pytest.raises(OutcomeUnknownError) as info:
        await bridge.cancel("ACC1", "o-9")
    assert info.value.client_order_id == "o-9"
    assert is_transient(info.value)


async def test_connection_down_is_connection_failed_and_nothing_is_sent(
    fake: FakeTransport,
) -> None:
    bridge = await open_client(fake)
    fake.respond(contract.submit("ACC1"), accepted)
    await fake.drop_connection()
    with pytest.raises(ConnectionFailedError, match="nothing was sent"):
        await bridge.submit(order())
    assert fake.sent == []


async def test_undecodable_answer_is_a_protocol_error(fake: FakeTransport) -> None:
    bridge = await open_client(fake)
    fake.respond(contract.status("ACC1"), lambda _data, _headers: b"\xff\xff\xff")
    with pytest.raises(ProtocolError, match="OrderStatusReply") as info:
        await bridge.status("ACC1", "o-3")
    assert info.value.client_order_id == "o-3"


async def test_status_the_engine_could_not_settle_is_outcome_unknown(fake: FakeTransport) -> None:
    """'not found' is definitive only once the engine retired the id; otherwise: unknown."""
    bridge = await open_client(fake)
    reply = orders_pb2.OrderStatusReply(
        found=False, reason=orders_pb2.REJECT_REASON_ENGINE_UNAVAILABLE, text="store down"
    )
    fake.respond(contract.status("ACC1"), lambda _data, _headers: reply.SerializeToString())
    with pytest.raises(OutcomeUnknownError, match="store down"):
        await bridge.status("ACC1", "o-4")


# -- JetStream's answers to queued orders ------------------------------------------------


async def test_ack_becomes_queued_order_and_a_resend_is_a_duplicate(fake: FakeTransport) -> None:
    bridge = await open_client(fake)
    first = await bridge.enqueue(order(), correlation_id="corr-1")
    again = await bridge.enqueue(order())
    assert (first.client_order_id, first.stream, first.seq, first.duplicate) == (
        "o-1",
        "ORDERS",
        1,
        False,
    )
    assert (again.seq, again.duplicate) == (1, True)
    sent = fake.publishes()
    assert [s.headers[contract.HEADER_MSG_ID] for s in sent] == ["o-1", "o-1"]
    assert sent[0].subject == contract.queue("ACC1")
    assert sent[0].headers[contract.HEADER_CORRELATION_ID] == "corr-1"


async def test_stream_full_is_refused_for_good(fake: FakeTransport) -> None:
    bridge = await open_client(fake, order_retry_max_attempts=3)
    fake.orders.max_msgs = 0
    with pytest.raises(StreamFullError) as info:
        await bridge.enqueue(order("o-2"), correlation_id="corr-2")
    assert (info.value.client_order_id, info.value.correlation_id) == ("o-2", "corr-2")
    assert info.value.err_code == 10077
    assert not is_transient(info.value)
    assert len(fake.publishes()) == 1  # not retried


async def test_no_stream_leader_is_transient_and_retried_with_the_same_id(
    fake: FakeTransport,
) -> None:
    bridge = await open_client(fake, order_retry_max_attempts=1)
    fake.script.extend(["503"])
    with pytest.raises(PublishError, match="no JetStream stream answered") as info:
        await bridge.enqueue(order("o-3"))
    assert is_transient(info.value)

    transport = FakeTransport()
    retrying = await open_client(transport, order_retry_max_attempts=3)
    transport.script.extend(["503", "503"])
    queued = await retrying.enqueue(order("o-3"))
    assert queued.seq == 1
    assert [s.headers[contract.HEADER_MSG_ID] for s in transport.publishes()] == ["o-3"] * 3


async def test_unreadable_answer_is_a_clear_error(fake: FakeTransport) -> None:
    bridge = await open_client(fake, order_retry_max_attempts=3)
    fake.script.append("garbage")
    with pytest.raises(PublishError, match="unreadable JetStream answer") as info:
        await bridge.enqueue(order("o-4"), correlation_id="corr-4")
    assert not is_transient(info.value)
    assert info.value.correlation_id == "corr-4"


async def test_unconfirmed_publish_is_outcome_unknown_then_retried(fake: FakeTransport) -> None:
    """No answer within publish_timeout_ms: unknown, re-sent with the same Nats-Msg-Id."""
    bridge = await open_client(fake, publish_timeout_ms=20, order_retry_max_attempts=2)
    fake.script.append("drop")
    queued = await bridge.enqueue(order("o-5"))
    assert not queued.duplicate
    assert [s.headers[contract.HEADER_MSG_ID] for s in fake.publishes()] == ["o-5"] * 2


# -- backpressure and partial batches ----------------------------------------------------


async def test_backpressure_error_when_in_flight_slots_stay_full(fake: FakeTransport) -> None:
    """max_inflight=1 held by an unanswered publish: the next order waits
    backpressure_wait_ms, is refused with BackpressureError and is never sent."""
    bridge = await open_client(fake, max_inflight=1, backpressure_wait_ms=20)
    fake.script.append("hold")
    first = asyncio.create_task(bridge.enqueue(order("o-1")))
    await fake.published.wait()
    with pytest.raises(BackpressureError, match="max_inflight=1") as info:
        await bridge.enqueue(order("o-2"), correlation_id="corr-2")
    assert (info.value.client_order_id, info.value.correlation_id) == ("o-2", "corr-2")
    assert [s.headers[contract.HEADER_MSG_ID] for s in fake.publishes()] == ["o-1"]
    fake.release_held()
    assert (await first).seq == 1
    assert (await bridge.enqueue(order("o-2"))).seq == 2  # the slot is free again


async def test_batch_failure_is_the_earliest_orders_not_the_backpressure_after_it(
    fake: FakeTransport,
) -> None:
    """A batch refused by a full stream and then stopped by backpressure raises the refusal."""
    bridge = await open_client(fake, max_inflight=2, backpressure_wait_ms=0)
    fake.orders.max_msgs = 1
    with pytest.raises(PartialBatchError) as info:
        await bridge.enqueue_batch([order("o-1"), order("o-2"), order("o-3")])
    batch = info.value
    assert isinstance(batch.failure, StreamFullError)
    assert batch.client_order_id == "o-2"
    assert batch.__cause__ is batch.failure
    assert [q.client_order_id for q in batch.queued] == ["o-1"]
    assert batch.unknown == ()
    assert [type(o).__name__ for o in batch.outcomes] == [
        "QueuedOrder",
        "StreamFullError",
        "BackpressureError",
    ]
    assert not is_transient(batch)


async def test_backpressure_alone_is_raised_when_every_sent_order_was_stored(
    fake: FakeTransport,
) -> None:
    bridge = await open_client(fake, max_inflight=1, backpressure_wait_ms=0)
    with pytest.raises(PartialBatchError) as info:
        await bridge.enqueue_batch([order("o-1"), order("o-2")])
    assert isinstance(info.value.failure, BackpressureError)
    assert info.value.client_order_id == "o-2"
    assert len(info.value.queued) == 1


async def test_unconfirmed_orders_are_reported_unknown_not_refused(fake: FakeTransport) -> None:
    """Orders sent without a confirmation are listed in ``unknown``, apart from refusals;
    orders after a refusal are not sent (``None``)."""
    bridge = await open_client(fake, publish_timeout_ms=20)
    fake.orders.max_msgs = 1
    fake.script.extend(["ok", "drop", "ok"])
    orders = [order("o-1"), order("o-2"), order("o-3")]
    with pytest.raises(PartialBatchError) as info:
        await bridge.enqueue_batch(orders)
    batch = info.value
    assert isinstance(batch.failure, OutcomeUnknownError)
    assert batch.unknown == ("o-2",)
    assert [q.client_order_id for q in batch.queued] == ["o-1"]
    assert isinstance(batch.outcomes[2], StreamFullError)
    assert is_transient(batch)  # re-sending the batch may cure its earliest failure


async def test_a_batch_that_is_stored_whole_returns_every_ack_in_input_order(
    fake: FakeTransport,
) -> None:
    bridge = await open_client(fake)
    queued = await bridge.enqueue_batch([order(f"o-{i}") for i in range(5)])
    assert [(q.client_order_id, q.seq) for q in queued] == [(f"o-{i}", i + 1) for i in range(5)]
    assert all(isinstance(q, QueuedOrder) for q in queued)
    assert await bridge.enqueue_batch([]) == []


# -- connection and events ---------------------------------------------------------------


async def test_connection_events_are_emitted_in_order(fake: FakeTransport) -> None:
    seen: list[ConnectionEvent] = []
    awaited: list[ConnectionEvent] = []

    async def async_listener(event: ConnectionEvent) -> None:
        awaited.append(event)

    def broken(_event: ConnectionEvent) -> None:
        raise RuntimeError("a listener that fails is logged and kept")

    bridge = BridgeClient(settings(), transport=fake)
    bridge.on_connection_event(broken)
    bridge.on_connection_event(seen.append)
    remove = bridge.on_connection_event(async_listener)
    assert state_of(bridge) is ConnectionState.DISCONNECTED
    await bridge.connect()
    assert state_of(bridge) is ConnectionState.CONNECTED
    assert bridge.connected_server == "fake:4222"
    await fake.drop_connection()
    assert state_of(bridge) is ConnectionState.RECONNECTING
    await fake.restore_connection()
    assert state_of(bridge) is ConnectionState.CONNECTED
    remove()
    await bridge.close()
    assert state_of(bridge) is ConnectionState.CLOSED
    assert seen == [
        ConnectionEvent.CONNECTED,
        ConnectionEvent.DISCONNECTED,
        ConnectionEvent.RECONNECTED,
        ConnectionEvent.CLOSED,
    ]
    assert awaited == seen[:3]


async def test_a_connected_listener_can_send_at_once(fake: FakeTransport) -> None:
    """Everything the client needs is subscribed before CONNECTED is emitted."""
    bridge = BridgeClient(settings(), transport=fake)
    queued: list[QueuedOrder] = []

    async def on_event(event: ConnectionEvent) -> None:
        if event is ConnectionEvent.CONNECTED:
            queued.append(await bridge.enqueue(order()))

    bridge.on_connection_event(on_event)
    await bridge.connect()
    assert [q.seq for q in queued] == [1]


async def test_a_dropped_connection_fails_unconfirmed_publishes_at_once_and_retries_them(
    fake: FakeTransport, events: list[ConnectionEvent]
) -> None:
    """An order waiting for JetStream's answer when the connection drops is not left to its
    publish timeout: it is re-sent (same id) once the connection is back."""
    bridge = await open_client(fake, events, publish_timeout_ms=60_000, order_retry_max_attempts=50)
    fake.script.append("drop")
    pending = asyncio.create_task(bridge.enqueue(order("o-7")))
    await fake.published.wait()
    await fake.drop_connection()
    await fake.restore_connection()
    queued = await pending
    assert queued.seq == 1
    assert [s.headers[contract.HEADER_MSG_ID] for s in fake.publishes()] == ["o-7"] * 2
    assert events == [
        ConnectionEvent.CONNECTED,
        ConnectionEvent.DISCONNECTED,
        ConnectionEvent.RECONNECTED,
    ]


async def test_first_connect_retries_what_a_retry_can_cure_only(fake: FakeTransport) -> None:
    fake.connect_failures.extend([OSError("connection refused"), nats.errors.TimeoutError()])
    bridge = await open_client(fake)
    assert fake.connect_attempts == 3
    assert fake.reconnect_allowed

    refused = FakeTransport()
    refused.connect_failures.append(nats.errors.AuthorizationError())
    with pytest.raises(ConnectionFailedError, match="cannot connect"):
        await open_client(refused)
    assert refused.connect_attempts == 1
    await bridge.close()


async def test_a_client_is_used_inside_async_with_and_opened_once(fake: FakeTransport) -> None:
    bridge = BridgeClient(settings(), transport=fake)
    with pytest.raises(ClientClosedError, match="unopened"):
        await bridge.submit(order())
    async with bridge:
        with pytest.raises(ClientClosedError, match="create a new BridgeClient"):
            await bridge.connect()
    with pytest.raises(ClientClosedError, match="closed"):
        await bridge.enqueue(order())


# -- the log context of one operation ----------------------------------------------------


class Collect(logging.Handler):
    """The event dicts of the bridge's log lines, as stdlib logging receives them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.entries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert isinstance(record.msg, dict)
        self.entries.append(record.msg)


@pytest.fixture
def captured() -> Iterator[Collect]:
    logger = logging.getLogger("bridge")
    collect, level = Collect(), logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    yield collect
    logger.removeHandler(collect)
    logger.setLevel(level)


async def test_every_line_of_an_operation_carries_its_ids(
    fake: FakeTransport, captured: Collect
) -> None:
    """The ids are bound once per operation, not passed to each log call."""
    bridge = await open_client(fake, order_retry_max_attempts=2)
    fake.respond(contract.submit("ACC1"), failing(nats.errors.TimeoutError()))
    await bridge.submit(order(), correlation_id="corr-9")
    lines = {e["event"]: e for e in captured.entries}
    for name in ("bridge.retrying", "bridge.ack"):
        line = lines[name]
        assert (line["correlation_id"], line["client_order_id"]) == ("corr-9", "o-1")
        assert (line["account"], line["symbol"]) == ("ACC1", "AAPL")
    assert (lines["bridge.ack"]["level"], lines["bridge.retrying"]["level"]) == ("debug", "warning")
    assert structlog.contextvars.get_contextvars() == {}  # unbound after the operation


async def test_a_retried_queued_order_logs_its_own_ids_under_the_batch_correlation_id(
    fake: FakeTransport, captured: Collect
) -> None:
    bridge = await open_client(fake, order_retry_max_attempts=2)
    fake.script.extend(["ok", "503"])
    await bridge.enqueue_batch([order("o-1"), order("o-2")], correlation_id="corr-b")
    [retrying] = [e for e in captured.entries if e["event"] == "bridge.retrying"]
    assert (retrying["correlation_id"], retrying["client_order_id"]) == ("corr-b", "o-2")
