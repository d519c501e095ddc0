"""Expiry that happens (issue 16, item 6), against the real server and engine: a resting GTD
order expires at its deadline although no other order arrives, a DAY order at the configured
session end (``day_session_end_utc``), and an order filled before its deadline does not expire
(one partly filled does, with what it filled). Every test waits for the reports, never for a
time, and ends with the FIX invariants and money conservation over everything the server holds.
Restarts: tests/faults/test_expiry_restart.py."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import BridgeClient, BridgeSettings, ExecType, OrderStatus, Side, TimeInForce
from bridge.v1 import orders_pb2
from bridge_dev import engine as dev_engine
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle
from tests.faults.harness import stored_reports
from tests.integration.expiry_helpers import (
    S,
    assert_expired,
    assert_fix_invariants,
    new_id,
    now_ns,
    resting,
    session_end,
    until_final,
    until_new,
)

pytestmark = pytest.mark.integration


def test_dev_engines_never_reach_a_session_end() -> None:
    """The dev tooling's engines (demo, tests, benchmarks) run with the session end one minute
    behind the moment it was loaded: the next one is almost a day after anything they do."""
    loaded = dev_engine.DAY_SESSION_END_UTC
    assert loaded is not None
    end = datetime.strptime(loaded, "%H:%M:%S").replace(tzinfo=UTC)
    now = datetime.now(UTC)
    # The next occurrence of that time of day after now, whatever the date.
    next_end = now.replace(hour=end.hour, minute=end.minute, second=end.second, microsecond=0)
    while next_end <= now:
        next_end += timedelta(days=1)
    # Loaded when this test process started, which runs for hours at most.
    assert next_end - now > timedelta(hours=12), (loaded, now)
    at = datetime(2024, 3, 1, 0, 0, 30, tzinfo=UTC)
    assert dev_engine.session_end_behind(at) == "23:59:30"  # across midnight


def expired_reports_published(engine: EngineProcess) -> float:
    """``bridge_engine_reports_total{exec_type="expired"}`` of the engine now."""
    with urllib.request.urlopen(engine.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith('bridge_engine_reports_total{exec_type="expired"}'):
            return float(line.split()[-1])
    return 0.0


async def test_resting_gtd_order_expires_at_its_deadline(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """A resting order with a deadline gets NEW, then EXPIRED (DEADLINE_EXCEEDED) at its
    deadline, with no order arriving after it; a GTC order beside it rests on."""
    account = new_id("GTD")
    control = resting(account)
    deadline = now_ns() + 2 * S
    order = resting(account, deadline_unix_ns=deadline)
    before = expired_reports_published(engine)
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        assert (await bridge.submit(control)).accepted
        assert (await bridge.submit(order)).accepted  # the last order anyone sends
        got = await until_final(stream, {order.client_order_id})
        expired = await bridge.status(account, order.client_order_id)
        live = await bridge.status(account, control.client_order_id)
        assert (await bridge.cancel(account, control.client_order_id)).accepted
    mine = got[order.client_order_id]
    assert [r.exec_type for r in mine] == [ExecType.NEW, ExecType.EXPIRED]
    last = assert_expired(mine, "DEADLINE_EXCEEDED", deadline)
    assert last.text == "deadline passed while resting"
    assert [r.seq for r in mine] == [1, 2]
    # The record was written back: the engine answers EXPIRED; the GTC order was still live.
    assert expired.last_report is not None
    assert expired.last_report.exec_id == last.exec_id
    assert live.last_report is not None
    assert live.last_report.order_status is OrderStatus.NEW
    assert expired_reports_published(engine) == before + 1
    await assert_fix_invariants(nats_server)


async def test_day_order_expires_at_the_session_end(
    nats_server: ServerHandle, settings: BridgeSettings, tmp_path: Path
) -> None:
    """With the session end configured a few seconds ahead, DAY orders expire at it
    (SESSION_END), one with a later deadline too; a GTC order rests on."""
    end, end_ns = session_end(now_ns() + 5 * S)
    account = new_id("DAY")
    gtc = resting(account)
    day = resting(account, tif=TimeInForce.DAY)
    day_gtd = resting(account, tif=TimeInForce.DAY, deadline_unix_ns=end_ns + 3600 * S)
    engine = EngineProcess(
        nats_server,
        log_file=tmp_path / "engine.log",
        env={"BRIDGE_DAY_SESSION_END_UTC": end},
    ).start()
    try:
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            acks = [await bridge.submit(o) for o in (gtc, day, day_gtd)]
            assert all(a.accepted for a in acks), acks
            accepted = max(a.ack_time_unix_ns for a in acks)
            assert accepted < end_ns, "the engine started too slowly: accepted after the end"
            got = await until_final(stream, {day.client_order_id, day_gtd.client_order_id})
            live = await bridge.status(account, gtc.client_order_id)
            assert (await bridge.cancel(account, gtc.client_order_id)).accepted
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    for o in (day, day_gtd):
        reports = got[o.client_order_id]
        assert [r.exec_type for r in reports] == [ExecType.NEW, ExecType.EXPIRED]
        last = assert_expired(reports, "SESSION_END", end_ns)
        assert last.text == f"DAY order: the session ended at {end} UTC"
    assert live.last_report is not None
    assert live.last_report.order_status is OrderStatus.NEW
    assert "resting order expired" in engine.log_tail(200)
    await assert_fix_invariants(nats_server)


async def test_order_filled_before_its_deadline_does_not_expire(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """Two GTD sells rest at the front of the book; a buy fills the first and part of the
    second before their deadlines. The filled one never expires (its deadline comes first, so
    its EXPIRED report would precede the other's); the partly filled one expires at its
    deadline with what it filled (cum 15, leaves 0)."""
    maker, taker = new_id("MK"), new_id("TK")
    price = Decimal("190.00")  # between the seeded best bid 189.99 and best ask 190.01
    t = now_ns()
    filled = resting(maker, side=Side.SELL, price=price, qty="10", deadline_unix_ns=t + 3 * S)
    partial = resting(maker, side=Side.SELL, price=price, qty="20", deadline_unix_ns=t + 4 * S)
    buy = resting(taker, tif=TimeInForce.IOC, price=price, qty="25")
    async with BridgeClient(settings) as bridge, bridge.reports(maker) as stream:
        for o in (filled, partial):
            assert (await bridge.submit(o)).accepted
        await until_new(stream, {filled.client_order_id, partial.client_order_id})
        assert (await bridge.submit(buy)).accepted
        got = await until_final(stream, {filled.client_order_id, partial.client_order_id})
    first = got[filled.client_order_id]
    assert [(r.exec_type, r.order_status) for r in first] == [(ExecType.TRADE, OrderStatus.FILLED)]
    assert first[-1].transact_time_unix_ns < (filled.deadline_unix_ns or 0)
    second = got[partial.client_order_id]
    assert [r.exec_type for r in second] == [ExecType.TRADE, ExecType.EXPIRED]
    assert second[0].cum_qty == 15
    assert second[0].leaves_qty == 5
    assert_expired(second, "DEADLINE_EXCEEDED", partial.deadline_unix_ns or 0, cum="15")
    stored = await stored_reports(nats_server, maker)
    expired = orders_pb2.EXEC_TYPE_EXPIRED
    mine = [r for r in stored if r.client_order_id == filled.client_order_id]
    assert mine, "no reports of the filled order stored"
    assert not [r for r in mine if r.exec_type == expired], "the filled order expired"
    await assert_fix_invariants(nats_server)
