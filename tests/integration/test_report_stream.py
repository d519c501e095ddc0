"""Report streams deliver every stored report exactly once: slow readers, lost consumers,
resumption after a restart of the reader."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from bridge import (
    BridgeClient,
    BridgeSettings,
    ExecutionReport,
    Order,
    OrderType,
    ReportStream,
    Side,
    TimeInForce,
    contract,
)
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import ServerHandle, connect_as
from tests.faults.harness import stored_entries, wait_for_ack_floor

pytestmark = pytest.mark.integration


def _ioc_orders(account: str, n: int) -> list[Order]:
    return [
        Order(
            client_order_id=f"s{i}-{uuid.uuid4().hex[:8]}",
            account=account,
            symbol="AAPL",
            side=Side.BUY if i % 2 else Side.SELL,
            order_type=OrderType.MARKET,
            quantity=Decimal(1 + i % 5),
            time_in_force=TimeInForce.IOC,
        )
        for i in range(n)
    ]


async def _read(stream: ReportStream, n: int) -> list[tuple[int, ExecutionReport]]:
    """The next ``n`` reports with the EXECUTIONS sequence of each."""
    out = []
    for _ in range(n):
        report = await stream.next(timeout=30)
        out.append((stream.last_seq, report))
    return out


async def test_slow_reader_gets_every_report_once_with_bounded_memory(
    engine: EngineProcess, nats_server: ServerHandle
) -> None:
    """A reader with subscription_capacity=64 that reads nothing until all 300 orders are done still
    gets every stored report exactly once, in stream order, holding at most 64 meanwhile."""
    account = f"SLOW-{uuid.uuid4().hex[:8]}"
    settings = client_settings(nats_server, subscription_capacity=64)
    orders = _ioc_orders(account, 300)
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        await bridge.enqueue_batch(orders)
        await wait_for_ack_floor(nats_server)  # every report of every order is stored
        stored = await stored_entries(nats_server, account)
        assert len(stored) > 2 * len(orders)  # NEW + at least one outcome each
        assert stream.buffered <= 64 + 8, "the reader's buffer grew past its window"
        got = await _read(stream, len(stored))
    assert [seq for seq, _ in got] == [seq for seq, _ in stored]
    assert [r.exec_id for _, r in got] == [r.exec_id for _, r in stored]
    finals = {r.client_order_id for _, r in got if r.is_final}
    assert finals == {o.client_order_id for o in orders}


async def test_consumer_deleted_mid_stream_resumes_without_gap_or_repeat(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """An operator deleting a reader's consumer mid-stream costs nothing: the stream re-creates
    it after the last report it yielded."""
    account = f"DEL-{uuid.uuid4().hex[:8]}"
    orders = _ioc_orders(account, 100)
    # A small pull window: the reader needs its consumer again after the first 50 reports,
    # however fast the engine published them (100 orders travel in one batch message).
    settings = settings.model_copy(update={"subscription_capacity": 16})
    operator = await connect_as(nats_server.url, nats_server.creds, "operator")
    try:
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            await bridge.enqueue_batch(orders)
            first = await _read(stream, 50)
            await operator.jetstream().delete_consumer(contract.EXECUTIONS_STREAM, stream.consumer)
            await wait_for_ack_floor(nats_server)
            stored = await stored_entries(nats_server, account)
            rest = await _read(stream, len(stored) - len(first))
            assert stream.resets >= 1
    finally:
        await operator.close()
    got = first + rest
    assert [seq for seq, _ in got] == [seq for seq, _ in stored]
    assert len({r.exec_id for _, r in got}) == len(got)


async def test_reader_resumes_after_its_own_restart_from_last_seq(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """A reader that stops and later reopens with since_seq=last_seq + 1 continues exactly
    where it stopped, including reports stored while it was away."""
    account = f"RES-{uuid.uuid4().hex[:8]}"
    orders = _ioc_orders(account, 60)
    async with BridgeClient(settings) as bridge:
        async with bridge.reports(account) as stream:
            await bridge.enqueue_batch(orders[:30])
            first = await _read(stream, 20)
            resume_at = stream.last_seq + 1
        await bridge.enqueue_batch(orders[30:])  # stored while no reader is open
        await wait_for_ack_floor(nats_server)
        stored = await stored_entries(nats_server, account)
        async with bridge.reports(account, since_seq=resume_at) as again:
            rest = await _read(again, len(stored) - len(first))
    got = first + rest
    assert [seq for seq, _ in got] == [seq for seq, _ in stored]
