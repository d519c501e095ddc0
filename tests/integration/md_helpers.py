"""Helpers of the market-data integration tests: read a feed until it reaches given sequences."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

from bridge.marketdata import BookView, Conflated, Gap, MarketDataFeed
from bridge.marketdata.events import MarketDataEvent


@dataclass
class Seen:
    """What a reader saw: events by kind, gaps, the last book per symbol."""

    kinds: Counter[str] = field(default_factory=Counter)
    gaps: list[Gap] = field(default_factory=list)
    merged: int = 0
    books: dict[str, BookView] = field(default_factory=dict)
    events: list[MarketDataEvent] = field(default_factory=list)


async def read_until(
    feed: MarketDataFeed, targets: dict[str, int], *, timeout: float = 60, keep: bool = False
) -> Seen:
    """Iterate ``feed`` until every symbol's book event is at (or past) its target sequence;
    bounded by ``timeout``."""
    seen = Seen()
    left = dict(targets)
    async with asyncio.timeout(timeout):
        async for event in feed:
            seen.kinds[type(event).__name__] += 1
            if keep:
                seen.events.append(event)
            if isinstance(event, Gap):
                seen.gaps.append(event)
                continue
            if isinstance(event, Conflated):
                seen.merged += event.merged
            seen.books[event.symbol] = event.book
            if event.symbol in left and event.sequence >= left[event.symbol]:
                del left[event.symbol]
            if not left:
                break
    return seen


def levels(view: BookView) -> tuple[list[tuple[object, object, int]], ...]:
    """(bids, asks) of a view as (price, quantity, orders) tuples, best first."""
    return (
        [(lv.price, lv.quantity, lv.orders) for lv in view.bids],
        [(lv.price, lv.quantity, lv.orders) for lv in view.asks],
    )


class Reader:
    """Reads a feed in a task, as a live consumer does; ``reached`` waits for a sequence."""

    def __init__(self, feed: MarketDataFeed) -> None:
        self.feed = feed
        self.seen = Seen()
        self.trade_ids: list[str] = []
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for event in self.feed:
            self.seen.kinds[type(event).__name__] += 1
            if len(self.seen.events) < 100:
                self.seen.events.append(event)
            if isinstance(event, Gap):
                self.seen.gaps.append(event)
            else:
                if isinstance(event, Conflated):
                    self.seen.merged += event.merged
                self.seen.books[event.symbol] = event.book
                self.trade_ids.extend(t.trade_id for t in event.trades)
            self._changed.set()

    def sequence(self, symbol: str) -> int:
        book = self.seen.books.get(symbol)
        return -1 if book is None else book.sequence

    async def reached(self, targets: dict[str, int], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while any(self.sequence(s) < seq for s, seq in targets.items()):
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
