"""Synchronous path with concurrent submitters: ``concurrency`` tasks on one ``BridgeClient``,
each sending its next ``submit`` as soon as its previous ack is in (closed loop per task). The
engine sees up to ``concurrency`` synchronous orders at once, which is what group commit of
concurrent synchronous orders is for. Ack latency of every order, orders/s over the run, and
the Python, engine and nats-server CPU per order."""

from __future__ import annotations

import asyncio
import time

from bench.bridge_paths.common import Engine, make_orders, server_pid, settings_for
from bench.measure import Result, new_histogram, record_ns
from bench.procs import BenchError, CpuMeter
from bench.profile import Budget
from bridge import AckStatus, BridgeClient, Order
from bridge_dev.server import ServerHandle


async def sync_concurrent(
    handle: ServerHandle, engine: Engine, budget: Budget, concurrency: int, run: str
) -> Result:
    """``budget.warmup`` orders unmeasured, then up to ``budget.count`` orders or
    ``budget.seconds``, from ``concurrency`` concurrent submitters."""
    orders = make_orders(f"{run}k", budget.warmup + budget.count)
    hist = new_histogram()
    measured = 0
    async with BridgeClient(settings_for(handle)) as bridge:
        cursor = 0

        async def submitter(limit: int, deadline: float, record: bool) -> None:
            nonlocal cursor, measured
            while cursor < limit and time.perf_counter() < deadline:
                order: Order = orders[cursor]
                cursor += 1
                t0 = time.perf_counter_ns()
                ack = await bridge.submit(order)
                elapsed = time.perf_counter_ns() - t0
                if ack.status is not AckStatus.ACCEPTED:
                    raise BenchError(f"order {order.client_order_id} not accepted: {ack!r}")
                if record:
                    record_ns(hist, elapsed)
                    measured += 1

        await asyncio.gather(
            *(submitter(budget.warmup, float("inf"), False) for _ in range(concurrency))
        )
        with CpuMeter({"peer": engine.pid, "nats": server_pid(handle)}) as meter:
            deadline = time.perf_counter() + budget.seconds
            await asyncio.gather(
                *(
                    submitter(budget.warmup + budget.count, deadline, True)
                    for _ in range(concurrency)
                )
            )
    rate = measured / meter.wall_s if meter.wall_s > 0 else None
    res = Result(
        id="bridge.sync.ack_concurrent.asyncio",
        label=f"sync: submit -> ack, {concurrency} concurrent submitters",
        group="bridge",
        kind="latency",
        histogram=hist,
        count=measured,
        seconds=meter.wall_s,
        rate=rate,
        notes=f"{concurrency} tasks on one client: {rate or 0:,.0f} orders/s",
        extra={"concurrency": concurrency},
    )
    res.add_costs(meter, measured)
    return res
