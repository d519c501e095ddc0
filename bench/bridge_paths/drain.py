"""Queued path: the engine's drain rate of a pre-queued backlog, from 'engine ready' to the
last final report."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress

from bench.bridge_paths.common import (
    DRAIN_ACCOUNT,
    ENQUEUE_CHUNK,
    Engine,
    make_orders,
    server_pid,
    settings_for,
)
from bench.measure import Result
from bench.procs import cpu_seconds
from bridge import BridgeClient
from bridge_dev.server import ServerHandle


async def prequeue(handle: ServerHandle, n: int, run: str) -> int:
    """Queue ``n`` orders for the drain measurement (not timed)."""
    orders = make_orders(f"{run}d", n, DRAIN_ACCOUNT)
    async with BridgeClient(settings_for(handle)) as bridge:
        for first in range(0, n, ENQUEUE_CHUNK):
            await bridge.enqueue_batch(orders[first : first + ENQUEUE_CHUNK])
    return n


async def drain(handle: ServerHandle, engine: Engine, queued: int, timeout: float) -> Result:
    """Start the engine on ``queued`` waiting orders; time from 'engine ready' to the last final
    report (reports are subscribed before the engine starts)."""
    finals: set[str] = set()
    last_ns = 0
    all_final = asyncio.Event()
    async with (
        BridgeClient(settings_for(handle)) as bridge,
        bridge.reports(DRAIN_ACCOUNT) as reports,
    ):

        async def collect() -> None:
            nonlocal last_ns
            async for r in reports:
                if r.is_final and r.client_order_id not in finals:
                    finals.add(r.client_order_id)
                    last_ns = time.perf_counter_ns()
                    if len(finals) >= queued:
                        all_final.set()
                        return

        collector = asyncio.create_task(collect())
        nats0 = cpu_seconds(server_pid(handle))
        ready_ns, engine_cpu0 = await asyncio.to_thread(engine.start)
        with suppress(TimeoutError):
            await asyncio.wait_for(all_final.wait(), timeout)
        engine_cpu = cpu_seconds(engine.pid) - engine_cpu0
        nats_cpu = cpu_seconds(server_pid(handle)) - nats0
        collector.cancel()
    done = len(finals)
    seconds = (last_ns - ready_ns) / 1e9 if done else 0.0
    res = Result(
        id="bridge.engine.drain",
        label="engine: drain of queued orders",
        group="bridge",
        kind="throughput",
        count=done,
        seconds=seconds,
        rate=done / seconds if seconds > 0 else None,
        peer_cpu_us=engine_cpu * 1e6 / done if done else None,
        nats_cpu_us=None,
        notes=f"ready -> last final report, {done}/{queued} final",
        extra={"queued": queued, "nats_server_cpu_s_total": round(nats_cpu, 3)},
    )
    if done:
        res.nats_cpu_us = nats_cpu * 1e6 / done
    if done < queued:
        await asyncio.to_thread(engine.restart_empty)
        res.extra["engine_restarted_after"] = True
    return res
