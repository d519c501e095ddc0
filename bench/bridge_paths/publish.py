"""Queued path, publishing only (no engine runs yet): (b) raw ``js.publish_async`` to ORDERS
and the bridge's ``enqueue_batch`` throughput, sent the same way."""

from __future__ import annotations

import asyncio
import time

from nats.js.api import PubAck

from bench.bridge_paths.common import (
    ENQUEUE_CHUNK,
    REPLY_TIMEOUT,
    make_orders,
    purge_orders,
    server_pid,
    settings_for,
)
from bench.measure import Result
from bench.procs import CpuMeter
from bench.profile import Budget
from bridge import BridgeClient, contract
from bridge_dev.server import ServerHandle, connect_as


async def publish_raw(handle: ServerHandle, budget: Budget, payload: bytes, run: str) -> Result:
    """(b) nats-py ``js.publish_async`` of the same bytes to ORDERS, 1024 in flight like the
    bridge's ``max_inflight``; every message carries a unique ``Nats-Msg-Id`` like the bridge's.
    The stream is purged afterwards (no engine runs yet)."""
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    js = nc.jetstream(timeout=REPLY_TIMEOUT, publish_async_max_pending=1024)
    subject = contract.queue("BENCHRAW")
    futures: list[asyncio.Future[PubAck]] = []

    async def send(first: int, n: int) -> None:
        for i in range(first, first + n):
            fut = await js.publish_async(
                subject, payload, headers={contract.HEADER_MSG_ID: f"{run}r-{i:07d}"}
            )
            futures.append(fut)

    try:
        await send(0, budget.warmup)
        await asyncio.wait_for(asyncio.gather(*futures), REPLY_TIMEOUT * 4)
        futures.clear()
        sent = budget.warmup
        meter = CpuMeter({"nats": server_pid(handle)})
        meter.start()
        deadline = time.perf_counter() + budget.seconds
        while sent < budget.warmup + budget.count and time.perf_counter() < deadline:
            n = min(ENQUEUE_CHUNK, budget.warmup + budget.count - sent)
            await send(sent, n)
            sent += n
        results = await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), REPLY_TIMEOUT * 4
        )
        meter.stop()
    finally:
        await nc.close()
    errors = sum(1 for r in results if isinstance(r, BaseException))
    count = len(results) - errors
    res = Result.throughput(
        meter,
        count,
        id="baseline.b.js_publish",
        label="(b) raw js.publish_async -> ORDERS",
        group="baseline",
        notes="Nats-Msg-Id each, 1024 in flight",
        extra={"errors": errors},
    )
    await purge_orders(handle)
    return res


async def enqueue_throughput(handle: ServerHandle, budget: Budget, run: str) -> Result:
    """``enqueue_batch`` throughput from one process (no engine runs yet), sent like (b): one
    pipeline with up to 1024 orders in flight (the client's ``max_inflight``) for the whole run,
    all acks awaited at the end. ORDERS is purged afterwards, like after (b)."""
    orders = make_orders(f"{run}q", budget.warmup + budget.count, "QUEUED")
    async with BridgeClient(settings_for(handle)) as bridge:
        await bridge.enqueue_batch(orders[: budget.warmup])
        with CpuMeter({"nats": server_pid(handle)}) as meter:
            stored = await asyncio.wait_for(
                bridge.enqueue_batch(orders[budget.warmup :]), REPLY_TIMEOUT * 4
            )
    res = Result.throughput(
        meter,
        len(stored),
        id="bridge.queued.publish",
        label="queued: enqueue_batch -> ORDERS",
        group="bridge",
        notes="one enqueue_batch, 1024 in flight",
    )
    await purge_orders(handle)
    return res
