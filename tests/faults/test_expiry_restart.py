"""Expiry across engine restarts (issue 16, item 6): recovery restores the resting orders with
the expiry instants their records give, expires at once what came due while the engine was
down (a kill -9), and the restarted engine's timer expires the rest on time (GTD and DAY).
Each test ends with the fault harness's invariants (conservation, report sequences, nothing
after a final report, cum + leaves = qty while live, status agrees, the journal verifies)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import BridgeClient, ExecType, Order, OrderStatus, Side, TimeInForce
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings, lease_wait_limit
from bridge_dev.server import LocalNatsServer
from tests.faults.harness import (
    FaultResult,
    assert_clean,
    new_account,
    order_flow,
    verify,
    wait_for_ack_floor,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants
from tests.integration.expiry_helpers import (
    S,
    assert_expired,
    new_id,
    now_ns,
    resting,
    session_end,
    until_final,
    until_new,
)

pytestmark = pytest.mark.integration


async def test_expiry_after_a_kill_and_on_time_after_recovery(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """Three orders rest; the engine is killed (-9) before any expires. A GTD order's deadline
    and a DAY order's session end pass while it is down: both expire during recovery, before the
    restarted engine is ready. A GTD order whose deadline is still ahead is restored live and
    expires on time."""
    handle = fresh_server.handle
    account = new_id("EK")
    end, end_ns = session_end(now_ns() + 5 * S)
    env = {"BRIDGE_DAY_SESSION_END_UTC": end}
    first = EngineProcess(handle, log_file=tmp_path / "engine-1.log", env=env).start()
    second = EngineProcess(handle, log_file=tmp_path / "engine-2.log", env=env)
    settings = client_settings(handle, request_timeout_ms=10_000)
    try:
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            t = now_ns()
            day = resting(account, tif=TimeInForce.DAY)
            ahead = resting(account, deadline_unix_ns=t + int((lease_wait_limit() + 15) * S))
            down = resting(account, deadline_unix_ns=t + 2 * S)
            orders = (day, ahead, down)
            for o in orders:
                assert (await bridge.submit(o)).accepted
            await until_new(stream, {o.client_order_id for o in orders})
            first.kill()
            killed = now_ns()
            due = max(down.deadline_unix_ns or 0, end_ns)
            assert killed < min(down.deadline_unix_ns or 0, end_ns), "too slow: expired before"
            # The deadline and the session end pass while the engine is down: that is the fault
            # (the restart waits for the killed engine's lease anyway, usually longer).
            await asyncio.sleep(max(0, due - now_ns()) / S)
            restarting = now_ns()
            await asyncio.to_thread(second.start)
            ready = now_ns()
            assert ready < (ahead.deadline_unix_ns or 0), "too slow: restarted after the deadline"
            restored = await bridge.status(account, ahead.client_order_id)
            got = await until_final(stream, {o.client_order_id for o in orders})
    finally:
        first.kill()
        code = second.stop()
    assert code == 0, second.log_tail()
    assert restored.last_report is not None
    assert restored.last_report.order_status is OrderStatus.NEW, restored
    passed = ((down, "DEADLINE_EXCEEDED", down.deadline_unix_ns), (day, "SESSION_END", end_ns))
    for o, reason, at in passed:
        reports = got[o.client_order_id]
        assert [r.exec_type for r in reports] == [ExecType.EXPIRED], reports
        # Expired by recovery: after the restart began, before the engine was ready.
        last = assert_expired(reports, reason, at or 0, within_ns=ready - (at or 0) + 1)
        assert restarting <= last.transact_time_unix_ns <= ready
        assert last.seq == 2  # NEW was 1, before the kill
    later = got[ahead.client_order_id]
    assert [r.exec_type for r in later] == [ExecType.EXPIRED], later
    assert_expired(later, "DEADLINE_EXCEEDED", ahead.deadline_unix_ns or 0)
    assert later[-1].transact_time_unix_ns > ready
    await assert_invariants(handle, tmp_path)


async def test_day_and_gtd_orders_expire_on_time_after_a_restart(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """A DAY and a GTD order rest; the engine stops and starts again (SIGTERM, same
    configuration) before either is due; the restarted engine expires each at its instant."""
    handle = fresh_server.handle
    account = new_id("ER")
    end, end_ns = session_end(now_ns() + 8 * S)
    env = {"BRIDGE_DAY_SESSION_END_UTC": end}
    day = resting(account, tif=TimeInForce.DAY)
    gtd = resting(account, deadline_unix_ns=end_ns + S)
    settings = client_settings(handle, request_timeout_ms=10_000)
    first = EngineProcess(handle, log_file=tmp_path / "engine-1.log", env=env).start()
    second = EngineProcess(handle, log_file=tmp_path / "engine-2.log", env=env)
    try:
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            for o in (day, gtd):
                assert (await bridge.submit(o)).accepted
            await until_new(stream, {day.client_order_id, gtd.client_order_id})
            assert await asyncio.to_thread(first.stop) == 0, first.log_tail()
            await asyncio.to_thread(second.start)
            assert now_ns() < end_ns, "too slow: restarted after the session end"
            got = await until_final(stream, {day.client_order_id, gtd.client_order_id})
    finally:
        first.kill()
        code = second.stop()
    assert code == 0, second.log_tail()
    assert_expired(got[day.client_order_id], "SESSION_END", end_ns)
    assert_expired(got[gtd.client_order_id], "DEADLINE_EXCEEDED", gtd.deadline_unix_ns or 0)
    assert "resting order expired" in second.log_tail(200)
    await assert_invariants(handle, tmp_path)


RESTING = 24
FLOW = 120


def spread_resting(account: str, first_deadline: int) -> list[Order]:
    """:data:`RESTING` GTD orders (DAY or GTC), deadlines a third of a second apart from
    ``first_deadline`` on: half at the top of the book (the flow trades with them), half
    behind the seeded levels (seldom reached)."""
    where = [
        (Side.BUY, "190.00"),
        (Side.SELL, "190.01"),
        (Side.BUY, "189.95"),
        (Side.SELL, "190.06"),
    ]
    rest: list[Order] = []
    for i in range(RESTING):
        side, price = where[i % len(where)]
        rest.append(
            resting(
                account,
                tif=TimeInForce.DAY if i % 3 == 0 else TimeInForce.GTC,
                side=side,
                price=Decimal(price),
                qty=str(5 + i % 3 * 5),
                deadline_unix_ns=first_deadline + i * S // 3,
            )
        )
    return rest


@pytest.mark.soak  # the normal suite's lifecycle mix (test_lifecycle_mix.py) covers GTD + kill -9
async def test_expiries_mixed_with_fills_through_a_kill(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """GTD orders resting in the book (deadlines spread over 2 to 10 s ahead) among a flow of
    market and IOC orders that trade with some of them, and a kill -9 in the middle: each
    resting order ends FILLED or EXPIRED (by the timer, by an execution in its book, or by
    recovery), exactly once; nothing is lost, doubled or over-filled, and the fault harness's
    invariants hold."""
    handle = fresh_server.handle
    account = new_account("EX")
    before, after = order_flow(account, FLOW, seed=16), order_flow(account, FLOW, seed=61)
    settings = client_settings(handle, request_timeout_ms=10_000)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    acked: set[str] = set()
    try:
        async with BridgeClient(settings) as bridge:
            # Deadlines from now on, once connected: none passes before its order is in.
            rest = spread_resting(account, now_ns() + 2 * S)
            for o in rest:
                assert (await bridge.submit(o)).accepted
            acked |= {o.client_order_id for o in rest}
            await bridge.enqueue_batch(before)
            acked |= {o.client_order_id for o in before}
            await wait_for_ack_floor(handle)  # the flow has executed: nothing held at the kill
            engine.kill()
            await asyncio.to_thread(engine.start)
            await bridge.enqueue_batch(after)
            acked |= {o.client_order_id for o in after}
            reports = await wait_for_finals(handle, account, acked, timeout=60)
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    orders = [*rest, *before, *after]
    result = verify(
        FaultResult("expiry: GTD/DAY resting among fills, kill -9", sent=len(orders)),
        orders,
        acked,
        reports,
    )
    assert_clean(result)
    finals = {
        r.client_order_id: r
        for r in reports
        if r.order_status in (orders_pb2.ORDER_STATUS_FILLED, orders_pb2.ORDER_STATUS_EXPIRED)
    }
    outcomes = {"filled": 0, "expired": 0}
    for o in rest:
        final = finals[o.client_order_id]
        if final.order_status == orders_pb2.ORDER_STATUS_EXPIRED:
            assert final.reason == orders_pb2.REJECT_REASON_DEADLINE_EXCEEDED, final
            assert final.transact_time_unix_ns >= (o.deadline_unix_ns or 0), final
            outcomes["expired"] += 1
        else:
            outcomes["filled"] += 1
    assert outcomes["expired"] > 0, outcomes
    result.notes.update(outcomes)
    checked = await assert_invariants(handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"
