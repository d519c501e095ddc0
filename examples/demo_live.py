"""The demo's market data and runtime configuration: what moves while it trades.

* ``LiveBook``: a live top-of-book panel of one symbol fed by ``BridgeClient.market_data``
  while the demo's orders trade (best bid / ask with size, the last trade, updates applied,
  conflated and lost, the sequence). On a terminal it shares a ``rich.live.Live`` display with
  the demo's progress bars; piped, it prints at most one line a second, and only when the book
  moved. The feed's book is compared with a fresh snapshot once every order has its outcome
  and again at the end: they must be equal.
* ``config_change_tour``: one runtime configuration change taking effect, as the operator
  would do it with ``bridge config set`` (runbooks/kill-switch.md): the ``trading_state``
  document halts AAPL (signed with the operator's NKey, written to the ``bridge_config`` bucket),
  the engine answers ``ConfigApplied`` (the write -> applied time is measured here), the next
  AAPL order is REJECTED with ``TRADING_HALTED`` while a cancel still works and MSFT still
  trades, then AAPL is resumed and an order is accepted again. ACTIVE is left in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress
from rich.table import Table

from bridge import (
    AckStatus,
    BookUpdate,
    BookView,
    BridgeClient,
    Conflated,
    Gap,
    Level,
    MarketDataFeed,
    Order,
    OrderAck,
    OrderType,
    RejectReason,
    Resynced,
    Side,
    TimeInForce,
    TradePrint,
    contract,
)
from bridge.marketdata import MarketDataEvent
from bridge.runtime_config import documents, store
from bridge.security.signing import Signer
from bridge.v1 import market_data_pb2
from bridge_dev.engine import client_settings
from bridge_dev.server import ServerHandle, connect_as
from bridge_dev.signing import dev_signer

PRINT_EVERY_S = 1.0
"""Piped output: at most one book line per this many seconds."""
REFRESH_PER_SECOND = 8
"""Terminal: how often the live panel is redrawn."""
CATCH_UP_S = 5.0
"""How long the feed may take to reach a fresh snapshot's sequence at the end."""
APPLIED_WAIT_S = 5.0
"""How long to wait for the engine's ConfigApplied of one revision."""


CENTS = Decimal("0.01")


def _qty(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _px(value: Decimal) -> str:
    """A price without the wire's trailing zeros, at least to the cent."""
    value = value.normalize()
    exponent = value.as_tuple().exponent
    return format(
        value.quantize(CENTS) if isinstance(exponent, int) and exponent > -2 else value, "f"
    )


def _level(level: Level | None, orders: bool = False) -> str:
    if level is None:
        return "-"
    count = f" ({level.orders} orders)" if orders else ""
    return f"{_qty(level.quantity)} @ {_px(level.price)}{count}"


def _trade(trade: TradePrint | None) -> str:
    if trade is None:
        return "-"
    side = f" {trade.aggressor_side.value}" if trade.aggressor_side is not None else ""
    return f"{_qty(trade.quantity)} @ {_px(trade.price)}{side}"


class LiveBook:
    """``async with LiveBook(bridge, "AAPL", console, progress) as book:`` shows ``progress``
    and the symbol's live top of book while the block runs; on a clean exit it compares the
    feed's book with a fresh snapshot (``book.matched``), as ``await book.check(when)`` does
    at any time."""

    def __init__(
        self, bridge: BridgeClient, symbol: str, console: Console, progress: Progress
    ) -> None:
        self.bridge, self.symbol, self.console, self.progress = bridge, symbol, console, progress
        self.read = 0  # BookUpdate events read one by one
        self.conflated = 0  # Conflated events
        self.merged = 0  # updates they merged
        self.gaps = 0
        self.resyncs = 0
        self.last_trade: TradePrint | None = None
        self.matched = False
        self.snapshot: BookView | None = None  # the fresh snapshot of the last check
        self.verdicts: list[str] = []
        self._feed: MarketDataFeed | None = None
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()

    # -- what is shown ------------------------------------------------------------------------

    @property
    def view(self) -> BookView:
        assert self._feed is not None
        return self._feed.book(self.symbol)

    @property
    def applied(self) -> int:
        return self._feed.stats.applied if self._feed is not None else 0

    def counters(self) -> str:
        return (
            f"{self.applied} updates applied ({self.read} read one by one, {self.merged} "
            f"merged into {self.conflated} conflated events), {self.gaps} gaps, "
            f"snapshots taken: {self.resyncs}"
        )

    def line(self) -> str:
        """The book in one line (piped output)."""
        v = self.view
        return (
            f"{self.symbol} seq {v.sequence}: bid {_level(v.best_bid)} | "
            f"ask {_level(v.best_ask)} | last {_trade(self.last_trade)} | "
            f"applied {self.applied}, conflated {self.conflated} (merged {self.merged}), "
            f"gaps {self.gaps}"
        )

    def __rich__(self) -> RenderableType:
        v = self.view
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("bid", f"[green]{_level(v.best_bid, orders=True)}[/green]")
        grid.add_row("ask", f"[red]{_level(v.best_ask, orders=True)}[/red]")
        if v.best_bid is not None and v.best_ask is not None:
            grid.add_row("spread", _px(v.best_ask.price - v.best_bid.price))
        grid.add_row("last trade", _trade(self.last_trade))
        grid.add_row("sequence", f"{v.sequence} (session {v.session})")
        grid.add_row("updates", f"{self.applied} applied ({self.read} read one by one)")
        grid.add_row("conflated", f"{self.conflated} events merging {self.merged} updates")
        grid.add_row("gaps", f"{self.gaps} ({self.resyncs} snapshots taken)")
        title = f"{self.symbol} top of book, live (BridgeClient.market_data)"
        return Panel(grid, title=title, title_align="left", expand=False)

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._feed = await self._stack.enter_async_context(self.bridge.market_data([self.symbol]))
        self._tasks.append(asyncio.create_task(self._read(self._feed)))
        if self.console.is_interactive:
            live = Live(
                Group(self.progress, self),
                console=self.console,
                refresh_per_second=REFRESH_PER_SECOND,
            )
            self._stack.enter_context(live)
        else:
            self._stack.enter_context(self.progress)
            self._tasks.append(asyncio.create_task(self._print_lines()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.check("at the end")
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._stack.aclose()
        if exc_type is None and not self.console.is_interactive:
            self.console.print(self.line(), highlight=False, soft_wrap=True)
        for verdict in self.verdicts:
            self.console.print(verdict, highlight=False)
        if self._feed is not None:
            self.console.print(f"{self.symbol} feed: {self.counters()}", highlight=False)

    async def _read(self, feed: MarketDataFeed) -> None:
        async for event in feed:
            self._count(event)
            self._changed.set()

    def _count(self, event: MarketDataEvent) -> None:
        trades: tuple[TradePrint, ...] = ()
        if isinstance(event, BookUpdate):
            self.read += 1
            trades = event.trades
        elif isinstance(event, Conflated):
            self.conflated += 1
            self.merged += event.merged
            trades = event.trades
        elif isinstance(event, Gap):
            self.gaps += event.gaps
        elif isinstance(event, Resynced):
            self.resyncs += 1
            trades = event.trades
        if trades:
            self.last_trade = trades[-1]

    async def _print_lines(self) -> None:
        printed = -1
        while True:
            await asyncio.sleep(PRINT_EVERY_S)
            if self.view.sequence != printed:
                printed = self.view.sequence
                self.console.print(self.line(), highlight=False, soft_wrap=True)

    # -- the final check ----------------------------------------------------------------------

    async def check(self, when: str) -> bool:
        """Compare the feed's book with a fresh snapshot now (the verdict is printed when the
        block ends, below the live display); ``matched`` stays True while every check passed."""
        equal = await self._compare()
        self.matched = equal and (self.matched or not self.verdicts)
        v, snap = self.view, self.snapshot
        if equal:
            self.verdicts.append(
                f"{self.symbol} book check ({when}): the feed's book at sequence {v.sequence} "
                f"EQUALS a fresh snapshot ({len(v.bids)} bid / {len(v.asks)} ask levels, best "
                f"{_level(v.best_bid)} / {_level(v.best_ask)})"
            )
        else:
            seen = f"snapshot at sequence {snap.sequence}" if snap is not None else "no snapshot"
            self.verdicts.append(
                f"[red]{self.symbol} book check ({when}) FAILED: the feed's book at sequence "
                f"{v.sequence} differs from a fresh {seen}[/red]"
            )
        return equal

    async def _compare(self) -> bool:
        """Open a second feed (its first book is a fresh snapshot), let this feed reach the
        snapshot's sequence and compare the two books."""
        for _ in range(3):  # the book moved between the snapshot and the catch-up: again
            async with self.bridge.market_data([self.symbol]) as fresh:
                self.snapshot = fresh.book(self.symbol)
            if not await self._reached(self.snapshot.sequence):
                return False
            if self.view.sequence == self.snapshot.sequence:
                return self.view == self.snapshot
        return False

    async def _reached(self, sequence: int) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_S
        while self.view.sequence < sequence:
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True


# -- one runtime configuration change -----------------------------------------------------------

KEY = contract.CONFIG_TRADING_STATE_KEY
HALT_AAPL = {
    "version": 1,
    "state": "ACTIVE",
    "symbols": {"AAPL": "HALTED"},
    "reason": "demo: kill switch on AAPL",
}
RESUME = {"version": 1, "state": "ACTIVE", "reason": "demo: AAPL resumed"}


class _Operator:
    """The operator's connection: signed writes to the config bucket, the engine's answers."""

    def __init__(self, nc: NatsConnection, signer: Signer, console: Console) -> None:
        self.nc, self.signer, self.console = nc, signer, console
        self.answers: asyncio.Queue[market_data_pb2.ConfigApplied] = asyncio.Queue()

    async def start(self) -> None:
        async def on_applied(msg: Msg) -> None:
            await self.answers.put(market_data_pb2.ConfigApplied.FromString(msg.data))

        await self.nc.subscribe(contract.config_applied("engine"), cb=on_applied)
        await self.nc.flush()

    async def set(self, key: str, document: dict[str, Any]) -> bool:
        """Write ``document`` signed, wait for the engine's ConfigApplied; True if applied."""
        body = json.dumps(document).encode()
        before = await store.get(self.nc, key)
        start = time.perf_counter()
        revision = await store.put(self.nc, key, body, self.signer)
        changes = documents.diff_text(before.document if before else None, document)
        self.console.print(
            f"operator: {key} revision {revision} written, signed by {self.signer.public_key[:12]}"
            f"…: {'; '.join(changes) or '(no change)'}",
            highlight=False,
            markup=False,
        )
        try:
            async with asyncio.timeout(APPLIED_WAIT_S):
                while True:
                    answer = await self.answers.get()
                    if answer.document == key and answer.revision == revision:
                        break
        except TimeoutError:
            self.console.print(f"[red]  no ConfigApplied from the engine in {APPLIED_WAIT_S}s")
            return False
        took_ms = (time.perf_counter() - start) * 1000
        verdict = "applied" if answer.applied else "[red]REFUSED[/red]"
        self.console.print(
            f"  engine {answer.instance}: {verdict} revision {revision}, "
            f"[bold]{took_ms:.1f} ms[/bold] after the write (write -> ConfigApplied)"
        )
        for e in answer.errors:
            self.console.print(f"    {e.field}: {e.rule}: {e.message}", markup=False)
        return answer.applied


def _order(symbol: str, kind: str) -> Order:
    """A market IOC of 10, or (``kind`` "rest") a limit buy far below the book that rests."""
    common: dict[str, Any] = {
        "client_order_id": f"cfg-{uuid.uuid4().hex[:10]}",
        "account": "DEMO",
        "symbol": symbol,
        "side": Side.BUY,
        "quantity": Decimal(10),
    }
    if kind == "rest":
        price = Decimal("150.00")
        return Order(
            **common, order_type=OrderType.LIMIT, limit_price=price, time_in_force=TimeInForce.GTC
        )
    return Order(**common, order_type=OrderType.MARKET, time_in_force=TimeInForce.IOC)


def _check(console: Console, what: str, ack: OrderAck, ok: bool) -> bool:
    status = ack.status.value
    if ack.status is AckStatus.REJECTED:
        status += f" ({ack.reason.value}: {ack.text.strip() or '-'})"
    elif ack.order_status is not None:
        status += f" ({ack.order_status.value})"
    mark = "[green]as expected[/green]" if ok else "[red]NOT as expected[/red]"
    console.print(f"  {what}: {escape(status)} — {mark}", highlight=False)
    return ok


async def config_change_tour(handle: ServerHandle, console: Console) -> bool:
    """Halt AAPL, show it taking effect, resume it; True when every step behaved."""
    console.rule("[bold]Runtime configuration: the kill switch on AAPL (no restart)")
    nc = await connect_as(handle.url, handle.creds, "operator")
    op = _Operator(nc, dev_signer(handle.creds, "operator"), console)
    ok: list[bool] = []
    halted = False
    try:
        await op.start()
        async with BridgeClient(client_settings(handle, request_timeout_ms=5000)) as bridge:
            resting = await bridge.submit(_order("AAPL", "rest"))
            ok.append(_check(console, "AAPL limit buy 10 @ 150 (rests)", resting, resting.accepted))
            halted = True
            ok.append(await op.set(KEY, HALT_AAPL))
            ack = await bridge.submit(_order("AAPL", "market"))
            expected = (AckStatus.REJECTED, RejectReason.TRADING_HALTED)
            ok.append(
                _check(console, "AAPL market buy 10", ack, (ack.status, ack.reason) == expected)
            )
            ack = await bridge.cancel("DEMO", resting.client_order_id)
            ok.append(_check(console, "cancel of the resting AAPL order", ack, ack.accepted))
            ack = await bridge.submit(_order("MSFT", "market"))
            ok.append(_check(console, "MSFT market buy 10", ack, ack.accepted))
            ok.append(await op.set(KEY, RESUME))
            halted = False
            ack = await bridge.submit(_order("AAPL", "market"))
            ok.append(_check(console, "AAPL market buy 10", ack, ack.accepted))
    finally:
        if halted:  # something failed half-way: leave trading ACTIVE all the same
            with contextlib.suppress(Exception):
                await store.put(nc, KEY, json.dumps(RESUME).encode(), op.signer)
        final = await store.get(nc, KEY)
        history = await store.history(nc, KEY)
        await nc.close()
    state = final.document if final is not None else None
    active = state is not None and state.get("state") == "ACTIVE" and not state.get("symbols")
    ok.append(active)
    console.print(
        f"{KEY} in force now: {json.dumps(state, sort_keys=True) if state else '-'} "
        f"(revision {final.revision if final else '-'}; the audit trail, "
        f"`bridge config history {KEY}`, keeps {len(history)} revisions)",
        highlight=False,
        markup=False,
    )
    if not all(ok):
        console.print("[red]the configuration change did not behave as expected[/red]")
    return all(ok)
