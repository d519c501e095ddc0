"""Market data against the real server and engine (issue 15, parts 1-3 and 5's market-data
test): the feed's book equals the engine's snapshot exactly after 10,000 random orders, for a
reader there from the start, one that joins midway and one that loses a message; a reader that
does not read ends with the right book in bounded memory while every order is acked; an input
stream's credit stops the sender when the engine does not grant."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsConnection

from bridge import (
    AckStatus,
    BridgeClient,
    BridgeSettings,
    NoCreditError,
    Order,
    OrderAck,
    OrderType,
    ReferencePrice,
    Resynced,
    Side,
    TimeInForce,
    contract,
)
from bridge.marketdata import BookView
from bridge.models import decimal_from_proto
from bridge.v1 import market_data_pb2
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle, connect_as
from tests.integration.md_helpers import Reader, levels

pytestmark = pytest.mark.integration

SYMBOLS = {"AAPL": Decimal("190.00"), "MSFT": Decimal("420.00")}
ORDERS = 10_000
CONCURRENCY = 32


def _order(rng: random.Random, account: str) -> Order:
    symbol = rng.choice(list(SYMBOLS))
    side = rng.choice([Side.BUY, Side.SELL])
    qty = Decimal(rng.randint(1, 60))
    if rng.random() < 0.1:
        return Order(
            client_order_id=f"m-{uuid.uuid4().hex[:16]}",
            account=account,
            symbol=symbol,
            side=side,
            order_type=OrderType.MARKET,
            quantity=qty,
            time_in_force=TimeInForce.IOC,
        )
    ticks = rng.randint(-15, 15)
    price = SYMBOLS[symbol] + Decimal(ticks) / 100
    return Order(
        client_order_id=f"l-{uuid.uuid4().hex[:16]}",
        account=account,
        symbol=symbol,
        side=side,
        order_type=OrderType.LIMIT,
        quantity=qty,
        limit_price=price,
        time_in_force=rng.choice([TimeInForce.DAY, TimeInForce.IOC]),
    )


async def _submit_all(bridge: BridgeClient, orders: list[Order]) -> list[OrderAck]:
    """Every order through ``submit``, ``CONCURRENCY`` at a time; each must be answered."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(order: Order) -> OrderAck:
        async with gate:
            return await bridge.submit(order)

    return await asyncio.gather(*(one(o) for o in orders))


@pytest.fixture
async def raw(nats_server: ServerHandle) -> AsyncIterator[NatsConnection]:
    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
    try:
        yield nc
    finally:
        await nc.close()


async def _engine_snapshot(nc: NatsConnection, symbol: str) -> market_data_pb2.MarketDataSnapshot:
    request = market_data_pb2.MarketDataSnapshotRequest(symbol=symbol).SerializeToString()
    reply = await nc.request(contract.md_snapshot(symbol), request, timeout=5)
    snapshot = market_data_pb2.MarketDataSnapshot.FromString(reply.data)
    assert not snapshot.errors, snapshot.errors
    return snapshot


def _snapshot_levels(
    snapshot: market_data_pb2.MarketDataSnapshot,
) -> tuple[list[tuple[object, object, int]], ...]:
    def side(lvs: object) -> list[tuple[object, object, int]]:
        return [
            (decimal_from_proto(lv.price), decimal_from_proto(lv.quantity), lv.orders)
            for lv in lvs  # type: ignore[attr-defined]
        ]

    return side(snapshot.bids), side(snapshot.asks)


def _same(view: BookView, snapshot: market_data_pb2.MarketDataSnapshot) -> None:
    assert (view.session, view.sequence) == (snapshot.session, snapshot.sequence)
    assert levels(view) == _snapshot_levels(snapshot)


async def test_feed_reproduces_the_engines_book_after_10000_random_orders(
    engine: EngineProcess, settings: BridgeSettings, raw: NatsConnection
) -> None:
    rng = random.Random(15)
    account = f"MD{uuid.uuid4().hex[:8]}"
    orders = [_order(rng, account) for _ in range(ORDERS)]
    third = ORDERS // 3
    async with (
        BridgeClient(settings) as bridge,
        bridge.market_data(list(SYMBOLS)) as early,
        bridge.market_data(list(SYMBOLS)) as lossy,
    ):
        first = Reader(early)
        second = Reader(lossy)
        acks = await _submit_all(bridge, orders[:third])
        lossy.inject_loss("AAPL")  # the next AAPL update never reaches this reader
        acks += await _submit_all(bridge, orders[third : 2 * third])
        async with bridge.market_data(list(SYMBOLS)) as late:
            third_reader = Reader(late)
            acks += await _submit_all(bridge, orders[2 * third :])
            snapshots = {s: await _engine_snapshot(raw, s) for s in SYMBOLS}
            targets = {s: snap.sequence for s, snap in snapshots.items()}
            for reader in (first, second, third_reader):
                await reader.reached(targets)
                for symbol, snap in snapshots.items():
                    _same(reader.feed.book(symbol), snap)
                    _same(reader.seen.books[symbol], snap)
                await reader.stop()
        late_first = third_reader.seen.events[0]
        assert isinstance(late_first, Resynced)
        assert late_first.sequence > 0  # it joined a book with history
    assert len(acks) == ORDERS
    assert {a.status for a in acks} <= {AckStatus.ACCEPTED, AckStatus.REJECTED}
    assert sum(a.status is AckStatus.ACCEPTED for a in acks) > ORDERS * 0.9
    assert first.seen.gaps == []
    assert early.stats.applied > 0
    assert [(g.symbol, g.reason) for g in second.seen.gaps] == [("AAPL", "sequence")]
    assert second.seen.kinds["Resynced"] == 3  # two first snapshots, one after the gap
    # The public tape: every print once (a reader that conflates keeps every trade it merged
    # unless more than MAX_CONFLATED_TRADES piled up).
    assert len(first.trade_ids) == len(set(first.trade_ids))
    assert first.trade_ids


async def test_a_reader_that_does_not_read_ends_with_the_right_book_in_bounded_memory(
    engine: EngineProcess, settings: BridgeSettings, raw: NatsConnection
) -> None:
    rng = random.Random(3)
    account = f"MD{uuid.uuid4().hex[:8]}"
    async with BridgeClient(settings) as bridge, bridge.market_data(list(SYMBOLS)) as feed:
        pending = buffered = 0
        acks: list[OrderAck] = []
        for _ in range(20):
            acks += await _submit_all(bridge, [_order(rng, account) for _ in range(100)])
            pending = max(pending, feed.pending_events)
            buffered = max(buffered, feed.buffered_messages)
        snapshots = {s: await _engine_snapshot(raw, s) for s in SYMBOLS}
        assert pending <= 5 * len(SYMBOLS)
        assert buffered <= len(SYMBOLS) * settings.subscription_capacity
        assert feed.stats.applied > 100
        reader = Reader(feed)
        await reader.reached({s: snap.sequence for s, snap in snapshots.items()})
        await reader.stop()
        for symbol, snap in snapshots.items():
            _same(reader.seen.books[symbol], snap)
        assert reader.seen.kinds["Conflated"] >= 1
        assert reader.seen.merged > 0
    assert len(acks) == 2000  # the engine answered every order while the reader slept


async def test_input_stream_credit_stops_the_sender_when_the_engine_does_not_grant(
    nats_server: ServerHandle, settings: BridgeSettings, tmp_path: Path
) -> None:
    """A small window; the engine stopped (SIGSTOP): the sender spends its credit, then gets
    NoCreditError after a short timeout (try_send at once). Resumed, the engine applies what
    was sent and grants more; a reference price it applied changes a market order's notional
    check (5000 x 1000 > the 2,500,000 limit)."""
    env = {"BRIDGE_FEED_WINDOW": "4"}
    with EngineProcess(nats_server, log_file=tmp_path / "engine.log", env=env) as eng:
        assert eng.pid is not None
        async with BridgeClient(settings) as bridge, bridge.market_inputs() as inputs:
            assert inputs.credit == 4
            os.kill(eng.pid, signal.SIGSTOP)
            try:
                high = [ReferencePrice("AAPL", Decimal("1000"))]
                for _ in range(4):
                    await inputs.send(high)
                with pytest.raises(NoCreditError):
                    await inputs.try_send(high)
                with pytest.raises(NoCreditError):
                    await inputs.send(high, timeout=0.3)
            finally:
                os.kill(eng.pid, signal.SIGCONT)
            await inputs.wait_applied(2, timeout=30)
            await inputs.send(high, timeout=30)
            market = Order(
                client_order_id=f"m-{uuid.uuid4().hex[:16]}",
                account=f"MD{uuid.uuid4().hex[:8]}",
                symbol="AAPL",
                side=Side.BUY,
                order_type=OrderType.MARKET,
                quantity=Decimal(5000),
                time_in_force=TimeInForce.IOC,
            )
            ack = await bridge.submit(market)
            assert ack.status is AckStatus.REJECTED, ack
            assert not inputs.refused
