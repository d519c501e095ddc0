"""The bridge's own order paths, measured through its public API (``BridgeClient``).

* synchronous: ``submit`` -> ack and -> first fill, one order at a time on an idle engine, and
  ``submit`` back to back (the Python/engine CPU cost per order is taken there);
* queued: ``enqueue_batch`` publish throughput, the engine's drain rate of a pre-queued
  backlog, and order -> final report latency under an open-loop offered load, measured from
  each order's *intended* send time so that a slow system cannot hide its queueing
  (no coordinated omission).

Every order is a 1-share MARKET IOC order of symbol BENCH (``bench/engine.toml`` seeds ample
liquidity), so each is acknowledged, filled once and final (reports NEW, TRADE/FILLED).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import subprocess
import time
import timeit
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from decimal import Decimal
from pathlib import Path

from nats.js.api import PubAck
from nats.js.manager import JetStreamManager

from bench.measure import Result, closed_loop, new_histogram, record_ns
from bench.procs import BenchError, CpuMeter, cpu_seconds, peak_rss_bytes
from bench.profile import Budget
from bridge import (
    AckStatus,
    BridgeClient,
    ExecType,
    Order,
    OrderType,
    Side,
    TimeInForce,
    subjects,
)
from bridge.client import new_correlation_id
from bridge.config import BridgeSettings
from bridge.models import OrderAck
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings, engine_binary
from bridge_dev.server import ServerHandle, connect_as

SYMBOL = "BENCH"
SYNC_ACCOUNT = "BENCH"
DRAIN_ACCOUNT = "DRAIN"
REPLY_TIMEOUT = 5.0
"""Longest wait for any single answer or report before the run is declared broken."""
ENQUEUE_CHUNK = 500
"""Orders per ``enqueue_batch`` call in the throughput measurement."""


def make_orders(prefix: str, n: int, account: str = SYNC_ACCOUNT) -> list[Order]:
    """``n`` 1-share market IOC orders, alternating buy and sell, ids of equal length."""
    return [
        Order(
            client_order_id=f"{prefix}-{i:07d}",
            account=account,
            symbol=SYMBOL,
            side=Side.BUY if i % 2 == 0 else Side.SELL,
            order_type=OrderType.MARKET,
            quantity=Decimal(1),
            time_in_force=TimeInForce.IOC,
        )
        for i in range(n)
    ]


def order_payload(run: str) -> bytes:
    """The serialized NewOrder the baselines send: same size as the bridge's sync orders."""
    return make_orders(f"{run}px", 1)[0].to_proto().SerializeToString()


def settings_for(handle: ServerHandle) -> BridgeSettings:
    return client_settings(handle, request_timeout_ms=int(REPLY_TIMEOUT * 1000))


@asynccontextmanager
async def operator(handle: ServerHandle) -> AsyncIterator[JetStreamManager]:
    """JetStream management as the operator role (the only role allowed to purge)."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        yield nc.jsm()
    finally:
        await nc.close()


async def purge_orders(handle: ServerHandle) -> None:
    async with operator(handle) as jsm:
        await jsm.purge_stream(subjects.ORDERS_STREAM)


class Engine:
    """The engine process of the bridge phase; restartable, tracking its peak RSS."""

    def __init__(self, handle: ServerHandle, config: Path, log_file: Path) -> None:
        self.handle = handle
        self.config = config
        self.log_file = log_file
        self.proc: EngineProcess | None = None
        self.peak_rss = 0
        self.restarts = 0

    @property
    def pid(self) -> int:
        if self.proc is None or self.proc.pid is None:
            raise BenchError("engine not running")
        return self.proc.pid

    def start(self) -> tuple[int, float]:
        """Start and wait for 'engine ready'; returns (perf_counter_ns, engine CPU s) then."""
        self.proc = EngineProcess(self.handle, config_file=self.config, log_file=self.log_file)
        self.proc.start()
        return time.perf_counter_ns(), cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.pid is not None:
            self.peak_rss = max(self.peak_rss, peak_rss_bytes(proc.pid))
        code = proc.stop()
        if code != 0:
            raise BenchError(f"engine exited with {code}; log tail:\n{proc.log_tail()}")

    def restart_empty(self) -> None:
        """Stop (it finishes its current pull batch), purge ORDERS, start again."""
        self.stop()
        asyncio.run(purge_orders(self.handle))
        self.start()
        self.restarts += 1


# ----------------------------------------------------------------------------- queued path


async def publish_raw(handle: ServerHandle, budget: Budget, payload: bytes, run: str) -> Result:
    """(b) nats-py ``js.publish_async`` of the same bytes to ORDERS, 1024 in flight like the
    bridge's ``max_inflight``; every message carries a unique ``Nats-Msg-Id`` like the bridge's.
    The stream is purged afterwards (no engine runs yet)."""
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    js = nc.jetstream(timeout=REPLY_TIMEOUT, publish_async_max_pending=1024)
    subject = subjects.queue("BENCHRAW")
    futures: list[asyncio.Future[PubAck]] = []

    async def send(first: int, n: int) -> None:
        for i in range(first, first + n):
            fut = await js.publish_async(
                subject, payload, headers={subjects.HEADER_MSG_ID: f"{run}r-{i:07d}"}
            )
            futures.append(fut)

    try:
        await send(0, budget.warmup)
        await asyncio.wait_for(asyncio.gather(*futures), REPLY_TIMEOUT * 4)
        futures.clear()
        sent = budget.warmup
        meter = CpuMeter({"nats": _pid(handle)})
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
        with CpuMeter({"nats": _pid(handle)}) as meter:
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
        nats0 = cpu_seconds(_pid(handle))
        ready_ns, engine_cpu0 = await asyncio.to_thread(engine.start)
        with suppress(TimeoutError):
            await asyncio.wait_for(all_final.wait(), timeout)
        engine_cpu = cpu_seconds(engine.pid) - engine_cpu0
        nats_cpu = cpu_seconds(_pid(handle)) - nats0
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


def engine_core(config: Path, orders: int) -> list[Result]:
    """The engine's own per-order work without NATS (``engine-core-bench``): decode, validate,
    risk-check, match in the price-time book, encode every report and journal record."""
    binary = engine_binary().with_name("engine-core-bench")
    if not binary.is_file():
        raise BenchError(f"{binary} not found: build engine-rs with `cargo build --release`")
    done = subprocess.run(
        [str(binary), "--config", str(config), "--orders", str(orders)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"engine-core-bench exited with {done.returncode}: {done.stderr}")
    notes = {
        "market": "1-lot market orders vs seeded liquidity (the drain's orders)",
        "cross": "resting limit + market taking it (maker updated too)",
    }
    out = []
    for line in done.stdout.splitlines():
        row = json.loads(line)
        workload = str(row["workload"])
        out.append(
            Result(
                id=f"bridge.engine.core.{workload}",
                label=f"engine by itself (no I/O): {workload}",
                group="bridge",
                kind="throughput",
                loop="-",
                count=int(row["orders"]),
                seconds=float(row["seconds"]),
                rate=float(row["orders_per_s"]),
                peer_cpu_us=float(row["seconds"]) * 1e6 / int(row["orders"]),
                notes=notes.get(workload, workload),
                extra={"reports": int(row["reports"]), "threads": 1},
            )
        )
    return out


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
        meter = CpuMeter({"peer": engine.pid, "nats": _pid(handle)})
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


# ------------------------------------------------------------------------ synchronous path


async def sync_isolated(
    handle: ServerHandle, engine: Engine, budget: Budget, run: str, loop: str
) -> list[Result]:
    """submit -> ack and -> first fill (TRADE report), one order at a time. After each order's
    final report a ``status()`` request (answered only once the engine has finished the
    previous order's journal update) makes every order start on an idle engine, like the
    baselines' servers. Reports are subscribed first."""
    orders = make_orders(f"{run}{loop[0]}i", budget.warmup + budget.count)
    ack_h, fill_h = new_histogram(), new_histogram()
    measured = 0
    async with (
        BridgeClient(settings_for(handle)) as bridge,
        bridge.reports(SYNC_ACCOUNT) as reports,
    ):
        deadline = float("inf")
        for i, order in enumerate(orders):
            if i == budget.warmup:
                deadline = time.perf_counter() + budget.seconds
            elif time.perf_counter() > deadline:
                break
            t0 = time.perf_counter_ns()
            ack = await bridge.submit(order)
            t_ack = time.perf_counter_ns()
            if ack.status is not AckStatus.ACCEPTED:
                raise BenchError(f"order {order.client_order_id} not accepted: {ack!r}")
            t_fill: int | None = None
            while True:
                report = await reports.next(timeout=REPLY_TIMEOUT)
                if report.client_order_id != order.client_order_id:
                    continue
                if report.exec_type is ExecType.TRADE and t_fill is None:
                    t_fill = time.perf_counter_ns()
                if report.is_final:
                    break
            if t_fill is None:
                raise BenchError(f"order {order.client_order_id} final without a fill")
            await bridge.status(SYNC_ACCOUNT, order.client_order_id)
            if i >= budget.warmup:
                record_ns(ack_h, t_ack - t0)
                record_ns(fill_h, t_fill - t0)
                measured += 1
    common = {"group": "bridge", "kind": "latency", "loop": loop, "count": measured}
    return [
        Result(
            id=f"bridge.sync.ack.{loop}",
            label="sync: submit -> ack",
            histogram=ack_h,
            notes="idle engine; durable (KV, fsync)",
            **common,  # type: ignore[arg-type]
        ),
        Result(
            id=f"bridge.sync.fill.{loop}",
            label="sync: submit -> first fill report",
            histogram=fill_h,
            notes="idle engine; via reports()",
            **common,  # type: ignore[arg-type]
        ),
    ]


async def sync_back_to_back(
    handle: ServerHandle, engine: Engine, budget: Budget, run: str, loop: str
) -> Result:
    """submit -> ack with the next order sent as soon as the ack arrives (no report
    subscription): the engine may still be publishing/journaling the previous order.
    Python, engine and nats-server CPU per order are measured over this loop."""
    orders = make_orders(f"{run}{loop[0]}b", budget.warmup + budget.count)
    async with BridgeClient(settings_for(handle)) as bridge:

        async def one(i: int) -> None:
            ack = await bridge.submit(orders[i])
            if ack.status is not AckStatus.ACCEPTED:
                raise BenchError(f"order {orders[i].client_order_id} not accepted: {ack!r}")

        timed = await closed_loop(one, budget, {"peer": engine.pid, "nats": _pid(handle)})
    return Result.latency(
        timed,
        id=f"bridge.sync.ack_b2b.{loop}",
        label="sync: submit -> ack, back to back",
        group="bridge",
        loop=loop,
        notes="queues behind the previous order",
        extra=client_codec_us(run),
    )


async def raw_request_to_engine(
    handle: ServerHandle, engine: Engine, budget: Budget, run: str
) -> Result:
    """Diagnostic: the back-to-back loop without ``BridgeClient``: plain nats-py requests with
    pre-serialized NewOrders (no headers) to the same engine. The difference to the bridge's
    back-to-back row is the client library; the difference to (a1) is the engine's work."""
    orders = make_orders(f"{run}r", budget.warmup + budget.count)
    payloads = [o.to_proto().SerializeToString() for o in orders]
    nc = await connect_as(handle.url, handle.creds, "orchestrator")

    async def one(i: int) -> None:
        await nc.request(subjects.SUBMIT, payloads[i], timeout=REPLY_TIMEOUT)

    try:
        timed = await closed_loop(one, budget, {"peer": engine.pid, "nats": _pid(handle)})
    finally:
        await nc.close()
    return Result.latency(
        timed,
        id="bridge.diag.raw_request_engine.asyncio",
        label="diag: raw nats-py request -> engine, back to back",
        group="bridge",
        notes="no BridgeClient, no headers",
    )


def client_codec_us(run: str, n: int = 2000) -> dict[str, float]:
    """Pure-Python work ``submit`` adds per order (no I/O), mean microseconds: building the
    Order model, Order -> NewOrder bytes, a correlation id, OrderAck bytes -> model."""
    orders = make_orders(f"{run}c", n)
    ack = orders_pb2.OrderAck(
        client_order_id=orders[0].client_order_id,
        account=SYNC_ACCOUNT,
        engine_order_id="engine-1-1784000000000000000",
        status=orders_pb2.ACK_STATUS_ACCEPTED,
        order_status=orders_pb2.ORDER_STATUS_PENDING_NEW,
        ack_time_unix_ns=time.time_ns(),
        engine_id="engine-1",
    ).SerializeToString()

    def decode() -> OrderAck:
        msg = orders_pb2.OrderAck()
        msg.ParseFromString(ack)
        return OrderAck.from_proto(msg)

    def mean_us(fn: Callable[[], object]) -> float:
        return timeit.timeit(fn, number=n) * 1e6 / n

    return {
        "order_model_build_us": round(mean_us(lambda: make_orders(f"{run}m", 1)), 2),
        "to_proto_serialize_us": round(
            mean_us(lambda: orders[0].to_proto().SerializeToString()), 2
        ),
        "correlation_id_us": round(mean_us(new_correlation_id), 2),
        "ack_decode_us": round(mean_us(decode), 2),
    }


def _pid(handle: ServerHandle) -> int:
    return handle.pid
