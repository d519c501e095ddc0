"""kill -9 of the engine at random points of a 2,000-order queued run, three times.

Each restart resumes from the durable consumer and the order store: afterwards every order has
exactly one final report, no cum qty exceeds its order qty and no exec id is stored twice.
Orders the killed engine had pulled but not acked come back after the consumer's ack_wait.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from bridge import BridgeClient
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer
from tests.faults.harness import (
    FaultResult,
    Publisher,
    assert_clean,
    new_account,
    order_flow,
    verify,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants

pytestmark = pytest.mark.integration

ORDERS = 2000
KILLS = 3


async def test_engine_killed_at_random_points_loses_and_duplicates_nothing(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    seed = int(os.environ.get("BRIDGE_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    account = new_account("EK")
    orders = order_flow(account, ORDERS, seed)
    # Kill after this many final reports have been seen live (random points of the run).
    kill_points = sorted(rng.sample(range(100, ORDERS - 100), KILLS))
    settings = client_settings(handle, request_timeout_ms=5000)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    recoveries: list[float] = []
    try:
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            publisher = Publisher(bridge, orders)
            publishing = asyncio.create_task(publisher.run())
            finals = 0
            for point in kill_points:
                while finals < point:
                    if (await stream.next(timeout=60)).is_final:
                        finals += 1
                engine.kill()
                killed_at = time.monotonic()
                await asyncio.to_thread(engine.start)
                # Recovered = the restarted engine has finished an order.
                while not (await stream.next(timeout=60)).is_final:
                    pass
                finals += 1
                recoveries.append(time.monotonic() - killed_at)
            await publishing
            reports = await wait_for_finals(handle, account, publisher.acked, timeout=120)
            all_final_after_last_kill = time.monotonic() - killed_at
            stream_resets = stream.resets
    finally:
        code = engine.stop()
    result = verify(
        FaultResult(
            f"engine kill -9 x{KILLS} during {ORDERS:,} queued",
            sent=ORDERS,
            recovery_s=max(recoveries),
            notes={
                "seed": seed,
                "kill_points": kill_points,
                "kill_to_next_fill_s": [round(r, 3) for r in recoveries],
                "report_stream_resets": stream_resets,
                # Includes the consumer's ack_wait (30 s) for orders the killed engine held.
                "all_final_after_last_kill_s": round(all_final_after_last_kill, 1),
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
