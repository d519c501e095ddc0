"""The recovery protocol of one symbol's book, exchange style. Pure: no I/O, no clock.

A ``SymbolSync`` is either **live** (its book is at a known sequence of a known session and
takes the next update) or **resyncing** (it waits for a snapshot and buffers the updates that
arrive meanwhile). The caller subscribes to the symbol's updates first, then requests a
snapshot, and feeds both in here:

* resyncing, ``on_update`` buffers (at most ``max_buffer`` updates: the oldest are dropped, a
  hole that is then detected when the snapshot comes);
* ``on_snapshot`` loads the snapshot, drops the buffered updates at or below its sequence (or
  of another session) and applies the rest. They must continue the snapshot without a hole
  (``snapshot.sequence + 1``, ``+ 2`` ...); otherwise the answer is "take another snapshot";
* live, ``on_update`` applies the update whose sequence is exactly the book's + 1, ignores one
  at or below the book's sequence (a late or duplicate delivery) and, for anything else (a
  sequence beyond the next, another session), reports a ``GapFound`` and starts resyncing: a
  gap is never applied across;
* ``invalidate`` starts resyncing for a reason the sequence cannot show (the subscription lost
  a message, the connection dropped): a loss of the last message before a pause would
  otherwise stay unseen until the next update.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from bridge.marketdata.book import L2Book, Snapshot, TradePrint, Update


class Outcome(Enum):
    """What ``on_update`` did with an update."""

    APPLIED = "applied"
    STALE = "stale"  # at or below the book's sequence: already in the book
    BUFFERED = "buffered"  # resyncing: kept for the snapshot


@dataclass(frozen=True, slots=True)
class GapFound:
    """The book stopped being live: ``expected`` was next, ``got`` came (0: unknown)."""

    expected: int
    got: int
    reason: str  # "sequence", "session", or the reason given to ``invalidate``


@dataclass(frozen=True, slots=True)
class Recovered:
    """A snapshot made the book live again, at ``sequence`` after ``replayed`` buffered
    updates; ``trades`` are the trades those updates carried."""

    sequence: int
    replayed: int
    trades: tuple[TradePrint, ...]


class SymbolSync:
    """One symbol's book and where it stands in the recovery protocol."""

    def __init__(self, symbol: str, max_buffer: int) -> None:
        self.book = L2Book(symbol)
        self.live = False
        self.max_buffer = max_buffer
        self._buffer: deque[Update] = deque(maxlen=max_buffer)
        self._stale_request = False  # a snapshot asked for before the last invalidate

    @property
    def symbol(self) -> str:
        return self.book.symbol

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def on_update(self, update: Update) -> Outcome | GapFound:
        if not self.live:
            self._buffer.append(update)
            return Outcome.BUFFERED
        book = self.book
        if update.session != book.session:
            return self._gap(book.sequence + 1, update, "session")
        if update.sequence <= book.sequence:
            return Outcome.STALE
        if update.sequence != book.sequence + 1:
            return self._gap(book.sequence + 1, update, "sequence")
        book.apply(update)
        return Outcome.APPLIED

    def _gap(self, expected: int, update: Update, reason: str) -> GapFound:
        self.live = False
        self._buffer.clear()
        self._buffer.append(update)
        return GapFound(expected, update.sequence, reason)

    def invalidate(self, reason: str) -> GapFound | None:
        """Resync for ``reason``; a ``GapFound`` if the book was live (else the snapshot being
        waited for may predate the loss: the next one is refused and asked for again)."""
        if not self.live:
            self._stale_request = True
            return None
        self.live = False
        self._buffer.clear()
        return GapFound(self.book.sequence + 1, 0, reason)

    def snapshot_requested(self) -> None:
        """A snapshot request goes out now: its answer postdates every earlier loss."""
        self._stale_request = False

    def on_snapshot(self, snapshot: Snapshot) -> Recovered | None:
        """Load ``snapshot`` and replay the buffer; None: take another snapshot (the buffer
        does not continue this one, or a loss happened after it was asked for)."""
        if self.live:  # a late answer to a request the book no longer needs
            return None
        if self._stale_request:
            return None
        pending = [
            u
            for u in self._buffer
            if u.session == snapshot.session and u.sequence > snapshot.sequence
        ]
        expected = snapshot.sequence + 1
        for u in pending:
            if u.sequence != expected:
                return None
            expected += 1
        self.book.reset(snapshot)
        trades: list[TradePrint] = []
        for u in pending:
            self.book.apply(u)
            trades.extend(u.trades)
        self._buffer.clear()
        self.live = True
        return Recovered(self.book.sequence, len(pending), tuple(trades))
