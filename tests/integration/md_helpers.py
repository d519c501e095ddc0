"""Helpers of the market-data integration tests: read a feed until it reaches given sequences."""

from __future__ import annotations

import asyncio
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
