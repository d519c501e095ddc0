"""The client's session (``bridge.session``) through the in-memory transport: open at connect,
heartbeats, stamping, renewal after a reconnect or an ``open_session`` rejection, close, and
what a refusal does. Against the real engine: tests/integration/test_sessions.py and
tests/faults/test_cancel_on_disconnect.py."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from bridge import (
    BridgeClient,
    BridgeSettings,
    InvalidOrderError,
    Order,
    OrderType,
    SessionError,
    SessionOptions,
    Side,
    TimeInForce,
    contract,
)
from bridge.v1 import orders_pb2, session_pb2
from tests.unit.fake_transport import FakeTransport, new_user_seed

SEED = new_user_seed()
SESSION = "algo-7"


def settings(**kw: Any) -> BridgeSettings:
    base: dict[str, Any] = {
        "nkey_seed": SEED,
        "reconnect_initial_delay_ms": 1,
        "reconnect_max_delay_ms": 2,
        "reconnect_jitter_ms": 0,
        "order_retry_max_attempts": 1,
        "runtime_config": False,
        "session_id": SESSION,
        "session_grace_ms": 400,
    }
    return BridgeSettings(**{**base, **kw})


def order(client_order_id: str = "o-1", session_id: str = "") -> Order:
    return Order(
        client_order_id=client_order_id,
        account="ACC1",
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        limit_price=Decimal("150"),
        quantity=Decimal("1"),
        time_in_force=TimeInForce.GTC,
        session_id=session_id,
    )


class Engine:
    """What the fake engine answers: session acks as asked, and what it was sent."""

    def __init__(self, transport: FakeTransport) -> None:
        self.opens: list[session_pb2.SessionOpen] = []
        self.closes: list[session_pb2.SessionClose] = []
        self.refuse_open = False
        self.orders: list[orders_pb2.NewOrder] = []
        self.reject_orders = False
        transport.respond(contract.session_open(SESSION), self._open)
        transport.respond(contract.session_close(SESSION), self._close)
        transport.respond(contract.submit("ACC1"), self._submit)

    def _open(self, data: bytes, _headers: dict[str, str]) -> bytes:
        req = session_pb2.SessionOpen.FromString(data)
        self.opens.append(req)
        if self.refuse_open:
            return session_pb2.SessionAck(
                session_id=req.session_id,
                status=orders_pb2.ACK_STATUS_REJECTED,
                reason=orders_pb2.REJECT_REASON_INVALID_FIELD,
                text="session_id: another identity's [session_owner]",
            ).SerializeToString()
        return session_pb2.SessionAck(
            session_id=req.session_id,
            status=orders_pb2.ACK_STATUS_ACCEPTED,
            grace_ms=req.grace_ms,
            heartbeat_ms=req.grace_ms // 4,
            text="opened" if len(self.opens) == 1 else "renewed",
        ).SerializeToString()

    def _close(self, data: bytes, _headers: dict[str, str]) -> bytes:
        req = session_pb2.SessionClose.FromString(data)
        self.closes.append(req)
        return session_pb2.SessionAck(
            session_id=req.session_id,
            status=orders_pb2.ACK_STATUS_ACCEPTED,
            canceled=2 if req.cancel_orders else 0,
        ).SerializeToString()

    def _submit(self, data: bytes, _headers: dict[str, str]) -> bytes:
        new = orders_pb2.NewOrder.FromString(data)
        self.orders.append(new)
        ack = orders_pb2.OrderAck(
            client_order_id=new.client_order_id,
            account=new.account,
            status=orders_pb2.ACK_STATUS_ACCEPTED,
        )
        if self.reject_orders:
            ack.status = orders_pb2.ACK_STATUS_REJECTED
            ack.reason = orders_pb2.REJECT_REASON_INVALID_FIELD
            ack.field_errors.add(field="session_id", rule="open_session", message="lost")
        return ack.SerializeToString()


def heartbeats(transport: FakeTransport) -> list[session_pb2.SessionHeartbeat]:
    return [
        session_pb2.SessionHeartbeat.FromString(s.data)
        for s in transport.sent
        if s.subject == contract.session_heartbeat(SESSION)
    ]


async def until(check: Any, attempts: int = 500) -> None:
    """Yield to the client's tasks until ``check()`` holds (its heartbeat timer runs meanwhile),
    at most ``attempts`` times 10 ms."""
    for _ in range(attempts):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never held")


def test_options_are_checked_and_come_from_the_settings() -> None:
    assert SessionOptions.from_settings(BridgeSettings(nkey_seed=SEED)) is None
    opts = SessionOptions.from_settings(settings(session_cancel_on_close=True))
    assert opts == SessionOptions(SESSION, 400, cancel_on_disconnect=True, cancel_on_close=True)
    with pytest.raises(InvalidOrderError) as bad:
        SessionOptions("a.b", grace_ms=-1)
    assert [i.field for i in bad.value.errors] == ["session_id", "grace_ms"]
    with pytest.raises(ValueError, match="session_id"):
        settings(session_id="no spaces")
    with pytest.raises(InvalidOrderError):
        order(session_id="a*")


async def test_the_session_opens_heartbeats_stamps_and_closes() -> None:
    transport = FakeTransport()
    engine = Engine(transport)
    async with BridgeClient(settings(session_cancel_on_close=True), transport=transport) as bridge:
        assert [(o.session_id, o.grace_ms, o.cancel_on_disconnect) for o in engine.opens] == [
            (SESSION, 400, True)
        ]
        session = bridge.session
        assert session is not None
        assert session.info is not None
        assert (session.info.grace_ms, session.info.heartbeat_ms) == (400, 100)
        await until(lambda: len(heartbeats(transport)) >= 3)
        assert {h.session_id for h in heartbeats(transport)} == {SESSION}
        await bridge.submit(order("o-1"))
        await bridge.submit(order("o-2", session_id="explicit"))
        assert [(o.client_order_id, o.session_id) for o in engine.orders] == [
            ("o-1", SESSION),
            ("o-2", "explicit"),
        ]
        # Signed like any order operation.
        (first_open,) = transport.requests(contract.session_open(SESSION))
        assert contract.HEADER_SIGNATURE in first_open.headers
    assert [(c.session_id, c.cancel_orders) for c in engine.closes] == [(SESSION, True)]


async def test_a_reconnect_or_an_open_session_rejection_renews_it() -> None:
    transport = FakeTransport()
    engine = Engine(transport)
    async with BridgeClient(settings(), transport=transport) as bridge:
        session = bridge.session
        assert session is not None
        await transport.drop_connection()
        sent = len(heartbeats(transport))
        await transport.restore_connection()
        await until(lambda: session.renewals == 1)
        assert session.info is not None
        assert session.info.text == "renewed"
        await until(lambda: len(heartbeats(transport)) > sent)
        engine.reject_orders = True
        ack = await bridge.submit(order("o-3"))
        assert not ack.accepted
        await until(lambda: session.renewals == 2)
    assert len(engine.opens) == 3


async def test_a_refused_open_fails_connect_and_closes_the_client() -> None:
    transport = FakeTransport()
    engine = Engine(transport)
    engine.refuse_open = True
    bridge = BridgeClient(settings(), transport=transport)
    with pytest.raises(SessionError) as refused:
        await bridge.connect()
    assert refused.value.reason == "INVALID_FIELD"
    assert refused.value.session_id == SESSION
    assert transport.closes >= 1 or not transport.connected
    await bridge.close()


def test_resubmitted_orders_name_the_session_in_force() -> None:
    from prometheus_client import CollectorRegistry

    from bridge._connection import Connection
    from bridge.metrics import ClientMetrics
    from bridge.session import Session

    conn = Connection(settings(), FakeTransport(), ClientMetrics(CollectorRegistry()))
    session = Session(conn, SessionOptions(SESSION))
    assert session.stamp(order()).session_id == SESSION
    assert session.stamp(order(session_id="old")).session_id == "old"
    assert session.stamp(order(session_id="old"), replace=True).session_id == SESSION
