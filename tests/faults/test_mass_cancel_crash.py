"""A 1,200-order mass cancel and the engine dying in the middle of it.

* failpoint ``mid_mass_cancel``: the engine aborts once the mass cancel's journal entry (all
  1,200 CANCELED reports and records: one commit group) is stored, before anything of it is
  published or written to the order store; the request is never answered. Durable before
  visible: nothing of it was published before the crash. The restarted engine's repair
  projects the whole entry (every order canceled, each once), recovery puts none of them back
  into a book, and a re-send of the same request finds nothing left to cancel.
* SIGKILL on the first CANCELED report seen: wherever it lands, the re-send completes it.

Either way every order ends with exactly one CANCELED report (reason MASS_CANCELED), and the
fault invariants (conservation, report sequences, cum + leaves, live means in a book, the hash
chain) hold.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import (
    BridgeClient,
    BridgeError,
    ExecType,
    Order,
    OrderType,
    OutcomeUnknownError,
    Side,
    TimeInForce,
)
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer, ServerHandle
from tests.faults.harness import (
    RESULTS,
    FaultResult,
    new_account,
    stored_reports,
    wait_for_ack_floor,
)
from tests.faults.invariants import assert_invariants
from tests.faults.journal_harness import REPAIRED, journal, log_records

pytestmark = pytest.mark.integration

ORDERS = 1200


def resting(account: str, i: int) -> Order:
    return Order(
        client_order_id=f"mc{i:05d}",
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        limit_price=Decimal("150"),
        quantity=Decimal(1),
        time_in_force=TimeInForce.GTC,
    )


async def rest_orders(bridge: BridgeClient, handle: ServerHandle, account: str) -> None:
    queued = await bridge.enqueue_batch([resting(account, i) for i in range(ORDERS)])
    assert len(queued) == ORDERS
    await wait_for_ack_floor(handle)


async def assert_each_canceled_once(handle: ServerHandle, account: str) -> None:
    reports = await stored_reports(handle, account)
    canceled = [r for r in reports if r.exec_type == orders_pb2.EXEC_TYPE_CANCELED]
    per_order = Counter(r.client_order_id for r in canceled)
    assert len(per_order) == ORDERS
    assert set(per_order.values()) == {1}
    assert {r.reason for r in canceled} == {orders_pb2.REJECT_REASON_MASS_CANCELED}


async def test_crash_after_a_mass_cancel_is_journaled_then_resend(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    account = new_account("MCF")
    settings = client_settings(handle, request_timeout_ms=5_000, order_retry_max_attempts=1)
    result = FaultResult("engine abort once a mass cancel is journaled", sent=ORDERS)
    crashing = EngineProcess(
        handle, log_file=tmp_path / "crash.log", env={"BRIDGE_FAILPOINT": "mid_mass_cancel"}
    ).start()
    try:
        async with BridgeClient(settings) as bridge:
            await rest_orders(bridge, handle, account)
            result.acked = ORDERS
            before = len(await journal(handle))
            with pytest.raises(OutcomeUnknownError):
                await bridge.cancel_all(account, request_id="half")
        assert await asyncio.to_thread(crashing.wait, 30) == -signal.SIGABRT
        assert "failpoint reached" in crashing.log_tail(5)
    finally:
        crashing.kill()
    visible = await stored_reports(handle, account)
    assert sum(r.exec_type == orders_pb2.EXEC_TYPE_CANCELED for r in visible) == 0
    # One commit group, in as many entries as its size needs.
    written = (await journal(handle))[before:]
    assert sum(e.reports for e in written) == sum(e.records for e in written) == ORDERS, written
    restart = tmp_path / "restart.log"
    with EngineProcess(handle, log_file=restart) as engine:
        assert engine.recovered == 0  # every order canceled by the repaired entry
        async with BridgeClient(settings) as bridge:
            again = await bridge.cancel_all(account, request_id="half")
            assert (again.complete, again.canceled) == (True, 0)
    repaired = log_records(restart, REPAIRED)
    assert [(r["entries"], r["reports"]) for r in repaired] == [(len(written), ORDERS)]
    await assert_each_canceled_once(handle, account)
    checked = await assert_invariants(handle, tmp_path)
    assert checked.live_canceled == 0  # nothing of the account was left in a book
    result.notes["invariants"] = f"ok ({checked.reports} reports)"
    result.notes["journal_entries"] = len(written)
    RESULTS.append(result)


async def test_kill_inside_a_mass_cancel_then_resend_cancels_each_order_once(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    account = new_account("MCK")
    settings = client_settings(handle, request_timeout_ms=5_000, order_retry_max_attempts=1)
    result = FaultResult("engine SIGKILL inside a 1,200-order mass cancel", sent=ORDERS)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with BridgeClient(settings) as bridge:
            await rest_orders(bridge, handle, account)
            result.acked = ORDERS
            async with bridge.reports(account) as stream:
                first = asyncio.create_task(bridge.cancel_all(account, request_id="kill-me"))
                async with asyncio.timeout(60):
                    async for report in stream:  # the first committed batch: kill now
                        if report.exec_type is ExecType.CANCELED:
                            engine.kill()
                            break
                try:
                    answered: int | None = (await first).canceled
                except BridgeError:
                    answered = None  # no answer: the re-send settles it
        engine.start()
        async with BridgeClient(settings) as bridge:
            again = await bridge.cancel_all(account, request_id="kill-me")
            assert again.complete, again
            if answered is not None:
                assert answered + again.canceled == ORDERS
            assert (await bridge.cancel_all(account)).canceled == 0
    finally:
        assert engine.stop() == 0, engine.log_tail()
    await assert_each_canceled_once(handle, account)
    result.notes["canceled_after_restart"] = again.canceled
    checked = await assert_invariants(handle, tmp_path)
    assert checked.live_canceled == 0
    result.notes["invariants"] = f"ok ({checked.reports} reports)"
    RESULTS.append(result)
