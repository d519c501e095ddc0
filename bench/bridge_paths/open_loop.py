"""Queued path under an open-loop offered load: order -> final report latency measured from
each order's *intended* send time, so a slow system cannot hide its queueing (no coordinated
omission).

Orders are due at a fixed rate; every pass of the send loop hands all orders due by then to one
``enqueue_batch`` call (a task: sends never wait for replies). The final reports are received by
the report sink (``bench.report_sink``: a Rust child process, so that receiving tens of thousands
of reports a second takes no CPU from the publisher), timestamped on the publisher's clock.

Bounded: at most ``max_orders`` orders (the level then lasts less than ``seconds``), and no order
is sent and no report awaited after ``grace`` seconds past the last intended send: calls still
publishing then are cancelled. An order not final by then (sent late, cancelled, or never sent)
is recorded with its wait so far, a lower bound; the backlog is then discarded (engine stopped,
ORDERS purged, engine started again).
"""

from __future__ import annotations

import asyncio
import bisect
import time

from bench.bridge_paths.common import Engine, make_orders, server_pid, settings_for
from bench.bridge_paths.e2e import settle_by
from bench.measure import Result, new_histogram, record_ns
from bench.procs import CpuMeter
from bench.report_sink import ReportSink
from bridge import BridgeClient, QueuedOrder, contract
from bridge_dev.server import ServerHandle


async def open_loop(
    handle: ServerHandle,
    engine: Engine,
    sink: ReportSink,
    rate: int,
    seconds: float,
    max_orders: int,
    grace: float,
    run: str,
) -> Result:
    """Orders at a steady ``rate`` for ``seconds`` (at most ``max_orders``); latency = final
    report received - intended send time. See the module doc for the bounds."""
    account = f"OL{rate}"
    n = max(1, min(max_orders, round(rate * seconds)))
    prefix = f"{run}o{rate}"
    orders = make_orders(prefix, n, account)
    interval = 1e9 / rate
    watch = await sink.watch(contract.executions_for_account(account), prefix, n)
    async with BridgeClient(settings_for(handle)) as bridge:
        sends: list[tuple[asyncio.Task[list[QueuedOrder]], int]] = []
        sent = 0
        meter = CpuMeter({"peer": engine.pid, "nats": server_pid(handle)})
        meter.start()
        start = time.monotonic_ns() + 5_000_000
        intended = [start + round(i * interval) for i in range(n)]
        end_ns = intended[-1] + int(grace * 1e9)
        while sent < n:
            now = time.monotonic_ns()
            if now >= end_ns:
                break  # behind schedule by more than the grace: the rest is never sent
            due = bisect.bisect_right(intended, now)
            if due > sent:
                task = asyncio.create_task(bridge.enqueue_batch(orders[sent:due]))
                sends.append((task, due - sent))
                sent = due
            if sent < n:
                # A pacing timer (the schedule), not a synchronization wait.
                await asyncio.sleep(max(0.0, (intended[sent] - time.monotonic_ns()) / 1e9))
        outcome = await settle_by(sends, end_ns)
        published_ns = time.monotonic_ns()
        finals = await sink.finish(watch, (end_ns - time.monotonic_ns()) / 1e9)
        meter.stop()
        cutoff = time.monotonic_ns()
    hist = new_histogram()
    for i, order in enumerate(orders):
        record_ns(hist, finals.get(order.client_order_id, cutoff) - intended[i])
    stored_orders = outcome.stored
    done = len(finals)
    unfinished = n - done
    publish_s = (published_ns - start) / 1e9
    last_final = max(finals.values(), default=start)
    notes = "all final" if unfinished == 0 else f"{unfinished}/{n} not final: lower bounds"
    if sent < n or outcome.cancelled:
        notes += f"; {n - sent + outcome.cancelled} not published by the deadline"
    res = Result(
        id=f"bridge.queued.open_loop.{rate}",
        label=f"queued: order -> final, {rate}/s offered",
        group="bridge",
        kind="latency",
        histogram=hist,
        count=n,
        seconds=n / rate,
        rate=stored_orders / publish_s if publish_s > 0 else None,
        notes=notes,
        extra={
            "offered_per_s": rate,
            "published_per_s": round(stored_orders / publish_s, 1) if publish_s > 0 else 0.0,
            "completed_per_s": round(done / ((last_final - start) / 1e9), 1) if done else 0.0,
            "final": done,
            "unfinished": unfinished,
            "never_sent": n - sent,
            "cancelled_at_deadline": outcome.cancelled,
            "failed_enqueue_calls": outcome.failed_calls,
        },
    )
    res.add_costs(meter, max(1, sent))
    if unfinished:
        await asyncio.to_thread(engine.restart_empty)
        res.extra["engine_restarted_after"] = True
    return res
