"""Queued path end to end, with the engine running: one Python publisher's orders, from the
first publish to the last final report received (by the report sink, ``bench.report_sink``).

* ``drain_e2e``: ``n`` orders (``enqueue_batch`` calls of ``CHUNK`` orders, two calls in flight,
  so the client's pipeline never runs dry) published as fast as one process can while the engine
  executes them; orders/s = final orders / (last final report - first publish). Bounded by a
  deadline: calls still publishing then are cancelled, orders not final by then are left out of
  the count and the time runs to the deadline (the figure is then what was achieved in it), and
  the backlog is discarded (engine stopped, ORDERS purged, engine started again).
* ``burst``: the demo's burst, ``orders`` queued orders in one ``enqueue_batch`` call on an idle
  engine; first publish -> last final report, once per repetition (a histogram of a few).

Every order is a 1-share market IOC order of ``BENCH`` against the seeded liquidity of
``bench/engine.toml`` (1e9 shares a side), so each one is final after NEW and TRADE/FILLED.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from bench.bridge_paths.common import REPLY_TIMEOUT, Engine, make_orders, server_pid, settings_for
from bench.measure import Result, new_histogram, record_ns
from bench.procs import BenchError, CpuMeter
from bench.profile import Budget
from bench.report_sink import ReportSink
from bridge import BridgeClient, Order, PartialBatchError, QueuedOrder, contract
from bridge_dev.server import ServerHandle

CHUNK = 5000
"""Orders per ``enqueue_batch`` call of the end-to-end drain."""
WINDOW = 2
"""``enqueue_batch`` calls in flight at once in the end-to-end drain."""
E2E_ACCOUNT = "E2E"
BURST_ACCOUNT = "BURST"


def stored(outcome: list[QueuedOrder] | BaseException) -> int:
    """Orders an ``enqueue_batch`` call stored (all, or those a partial failure names)."""
    if isinstance(outcome, PartialBatchError):
        return len(outcome.queued)
    if isinstance(outcome, BaseException):
        return 0
    return len(outcome)


@dataclass
class Sent:
    """What a set of ``enqueue_batch`` calls achieved by a deadline."""

    stored: int = 0
    """Orders JetStream confirmed."""
    failed_calls: int = 0
    """Calls that raised (``PartialBatchError``: their stored orders still count)."""
    cancelled: int = 0
    """Orders of calls still running at the deadline, cancelled (sent or not, unconfirmed)."""


async def settle_by(
    calls: Sequence[tuple[asyncio.Task[list[QueuedOrder]], int]], deadline_ns: int
) -> Sent:
    """Wait for ``calls`` (task, orders) until ``deadline_ns`` (``time.monotonic_ns``); cancel
    those still running then (a slow server must not stretch the row past its bound)."""
    tasks = [t for t, _ in calls]
    if tasks:
        await asyncio.wait(tasks, timeout=max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9))
    late = [t for t in tasks if not t.done()]
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    out = Sent()
    for task, n in calls:
        if task in late:
            out.cancelled += n
            continue
        exc = task.exception()
        out.failed_calls += exc is not None
        out.stored += stored(task.result() if exc is None else exc)
    return out


async def publish_until(bridge: BridgeClient, orders: Sequence[Order], deadline_ns: int) -> Sent:
    """``enqueue_batch`` calls of ``CHUNK`` orders, ``WINDOW`` in flight, none started after
    ``deadline_ns`` (``time.monotonic_ns``) and those still running then cancelled."""
    calls: list[tuple[asyncio.Task[list[QueuedOrder]], int]] = []
    active: set[asyncio.Task[list[QueuedOrder]]] = set()
    for first in range(0, len(orders), CHUNK):
        while len(active) >= WINDOW and time.monotonic_ns() < deadline_ns:
            wait_s = (deadline_ns - time.monotonic_ns()) / 1e9
            _, active = await asyncio.wait(
                active, timeout=max(0.0, wait_s), return_when=asyncio.FIRST_COMPLETED
            )
        if time.monotonic_ns() >= deadline_ns:
            break
        chunk = orders[first : first + CHUNK]
        task = asyncio.create_task(bridge.enqueue_batch(chunk))
        calls.append((task, len(chunk)))
        active.add(task)
    return await settle_by(calls, deadline_ns)


async def drain_e2e(
    handle: ServerHandle, engine: Engine, sink: ReportSink, n: int, seconds: float, run: str
) -> Result:
    """``n`` orders from one publisher through the running engine; see the module doc."""
    prefix = f"{run}e"
    orders = make_orders(prefix, n, E2E_ACCOUNT)
    watch = await sink.watch(contract.executions_for_account(E2E_ACCOUNT), prefix, n)
    async with BridgeClient(settings_for(handle)) as bridge:
        meter = CpuMeter({"peer": engine.pid, "nats": server_pid(handle)})
        meter.start()
        first_ns = time.monotonic_ns()
        deadline_ns = first_ns + int(seconds * 1e9)
        sent = await publish_until(bridge, orders, deadline_ns)
        published_ns = time.monotonic_ns()
        finals = await sink.finish(watch, (deadline_ns - time.monotonic_ns()) / 1e9)
        meter.stop()
        cutoff_ns = time.monotonic_ns()
    done = len(finals)
    complete = done == n
    end_ns = max(finals.values()) if complete else cutoff_ns
    wall = (end_ns - first_ns) / 1e9
    res = Result(
        id="bridge.queued.e2e_drain",
        label="queued end to end: first publish -> last final",
        group="bridge",
        kind="throughput",
        count=done,
        seconds=wall,
        rate=done / wall if wall > 0 and done else None,
        python_cpu_us=meter.python_s * 1e6 / sent.stored if sent.stored else None,
        peer_cpu_us=meter.per_op_us(done, "peer"),
        nats_cpu_us=meter.per_op_us(done, "nats"),
        notes=(
            f"one publisher, {done}/{n} final"
            + ("" if complete else f" by the {seconds:.0f} s deadline")
        ),
        extra={
            "orders": n,
            "published": sent.stored,
            "failed_enqueue_calls": sent.failed_calls,
            "cancelled_at_deadline": sent.cancelled,
            "publish_s": round((published_ns - first_ns) / 1e9, 3),
            "published_per_s": round(sent.stored / ((published_ns - first_ns) / 1e9), 1),
            "complete": complete,
        },
    )
    if meter.python_peak_rss:
        res.python_rss_mb = meter.python_peak_rss / (1024 * 1024)
    if not complete:
        await asyncio.to_thread(engine.restart_empty)
        res.extra["engine_restarted_after"] = True
    return res


async def burst(
    handle: ServerHandle, engine: Engine, sink: ReportSink, orders: int, budget: Budget, run: str
) -> Result:
    """``orders`` queued orders in one ``enqueue_batch`` on an idle engine; first publish ->
    last final report. ``budget.warmup`` unmeasured bursts, then up to ``budget.count`` or
    ``budget.seconds``. A ``status()`` request after each burst (answered once the engine has
    finished the burst's order store updates) makes the next one start on an idle engine."""
    hist, publish_hist = new_histogram(), new_histogram()
    subject = contract.executions_for_account(BURST_ACCOUNT)
    measured = 0
    async with BridgeClient(settings_for(handle)) as bridge:
        meter = CpuMeter({"peer": engine.pid, "nats": server_pid(handle)})
        deadline = float("inf")
        for rep in range(budget.warmup + budget.count):
            if rep == budget.warmup:
                meter.start()
                deadline = time.perf_counter() + budget.seconds
            elif time.perf_counter() > deadline:
                break
            prefix = f"{run}u{rep:03d}"
            batch = make_orders(prefix, orders, BURST_ACCOUNT)
            watch = await sink.watch(subject, prefix, orders)
            first_ns = time.monotonic_ns()
            await asyncio.wait_for(bridge.enqueue_batch(batch), REPLY_TIMEOUT * 4)
            published_ns = time.monotonic_ns()
            finals = await sink.finish(watch, REPLY_TIMEOUT * 4)
            if len(finals) < orders:
                raise BenchError(f"burst {rep}: {len(finals)}/{orders} final reports")
            await bridge.status(BURST_ACCOUNT, batch[-1].client_order_id)
            if rep >= budget.warmup:
                record_ns(hist, max(finals.values()) - first_ns)
                record_ns(publish_hist, published_ns - first_ns)
                measured += 1
        meter.stop()
    res = Result(
        id="bridge.queued.burst",
        label=f"queued: {orders:,}-order burst, first publish -> last final",
        group="bridge",
        kind="latency",
        histogram=hist,
        count=measured,
        seconds=meter.wall_s,
        notes=f"one enqueue_batch of {orders:,}; idle engine; n = bursts",
        extra={
            "orders_per_burst": orders,
            "enqueue_batch_returned_ms_p50": hist_ms(publish_hist, 50.0),
        },
    )
    res.add_costs(meter, measured * orders)
    return res


def hist_ms(hist: HdrHistogram, pct: float) -> float:
    return round(float(hist.get_value_at_percentile(pct)) / 1000, 3)
