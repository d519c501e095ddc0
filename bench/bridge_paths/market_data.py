"""Market data into one Python consumer: the bridge's ``market_data`` iterator against a raw
nats-py subscription of the same subject (the same bytes), under the same load, legs in ABBA
order (raw, bridge, bridge, raw) so that drift weighs on both alike.

The load is a child process (its own interpreter: it takes no CPU from the consumer's event
loop) submitting 1-share MARKET IOC orders of symbol BENCH through ``BridgeClient.submit``;
each one trades at the top of the book, so each is one venue event: a level change and a
trade. Two loads:

* latency: one order at a time; every update's ``venue_time_unix_ns`` (engine clock, when the
  first event it carries happened) to the moment the consumer has it decoded (raw) or yielded
  by the iterator (bridge). One machine, one clock.
* throughput: ``THROUGHPUT_CONCURRENCY`` orders in flight; updates per second the consumer
  received over the leg, the venue events they carry, and the consumer's CPU per update (its
  ceiling: 1 s / that CPU).

A leg ends when the consumer has the sequence a snapshot taken after the last order names
(bounded by ``REPLY_TIMEOUT`` x 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram
from nats.aio.msg import Msg

from bench.bridge_paths.common import REPLY_TIMEOUT, SYMBOL, Engine, make_orders, settings_for
from bench.measure import Result, Timed, new_histogram, record_ns
from bench.procs import BenchError, CpuMeter
from bridge import AckStatus, BridgeClient, contract
from bridge.marketdata.events import BookUpdate, Conflated, Gap, Resynced
from bridge.v1 import market_data_pb2
from bridge_dev.server import ServerHandle, connect_as

THROUGHPUT_CONCURRENCY = 16
"""Orders in flight in the throughput load (the engine coalesces what arrives together)."""


async def _submit_all(
    handle: ServerHandle, prefix: str, n: int, concurrency: int, ready: Any, go: Any
) -> None:
    orders = make_orders(prefix, n)
    async with BridgeClient(settings_for(handle)) as bridge:
        ready.set()
        if not await asyncio.to_thread(go.wait, REPLY_TIMEOUT * 4):
            raise BenchError("market-data load: never told to go")
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(orders):
                order = orders[next_index]
                next_index += 1
                ack = await bridge.submit(order)
                if ack.status is not AckStatus.ACCEPTED:
                    raise BenchError(f"order {order.client_order_id} not accepted: {ack!r}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _load_main(
    handle: ServerHandle, prefix: str, n: int, concurrency: int, ready: Any, go: Any
) -> None:
    asyncio.run(_submit_all(handle, prefix, n, concurrency, ready, go))


class _Load:
    """The load in a child process, connected and waiting until :meth:`run` lets it go."""

    def __init__(self, handle: ServerHandle, prefix: str, n: int, concurrency: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.go = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(
            target=_load_main,
            args=(handle, prefix, n, concurrency, self.ready, self.go),
            daemon=True,
        )

    async def start(self) -> None:
        self.proc.start()
        if not await asyncio.to_thread(self.ready.wait, REPLY_TIMEOUT * 4):
            raise BenchError("market-data load process did not connect")

    async def run(self) -> None:
        """Let it go and wait for it to finish; raises if it failed."""
        self.go.set()
        await asyncio.to_thread(self.proc.join, REPLY_TIMEOUT * 20)
        if self.proc.exitcode != 0:
            raise BenchError(f"market-data load process exited with {self.proc.exitcode}")

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        if self.proc.pid is not None:
            self.proc.join()


async def _snapshot_sequence(handle: ServerHandle) -> int:
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    try:
        msg = await nc.request(contract.md_snapshot(SYMBOL), b"", timeout=REPLY_TIMEOUT)
    finally:
        await nc.close()
    snap = market_data_pb2.MarketDataSnapshot.FromString(msg.data)
    if snap.errors:
        raise BenchError(f"snapshot of {SYMBOL} refused: {snap.errors[0].message}")
    return snap.sequence


@dataclass
class _Tally:
    """What one consumer saw in a leg."""

    latency: HdrHistogram = field(default_factory=new_histogram)
    updates: int = 0
    events: int = 0
    conflated: int = 0
    gaps: int = 0
    last_sequence: int = 0
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    target: int | None = None

    def saw(self, sequence: int) -> None:
        self.last_sequence = max(self.last_sequence, sequence)
        if self.target is not None and self.last_sequence >= self.target:
            self.caught_up.set()


Consumer = Callable[[_Tally, asyncio.Event], Coroutine[Any, Any, None]]


def _raw(handle: ServerHandle) -> Consumer:
    async def consume(tally: _Tally, started: asyncio.Event) -> None:
        nc = await connect_as(handle.url, handle.creds, "orchestrator")

        async def on_msg(msg: Msg) -> None:
            now = time.time_ns()
            update = market_data_pb2.MarketDataUpdate.FromString(msg.data)
            record_ns(tally.latency, now - update.venue_time_unix_ns)
            tally.updates += 1
            tally.events += update.events
            tally.saw(update.sequence)

        try:
            await nc.subscribe(contract.md_update(SYMBOL), cb=on_msg)
            await nc.flush()
            started.set()
            await asyncio.Event().wait()  # until the leg cancels it
        finally:
            await nc.close()

    return consume


def _bridge(handle: ServerHandle) -> Consumer:
    async def consume(tally: _Tally, started: asyncio.Event) -> None:
        async with (
            BridgeClient(settings_for(handle)) as bridge,
            bridge.market_data([SYMBOL]) as feed,
        ):
            started.set()
            async for event in feed:
                now = time.time_ns()
                if isinstance(event, BookUpdate):
                    record_ns(tally.latency, now - event.venue_time_unix_ns)
                    tally.updates += 1
                    tally.events += event.events
                    tally.saw(event.sequence)
                elif isinstance(event, Conflated):
                    tally.updates += event.merged
                    tally.conflated += 1
                    tally.saw(event.sequence)
                elif isinstance(event, Gap):
                    tally.gaps += 1
                elif isinstance(event, Resynced):
                    tally.saw(event.sequence)

    return consume


async def _leg(
    handle: ServerHandle, engine: Engine, consumer: Consumer, prefix: str, n: int, conc: int
) -> tuple[_Tally, CpuMeter]:
    tally, started = _Tally(), asyncio.Event()
    load = _Load(handle, prefix, n, conc)
    task = asyncio.create_task(consumer(tally, started))
    try:
        await load.start()
        await asyncio.wait_for(started.wait(), REPLY_TIMEOUT)
        with CpuMeter({"peer": engine.pid}) as meter:
            await load.run()
            tally.target = await _snapshot_sequence(handle)
            tally.saw(0)
            await asyncio.wait_for(tally.caught_up.wait(), REPLY_TIMEOUT * 10)
    finally:
        load.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return tally, meter


async def market_data(
    handle: ServerHandle, engine: Engine, orders: int, run: str, *, throughput: bool
) -> list[Result]:
    """Four legs (raw, bridge, bridge, raw) of ``orders`` orders each; two rows (bridge, raw)."""
    conc = THROUGHPUT_CONCURRENCY if throughput else 1
    kind = "tp" if throughput else "lat"
    legs: dict[str, list[tuple[_Tally, CpuMeter]]] = {"raw": [], "bridge": []}
    for i, name in enumerate(("raw", "bridge", "bridge", "raw")):
        consumer = _raw(handle) if name == "raw" else _bridge(handle)
        legs[name].append(await _leg(handle, engine, consumer, f"{run}md{kind}{i}", orders, conc))
    return [_row(name, parts, throughput) for name, parts in legs.items()]


def _row(name: str, parts: list[tuple[_Tally, CpuMeter]], throughput: bool) -> Result:
    hist = new_histogram()
    updates = events = conflated = gaps = 0
    wall = python = peer = 0.0
    for tally, meter in parts:
        hist.add(tally.latency)
        updates += tally.updates
        events += tally.events
        conflated += tally.conflated
        gaps += tally.gaps
        wall += meter.wall_s
        python += meter.python_s
        peer += meter.others_s.get("peer", 0.0)
    group = "bridge" if name == "bridge" else "baseline"
    what = "market_data() iterator" if name == "bridge" else "raw nats-py subscription"
    extra = {
        "venue_events": events,
        "events_per_update": round(events / updates, 3) if updates else None,
        "conflated_events": conflated,
        "gaps": gaps,
    }
    if throughput:
        res = Result(
            id=f"{group}.md.throughput.{name}",
            label=f"market data -> {what}, updates/s",
            group=group,  # type: ignore[arg-type]
            kind="throughput",
            count=updates,
            seconds=wall,
            rate=updates / wall if wall else None,
            notes=f"{THROUGHPUT_CONCURRENCY} sync orders in flight; ABBA legs",
            extra=extra,
        )
    else:
        res = Result.latency(
            Timed(hist, updates, CpuMeter({})),
            id=f"{group}.md.latency.{name}",
            label=f"venue event -> {what}",
            group=group,  # type: ignore[arg-type]
            notes="one order at a time; engine clock to consumer",
            extra=extra,
            costs=False,
        )
        res.seconds = wall
    res.python_cpu_us = python * 1e6 / updates if updates else None
    res.peer_cpu_us = peer * 1e6 / updates if updates else None
    return res
