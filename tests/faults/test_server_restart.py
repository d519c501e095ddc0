"""kill -9 and restart of a single nats-server (file store, fsync always) mid-run.

The client and the engine reconnect with backoff and resume by themselves (subscriptions,
the pull consumer); no order whose publish was acknowledged is lost, none is executed twice.
The client's connection listener sees DISCONNECTED then RECONNECTED, and a report subscription
opened before the crash keeps delivering after it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bridge import BridgeClient, ConnectionEvent, ConnectionState
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer
from tests.faults.harness import (
    FaultResult,
    Publisher,
    assert_clean,
    finals_by_order,
    new_account,
    order_flow,
    stored_reports,
    verify,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants

pytestmark = pytest.mark.integration

ORDERS = 2000


@pytest.mark.projections("fsync")  # the engine rides out the server restart
async def test_server_killed_and_restarted_mid_run_loses_no_acked_order(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    account = new_account("SK")
    orders = order_flow(account, ORDERS, seed=7)
    settings = client_settings(handle, request_timeout_ms=2000, publish_timeout_ms=2000)
    events: list[ConnectionEvent] = []
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            bridge.on_connection_event(events.append)
            publisher = Publisher(bridge, orders)
            publishing = asyncio.create_task(publisher.run())
            await publisher.wait_until(
                lambda: publisher.acked_count() >= ORDERS // 4, 60, "a quarter acked"
            )
            fresh_server.kill()
            killed_at = time.monotonic()
            await asyncio.to_thread(fresh_server.start)
            restarted_at = time.monotonic()
            await publisher.wait_until(
                lambda: publisher.ack_times[-1] > restarted_at, 60, "an ack after the restart"
            )
            assert bridge.connection_state is ConnectionState.CONNECTED
            await publishing
            first_ack_after = min(t for t in publisher.ack_times if t > restarted_at)
            # The subscription opened before the crash was re-established by the client itself:
            # it delivers the reports of the run's last order.
            last = orders[-1].client_order_id
            try:
                async with asyncio.timeout(60):
                    while (await stream.next(timeout=60)).client_order_id != last:
                        pass
            except TimeoutError:
                stored = finals_by_order(await stored_reports(handle, account))
                raise AssertionError(
                    f"no live report for {last} (stored finals: {len(stored)}, of it: "
                    f"{stored[last]}); engine log:\n{engine.log_tail(60)}"
                ) from None
            reports = await wait_for_finals(handle, account, publisher.acked, timeout=120)
    finally:
        code = engine.stop()
    result = verify(
        FaultResult(
            "nats-server kill -9 + restart (single node)",
            sent=ORDERS,
            recovery_s=first_ack_after - killed_at,
            notes={
                "server_down_s": round(restarted_at - killed_at, 3),
                "publish_gap_s": round(publisher.max_gap(killed_at - 1), 3),
                "client_retries": dict(publisher.errors),
            },
        ),
        orders,
        publisher.acked,
        reports,
    )
    assert code == 0, engine.log_tail()
    assert result.acked == ORDERS
    assert_clean(result)
    checked = await assert_invariants(handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"
    assert ConnectionEvent.DISCONNECTED in events
    assert events.index(ConnectionEvent.RECONNECTED) > events.index(ConnectionEvent.DISCONNECTED)
