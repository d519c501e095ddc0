"""A stand-in for the engine's market-data publisher, for tests of the client side.

``FakeVenue`` keeps per symbol an L2 book that random events change, numbers its updates 1, 2,
3 ... within a session and encodes them as the engine would (``MarketDataUpdate``,
``MarketDataSnapshot``). ``FakeVenueServer`` puts it on a real NATS connection: it answers
snapshot requests on ``md_snapshot_all`` and publishes updates on ``md_update(symbol)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal

from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bridge import contract
from bridge.models import decimal_to_proto
from bridge.v1 import common_pb2, market_data_pb2, orders_pb2


def _level(price: Decimal, qty: Decimal, orders: int) -> market_data_pb2.PriceLevel:
    return market_data_pb2.PriceLevel(
        price=decimal_to_proto(price), quantity=decimal_to_proto(qty), orders=orders
    )


@dataclass
class _Book:
    sequence: int = 0
    bids: dict[Decimal, tuple[Decimal, int]] = field(default_factory=dict)
    asks: dict[Decimal, tuple[Decimal, int]] = field(default_factory=dict)


class FakeVenue:
    """Random book changes, sequenced per symbol, as bridge.v1 messages."""

    def __init__(self, symbols: list[str], seed: int = 7, session: str = "1") -> None:
        self.rng = random.Random(seed)
        self.session = session
        self.books = {s: _Book() for s in symbols}
        self.trades = 0

    def restart(self, session: str) -> None:
        """A new session: books empty, sequences start again."""
        self.session = session
        self.books = {s: _Book() for s in self.books}

    def step(self, symbol: str) -> market_data_pb2.MarketDataUpdate:
        """One update of 1-3 level changes and maybe a trade."""
        book = self.books[symbol]
        book.sequence += 1
        msg = market_data_pb2.MarketDataUpdate(
            symbol=symbol, sequence=book.sequence, session=self.session, events=1
        )
        for _ in range(self.rng.randint(1, 3)):
            is_bid = self.rng.random() < 0.5
            side = book.bids if is_bid else book.asks
            base = 100 if is_bid else 101
            price = Decimal(base + self.rng.choice([-1, 1]) * self.rng.randint(0, 20)) / 1
            price = price + Decimal(self.rng.randint(0, 3)) / 4
            if price in side and self.rng.random() < 0.4:
                del side[price]
                level = _level(price, Decimal(0), 0)
            else:
                qty, n = Decimal(self.rng.randint(1, 500)), self.rng.randint(1, 5)
                side[price] = (qty, n)
                level = _level(price, qty, n)
            (msg.bids if is_bid else msg.asks).append(level)
        if self.rng.random() < 0.3:
            self.trades += 1
            msg.trades.append(
                market_data_pb2.Trade(
                    symbol=symbol,
                    trade_id=f"T{self.trades}",
                    price=decimal_to_proto(Decimal("100.5")),
                    quantity=decimal_to_proto(Decimal(self.rng.randint(1, 9))),
                    aggressor_side=orders_pb2.SIDE_BUY,
                    sequence=book.sequence,
                )
            )
        return msg

    def snapshot(self, symbol: str) -> market_data_pb2.MarketDataSnapshot:
        book = self.books.get(symbol)
        if book is None:
            return market_data_pb2.MarketDataSnapshot(
                errors=[
                    common_pb2.FieldError(
                        field="symbol", rule="unknown_symbol", message=f"no book {symbol!r}"
                    )
                ]
            )
        return market_data_pb2.MarketDataSnapshot(
            symbol=symbol,
            sequence=book.sequence,
            session=self.session,
            bids=[_level(p, *book.bids[p]) for p in sorted(book.bids, reverse=True)],
            asks=[_level(p, *book.asks[p]) for p in sorted(book.asks)],
        )

    def expected(self, symbol: str) -> tuple[list[tuple[Decimal, Decimal, int]], ...]:
        """(bids best first, asks best first) as (price, qty, orders)."""
        book = self.books[symbol]
        bids = [(p, *book.bids[p]) for p in sorted(book.bids, reverse=True)]
        asks = [(p, *book.asks[p]) for p in sorted(book.asks)]
        return bids, asks


class FakeVenueServer:
    """A ``FakeVenue`` on a NATS connection (the engine identity's): snapshots and updates."""

    def __init__(self, nc: NatsConnection, venue: FakeVenue) -> None:
        self.nc = nc
        self.venue = venue
        self.snapshot_requests = 0
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(contract.MD_SNAPSHOT_ALL, cb=self._answer)
        await self.nc.flush()

    async def _answer(self, msg: Msg) -> None:
        self.snapshot_requests += 1
        symbol = msg.subject.removeprefix(contract.MD_SNAPSHOT_PREFIX)
        await self.nc.publish(msg.reply, self.venue.snapshot(symbol).SerializeToString())

    async def publish(self, symbol: str, count: int = 1) -> None:
        for _ in range(count):
            update = self.venue.step(symbol)
            await self.nc.publish(contract.md_update(symbol), update.SerializeToString())

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
