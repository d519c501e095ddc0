"""What a market-data feed yields: typed events, one symbol each.

* ``BookUpdate``: one update applied: the levels it changed, its trades, the book after it.
* ``Conflated``: the reader fell behind and ``merged`` updates were applied since its last
  event: the book now (the latest state), and the trades they carried (the most recent
  ``MAX_CONFLATED_TRADES``; ``trades_dropped`` counts older ones not kept).
* ``Gap``: the book stopped being live (a sequence hole, a new engine session, a message the
  subscription lost, a reconnect): the feed is taking a new snapshot. No update is applied
  across a gap.
* ``Resynced``: a snapshot made the book live again, at ``sequence``; ``trades`` are those the
  updates replayed after the snapshot carried. The first event of every symbol is one.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.marketdata.book import BookView, Level, TradePrint

MAX_CONFLATED_TRADES = 1000
"""Trades a ``Conflated`` event keeps (the most recent); older ones are only counted."""


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """One update applied to ``symbol``'s book: ``bids``/``asks`` are the levels it changed
    (quantity 0: removed), ``book`` the book after it."""

    symbol: str
    sequence: int
    book: BookView
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    trades: tuple[TradePrint, ...]
    venue_time_unix_ns: int
    events: int


@dataclass(frozen=True, slots=True)
class Conflated:
    """``merged`` updates (more than one) applied since the reader's last event of ``symbol``:
    ``book`` is the latest state, at ``sequence``."""

    symbol: str
    sequence: int
    book: BookView
    merged: int
    trades: tuple[TradePrint, ...]
    trades_dropped: int


@dataclass(frozen=True, slots=True)
class Gap:
    """``symbol``'s book stopped being live: ``expected`` was the next sequence, ``got`` came
    (0 when unknown, e.g. ``reason`` "slow_consumer" or "reconnect"). A ``Resynced`` follows.
    Several gaps before the reader looks are reported as one (``gaps`` counts them)."""

    symbol: str
    expected: int
    got: int
    reason: str
    gaps: int = 1


@dataclass(frozen=True, slots=True)
class Resynced:
    """A snapshot made ``symbol``'s book live again at ``sequence`` (``replayed`` buffered
    updates applied after the snapshot; ``trades``: theirs)."""

    symbol: str
    sequence: int
    book: BookView
    replayed: int
    trades: tuple[TradePrint, ...]


MarketDataEvent = BookUpdate | Conflated | Gap | Resynced
