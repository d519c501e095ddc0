"""The engine's market data and input streams on the wire, with raw nats-py (no bridge market
data client): a snapshot plus the sequenced updates after it reproduce the engine's book after
a few hundred random orders (for a subscriber from the start and one joining midway), quotes
and the trade tape agree with the updates; an input stream gets credit, is refused beyond it,
and its reference price moves a market order's notional check."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from bridge import (
    AckStatus,
    BridgeClient,
    BridgeSettings,
    ExecType,
    Order,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    contract,
)
from bridge.v1 import common_pb2, market_data_pb2
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle, connect_as

pytestmark = pytest.mark.integration

SYMBOL = "AAPL"
Book = dict[str, dict[Decimal, tuple[Decimal, int]]]


def dec(d: common_pb2.Decimal) -> Decimal:
    return Decimal(d.units).scaleb(-d.scale)


def wire(value: Decimal) -> common_pb2.Decimal:
    exponent = -int(value.as_tuple().exponent)
    scale = max(exponent, 0)
    return common_pb2.Decimal(units=int(value.scaleb(scale)), scale=scale)


def levels(
    levels: list[market_data_pb2.PriceLevel],
) -> Iterator[tuple[Decimal, Decimal, int]]:
    for lv in levels:
        yield dec(lv.price), dec(lv.quantity), lv.orders


def book_of(snapshot: market_data_pb2.MarketDataSnapshot) -> Book:
    return {
        "bids": {p: (q, n) for p, q, n in levels(list(snapshot.bids))},
        "asks": {p: (q, n) for p, q, n in levels(list(snapshot.asks))},
    }


def apply(book: Book, update: market_data_pb2.MarketDataUpdate) -> None:
    for side, changes in (("bids", update.bids), ("asks", update.asks)):
        for price, qty, orders in levels(list(changes)):
            if qty == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = (qty, orders)


class Mirror:
    """A subscriber's book: snapshot, then the updates after its sequence, none skipped."""

    def __init__(self, snapshot: market_data_pb2.MarketDataSnapshot) -> None:
        self.book = book_of(snapshot)
        self.sequence = snapshot.sequence
        self.session = snapshot.session
        self.top_changed_at = snapshot.sequence

    def feed(self, update: market_data_pb2.MarketDataUpdate) -> None:
        assert update.session == self.session
        if update.sequence <= self.sequence:
            return  # already in the snapshot
        assert update.sequence == self.sequence + 1, "gap on a local server"
        before = self.top()
        apply(self.book, update)
        self.sequence = update.sequence
        if self.top() != before:
            self.top_changed_at = update.sequence

    def top(self) -> tuple[object, object]:
        bids, asks = self.book["bids"], self.book["asks"]
        best_bid = max(bids) if bids else None
        best_ask = min(asks) if asks else None
        return (
            best_bid and (best_bid, bids[best_bid]),
            best_ask and (best_ask, asks[best_ask]),
        )


async def snapshot(nc: Client, symbol: str = SYMBOL) -> market_data_pb2.MarketDataSnapshot:
    reply = await nc.request(contract.md_snapshot(symbol), b"", timeout=5)
    snap = market_data_pb2.MarketDataSnapshot()
    snap.ParseFromString(reply.data)
    return snap


def random_order(rng: random.Random, account: str) -> Order:
    side = rng.choice([Side.BUY, Side.SELL])
    qty = Decimal(rng.randint(1, 300))
    if rng.random() < 0.15:
        return Order(
            client_order_id=f"md-{uuid.uuid4().hex[:12]}",
            account=account,
            symbol=SYMBOL,
            side=side,
            order_type=OrderType.MARKET,
            quantity=qty,
            time_in_force=TimeInForce.IOC,
        )
    price = Decimal("190.00") + Decimal(rng.randint(-12, 12)) / 100
    return Order(
        client_order_id=f"md-{uuid.uuid4().hex[:12]}",
        account=account,
        symbol=SYMBOL,
        side=side,
        order_type=OrderType.LIMIT,
        limit_price=price,
        quantity=qty,
        time_in_force=TimeInForce.GTC,
    )


@pytest.mark.parametrize("coalesce_ms", ["0", "25"])
async def test_snapshot_plus_updates_reproduce_the_book(
    coalesce_ms: str, settings: BridgeSettings, nats_server: ServerHandle, tmp_path: Path
) -> None:
    """0: one update per command; 25: several commands' changes and trades in one update."""
    engine = EngineProcess(
        nats_server,
        log_file=tmp_path / "engine.log",
        env={"BRIDGE_MARKET_DATA_COALESCE_MS": coalesce_ms},
    ).start()
    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
    updates: asyncio.Queue[market_data_pb2.MarketDataUpdate] = asyncio.Queue()
    tape: list[market_data_pb2.Trade] = []
    quotes: list[market_data_pb2.Quote] = []
    arrived = asyncio.Condition()  # notified on every trade and quote

    async def on_update(msg: Msg) -> None:
        u = market_data_pb2.MarketDataUpdate()
        u.ParseFromString(msg.data)
        updates.put_nowait(u)

    async def on_trade(msg: Msg) -> None:
        t = market_data_pb2.Trade()
        t.ParseFromString(msg.data)
        tape.append(t)
        async with arrived:
            arrived.notify_all()

    async def on_quote(msg: Msg) -> None:
        q = market_data_pb2.Quote()
        q.ParseFromString(msg.data)
        quotes.append(q)
        async with arrived:
            arrived.notify_all()

    rng = random.Random(15)
    account = f"MD{uuid.uuid4().hex[:8]}"
    try:
        # Subscribe first, then take the snapshot (the recovery protocol).
        await nc.subscribe(contract.md_update(SYMBOL), cb=on_update)
        await nc.subscribe(contract.md_trade(SYMBOL), cb=on_trade)
        await nc.subscribe(contract.md_quote(SYMBOL), cb=on_quote)
        await nc.flush()
        first = Mirror(await snapshot(nc))
        assert first.book["bids"], "the seeded book"
        assert first.book["asks"], "the seeded book"
        unknown = await snapshot(nc, "NOPE")
        assert [(e.field, e.rule) for e in unknown.errors] == [("symbol", "known_symbol")]

        all_updates: list[market_data_pb2.MarketDataUpdate] = []
        late: Mirror | None = None
        resting: list[str] = []
        commands = 0
        async with BridgeClient(settings) as bridge, bridge.reports(account) as reports:
            for i in range(300):
                if i == 150:
                    late = Mirror(await snapshot(nc))
                commands += 1
                if resting and rng.random() < 0.2:
                    await bridge.cancel(account, resting.pop(rng.randrange(len(resting))))
                    continue
                o = random_order(rng, account)
                ack = await bridge.submit(o)
                assert ack.status is AckStatus.ACCEPTED, ack
                if o.order_type is OrderType.LIMIT:
                    resting.append(o.client_order_id)
            # A pull's batch of queued orders is one command: its changes are one update.
            queued = [random_order(rng, account) for _ in range(40)]
            await bridge.enqueue_batch(queued)
            want = {o.client_order_id for o in queued}
            async with asyncio.timeout(30):
                async for report in reports:
                    if report.is_final or report.exec_type is ExecType.NEW:
                        want.discard(report.client_order_id)
                    if not want:
                        break

        final = await snapshot(nc)
        assert final.session == first.session
        async with asyncio.timeout(30):
            while first.sequence < final.sequence:
                u = await updates.get()
                all_updates.append(u)
                first.feed(u)
                if late is not None:
                    late.feed(u)
        assert first.sequence == final.sequence
        assert first.book == book_of(final)
        assert late is not None
        assert late.book == book_of(final)
        assert late.sequence == final.sequence

        # The tape is the updates' trades, each once; the last quote is the final top.
        in_updates = [t for u in all_updates for t in u.trades]
        assert in_updates, "random orders crossed"
        wanted = {t.trade_id for t in in_updates}
        async with asyncio.timeout(10), arrived:
            await arrived.wait_for(lambda: wanted <= {t.trade_id for t in tape})
        seen = {t.trade_id for t in tape}
        assert {t.trade_id for t in in_updates} <= seen
        assert len({t.trade_id for t in in_updates}) == len(in_updates)
        assert all(u.events >= 1 for u in all_updates)
        print(f"\ncoalesce {coalesce_ms} ms: {commands} commands, {len(all_updates)} updates")
        if coalesce_ms != "0":
            assert len(all_updates) < commands, "coalesced"
            assert max(u.events for u in all_updates) > 1
        top_changed = first.top_changed_at
        async with asyncio.timeout(10), arrived:
            # (with coalescing, later quotes may follow: changes pending at the final snapshot)
            await arrived.wait_for(lambda: any(q.sequence == top_changed for q in quotes))
        (last,) = [q for q in quotes if q.sequence == top_changed]
        best_bid = max(first.book["bids"])
        best_ask = min(first.book["asks"])
        assert dec(last.bid.price) == best_bid
        assert (dec(last.bid.quantity), last.bid.orders) == first.book["bids"][best_bid]
        assert dec(last.ask.price) == best_ask
        assert (dec(last.ask.quantity), last.ask.orders) == first.book["asks"][best_ask]
    finally:
        await nc.close()
        code = engine.stop()
    assert code == 0, engine.log_tail()


async def test_input_stream_credit_and_reference_price(
    nats_server: ServerHandle, settings: BridgeSettings, tmp_path: Path
) -> None:
    engine = EngineProcess(
        nats_server, log_file=tmp_path / "engine.log", env={"BRIDGE_FEED_WINDOW": "2"}
    ).start()
    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
    grants: asyncio.Queue[market_data_pb2.FeedGrant] = asyncio.Queue()

    async def on_grant(msg: Msg) -> None:
        g = market_data_pb2.FeedGrant()
        g.ParseFromString(msg.data)
        grants.put_nowait(g)

    stream_id = f"ref-{uuid.uuid4().hex[:8]}"
    inbox = nc.new_inbox()

    async def send(seq: int, price: str, symbol: str = SYMBOL) -> market_data_pb2.FeedGrant:
        m = market_data_pb2.FeedMessage(
            stream_id=stream_id,
            sequence=seq,
            reference_prices=[
                market_data_pb2.ReferencePrice(symbol=symbol, price=wire(Decimal(price)))
            ],
        )
        await nc.publish(contract.feed_data(stream_id), m.SerializeToString(), reply=inbox)
        async with asyncio.timeout(5):
            return await grants.get()

    # 5000 x 190 = 950,000 is within max_order_notional (2,500,000); 5000 x 1000 is not.
    account = f"MF{uuid.uuid4().hex[:8]}"

    def market() -> Order:
        return Order(
            client_order_id=f"mf-{uuid.uuid4().hex[:12]}",
            account=account,
            symbol=SYMBOL,
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quantity=Decimal(5000),
            time_in_force=TimeInForce.IOC,
        )

    try:
        await nc.subscribe(inbox, cb=on_grant)
        await nc.flush()
        reply = await nc.request(
            contract.FEED_OPEN,
            market_data_pb2.FeedOpen(stream_id=stream_id).SerializeToString(),
            timeout=5,
        )
        opened = market_data_pb2.FeedGrant()
        opened.ParseFromString(reply.data)
        assert (opened.granted_through, opened.applied_through) == (2, 0)
        assert not opened.errors

        async with BridgeClient(settings) as bridge:
            assert (await bridge.submit(market())).status is AckStatus.ACCEPTED

            # Applied (a grant every half window = every message here), then the check uses it.
            g = await send(1, "1000")
            assert (g.applied_through, g.granted_through, list(g.errors)) == (1, 3, [])
            refused = await bridge.submit(market())
            assert refused.status is AckStatus.REJECTED
            assert refused.reason is RejectReason.RISK_LIMIT, refused

            # Out of order, and beyond credit: refused whole, the price unchanged.
            g = await send(3, "190")
            assert [(e.field, e.rule) for e in g.errors] == [("sequence", "in_order")]
            g = await send(9, "190")
            assert [(e.field, e.rule) for e in g.errors] == [("sequence", "credit")]
            assert (g.applied_through, g.granted_through) == (1, 3)
            assert (await bridge.submit(market())).reason is RejectReason.RISK_LIMIT

            # An unknown symbol is reported; the next message applies.
            g = await send(2, "190", symbol="NOPE")
            assert [(e.field, e.rule) for e in g.errors] == [
                ("reference_prices[0].symbol", "known_symbol")
            ]
            g = await send(3, "190")
            assert (g.applied_through, g.granted_through) == (3, 5)
            assert (await bridge.submit(market())).status is AckStatus.ACCEPTED
    finally:
        await nc.close()
        code = engine.stop()
    assert code == 0, engine.log_tail()
