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
from functools import lru_cache
from typing import NamedTuple

from bridge.models import Side
from bridge.v1 import common_pb2, market_data_pb2, orders_pb2

# Levels and prints are decoded for every update a feed receives: NamedTuples (immutable, and
# built several times faster than frozen dataclasses) and a cache of the decimals, since the
# same prices and quantities come back again and again.


class Level(NamedTuple):
    """One price level: total resting quantity at ``price`` and how many orders make it up.
    In a change, quantity 0 means the level was removed."""

    price: Decimal
    quantity: Decimal
    orders: int


@lru_cache(maxsize=65536)
def _decimal(units: int, scale: int) -> Decimal:
    return Decimal(units).scaleb(-scale)


def _dec(value: common_pb2.Decimal) -> Decimal:
    """Exact conversion from ``{units, scale}`` (``bridge.models.decimal_from_proto``), cached."""
    return _decimal(value.units, value.scale)


_SIDES: dict[int, Side | None] = {
    orders_pb2.SIDE_UNSPECIFIED: None,
    orders_pb2.SIDE_BUY: Side.BUY,
    orders_pb2.SIDE_SELL: Side.SELL,
}


class TradePrint(NamedTuple):
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


class Update(NamedTuple):
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
    return Level(_dec(msg.price), _dec(msg.quantity), msg.orders)


def _side(value: orders_pb2.Side.ValueType) -> Side | None:
    return _SIDES.get(value)


def trade_from_proto(msg: market_data_pb2.Trade) -> TradePrint:
    return TradePrint(
        msg.symbol,
        msg.trade_id,
        _dec(msg.price),
        _dec(msg.quantity),
        _SIDES.get(msg.aggressor_side),
        msg.transact_time_unix_ns,
        msg.sequence,
    )


def update_from_proto(msg: market_data_pb2.MarketDataUpdate) -> Update:
    return Update(
        msg.symbol,
        msg.sequence,
        msg.session,
        tuple([_level(lv) for lv in msg.bids]),
        tuple([_level(lv) for lv in msg.asks]),
        tuple([trade_from_proto(t) for t in msg.trades]),
        msg.venue_time_unix_ns,
        msg.events,
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
