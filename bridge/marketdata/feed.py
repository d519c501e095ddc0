"""``MarketDataFeed``: the engine's L2 books of a set of symbols, as an async iterator.

::

    async with bridge.market_data(["AAPL", "MSFT"]) as feed:
        async for event in feed:          # Resynced first, then BookUpdate / Conflated / Gap ...
            top = event.book.best_bid if not isinstance(event, Gap) else None
        feed.book("AAPL")                 # the latest book, at any time

Recovery, exchange style (``bridge.marketdata.sync``): the feed subscribes to each symbol's
updates (``md_update``) first, then requests its snapshot (``md_snapshot``, request-reply to
the engines), drops the buffered updates at or below the snapshot's sequence and applies the
rest. A sequence hole, a new engine session, a message the subscription lost (nats-py's slow
consumer error) or a reconnect yields a ``Gap``, a new snapshot is taken and ``Resynced``
follows: an update is never applied across a gap. A snapshot request that fails is retried
with the client's backoff for as long as the feed is open.

Slow readers: the subscription callbacks (the reader task) apply every message to the books as
it arrives, whatever the consumer does; what the consumer has not read yet is conflated per
symbol (``bridge.marketdata.conflation``: at most five events per symbol; consecutive updates
become one ``Conflated`` with the latest book and how many were merged). Memory is bounded by
the books, ``subscription_capacity`` messages per subscription (nats-py's pending limit) and
as many buffered updates per resyncing symbol. If the callbacks themselves fall behind (the
event loop starved) and nats-py drops a message, that is a ``Gap`` (reason "slow_consumer")
and a resync, never a silent loss. The engine never waits for a reader: it publishes with
core NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from bridge import contract
from bridge._connection import ConnectionEvent
from bridge._subjects import check_token
from bridge.errors import BridgeError, FieldIssue, MarketDataError
from bridge.logs import get_logger
from bridge.marketdata.book import BookView, snapshot_from_proto, update_from_proto
from bridge.marketdata.conflation import Delivery
from bridge.marketdata.events import Gap, MarketDataEvent, Resynced
from bridge.marketdata.sync import GapFound, Outcome, SymbolSync
from bridge.retry import backoff_delay
from bridge.transport import ServiceError, Subscription
from bridge.v1 import market_data_pb2

if TYPE_CHECKING:
    from bridge._connection import Connection

log = get_logger("bridge.marketdata")

_SYMBOL = re.compile(contract.SYMBOL_PATTERN)
# Failed snapshot answers that do not continue the buffer are re-asked at once this many times,
# then with the client's backoff.
_QUICK_RETRIES = 3


@dataclass(slots=True)
class FeedStats:
    """What a feed did so far (all symbols)."""

    applied: int = 0  # updates applied to a live book
    stale: int = 0  # updates at or below the book's sequence, ignored
    gaps: int = 0  # times a live book stopped being live
    resyncs: int = 0  # snapshots that made a book live (the first one of each symbol too)
    snapshot_requests: int = 0
    slow_consumer_drops: int = 0  # messages nats-py dropped (subscription buffer full)
    injected_losses: int = 0  # messages discarded by ``inject_loss``
    undecodable: int = 0


class MarketDataFeed:
    """An open market-data feed of some symbols; iterate it with ``async for``."""

    def __init__(
        self, conn: Connection, symbols: Sequence[str], *, open_timeout: float | None = None
    ) -> None:
        if isinstance(symbols, str) or not symbols:
            raise BridgeError("market_data() takes a non-empty list of symbols")
        for symbol in symbols:
            check_token(symbol, "symbol", _SYMBOL, "market data request")
        self._conn = conn
        self.symbols = tuple(dict.fromkeys(symbols))
        s = conn.settings
        self._capacity = s.subscription_capacity
        self._request_timeout = s.request_timeout_ms / 1000
        self._open_timeout = (
            open_timeout if open_timeout is not None else s.order_retry_deadline_ms / 1000
        )
        self._syncs = {sym: SymbolSync(sym, self._capacity) for sym in self.symbols}
        self._by_subject = {contract.md_update(sym): sym for sym in self.symbols}
        self._delivery = Delivery()
        self._ready = asyncio.Event()  # something to hand out, or the feed ended
        self._subs: list[Subscription] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._first: dict[str, asyncio.Future[None]] = {}
        self._lose: dict[str, int] = {}
        self._removers: list[object] = []
        self._open = False
        self.stats = FeedStats()

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        transport = self._conn.open()
        loop = asyncio.get_running_loop()
        self._open = True
        self._first = {sym: loop.create_future() for sym in self.symbols}
        try:
            self._removers.append(self._conn.on_slow_consumer(self._on_slow_consumer))
            self._removers.append(self._conn.add_listener(self._on_connection_event))
            for subject in self._by_subject:  # updates first: buffered until the snapshot
                sub = await transport.subscribe(
                    subject, cb=self._on_message, pending_msgs_limit=self._capacity
                )
                self._subs.append(sub)
            for sym in self.symbols:
                self._resync(sym)
            async with asyncio.timeout(self._open_timeout):
                await asyncio.gather(*self._first.values())
        except TimeoutError:
            missing = [sym for sym in self.symbols if not self._syncs[sym].live]
            await self._close()
            raise MarketDataError(
                f"no market-data snapshot of {', '.join(missing)} within "
                f"{self._open_timeout:.1f}s (is an engine running?)",
                symbol=missing[0],
            ) from None
        except BaseException:
            await self._close()
            raise
        log.info("bridge.market_data_opened", symbols=list(self.symbols))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._ready.set()
        for remove in self._removers:
            assert callable(remove)
            with contextlib.suppress(ValueError):
                remove()
        self._removers.clear()
        for task in self._tasks.values():
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error, ValueError):
                await sub.unsubscribe()
        self._subs.clear()

    # -- what the caller reads --------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> MarketDataEvent:
        """The next event; waits for one. Ends when the feed is closed."""
        while True:
            event = self._delivery.pop()
            if event is not None:
                return event
            if not self._open:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    def next_nowait(self) -> MarketDataEvent | None:
        """The next event if one waits, else None."""
        return self._delivery.pop()

    def book(self, symbol: str) -> BookView:
        """``symbol``'s book as applied so far (live or, during a resync, the last live one)."""
        return self._syncs[symbol].book.view()

    def is_live(self, symbol: str) -> bool:
        return self._syncs[symbol].live

    @property
    def pending_events(self) -> int:
        """Events waiting for the reader (at most five per symbol)."""
        return len(self._delivery)

    @property
    def merged(self) -> int:
        """Updates handed out inside ``Conflated`` events so far."""
        return self._delivery.merged

    @property
    def buffered_messages(self) -> int:
        """Messages held in this process and not yet applied: the subscriptions' pending
        messages plus the updates resyncing symbols keep for their snapshot."""
        held = sum(sub.pending_msgs for sub in self._subs)
        return held + sum(sync.buffered for sync in self._syncs.values())

    def inject_loss(self, symbol: str, count: int = 1) -> None:
        """Discard the next ``count`` updates of ``symbol`` as if the network lost them: for
        tests and drills of the gap recovery."""
        self._lose[symbol] = self._lose.get(symbol, 0) + count

    # -- the reader: subscription callbacks -------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        symbol = self._by_subject.get(msg.subject)
        if symbol is None or not self._open:
            return
        if self._lose.get(symbol):
            self._lose[symbol] -= 1
            self.stats.injected_losses += 1
            return
        try:
            update = update_from_proto(market_data_pb2.MarketDataUpdate.FromString(msg.data))
        except (DecodeError, ValueError) as exc:
            self.stats.undecodable += 1
            log.error("bridge.market_data_undecodable", symbol=symbol, error=repr(exc))
            self._invalidate(symbol, "undecodable")
            return
        sync = self._syncs[symbol]
        outcome = sync.on_update(update)
        if outcome is Outcome.APPLIED:
            self.stats.applied += 1
            self._delivery.update(sync.book, update)
            self._ready.set()
        elif outcome is Outcome.STALE:
            self.stats.stale += 1
        elif isinstance(outcome, GapFound):
            self._gap(symbol, outcome)

    def _on_slow_consumer(self, subject: str) -> bool:
        symbol = self._by_subject.get(subject)
        if symbol is None or not self._open:
            return False
        self.stats.slow_consumer_drops += 1
        self._invalidate(symbol, "slow_consumer")
        return True

    async def _on_connection_event(self, event: ConnectionEvent) -> None:
        if event is ConnectionEvent.RECONNECTED and self._open:
            for symbol in self.symbols:  # messages may have been lost while down
                self._invalidate(symbol, "reconnect")

    def _invalidate(self, symbol: str, reason: str) -> None:
        found = self._syncs[symbol].invalidate(reason)
        if found is not None:
            self._gap(symbol, found)
        else:
            self._resync(symbol)

    def _gap(self, symbol: str, found: GapFound) -> None:
        self.stats.gaps += 1
        log.warning(
            "bridge.market_data_gap",
            symbol=symbol,
            expected=found.expected,
            got=found.got,
            reason=found.reason,
        )
        self._delivery.gap(Gap(symbol, found.expected, found.got, found.reason))
        self._ready.set()
        self._resync(symbol)

    # -- snapshots --------------------------------------------------------------------------

    def _resync(self, symbol: str) -> None:
        """Take a snapshot of ``symbol`` unless one is under way (a loss since it was asked
        for makes the sync refuse its answer, and it asks again)."""
        task = self._tasks.get(symbol)
        if (task is None or task.done()) and self._open:
            self._tasks[symbol] = asyncio.get_running_loop().create_task(
                self._snapshot_loop(symbol), name=f"md-snapshot-{symbol}"
            )

    async def _snapshot_loop(self, symbol: str) -> None:
        sync = self._syncs[symbol]
        request = market_data_pb2.MarketDataSnapshotRequest(symbol=symbol).SerializeToString()
        subject = contract.md_snapshot(symbol)
        failures = 0
        while self._open and not sync.live:
            if failures >= _QUICK_RETRIES:
                await asyncio.sleep(backoff_delay(self._conn.settings, failures - _QUICK_RETRIES))
            try:
                transport = self._conn.open()
                sync.snapshot_requested()
                self.stats.snapshot_requests += 1
                data = await transport.request(
                    subject, request, timeout=self._request_timeout, headers={}
                )
                answer = market_data_pb2.MarketDataSnapshot.FromString(data)
            except (nats.errors.Error, TimeoutError, ServiceError, DecodeError) as exc:
                failures = max(failures, _QUICK_RETRIES) + 1
                log.warning("bridge.market_data_snapshot_failed", symbol=symbol, error=repr(exc))
                continue
            except BridgeError as exc:  # the client closed (or a security violation ended it)
                self._fail_first(symbol, exc)
                return
            if answer.errors:
                issues = [FieldIssue(e.field, e.rule, e.message) for e in answer.errors]
                self._fail_first(
                    symbol,
                    MarketDataError(
                        f"the engine refused the snapshot of {symbol!r}: "
                        + "; ".join(str(i) for i in issues),
                        symbol=symbol,
                        errors=issues,
                    ),
                )
                log.error("bridge.market_data_refused", symbol=symbol, errors=len(issues))
                return
            recovered = sync.on_snapshot(snapshot_from_proto(answer))
            if recovered is None:
                failures += 1
                continue
            self.stats.resyncs += 1
            self._delivery.resynced(
                Resynced(
                    symbol,
                    recovered.sequence,
                    sync.book.view(),
                    recovered.replayed,
                    recovered.trades,
                )
            )
            self._ready.set()
            first = self._first.get(symbol)
            if first is not None and not first.done():
                first.set_result(None)
            log.info(
                "bridge.market_data_resynced",
                symbol=symbol,
                sequence=recovered.sequence,
                session=sync.book.session,
                replayed=recovered.replayed,
            )

    def _fail_first(self, symbol: str, exc: BaseException) -> None:
        first = self._first.get(symbol)
        if first is not None and not first.done():
            first.set_exception(exc)
