"""Expiry across engine restarts (issue 16, item 6): recovery restores the resting orders with
the expiry instants their records give, expires at once what came due while the engine was
down (a kill -9), and the restarted engine's timer expires the rest on time (GTD and DAY).
Each test ends with the fault harness's invariants (conservation, report sequences, nothing
after a final report, cum + leaves = qty while live, status agrees, the journal verifies)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge import BridgeClient, ExecType, OrderStatus, TimeInForce
from bridge_dev.engine import EngineProcess, client_settings, lease_wait_limit
from bridge_dev.server import LocalNatsServer
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
