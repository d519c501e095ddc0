"""The source of the market-data throughput rows: the engine's own updates, recorded, then
replayed as fast as one process can publish them, so that the consumer, not the engine's
order rate, is what limits the row.

A recording is a snapshot of BENCH and the updates that followed it (a real run of the
engine). ``frames`` re-sequences them under symbol ``REPLAY_SYMBOL`` in a session of its own,
cycling through the recording; with ``merge`` > 1 each frame carries ``merge`` consecutive
updates, merged the way the engine coalesces (``market_data_coalesce_ms``): the latest total of
every level they touched, all their trades, the sum of their venue events.

The replay runs in a child process connected as the engine's identity (the role that may
publish market data). It answers snapshot requests for ``REPLAY_SYMBOL`` with the book at the
frame it has reached (built lazily, only when asked), so a consumer that loses messages can
resync as it would against the engine. The engine is stopped while a replay runs: it would
answer those snapshot requests too.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from decimal import Decimal
from typing import Any

from nats.aio.msg import Msg

from bench.bridge_paths.common import REPLY_TIMEOUT
from bench.procs import BenchError
from bridge import contract
from bridge.v1 import market_data_pb2 as md
from bridge_dev.server import ServerHandle, connect_as

REPLAY_SYMBOL = "REPLAY"


def _price(level: md.PriceLevel) -> Decimal:
    return Decimal(level.price.units).scaleb(-level.price.scale)


def frames(
    snapshot: md.MarketDataSnapshot, recorded: list[md.MarketDataUpdate], total: int, merge: int
) -> tuple[bytes, list[bytes]]:
    """(the snapshot at sequence 0, ``total`` // ``merge`` frames) of the replay."""
    if not recorded:
        raise BenchError("nothing recorded to replay")
    session = f"replay-{merge}"
    snap = md.MarketDataSnapshot()
    snap.CopyFrom(snapshot)
    snap.symbol, snap.sequence, snap.session = REPLAY_SYMBOL, 0, session
    out: list[bytes] = []
    for j in range(total // merge):
        frame = md.MarketDataUpdate(symbol=REPLAY_SYMBOL, sequence=j + 1, session=session)
        bids: dict[Decimal, md.PriceLevel] = {}
        asks: dict[Decimal, md.PriceLevel] = {}
        for t in range(merge):
            u = recorded[(j * merge + t) % len(recorded)]
            if t == 0:
                frame.venue_time_unix_ns = u.venue_time_unix_ns
            for side, levels in ((bids, u.bids), (asks, u.asks)):
                for lv in levels:
                    side[_price(lv)] = lv
            frame.trades.extend(u.trades)
            frame.events += u.events
        frame.bids.extend(bids[p] for p in sorted(bids, reverse=True))
        frame.asks.extend(asks[p] for p in sorted(asks))
        out.append(frame.SerializeToString())
    return snap.SerializeToString(), out


class _Book:
    """The replay's book, brought up to the frame reached only when a snapshot is asked for."""

    def __init__(self, snapshot: bytes, frames: list[bytes]) -> None:
        self.snapshot = md.MarketDataSnapshot.FromString(snapshot)
        self.bids = {_price(lv): lv for lv in self.snapshot.bids}
        self.asks = {_price(lv): lv for lv in self.snapshot.asks}
        self.frames = frames
        self.applied = 0

    def at(self, reached: int) -> bytes:
        for frame in self.frames[self.applied : reached]:
            u = md.MarketDataUpdate.FromString(frame)
            for side, levels in ((self.bids, u.bids), (self.asks, u.asks)):
                for lv in levels:
                    if lv.quantity.units:
                        side[_price(lv)] = lv
                    else:
                        side.pop(_price(lv), None)
        self.applied = max(self.applied, reached)
        snap = md.MarketDataSnapshot()
        snap.CopyFrom(self.snapshot)
        snap.sequence = reached
        del snap.bids[:]
        del snap.asks[:]
        snap.bids.extend(self.bids[p] for p in sorted(self.bids, reverse=True))
        snap.asks.extend(self.asks[p] for p in sorted(self.asks))
        return snap.SerializeToString()


async def _replay(
    handle: ServerHandle, snapshot: bytes, frames: list[bytes], ready: Any, go: Any
) -> None:
    nc = await connect_as(handle.url, handle.creds, "engine")
    book, reached = _Book(snapshot, frames), 0

    async def on_snapshot(msg: Msg) -> None:
        await msg.respond(book.at(reached))

    try:
        await nc.subscribe(contract.md_snapshot(REPLAY_SYMBOL), cb=on_snapshot)
        await nc.flush()
        ready.set()
        if not await asyncio.to_thread(go.wait, REPLY_TIMEOUT * 4):
            raise BenchError("replay: never told to go")
        subject = contract.md_update(REPLAY_SYMBOL)
        for i, frame in enumerate(frames):
            await nc.publish(subject, frame)
            reached = i + 1
            if i % 512 == 511:
                await asyncio.sleep(0)  # snapshot requests get their turn
        await nc.flush()
        # Keep answering snapshot requests (a reader resyncing) until the parent, done with
        # this leg, stops the process; bounded in case it never does.
        await asyncio.sleep(REPLY_TIMEOUT * 4)
    finally:
        await nc.close()


def _main(handle: ServerHandle, snapshot: bytes, frames: list[bytes], ready: Any, go: Any) -> None:
    asyncio.run(_replay(handle, snapshot, frames, ready, go))


class Replay:
    """One replay child: connected and answering snapshots after :meth:`start`; publishing
    every frame after :meth:`go`; killed by :meth:`stop`."""

    def __init__(self, handle: ServerHandle, snapshot: bytes, frames: list[bytes]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.ready, self._go = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(
            target=_main, args=(handle, snapshot, frames, self.ready, self._go), daemon=True
        )

    async def start(self) -> None:
        self.proc.start()
        if not await asyncio.to_thread(self.ready.wait, REPLY_TIMEOUT * 4):
            raise BenchError("market-data replay process did not connect")

    def go(self) -> None:
        self._go.set()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        if self.proc.pid is not None:
            self.proc.join()
