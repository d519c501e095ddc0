"""Market data into one Python consumer: the bridge's ``market_data`` iterator against a raw
nats-py subscription of the same subject, legs in ABBA order (raw, bridge, bridge, raw) so
that drift weighs on both alike.

* latency: a child process (its own interpreter: it takes no CPU from the consumer's event
  loop) submits 1-share MARKET IOC orders of symbol BENCH through ``BridgeClient.submit`` at
  ``LATENCY_RATE`` orders/s (below the engine's capacity, so no queueing); each trades at the
  top of the book. Every update's ``venue_time_unix_ns`` (engine clock, when the first event it
  carries happened) to the moment the consumer has it decoded (raw) or yielded by the iterator
  (bridge). One machine, one clock. The first raw leg also records the updates for:
* throughput: the engine is stopped and the recording is replayed as fast as one process can
  publish (``md_replay``), so the consumer is what limits the rate. Venue events per second
  received, over (a) the same bytes (raw vs bridge) and (b) the bridge with the updates
  coalesced ``COALESCED`` to a message, as the engine does with ``market_data_coalesce_ms``:
  the per-message ceiling of (a)'s raw subscription against what coalescing delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram
from nats.aio.msg import Msg

from bench.bridge_paths import md_replay
from bench.bridge_paths.common import REPLY_TIMEOUT, SYMBOL, Engine, make_orders, settings_for
from bench.measure import Result, Timed, new_histogram, record_ns
from bench.procs import BenchError, CpuMeter
from bridge import AckStatus, BridgeClient, contract
from bridge.marketdata.events import BookUpdate, Conflated, Gap, Resynced
from bridge.v1 import market_data_pb2
from bridge_dev.server import ServerHandle, connect_as

LATENCY_RATE = 200
"""Orders/s of the latency load: one at a time, well below the engine's capacity."""
RECORDED_UPDATES = 5000
"""Updates the first raw latency leg keeps for the replay (it cycles through them)."""
COALESCED = 8
"""Updates merged into one message in the coalesced replay."""
REPLAY_CAPACITY = 65536
"""The bridge consumer's subscription capacity in these rows: a replay burst fits whole."""


async def _submit_all(
    handle: ServerHandle,
    prefix: str,
    n: int,
    concurrency: int,
    rate: float | None,
    ready: Any,
    go: Any,
) -> None:
    orders = make_orders(prefix, n)
    async with BridgeClient(settings_for(handle)) as bridge:
        ready.set()
        if not await asyncio.to_thread(go.wait, REPLY_TIMEOUT * 4):
            raise BenchError("market-data load: never told to go")
        next_index = 0
        interval = 0.0 if rate is None else 1.0 / rate
        t0 = time.perf_counter()

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(orders):
                order = orders[next_index]
                due = t0 + next_index * interval
                next_index += 1
                if interval and due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
                ack = await bridge.submit(order)
                if ack.status is not AckStatus.ACCEPTED:
                    raise BenchError(f"order {order.client_order_id} not accepted: {ack!r}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _load_main(
    handle: ServerHandle,
    prefix: str,
    n: int,
    concurrency: int,
    rate: float | None,
    ready: Any,
    go: Any,
) -> None:
    asyncio.run(_submit_all(handle, prefix, n, concurrency, rate, ready, go))


class _Load:
    """The load in a child process, connected and waiting until :meth:`run` lets it go."""

    def __init__(self, handle: ServerHandle, prefix: str, n: int, rate: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.go = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(
            target=_load_main,
            args=(handle, prefix, n, 1, rate, self.ready, self.go),
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


async def _snapshot(handle: ServerHandle) -> market_data_pb2.MarketDataSnapshot:
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    try:
        msg = await nc.request(contract.md_snapshot(SYMBOL), b"", timeout=REPLY_TIMEOUT)
    finally:
        await nc.close()
    snap = market_data_pb2.MarketDataSnapshot.FromString(msg.data)
    if snap.errors:
        raise BenchError(f"snapshot of {SYMBOL} refused: {snap.errors[0].message}")
    return snap


@dataclass
class Recording:
    """A snapshot of BENCH and the updates after it (what the replay publishes)."""

    snapshot: market_data_pb2.MarketDataSnapshot | None = None
    updates: list[market_data_pb2.MarketDataUpdate] = field(default_factory=list)


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
    per_message: int = 1
    """Engine updates one message of the source carries (the coalesced replay's: COALESCED)."""

    def saw(self, sequence: int) -> None:
        self.last_sequence = max(self.last_sequence, sequence)
        if self.target is not None and self.last_sequence >= self.target:
            self.caught_up.set()


Consumer = Callable[[_Tally, asyncio.Event], Coroutine[Any, Any, None]]


def _raw(handle: ServerHandle, symbol: str, recording: Recording | None = None) -> Consumer:
    async def consume(tally: _Tally, started: asyncio.Event) -> None:
        nc = await connect_as(handle.url, handle.creds, "orchestrator")

        async def on_msg(msg: Msg) -> None:
            now = time.time_ns()
            update = market_data_pb2.MarketDataUpdate.FromString(msg.data)
            record_ns(tally.latency, now - update.venue_time_unix_ns)
            tally.updates += 1
            tally.events += update.events
            tally.saw(update.sequence)
            if recording is not None and len(recording.updates) < RECORDED_UPDATES:
                recording.updates.append(update)

        try:
            await nc.subscribe(contract.md_update(symbol), cb=on_msg)
            await nc.flush()
            if recording is not None:
                recording.snapshot = await _snapshot(handle)
            started.set()
            await asyncio.Event().wait()  # until the leg cancels it
        finally:
            await nc.close()

    return consume


def _bridge(handle: ServerHandle, symbol: str) -> Consumer:
    settings = settings_for(handle).model_copy(update={"subscription_capacity": REPLAY_CAPACITY})

    async def consume(tally: _Tally, started: asyncio.Event) -> None:
        async with BridgeClient(settings) as bridge, bridge.market_data([symbol]) as feed:
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
    consumer: Consumer,
    pids: dict[str, int],
    start: Callable[[], Awaitable[None]],
    go: Callable[[], Awaitable[int]],
    tally: _Tally,
) -> tuple[_Tally, CpuMeter]:
    """Start the consumer, then ``start`` the source (connected, waiting), meter from ``go``
    (which returns the last sequence to expect) until the consumer has that sequence."""
    started = asyncio.Event()
    task = asyncio.create_task(consumer(tally, started))
    await start()
    await asyncio.wait_for(started.wait(), REPLY_TIMEOUT)
    with CpuMeter(pids) as meter:
        tally.target = await go()
        tally.saw(0)
        await asyncio.wait_for(tally.caught_up.wait(), REPLY_TIMEOUT * 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return tally, meter


async def latency(
    handle: ServerHandle, engine: Engine, orders: int, run: str
) -> tuple[list[Result], Recording]:
    """Four latency legs (raw, bridge, bridge, raw); rows (bridge, raw) and the recording."""
    legs: dict[str, list[tuple[_Tally, CpuMeter]]] = {"raw": [], "bridge": []}
    recording = Recording()
    for i, name in enumerate(("raw", "bridge", "bridge", "raw")):
        consumer = (
            _raw(handle, SYMBOL, recording if i == 0 else None)
            if name == "raw"
            else _bridge(handle, SYMBOL)
        )
        load = _Load(handle, f"{run}mdl{i}", orders, LATENCY_RATE)

        async def go(load: _Load = load) -> int:
            await load.run()
            return (await _snapshot(handle)).sequence

        try:
            legs[name].append(await _leg(consumer, {"peer": engine.pid}, load.start, go, _Tally()))
        finally:
            load.stop()
    rows = [_latency_row(name, parts) for name, parts in legs.items()]
    return rows, recording


async def throughput(handle: ServerHandle, recording: Recording, total: int) -> list[Result]:
    """The replay legs (the engine must be stopped): raw, bridge, bridge, raw on the same
    bytes, then the bridge twice on updates coalesced ``COALESCED`` to a message."""
    if recording.snapshot is None:
        raise BenchError("no market data recorded")
    plain = md_replay.frames(recording.snapshot, recording.updates, total, 1)
    merged = md_replay.frames(recording.snapshot, recording.updates, total, COALESCED)
    plan = [
        ("raw", plain),
        ("bridge", plain),
        ("bridge", plain),
        ("raw", plain),
        ("coalesced", merged),
        ("coalesced", merged),
    ]
    legs: dict[str, list[tuple[_Tally, CpuMeter]]] = {"raw": [], "bridge": [], "coalesced": []}
    for name, (snapshot, frames) in plan:
        replay = md_replay.Replay(handle, snapshot, frames)
        symbol = md_replay.REPLAY_SYMBOL
        consumer = _raw(handle, symbol) if name == "raw" else _bridge(handle, symbol)
        tally = _Tally(per_message=COALESCED if name == "coalesced" else 1)

        async def go(replay: md_replay.Replay = replay, n: int = len(frames)) -> int:
            replay.go()
            return n

        async def start(replay: md_replay.Replay = replay) -> None:
            await replay.start()

        try:
            legs[name].append(await _leg(consumer, {}, start, go, tally))
        finally:
            replay.stop()
    return [_throughput_row(name, parts) for name, parts in legs.items()]


def _extra(parts: list[tuple[_Tally, CpuMeter]]) -> dict[str, Any]:
    updates = sum(t.updates for t, _ in parts)
    events = sum(t.events for t, _ in parts)
    return {
        "updates": updates,
        "venue_events": events,
        "events_per_update": round(events / updates, 3) if updates else None,
        "conflated_events": sum(t.conflated for t, _ in parts),
        "gaps": sum(t.gaps for t, _ in parts),
    }


def _latency_row(name: str, parts: list[tuple[_Tally, CpuMeter]]) -> Result:
    hist = new_histogram()
    for tally, _ in parts:
        hist.add(tally.latency)
    group = "bridge" if name == "bridge" else "baseline"
    what = "market_data() iterator" if name == "bridge" else "raw nats-py subscription"
    extra = _extra(parts)
    res = Result.latency(
        Timed(hist, extra["updates"], CpuMeter({})),
        id=f"{group}.md.latency.{name}",
        label=f"venue event -> {what}",
        group=group,  # type: ignore[arg-type]
        notes=f"{LATENCY_RATE} orders/s, one at a time; engine clock to consumer; ABBA",
        extra=extra,
        costs=False,
    )
    res.seconds = sum(m.wall_s for _, m in parts)
    _cpu(res, parts, extra["updates"])
    return res


def _throughput_row(name: str, parts: list[tuple[_Tally, CpuMeter]]) -> Result:
    """Engine updates per second: the messages the consumer had, times the updates each
    carries (1, or COALESCED in the coalesced replay)."""
    wall = sum(m.wall_s for _, m in parts)
    messages = sum(t.updates for t, _ in parts)
    updates = sum(t.updates * t.per_message for t, _ in parts)
    group = "baseline" if name == "raw" else "bridge"
    labels = {
        "raw": "market data replay -> raw nats-py subscription, engine updates/s",
        "bridge": "market data replay -> market_data() iterator, engine updates/s",
        "coalesced": f"replay, {COALESCED} updates a message -> iterator, engine updates/s",
    }
    extra = {
        "messages": messages,
        "updates_per_message": COALESCED if name == "coalesced" else 1,
        "messages_per_s": round(messages / wall) if wall else None,
        "conflated_events": sum(t.conflated for t, _ in parts),
        "gaps": sum(t.gaps for t, _ in parts),
    }
    res = Result(
        id=f"{group}.md.throughput.{name}",
        label=labels[name],
        group=group,  # type: ignore[arg-type]
        kind="throughput",
        count=updates,
        seconds=wall,
        rate=updates / wall if wall else None,
        notes="recorded engine updates replayed as fast as one process publishes them",
        extra=extra,
    )
    _cpu(res, parts, updates)
    return res


def _cpu(res: Result, parts: list[tuple[_Tally, CpuMeter]], count: int) -> None:
    python = sum(m.python_s for _, m in parts)
    peer = sum(m.others_s.get("peer", 0.0) for _, m in parts)
    res.python_cpu_us = python * 1e6 / count if count else None
    res.peer_cpu_us = peer * 1e6 / count if count and peer else None
    res.python_rss_mb = max(m.python_peak_rss for _, m in parts) / (1024 * 1024)
