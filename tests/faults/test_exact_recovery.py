"""Recovery restores exactly what was (issue 10): one execution is one durable fact, a restart
creates no fill, the book keeps its time priority, deadlines mean the same before and after a
restart, and no order is left neither in a book nor final.

Every test ends with the fault harness's invariants (bought == sold per symbol, the per-order
rules, status() agreeing with EXECUTIONS, every live order in a book) on a restarted engine.
"""

from __future__ import annotations

import asyncio
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import (
    AckStatus,
    BridgeClient,
    ExecType,
    Order,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from bridge.models import decimal_from_proto
from bridge.v1 import orders_pb2
from bridge_dev.engine import DEFAULT_ENGINE_CONFIG, EngineProcess, client_settings
from bridge_dev.pki import DevCredentials
from bridge_dev.server import LocalNatsServer, ServerHandle, _provision_as_operator
from tests.faults.harness import new_account, stored_reports, wait_for_finals
from tests.faults.invariants import all_reports, assert_invariants

pytestmark = pytest.mark.integration

MAKERS = 160
TRADE = orders_pb2.EXEC_TYPE_TRADE


def limit(
    account: str,
    order_id: str,
    side: Side,
    price: str,
    qty: int,
    tif: TimeInForce = TimeInForce.GTC,
    *,
    symbol: str = "AAPL",
    deadline_unix_ns: int = 0,
) -> Order:
    return Order(
        client_order_id=order_id,
        account=account,
        symbol=symbol,
        side=side,
        order_type=OrderType.LIMIT,
        limit_price=Decimal(price),
        quantity=Decimal(qty),
        time_in_force=tif,
        deadline_unix_ns=deadline_unix_ns,
    )


def market(account: str, order_id: str, side: Side, qty: int) -> Order:
    return Order(
        client_order_id=order_id,
        account=account,
        symbol="AAPL",
        side=side,
        order_type=OrderType.MARKET,
        quantity=Decimal(qty),
        time_in_force=TimeInForce.IOC,
    )


def traded(reports: list[orders_pb2.ExecutionReport]) -> Decimal:
    return sum((decimal_from_proto(r.last_qty) for r in reports if r.exec_type == TRADE), Decimal())


async def place_makers(bridge: BridgeClient, account: str) -> None:
    """160 resting 1-lot SELL GTC orders at 190.006-190.009, ahead of the seeded asks."""
    for i in range(MAKERS):
        price = f"190.00{6 + i % 4}"
        ack = await bridge.submit(limit(account, f"mk{i}", Side.SELL, price, 1))
        assert ack.accepted, ack


async def assert_sweep_conserved(
    handle: ServerHandle, makers: str, taker: str, taker_id: str
) -> list[orders_pb2.ExecutionReport]:
    """The taker's fills equal the makers' fills, each maker filled exactly once."""
    taker_reports = await wait_for_finals(handle, taker, {taker_id}, timeout=60)
    maker_reports = await stored_reports(handle, makers)
    bought = traded(taker_reports)
    sold = traded(maker_reports)
    assert bought == MAKERS, f"taker bought {bought}"
    assert sold == bought, f"makers sold {sold}, taker bought {bought}"
    fills = [r.client_order_id for r in maker_reports if r.exec_type == TRADE]
    assert len(fills) == len(set(fills)) == MAKERS
    return taker_reports


async def test_crash_halfway_through_publishing_an_execution_keeps_bought_equal_to_sold(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """A crash after half of a 160-maker sweep's reports were published (failpoint
    mid_publish; the journal entry holds all of them): the restarted engine publishes the
    other half from the journal, each report once, and never executes the sweep again: the
    taker's 160 equal the makers' 160."""
    handle = fresh_server.handle
    makers, taker = new_account("MK"), new_account("TK")
    crashing = EngineProcess(
        handle, log_file=tmp_path / "crash.log", env={"BRIDGE_FAILPOINT": "mid_publish"}
    ).start()
    sweep = limit(taker, "sweep", Side.BUY, "190.009", MAKERS, TimeInForce.IOC)
    async with BridgeClient(client_settings(handle, request_timeout_ms=10_000)) as bridge:
        await place_makers(bridge, makers)
        ack = await bridge.submit(sweep)
        assert ack.status is AckStatus.ACCEPTED
        assert await asyncio.to_thread(crashing.wait, 30) == -signal.SIGABRT
    assert "failpoint reached" in crashing.log_tail(5)
    with EngineProcess(handle, log_file=tmp_path / "restart.log"):
        await assert_sweep_conserved(handle, makers, taker, sweep.client_order_id)
    await assert_invariants(handle, tmp_path)


async def test_kill_inside_a_large_sweep_keeps_bought_equal_to_sold(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """kill -9 the instant a 160-maker sweep is acked. The ack follows the journal entry that
    holds the whole execution, so the kill lands at the latest while its reports are being
    published: the restarted engine repairs them from the journal and never executes the
    sweep again. Every fill predates the kill, and the taker's 160 equal the makers' 160."""
    handle = fresh_server.handle
    settings = client_settings(handle, request_timeout_ms=10_000)
    makers, taker = new_account("MK"), new_account("TK")
    sweep = limit(taker, "sweep", Side.BUY, "190.009", MAKERS, TimeInForce.IOC)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with BridgeClient(settings) as bridge:
            await place_makers(bridge, makers)
            ack = await bridge.submit(sweep)
            engine.kill()
            killed_ns = time.time_ns()
            assert ack.status is AckStatus.ACCEPTED
        engine.start()
        taker_reports = await assert_sweep_conserved(handle, makers, taker, sweep.client_order_id)
    finally:
        assert engine.stop() == 0, engine.log_tail()
    fills = [r.transact_time_unix_ns for r in taker_reports if r.exec_type == TRADE]
    assert fills
    assert max(fills) < killed_ns, "the sweep was executed again after the kill"
    await assert_invariants(handle, tmp_path)


async def test_restart_creates_no_fill_and_consumed_seed_stays_consumed(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """BUY 700 @190.01 GTC takes the 3x200 seeded asks at 190.01 and rests 100. After a clean
    restart no report appears for it, and 190.01 has no seeded ask left to trade."""
    handle = fresh_server.handle
    account = new_account("RS")
    order = limit(account, "bid700", Side.BUY, "190.01", 700)
    probe = limit(account, "probe", Side.BUY, "190.01", 1, TimeInForce.IOC)
    settings = client_settings(handle, request_timeout_ms=10_000)
    with EngineProcess(handle, log_file=tmp_path / "first.log"):
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            assert (await bridge.submit(order)).accepted
            while (await stream.next(timeout=10)).cum_qty < 600:
                pass
    before = await stored_reports(handle, account)
    with EngineProcess(handle, log_file=tmp_path / "second.log") as restarted:
        assert restarted.recovered == 1
        async with BridgeClient(settings) as bridge:
            state = await bridge.status(account, order.client_order_id)
            await bridge.submit(probe)
        probe_reports = await wait_for_finals(handle, account, {probe.client_order_id}, 30)
    after = [r for r in probe_reports if r.client_order_id == order.client_order_id]
    assert [r.exec_id for r in after] == [r.exec_id for r in before]  # nothing new for it
    assert state.last_report is not None
    assert state.last_report.order_status is OrderStatus.PARTIALLY_FILLED
    assert state.last_report.cum_qty == 600
    probe_fills = [r for r in probe_reports if r.client_order_id == probe.client_order_id]
    assert traded(probe_fills) == 0, "a consumed seeded ask traded again after the restart"
    await assert_invariants(handle, tmp_path)


async def _build_book_and_sweep(handle: ServerHandle, tmp_path: Path, restart: str) -> list[str]:
    """Rests client orders on both sides (some partially filled, some behind seeded orders,
    some seed consumed), restarts the engine (``none``, ``sigterm`` or ``kill``), then sweeps
    both sides; returns every fill of the sweeps as ``maker@price x qty``, in priority order."""
    acct, sweeper = "PRIO", "SWEEP"
    setup = [
        limit(acct, "b1", Side.BUY, "189.995", 50),
        limit(acct, "b2", Side.BUY, "189.995", 30),
        limit(acct, "b3", Side.BUY, "189.99", 40),  # behind 3x200 seeded bids
        limit(acct, "a1", Side.SELL, "190.005", 50),
        limit(acct, "a2", Side.SELL, "190.005", 20),
        limit(acct, "a3", Side.SELL, "190.01", 40),  # behind 3x200 seeded asks
        limit(sweeper, "p1", Side.SELL, "189.995", 60, TimeInForce.IOC),  # b1 all, b2 10
        limit(sweeper, "p2", Side.BUY, "190.005", 30, TimeInForce.IOC),  # a1 30 of 50
        limit(sweeper, "p3", Side.BUY, "190.01", 250, TimeInForce.IOC),  # a1, a2, seed 210
    ]
    sweeps = [market(sweeper, "s-buy", Side.BUY, 1000), market(sweeper, "s-sell", Side.SELL, 800)]
    settings = client_settings(handle, request_timeout_ms=10_000)
    engine = EngineProcess(handle, log_file=tmp_path / f"{restart}-1.log").start()
    try:
        async with BridgeClient(settings) as bridge:
            for order in setup:
                assert (await bridge.submit(order)).accepted
            await bridge.status(acct, "a3")  # answered after every submit was executed
        if restart == "sigterm":
            assert engine.stop() == 0
        elif restart == "kill":
            engine.kill()
        if restart != "none":
            engine = EngineProcess(handle, log_file=tmp_path / f"{restart}-2.log").start()
        async with BridgeClient(settings) as bridge:
            for order in sweeps:
                assert (await bridge.submit(order)).accepted
        ids = {o.client_order_id for o in sweeps}
        taker = await wait_for_finals(handle, sweeper, ids, 30)
    finally:
        assert engine.stop() == 0, engine.log_tail()
    times = {r.transact_time_unix_ns for r in taker if r.client_order_id in ids}
    fills = []
    for r in await all_reports(handle):
        if r.exec_type == TRADE and r.account != sweeper and r.transact_time_unix_ns in times:
            px, qty = decimal_from_proto(r.last_px), decimal_from_proto(r.last_qty)
            fills.append(f"{r.client_order_id}@{px.normalize():f}x{qty.normalize():f}")
    return fills


@pytest.mark.parametrize("restart", ["sigterm", "kill"])
async def test_book_after_a_restart_is_the_book_before_it(
    dev_creds: DevCredentials, tmp_path: Path, restart: str
) -> None:
    """The same multi-level book, partially filled on both sides, swept by the same orders with
    and without a restart in between: every fill (maker, price, quantity) in the same order."""
    with LocalNatsServer(dev_creds, name="bridge-ref", log_file=tmp_path / "ref.log") as ref:
        await _provision(ref)
        want = await _build_book_and_sweep(ref.handle, tmp_path / "ref", "none")
    with LocalNatsServer(dev_creds, name="bridge-rst", log_file=tmp_path / "rst.log") as srv:
        await _provision(srv)
        got = await _build_book_and_sweep(srv.handle, tmp_path / "rst", restart)
        await assert_invariants(srv.handle, tmp_path)
    assert got == want
    # The client ask behind the seeded asks at 190.01 still trades after the unconsumed seed.
    a3 = next(i for i, f in enumerate(got) if f.startswith("a3@"))
    assert any(f.startswith("engine-1-") and "@190.01x" in f for f in got[:a3])
    assert "b2@189.995x20" in got  # the partially filled bid kept its place: first at its level
    b3 = got.index("b3@189.99x40")
    assert all("@189.99x" in f for f in got[b3 - 3 : b3])  # behind the three seeded bids


async def _provision(server: LocalNatsServer) -> None:
    await _provision_as_operator(server.handle)


async def test_nothing_trades_after_its_deadline_before_or_after_a_restart(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """A resting GTC order past its deadline is expired, never filled, by the next order that
    would trade with it; a restart does not change that."""
    handle = fresh_server.handle
    account = new_account("DL")
    deadline = time.time_ns() + 1_500_000_000
    resting = limit(account, "expiring", Side.SELL, "190.005", 10, deadline_unix_ns=deadline)
    taker = limit(account, "taker", Side.BUY, "190.005", 10, TimeInForce.IOC)
    settings = client_settings(handle, request_timeout_ms=10_000)
    with EngineProcess(handle, log_file=tmp_path / "engine.log"):
        async with BridgeClient(settings) as bridge:
            assert (await bridge.submit(resting)).accepted
            await asyncio.sleep(max(0.0, (deadline - time.time_ns()) / 1e9) + 0.05)  # the fault
            assert (await bridge.submit(taker)).accepted
        reports = await wait_for_finals(handle, account, {"expiring", "taker"}, 30)
    with EngineProcess(handle, log_file=tmp_path / "restart.log"):
        async with BridgeClient(settings) as bridge:
            state = await bridge.status(account, "expiring")
    mine = [r for r in reports if r.client_order_id == "expiring"]
    assert [r.exec_type for r in mine] == [orders_pb2.EXEC_TYPE_NEW, orders_pb2.EXEC_TYPE_EXPIRED]
    assert traded([r for r in reports if r.client_order_id == "taker"]) == 0
    assert state.last_report is not None
    assert state.last_report.order_status is OrderStatus.EXPIRED
    await assert_invariants(handle, tmp_path)


async def test_restored_orders_keep_their_limits_and_unrestorable_ones_are_finished(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """After a restart with a lower max_order_notional (set as a plain number in the
    environment), a resting order stays live in the book under the limits it was accepted
    with; after a restart without MSFT configured, its resting MSFT order is CANCELED with
    RECOVERY_INVALID instead of being left neither in a book nor final."""
    handle = fresh_server.handle
    account = new_account("ZB")
    big = limit(account, "big", Side.BUY, "189.50", 100)  # notional 18,950
    msft = limit(account, "msft", Side.BUY, "419.00", 5, symbol="MSFT")
    settings = client_settings(handle, request_timeout_ms=10_000)
    with EngineProcess(handle, log_file=tmp_path / "first.log"):
        async with BridgeClient(settings) as bridge:
            assert (await bridge.submit(big)).accepted
            assert (await bridge.submit(msft)).accepted
            await bridge.status(account, "msft")
    lowered = {"BRIDGE_MAX_ORDER_NOTIONAL": "1000"}
    with EngineProcess(handle, log_file=tmp_path / "lowered.log", env=lowered):
        async with BridgeClient(settings) as bridge:
            over = await bridge.submit(limit(account, "new-big", Side.BUY, "189.50", 100))
            state = await bridge.status(account, "big")
    assert (over.status, over.reason) == (AckStatus.REJECTED, RejectReason.RISK_LIMIT)
    assert state.last_report is not None
    assert state.last_report.order_status is OrderStatus.NEW
    no_msft = tmp_path / "no-msft.toml"
    text = DEFAULT_ENGINE_CONFIG.read_text()
    no_msft.write_text(text[: text.index("[symbols.MSFT]")])
    log = tmp_path / "no-msft.log"
    with EngineProcess(handle, log_file=log, config_file=no_msft):
        async with BridgeClient(settings) as bridge:
            gone = await bridge.status(account, "msft")
            canceled = await bridge.cancel(account, "big")  # in the book: cancelable
    assert gone.last_report is not None
    assert gone.last_report.order_status is OrderStatus.CANCELED
    assert gone.last_report.reason is RejectReason.RECOVERY_INVALID
    assert gone.last_report.exec_type is ExecType.CANCELED
    assert "RECOVERY_INVALID" in log.read_text()
    assert canceled.order_status is OrderStatus.CANCELED, canceled
    await assert_invariants(handle, tmp_path)
