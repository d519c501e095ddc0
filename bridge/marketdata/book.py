"""One symbol's L2 book as the engine publishes it, and the bridge.v1 messages it is built from.

Pure: no I/O, no clock. ``L2Book`` holds price -> ``Level`` per side; ``reset`` loads a
``Snapshot``, ``apply`` one ``Update``'s level changes (quantity 0 removes a level). The
sequencing rules (what may be applied when) live in ``bridge.marketdata.sync``.

``Snapshot`` / ``Update`` / ``TradePrint`` are the decoded ``MarketDataSnapshot`` /
``MarketDataUpdate`` / ``Trade`` (``*_from_proto``); ``BookView`` is an immutable picture of a
book: bids best (highest) first, asks best (lowest) first.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bridge.models import Side, decimal_from_proto
from bridge.v1 import market_data_pb2, orders_pb2


@dataclass(frozen=True, slots=True)
class Level:
    """One price level: total resting quantity at ``price`` and how many orders make it up.
    In a change, quantity 0 means the level was removed."""

    price: Decimal
    quantity: Decimal
    orders: int


@dataclass(frozen=True, slots=True)
class TradePrint:
    """One print of the public trade tape (no accounts, no order ids)."""

    symbol: str
    trade_id: str
    price: Decimal
    quantity: Decimal
    aggressor_side: Side | None
    transact_time_unix_ns: int
    sequence: int


@dataclass(frozen=True, slots=True)
class BookView:
    """One symbol's book at ``sequence`` of ``session``: bids best first, asks best first."""

    symbol: str
    sequence: int
    session: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]

    @property
    def best_bid(self) -> Level | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> Level | None:
        return self.asks[0] if self.asks else None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A decoded ``MarketDataSnapshot`` (without errors)."""

    symbol: str
    sequence: int
    session: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class Update:
    """A decoded ``MarketDataUpdate``: the levels that changed and the trades it carries."""

    symbol: str
    sequence: int
    session: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    trades: tuple[TradePrint, ...]
    venue_time_unix_ns: int
    events: int


def _level(msg: market_data_pb2.PriceLevel) -> Level:
    return Level(decimal_from_proto(msg.price), decimal_from_proto(msg.quantity), msg.orders)


def _side(value: orders_pb2.Side.ValueType) -> Side | None:
    if value == orders_pb2.SIDE_UNSPECIFIED:
        return None
    return Side(orders_pb2.Side.Name(value).removeprefix("SIDE_"))


def trade_from_proto(msg: market_data_pb2.Trade) -> TradePrint:
    return TradePrint(
        symbol=msg.symbol,
        trade_id=msg.trade_id,
        price=decimal_from_proto(msg.price),
        quantity=decimal_from_proto(msg.quantity),
        aggressor_side=_side(msg.aggressor_side),
        transact_time_unix_ns=msg.transact_time_unix_ns,
        sequence=msg.sequence,
    )


def update_from_proto(msg: market_data_pb2.MarketDataUpdate) -> Update:
    return Update(
        symbol=msg.symbol,
        sequence=msg.sequence,
        session=msg.session,
        bids=tuple(_level(lv) for lv in msg.bids),
        asks=tuple(_level(lv) for lv in msg.asks),
        trades=tuple(trade_from_proto(t) for t in msg.trades),
        venue_time_unix_ns=msg.venue_time_unix_ns,
        events=msg.events,
    )


def snapshot_from_proto(msg: market_data_pb2.MarketDataSnapshot) -> Snapshot:
    """The snapshot; the caller checks ``msg.errors`` first (an unknown symbol)."""
    return Snapshot(
        symbol=msg.symbol,
        sequence=msg.sequence,
        session=msg.session,
        bids=tuple(_level(lv) for lv in msg.bids),
        asks=tuple(_level(lv) for lv in msg.asks),
    )


class L2Book:
    """Price -> level per side, at one (session, sequence). Views are cached until a change."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.session = ""
        self.sequence = 0
        self._bids: dict[Decimal, Level] = {}
        self._asks: dict[Decimal, Level] = {}
        self._view: BookView | None = None

    def __len__(self) -> int:
        """Levels held (both sides): the book's memory."""
        return len(self._bids) + len(self._asks)

    def reset(self, snapshot: Snapshot) -> None:
        """Replace everything with ``snapshot``."""
        self.session = snapshot.session
        self.sequence = snapshot.sequence
        self._bids = {lv.price: lv for lv in snapshot.bids if lv.quantity > 0}
        self._asks = {lv.price: lv for lv in snapshot.asks if lv.quantity > 0}
        self._view = None

    def apply(self, update: Update) -> None:
        """Apply the update's level changes and take its sequence (the caller checked it)."""
        for side, changes in ((self._bids, update.bids), (self._asks, update.asks)):
            for lv in changes:
                if lv.quantity > 0:
                    side[lv.price] = lv
                else:
                    side.pop(lv.price, None)
        self.sequence = update.sequence
        self._view = None

    def view(self) -> BookView:
        """The book now (immutable; the same object until the next change)."""
        if self._view is None:
            self._view = BookView(
                symbol=self.symbol,
                sequence=self.sequence,
                session=self.session,
                bids=tuple(self._bids[p] for p in sorted(self._bids, reverse=True)),
                asks=tuple(self._asks[p] for p in sorted(self._asks)),
            )
        return self._view
