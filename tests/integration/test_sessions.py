"""Sessions (cancel on disconnect) through the real server and engine: what the engine answers
to SessionOpen / SessionClose, and what it does with orders that name a session.

The disconnects themselves (kill -9, a short reconnect, an engine restart) are in
tests/faults/test_cancel_on_disconnect.py."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bridge import (
    AckStatus,
    BridgeClient,
    ExecType,
    ExecutionReport,
    Order,
    OrderStatus,
    OrderType,
    RejectReason,
    ReportStream,
    SessionError,
    Side,
    TimeInForce,
    contract,
)
from bridge.cli import cli
from bridge.v1 import orders_pb2, session_pb2
from bridge_dev.engine import EngineProcess, client_settings, write_client_config
from bridge_dev.server import ServerHandle, connect_as
from bridge_dev.signing import dev_signer, signed

pytestmark = pytest.mark.integration


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def resting(account: str, session_id: str = "") -> Order:
    return Order(
        client_order_id=_id("r"),
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal(1),
        limit_price=Decimal("150.00"),
        time_in_force=TimeInForce.GTC,
        session_id=session_id,
    )


async def bridge_cli(*args: str, config: Path) -> Result:
    """``bridge ARGS --config CONFIG`` in-process (off the test's event loop)."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli, [*args, "--config", str(config)], catch_exceptions=False
    )


async def test_open_clamps_the_grace_stamps_orders_and_close_cancels_them(
    nats_server: ServerHandle, engine: EngineProcess, tmp_path: Path
) -> None:
    operator = write_client_config(
        client_settings(nats_server, role="operator"), tmp_path / "operator.toml"
    )
    short = client_settings(nats_server, session_id=_id("s"), session_grace_ms=1)
    async with BridgeClient(short) as bridge:
        # Asked for 1 ms: raised to the engine's session_min_grace_ms; heartbeats at a quarter.
        assert bridge.session is not None
        assert bridge.session.info is not None
        assert (bridge.session.info.grace_ms, bridge.session.info.heartbeat_ms) == (250, 62)
    settings = client_settings(nats_server, session_id=_id("s"), session_cancel_on_close=True)
    account = _id("SA").upper()
    async with BridgeClient(settings) as bridge, bridge.reports(account) as reports:
        session = bridge.session
        assert session is not None
        assert session.info is not None
        # Asked for 0: the engine's session_default_grace_ms.
        assert (session.info.grace_ms, session.info.heartbeat_ms) == (5000, 1250)
        assert session.info.text == "opened"
        orders = [resting(account) for _ in range(3)]
        for order in orders[:2]:
            assert (await bridge.submit(order)).accepted
        await bridge.enqueue(orders[2])
        news = await _reports_until(reports, {o.client_order_id for o in orders}, ExecType.NEW)
        assert len(news) == 3
        for order in orders:
            state = await bridge.status(account, order.client_order_id)
            assert state.last_report is not None
            assert state.last_report.order_status is OrderStatus.NEW
        # What an operator sees (runbooks/orders-left-resting.md).
        listed = await bridge_cli("sessions", "ls", config=operator)
        assert listed.exit_code == 0, listed.output
        (line,) = [ln for ln in listed.output.splitlines() if ln.startswith(session.session_id)]
        assert line.split()[1:4] == ["open", "5000", "yes"]
        resting_now = await bridge_cli(
            "sessions", "orders", account, "--session", session.session_id, config=operator
        )
        assert resting_now.exit_code == 1, resting_now.output  # something rests
        assert f"3 live order(s) of {account}" in resting_now.output
        assert f"{session.session_id} (open)" in resting_now.output
        canceled = await session.close()
        assert canceled == 3
        finals = await _reports_until(
            reports, {o.client_order_id for o in orders}, ExecType.CANCELED
        )
        assert {r.reason for r in finals} == {RejectReason.SESSION_LOST}
        assert all("closed with cancel_orders" in r.text for r in finals)
        # Closed: an order naming it is refused, on both paths.
        ack = await bridge.submit(resting(account))
        assert ack.status is AckStatus.REJECTED
        assert [(e.field, e.rule) for e in ack.field_errors] == [("session_id", "open_session")]
        assert "closed" in ack.text
        queued = resting(account)
        await bridge.enqueue(queued)
        (rejected,) = await _reports_until(reports, {queued.client_order_id}, ExecType.REJECTED)
        assert [(e.field, e.rule) for e in rejected.field_errors] == [
            ("session_id", "open_session")
        ]
        # Closing again is idempotent.
        assert await session.close() == 0
    after = await bridge_cli("sessions", "orders", account, config=operator)
    assert (after.exit_code, after.output) == (0, f"no live orders of {account}\n")
    listed = await bridge_cli("sessions", "ls", config=operator)
    (line,) = [ln for ln in listed.output.splitlines() if ln.startswith(session.session_id)]
    assert line.split()[1] == "closed"


async def test_orders_may_name_only_an_open_session_of_their_signer(
    nats_server: ServerHandle, engine: EngineProcess
) -> None:
    session_id = _id("s")
    a_settings = client_settings(nats_server, "desk-a", session_id=session_id)
    async with (
        BridgeClient(a_settings) as desk_a,
        BridgeClient(client_settings(nats_server, "desk-b")) as desk_b,
    ):
        assert (await desk_a.submit(resting("DESK-A"))).accepted
        # Another identity can neither name, renew nor close it.
        ack = await desk_b.submit(resting("DESK-B", session_id))
        assert [(e.field, e.rule) for e in ack.field_errors] == [("session_id", "session_owner")]
        thief = client_settings(nats_server, "desk-b", session_id=session_id)
        with pytest.raises(SessionError) as refused:
            async with BridgeClient(thief):
                pass
        assert refused.value.reason == "INVALID_FIELD"
        assert [(e.field, e.rule) for e in refused.value.errors] == [
            ("session_id", "session_owner")
        ]
        # A session nobody opened.
        ack = await desk_b.submit(resting("DESK-B", _id("nobody")))
        assert [(e.field, e.rule) for e in ack.field_errors] == [("session_id", "open_session")]
        # The owner renews it (same settings): the engine says so.
        assert desk_a.session is not None
        info = await desk_a.session.open()
        assert info.text == "renewed"


async def test_the_engine_refuses_malformed_session_requests(
    nats_server: ServerHandle, engine: EngineProcess
) -> None:
    signer = dev_signer(nats_server.creds)
    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
    try:

        async def ask(subject: str, payload: bytes) -> session_pb2.SessionAck:
            reply = await nc.request(
                subject, payload, timeout=5, headers=signed(signer, subject, payload)
            )
            ack = session_pb2.SessionAck()
            ack.ParseFromString(reply.data)
            return ack

        mismatch = session_pb2.SessionOpen(session_id="other").SerializeToString()
        ack = await ask(contract.session_open(_id("s")), mismatch)
        assert ack.status == orders_pb2.ACK_STATUS_REJECTED
        assert [(e.field, e.rule) for e in ack.field_errors] == [("session_id", "subject")]
        closing = _id("never")
        ack = await ask(
            contract.session_close(closing),
            session_pb2.SessionClose(session_id=closing).SerializeToString(),
        )
        assert [(e.field, e.rule) for e in ack.field_errors] == [("session_id", "open_session")]
        # Unsigned: refused like any order operation.
        unsigned = await nc.request(
            contract.session_open("x1"),
            session_pb2.SessionOpen(session_id="x1").SerializeToString(),
            timeout=5,
        )
        ack = session_pb2.SessionAck()
        ack.ParseFromString(unsigned.data)
        assert ack.reason == orders_pb2.REJECT_REASON_UNSIGNED
    finally:
        await nc.close()


async def _reports_until(
    reports: ReportStream, ids: set[str], exec_type: ExecType, timeout: float = 30
) -> list[ExecutionReport]:
    """Read the open report stream until every order of ``ids`` has a report of ``exec_type``."""
    found: dict[str, ExecutionReport] = {}
    async with asyncio.timeout(timeout):
        while set(found) != ids:
            r = await reports.next(timeout=timeout)
            if r.client_order_id in ids and r.exec_type is exec_type:
                found[r.client_order_id] = r
    return list(found.values())
