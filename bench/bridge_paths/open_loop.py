"""Queued path under an open-loop offered load: order -> final report latency measured from
each order's *intended* send time, so a slow system cannot hide its queueing (no coordinated
omission)."""

from __future__ import annotations

import asyncio
import bisect
import time
from contextlib import suppress

from bench.bridge_paths.common import Engine, make_orders, server_pid, settings_for
from bench.measure import Result, new_histogram, record_ns
from bench.procs import CpuMeter
from bridge import BridgeClient
from bridge_dev.server import ServerHandle


async def open_loop(
    handle: ServerHandle,
    engine: Engine,
    rate: int,
    seconds: float,
    grace: float,
    run: str,
) -> Result:
    """Orders at a steady ``rate`` (open loop) for ``seconds``; latency = final report time -
    intended send time. Orders without a final report ``grace`` seconds after the last intended
    send are recorded with their wait so far (a lower bound) and the backlog is discarded."""
    account = f"OL{rate}"
    n = max(1, round(rate * seconds))
    orders = make_orders(f"{run}o{rate}", n, account)
    index = {o.client_order_id: i for i, o in enumerate(orders)}
    finished: list[int | None] = [None] * n
    pending = n
    all_final = asyncio.Event()
    interval = 1e9 / rate
    async with BridgeClient(settings_for(handle)) as bridge, bridge.reports(account) as reports:

        async def collect() -> None:
            nonlocal pending
            async for r in reports:
                i = index.get(r.client_order_id)
                if i is not None and r.is_final and finished[i] is None:
                    finished[i] = time.perf_counter_ns()
                    pending -= 1
                    if pending == 0:
                        all_final.set()
                        return

        collector = asyncio.create_task(collect())
        start = time.perf_counter_ns() + 5_000_000
        intended = [start + round(i * interval) for i in range(n)]
        sends: list[asyncio.Task[object]] = []
        sent = 0
        meter = CpuMeter({"peer": engine.pid, "nats": server_pid(handle)})
        meter.start()
        while sent < n:
            due = bisect.bisect_right(intended, time.perf_counter_ns())
            if due > sent:
                batch = orders[sent:due]
                sends.append(asyncio.create_task(bridge.enqueue_batch(batch)))
                sent = due
            if sent < n:
                # A pacing timer (the schedule), not a synchronization wait.
                await asyncio.sleep(max(0.0, (intended[sent] - time.perf_counter_ns()) / 1e9))
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        published_ns = time.perf_counter_ns()
        end_ns = intended[-1] + int(grace * 1e9)
        with suppress(TimeoutError):
            await asyncio.wait_for(
                all_final.wait(), max(0.0, (end_ns - time.perf_counter_ns()) / 1e9)
            )
        meter.stop()
        cutoff = time.perf_counter_ns()
        collector.cancel()
    hist = new_histogram()
    done = 0
    for i, t in enumerate(finished):
        if t is not None:
            done += 1
            record_ns(hist, t - intended[i])
        else:
            record_ns(hist, cutoff - intended[i])
    errors = sum(1 for o in outcomes if isinstance(o, BaseException))
    last_final = max((t for t in finished if t is not None), default=start)
    unfinished = n - done
    res = Result(
        id=f"bridge.queued.open_loop.{rate}",
        label=f"queued: order -> final, {rate}/s offered",
        group="bridge",
        kind="latency",
        histogram=hist,
        count=n,
        seconds=seconds,
        rate=n / ((published_ns - start) / 1e9),
        notes=("all final" if unfinished == 0 else f"{unfinished}/{n} not final: lower bounds"),
        extra={
            "offered_per_s": rate,
            "published_per_s": round(n / ((published_ns - start) / 1e9), 1),
            "completed_per_s": round(done / ((last_final - start) / 1e9), 1) if done else 0.0,
            "final": done,
            "unfinished": unfinished,
            "publish_errors": errors,
        },
    )
    res.add_costs(meter, n)
    if unfinished:
        await asyncio.to_thread(engine.restart_empty)
        res.extra["engine_restarted_after"] = True
    return res
