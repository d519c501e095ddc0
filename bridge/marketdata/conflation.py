"""What a feed holds for its reader between two reads: bounded, conflated, per symbol. Pure.

The feed's reader task applies every message to the books at once; what the consumer has not
read yet waits here as at most five events per symbol, whatever the reader's pace:

    [Resynced] [updates] [Gap] [Resynced] [updates]

Consecutive updates of a symbol merge into one pending entry (handed out as a ``BookUpdate``
when it is one update, else as a ``Conflated`` with the count and the latest book); a second
``Gap`` before the reader looked folds everything since the first into one ``Gap`` (its
``gaps`` counted), since the ``Resynced`` it will be followed by supersedes what came between.
Symbols are handed out in the order they became pending, one event at a time.

Views are built when an event is handed out (the book then is the latest state), except for
updates followed by a ``Gap``: their view is taken when the gap is found, before the book is
reset by the next snapshot.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from bridge.marketdata.book import BookView, L2Book, TradePrint, Update
from bridge.marketdata.events import (
    MAX_CONFLATED_TRADES,
    BookUpdate,
    Conflated,
    Gap,
    MarketDataEvent,
    Resynced,
)


@dataclass(slots=True)
class _Updates:
    """Updates not read yet, merged."""

    book: L2Book
    last: Update
    count: int = 1
    trades: deque[TradePrint] = field(default_factory=lambda: deque(maxlen=MAX_CONFLATED_TRADES))
    trades_seen: int = 0
    view: BookView | None = None  # frozen when a gap follows

    def add(self, update: Update) -> None:
        self.last = update
        self.count += 1
        self.trades.extend(update.trades)
        self.trades_seen += len(update.trades)

    def freeze(self) -> None:
        if self.view is None:
            self.view = self.book.view()

    def event(self) -> BookUpdate | Conflated:
        view = self.view or self.book.view()
        u = self.last
        if self.count == 1:
            return BookUpdate(
                u.symbol, u.sequence, view, u.bids, u.asks, u.trades, u.venue_time_unix_ns, u.events
            )
        return Conflated(
            u.symbol,
            u.sequence,
            view,
            self.count,
            tuple(self.trades),
            self.trades_seen - len(self.trades),
        )


_Pending = _Updates | Gap | Resynced


class Delivery:
    """Events waiting for the reader, at most five per symbol."""

    def __init__(self) -> None:
        self._pending: OrderedDict[str, list[_Pending]] = OrderedDict()
        self.merged = 0  # updates handed out inside a Conflated rather than one by one

    def __len__(self) -> int:
        """Events waiting (entries, whatever they merge)."""
        return sum(len(entries) for entries in self._pending.values())

    def _entries(self, symbol: str) -> list[_Pending]:
        entries = self._pending.get(symbol)
        if entries is None:
            entries = self._pending[symbol] = []
        return entries

    def update(self, book: L2Book, update: Update) -> None:
        """``update`` was applied to ``book``."""
        entries = self._entries(book.symbol)
        if entries and isinstance(entries[-1], _Updates):
            entries[-1].add(update)
            return
        pending = _Updates(book, update)
        pending.trades.extend(update.trades)
        pending.trades_seen = len(update.trades)
        entries.append(pending)

    def gap(self, gap: Gap) -> None:
        entries = self._entries(gap.symbol)
        for i, entry in enumerate(entries):
            if isinstance(entry, Gap):  # fold this one and all since into the first
                entries[i:] = [
                    Gap(gap.symbol, entry.expected, gap.got, gap.reason, entry.gaps + gap.gaps)
                ]
                return
        if entries and isinstance(entries[-1], _Updates):
            entries[-1].freeze()
        entries.append(gap)

    def resynced(self, event: Resynced) -> None:
        self._entries(event.symbol).append(event)

    def pop(self) -> MarketDataEvent | None:
        """The next event, or None when nothing waits."""
        if not self._pending:
            return None
        symbol, entries = next(iter(self._pending.items()))
        entry = entries.pop(0)
        if entries:
            self._pending.move_to_end(symbol)
        else:
            del self._pending[symbol]
        if isinstance(entry, _Updates):
            event = entry.event()
            if isinstance(event, Conflated):
                self.merged += event.merged
            return event
        return entry
