"""The client's market-data feed and input stream over a real nats-server, against a stand-in
publisher (``tests.md_fake_venue``) that speaks the engine's protocol: recovery, gaps, slow
readers, nats-py's slow-consumer drops and credit. The real engine: test_market_data.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg

from bridge import (
    BridgeClient,
    BridgeSettings,
    MarketDataError,
    NoCreditError,
    ReferencePrice,
    Resynced,
    contract,
)
from bridge.v1 import market_data_pb2
from bridge_dev.engine import client_settings
from bridge_dev.server import ServerHandle, connect_as
from tests.integration.md_helpers import levels, read_until
from tests.md_fake_venue import FakeVenue, FakeVenueServer

pytestmark = pytest.mark.integration

SYMBOLS = ["AAPL", "MSFT"]


@pytest.fixture
async def venue(nats_server: ServerHandle) -> AsyncIterator[FakeVenueServer]:
    nc = await connect_as(nats_server.url, nats_server.creds, "engine")
    server = FakeVenueServer(nc, FakeVenue(SYMBOLS, seed=21))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await nc.close()


def _targets(venue: FakeVenueServer, symbols: list[str] = SYMBOLS) -> dict[str, int]:
    return {s: venue.venue.books[s].sequence for s in symbols}


def _exact(feed_book: object, venue: FakeVenueServer, symbol: str) -> bool:
    return levels(feed_book) == venue.venue.expected(symbol)  # type: ignore[arg-type]


async def test_snapshot_then_updates_reproduce_the_book(
    venue: FakeVenueServer, settings: BridgeSettings
) -> None:
    """A book with history, then updates while the feed opens and after: the feed's book is
    the venue's exactly, every update applied once, none across a gap."""
    await venue.publish("AAPL", 300)
    await venue.publish("MSFT", 100)
    async with BridgeClient(settings) as bridge, bridge.market_data(SYMBOLS) as feed:
        for _ in range(20):
            await venue.publish("AAPL", 50)
            await venue.publish("MSFT", 50)
        seen = await read_until(feed, _targets(venue))
        for symbol in SYMBOLS:
            assert _exact(feed.book(symbol), venue, symbol)
            assert _exact(seen.books[symbol], venue, symbol)
        assert seen.kinds["Resynced"] == 2
        assert seen.gaps == []
        assert feed.stats.applied == 2000
        assert feed.stats.resyncs == 2


async def test_unknown_symbol_refuses_to_open(
    venue: FakeVenueServer, settings: BridgeSettings
) -> None:
    async with BridgeClient(settings) as bridge:
        with pytest.raises(MarketDataError) as caught:
            async with bridge.market_data(["AAPL", "NOPE"]):
                pass
    assert caught.value.symbol == "NOPE"
    assert caught.value.errors[0].rule == "unknown_symbol"


async def test_no_engine_fails_the_open_within_its_timeout(settings: BridgeSettings) -> None:
    async with BridgeClient(settings) as bridge:
        with pytest.raises(MarketDataError, match="no market-data snapshot"):
            async with bridge.market_data(["AAPL"], open_timeout=0.5):
                pass


async def test_a_lost_update_is_a_gap_then_a_resync_to_the_exact_book(
    venue: FakeVenueServer, settings: BridgeSettings
) -> None:
    async with BridgeClient(settings) as bridge, bridge.market_data(["AAPL"]) as feed:
        await venue.publish("AAPL", 10)
        await read_until(feed, _targets(venue, ["AAPL"]))
        feed.inject_loss("AAPL")
        requests = venue.snapshot_requests
        await venue.publish("AAPL", 30)
        seen = await read_until(feed, _targets(venue, ["AAPL"]), keep=True)
        assert [g.reason for g in seen.gaps] == ["sequence"]
        gap = seen.gaps[0]
        assert (gap.expected, gap.got) == (11, 12)
        resynced = [e for e in seen.events if isinstance(e, Resynced)]
        assert len(resynced) == 1
        assert seen.events.index(gap) < seen.events.index(resynced[0])
        assert venue.snapshot_requests > requests
        assert _exact(feed.book("AAPL"), venue, "AAPL")
        assert feed.stats.injected_losses == 1


async def test_a_reader_that_does_not_read_gets_the_latest_book_conflated(
    venue: FakeVenueServer, settings: BridgeSettings
) -> None:
    """20,000 updates while the reader awaits something else: the feed applies them all, holds
    a bounded number of events, and the reader then gets the latest book with the count."""
    async with BridgeClient(settings) as bridge, bridge.market_data(SYMBOLS) as feed:
        high_water = 0
        for _ in range(100):
            await venue.publish("AAPL", 100)
            await venue.publish("MSFT", 100)
            high_water = max(high_water, feed.pending_events)
        seen = await read_until(feed, _targets(venue))
        assert high_water <= 5 * len(SYMBOLS)
        assert seen.kinds["Conflated"] >= 1
        assert seen.merged + seen.kinds["BookUpdate"] == feed.stats.applied
        for symbol in SYMBOLS:
            assert _exact(seen.books[symbol], venue, symbol)


class _VenueThread:
    """The fake venue on its own event loop and thread, so the client's loop can be held still
    while it publishes a burst (as a busy orchestrator would be)."""

    def __init__(self, handle: ServerHandle) -> None:
        self.handle = handle
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: FakeVenueServer | None = None
        self.nc: NatsConnection | None = None

    def run(self, coro: object, timeout: float = 60) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def __enter__(self) -> _VenueThread:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self.nc = await connect_as(self.handle.url, self.handle.creds, "engine")
        self.server = FakeVenueServer(self.nc, FakeVenue(["AAPL"], seed=4))
        await self.server.start()

    async def burst(self, count: int, done: threading.Event) -> None:
        assert self.server is not None
        assert self.nc is not None
        await self.server.publish("AAPL", count)
        await self.nc.flush()
        done.set()

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self.server is not None
            assert self.nc is not None
            await self.server.stop()
            await self.nc.close()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def test_messages_nats_py_drops_become_a_gap_and_a_resync(
    nats_server: ServerHandle,
) -> None:
    """The client's event loop held while 5,000 updates arrive: nats-py's subscription buffer
    (subscription_capacity = 16) overflows and drops messages. The feed says so (Gap, reason
    slow_consumer), resyncs and ends with the exact book; nothing is lost silently."""
    settings = client_settings(nats_server, subscription_capacity=16)
    with _VenueThread(nats_server) as venue:
        assert venue.server is not None
        async with BridgeClient(settings) as bridge, bridge.market_data(["AAPL"]) as feed:
            done = threading.Event()
            asyncio.run_coroutine_threadsafe(venue.burst(5000, done), venue.loop)
            assert done.wait(timeout=60)  # blocks this loop on purpose: the burst piles up
            target = {"AAPL": venue.server.venue.books["AAPL"].sequence}
            seen = await read_until(feed, target)
            assert feed.stats.slow_consumer_drops > 0
            assert "slow_consumer" in {g.reason for g in seen.gaps}
            assert levels(feed.book("AAPL")) == venue.server.venue.expected("AAPL")
            assert feed.buffered_messages <= 16


# -- input streams ---------------------------------------------------------------------------


class _Granter:
    """Stands in for the engine's side of input streams: grants ``window`` at open, then only
    when told to; records what it received."""

    def __init__(self, nc: NatsConnection, window: int) -> None:
        self.nc = nc
        self.window = window
        self.received: list[market_data_pb2.FeedMessage] = []
        self.reply = ""
        self.arrived = asyncio.Event()

    async def start(self) -> None:
        await self.nc.subscribe(contract.FEED_OPEN, cb=self._open)
        await self.nc.subscribe(contract.feed_data("*"), cb=self._data)
        await self.nc.flush()

    async def _open(self, msg: Msg) -> None:
        opening = market_data_pb2.FeedOpen.FromString(msg.data)
        grant = market_data_pb2.FeedGrant(stream_id=opening.stream_id, granted_through=self.window)
        await self.nc.publish(msg.reply, grant.SerializeToString())

    async def _data(self, msg: Msg) -> None:
        self.received.append(market_data_pb2.FeedMessage.FromString(msg.data))
        self.reply = msg.reply
        self.arrived.set()

    async def grant(self, stream_id: str, through: int) -> None:
        applied = self.received[-1].sequence if self.received else 0
        grant = market_data_pb2.FeedGrant(
            stream_id=stream_id, granted_through=through, applied_through=applied
        )
        await self.nc.publish(self.reply, grant.SerializeToString())


async def test_input_stream_blocks_without_credit_and_resumes_on_a_grant(
    nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    nc = await connect_as(nats_server.url, nats_server.creds, "engine")
    try:
        granter = _Granter(nc, window=3)
        await granter.start()
        price = [ReferencePrice("AAPL", Decimal("101.25"))]
        async with BridgeClient(settings) as bridge, bridge.market_inputs() as inputs:
            assert inputs.credit == 3
            assert [await inputs.send(price) for _ in range(3)] == [1, 2, 3]
            with pytest.raises(NoCreditError) as caught:
                await inputs.try_send(price)
            assert caught.value.granted_through == 3
            with pytest.raises(NoCreditError):
                await inputs.send(price, timeout=0.2)
            waiting = asyncio.create_task(inputs.send(price, timeout=30))
            while len(granter.received) < 3:
                granter.arrived.clear()
                await granter.arrived.wait()
            assert not waiting.done()
            await granter.grant(inputs.stream_id, 6)
            assert await waiting == 4
            assert inputs.applied_through == 3
        assert [m.sequence for m in granter.received[:3]] == [1, 2, 3]
        assert granter.received[0].reference_prices[0].symbol == "AAPL"
    finally:
        await nc.close()


async def test_input_stream_without_an_engine_is_engine_unavailable(
    settings: BridgeSettings,
) -> None:
    from bridge import EngineUnavailableError

    async with BridgeClient(settings) as bridge:
        with pytest.raises(EngineUnavailableError):
            async with bridge.market_inputs():
                pass
