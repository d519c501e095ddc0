"""The main job: start nats-server and the engine, send real orders through every pattern.

Run with ``./dev demo`` (which installs everything first). It

1. starts a local nats-server with the project's TLS + NKey configuration and provisions the
   ORDERS / EXECUTIONS streams, the engine's consumer and the order-state KV bucket;
2. starts the release-built engine and the security sentinel;
3. subscribes to execution reports (pub-sub), sends urgent market orders one by one through
   synchronous request-reply and a mixed flow of limit/market/IOC/FOK orders in batches
   through the JetStream queue, cancels what is still resting, and queries a status, while a
   live top of book of AAPL (``BridgeClient.market_data``, ``demo_live.py``) shows the venue
   trade; at the end the feed's book must equal a fresh snapshot;
4. prints counts (acked, rejected, filled, partially filled, ...) and latency percentiles of
   order->ack, order->first fill and order->final report;
5. changes the runtime configuration once (``demo_live.py``): the operator halts AAPL with a
   signed ``trading_state`` document, the engine applies it (write -> applied time printed), an
   AAPL order is refused (TRADING_HALTED) while a cancel and MSFT still work, AAPL resumes;
6. shows what an operator sees of that run (``demo_observability.py``): the engine's
   ``/readyz`` and ``/metrics``, this process's client metrics, an orchestrator's ``/readyz``
   served by ``bridge.observability.serve``, and ``nats micro stats bridge-engine``;
7. tours the security model (``demo_security.py``): an identity trading another desk's account
   and a forged signature are refused, the sentinel's alerts are read back from ALERTS, and the
   execution journal's hash chain is verified; then stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from demo_live import LiveBook, config_change_tour
from demo_observability import observability_tour
from demo_security import security_tour
from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from bridge import (
    BridgeClient,
    ExecType,
    ExecutionReport,
    Order,
    OrderStatus,
    OrderType,
    ReportStream,
    Side,
    TimeInForce,
)
from bridge.logs import configure_logging
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.pki import default_root, ensure_dev_credentials
from bridge_dev.sentinel import SentinelProcess
from bridge_dev.server import LocalNatsServer, ServerHandle, _provision_as_operator

console = Console(stderr=False)
ACCOUNT = "DEMO"
MIDS = {"AAPL": Decimal("190.00"), "MSFT": Decimal("420.00")}
TICK = {"AAPL": Decimal("0.01"), "MSFT": Decimal("0.05")}
BOOK_SYMBOL = "AAPL"  # the live top of book shown while the orders trade


@dataclass
class Tracker:
    """Send times and report arrivals per client order id; the demo's own bookkeeping."""

    sent_ns: dict[str, int] = field(default_factory=dict)
    path: dict[str, str] = field(default_factory=dict)
    status: dict[str, OrderStatus] = field(default_factory=dict)
    cum: dict[str, Decimal] = field(default_factory=dict)
    qty: dict[str, Decimal] = field(default_factory=dict)
    exec_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    ack_us: dict[str, HdrHistogram] = field(default_factory=dict)
    fill_us: dict[str, HdrHistogram] = field(default_factory=dict)
    final_us: dict[str, HdrHistogram] = field(default_factory=dict)
    first_fill_seen: set[str] = field(default_factory=set)
    with_outcome: set[str] = field(default_factory=set)
    final_event: asyncio.Event = field(default_factory=asyncio.Event)
    expected_final: int = 0

    def hist(self, table: dict[str, HdrHistogram], path: str) -> HdrHistogram:
        return table.setdefault(path, HdrHistogram(1, 60_000_000, 3))

    def sent(self, order: Order, path: str) -> None:
        self.sent_ns[order.client_order_id] = time.perf_counter_ns()
        self.path[order.client_order_id] = path
        self.qty[order.client_order_id] = order.quantity

    def on_report(self, r: ExecutionReport, now_ns: int) -> None:
        if r.exec_id in self.exec_ids:
            self.duplicates += 1
            return
        self.exec_ids.add(r.exec_id)
        cid = r.client_order_id
        start = self.sent_ns.get(cid)
        path = self.path.get(cid, "?")
        elapsed_us = max(1, (now_ns - start) // 1000) if start else None
        if elapsed_us and r.exec_type in (ExecType.NEW, ExecType.REJECTED) and path == "queued":
            self.hist(self.ack_us, path).record_value(elapsed_us)
        if elapsed_us and r.exec_type is ExecType.TRADE and cid not in self.first_fill_seen:
            self.first_fill_seen.add(cid)
            self.hist(self.fill_us, path).record_value(elapsed_us)
        was_final = cid in self.status and self.status[cid].is_final
        self.status[cid] = r.order_status
        self.cum[cid] = r.cum_qty
        if r.is_final and not was_final and elapsed_us:
            self.hist(self.final_us, path).record_value(elapsed_us)
        self.with_outcome.add(cid)
        if self.settled() >= self.expected_final:
            self.final_event.set()

    def settled(self) -> int:
        """Orders with an outcome: final, or accepted and resting in the book."""
        return len(self.with_outcome)


def sync_orders(run: str, n: int, rng: random.Random) -> list[Order]:
    """Urgent market orders (request-reply); a few break risk limits or name unknown symbols."""
    out = []
    for i in range(n):
        symbol = rng.choice(list(MIDS))
        qty = Decimal(rng.randint(1, 120))
        if i % 50 == 7:
            qty = Decimal(6000)  # above max_order_qty: REJECTED by the engine's risk check
        if i % 50 == 23:
            symbol = "NOPE"  # unknown symbol: REJECTED
        out.append(
            Order(
                client_order_id=f"{run}-s{i}",
                account=ACCOUNT,
                symbol=symbol,
                side=rng.choice([Side.BUY, Side.SELL]),
                order_type=OrderType.MARKET,
                quantity=qty,
                time_in_force=TimeInForce.IOC,
                tags={"demo": "sync"},
            )
        )
    return out


def queued_orders(run: str, n: int, rng: random.Random) -> list[Order]:
    """A mixed flow: resting and crossing limit orders, market, IOC and FOK orders."""
    out = []
    for i in range(n):
        symbol = rng.choice(list(MIDS))
        side = rng.choice([Side.BUY, Side.SELL])
        mid, tick = MIDS[symbol], TICK[symbol]
        sign = 1 if side is Side.BUY else -1
        kind = rng.random()
        qty = Decimal(rng.randint(1, 300))
        common = {
            "client_order_id": f"{run}-q{i}",
            "account": ACCOUNT,
            "symbol": symbol,
            "side": side,
            "tags": {"demo": "queued"},
        }
        if kind < 0.40:  # limit GTC around the mid: some cross, some rest and are hit later
            offset = tick * rng.randint(-4, 6) * sign
            order = Order(
                **common,
                order_type=OrderType.LIMIT,
                quantity=qty,
                limit_price=mid + offset,
                time_in_force=TimeInForce.GTC,
            )
        elif kind < 0.70:
            order = Order(
                **common, order_type=OrderType.MARKET, quantity=qty, time_in_force=TimeInForce.IOC
            )
        elif kind < 0.85:  # IOC limited to the first levels: often partially filled
            order = Order(
                **common,
                order_type=OrderType.LIMIT,
                quantity=qty * 4,
                limit_price=mid + tick * 2 * sign,
                time_in_force=TimeInForce.IOC,
            )
        elif kind < 0.95:  # FOK: all or nothing
            order = Order(
                **common,
                order_type=OrderType.LIMIT,
                quantity=qty * 5,
                limit_price=mid + tick * 3 * sign,
                time_in_force=TimeInForce.FOK,
            )
        else:  # risk limit breach: REJECTED with a field-level reason
            order = Order(
                **common,
                order_type=OrderType.MARKET,
                quantity=Decimal(9000),
                time_in_force=TimeInForce.IOC,
            )
        out.append(order)
    return out


async def consume(stream: ReportStream, tracker: Tracker, progress: Progress, task: TaskID) -> None:
    async for report in stream:
        before = tracker.settled()
        tracker.on_report(report, time.perf_counter_ns())
        progress.update(task, advance=tracker.settled() - before)


def pct(h: HdrHistogram | None) -> tuple[str, str, str, str]:
    if h is None or h.get_total_count() == 0:
        return ("-", "-", "-", "0")
    p50, p99, top = (h.get_value_at_percentile(p) / 1000 for p in (50, 99, 100))
    return (f"{p50:.3f}", f"{p99:.3f}", f"{top:.3f}", str(h.get_total_count()))


async def run_demo(handle: ServerHandle, n_sync: int, n_queued: int, batch: int) -> int:
    run = uuid.uuid4().hex[:8]
    rng = random.Random(42)
    tracker = Tracker(expected_final=n_sync + n_queued)
    sync_ack_us = HdrHistogram(1, 60_000_000, 3)
    acks = Counter[str]()
    queued_acks = 0
    settings = client_settings(handle, request_timeout_ms=5000)
    async with BridgeClient(settings) as bridge, bridge.reports(ACCOUNT) as reports:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        async with LiveBook(bridge, BOOK_SYMBOL, console, progress) as book:
            settled = progress.add_task("orders with an outcome", total=tracker.expected_final)
            consumer = asyncio.create_task(consume(reports, tracker, progress, settled))
            sent = progress.add_task("sync submit (request-reply)", total=n_sync)
            for order in sync_orders(run, n_sync, rng):
                tracker.sent(order, "sync")
                start = time.perf_counter_ns()
                ack = await bridge.submit(order)
                sync_ack_us.record_value(max(1, (time.perf_counter_ns() - start) // 1000))
                acks["sync " + ack.status.value] += 1
                progress.advance(sent)
            queued = progress.add_task("queued (JetStream batches)", total=n_queued)
            flow = queued_orders(run, n_queued, rng)
            for i in range(0, len(flow), batch):
                chunk = flow[i : i + batch]
                for order in chunk:
                    tracker.sent(order, "queued")
                stored = await bridge.enqueue_batch(chunk)
                queued_acks += sum(1 for s in stored if not s.duplicate)
                progress.advance(queued, len(chunk))
            try:
                await asyncio.wait_for(tracker.final_event.wait(), timeout=60)
            except TimeoutError:
                console.print("[red]timed out waiting for every order's outcome[/red]")
            await book.check("every order with an outcome")
            # Pub-sub + cancel: cancel every order still resting in the book.
            resting = [
                c
                for c, s in tracker.status.items()
                if s in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
            ]
            cancel_task = progress.add_task("cancel resting orders", total=len(resting))
            canceled = 0
            for cid in resting:
                ack = await bridge.cancel(ACCOUNT, cid)
                canceled += ack.accepted
                progress.advance(cancel_task)
            consumer.cancel()
        probe = next(iter(tracker.sent_ns))
        state = await bridge.status(ACCOUNT, probe)

    final = Counter[str]()
    for cid, status in tracker.status.items():
        cum, qty = tracker.cum.get(cid, Decimal(0)), tracker.qty.get(cid, Decimal(0))
        if status is OrderStatus.FILLED:
            final["filled"] += 1
        elif cum > 0 and cum < qty:
            final["partially filled"] += 1
        elif status is OrderStatus.REJECTED:
            final["rejected"] += 1
        elif status in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
            final["canceled/expired, no fill"] += 1
        else:
            final["resting, no fill"] += 1

    console.rule("[bold]Demo summary")
    console.print(
        f"orders sent: {n_sync} synchronous (request-reply) + {n_queued} queued "
        f"(JetStream, batches of {batch}) on account {ACCOUNT}"
    )
    console.print(
        f"engine acks (sync): {dict(sorted(acks.items()))}; JetStream acks (queued): {queued_acks}"
    )
    console.print(
        f"outcomes: {dict(sorted(final.items()))}; resting orders canceled at the end: "
        f"{canceled}; execution reports: {len(tracker.exec_ids)} "
        f"(duplicate exec ids: {tracker.duplicates})"
    )
    console.print(
        f"status query for {probe}: found={state.found} "
        f"status={state.last_report.order_status.value if state.last_report else '-'}"
    )
    table = Table(title="latency (ms) over mutual TLS, measured in this process")
    for col in ("measure", "path", "p50", "p99", "max", "count"):
        table.add_column(col, justify="right" if col not in ("measure", "path") else "left")
    table.add_row("order -> ack", "sync (reply)", *pct(sync_ack_us))
    table.add_row(
        "order -> ack", "queued (NEW/REJECTED report)", *pct(tracker.ack_us.get("queued"))
    )
    for path in ("sync", "queued"):
        table.add_row("order -> first fill", path, *pct(tracker.fill_us.get(path)))
    for path in ("sync", "queued"):
        table.add_row("order -> final report", path, *pct(tracker.final_us.get(path)))
    console.print(table)
    missing = tracker.expected_final - tracker.settled()
    if missing or tracker.duplicates:
        console.print(f"[red]{missing} orders without an outcome, {tracker.duplicates} duplicates")
        return 1
    return 0 if book.matched else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sync", type=int, default=500, help="synchronous market orders")
    parser.add_argument("--queued", type=int, default=1000, help="queued orders")
    parser.add_argument("--batch", type=int, default=100, help="queued batch size")
    parser.add_argument("--log-level", default="WARNING", help="bridge log level (stderr)")
    ns = parser.parse_args()
    # The demo prints its own summary; the client's per-order debug lines would drown it.
    configure_logging(ns.log_level)
    creds = ensure_dev_credentials(default_root())
    work = Path(tempfile.mkdtemp(prefix="bridge-demo-", dir=default_root()))
    console.print(f"[dim]server store and logs: {work}[/dim]")
    with LocalNatsServer(
        creds, store_dir=work / "nats-store", log_file=work / "nats.log"
    ) as server:
        handle = server.handle
        for line in asyncio.run(_provision_as_operator(handle)):
            console.print(f"[dim]provisioned {line}[/dim]")
        with (
            EngineProcess(handle, log_file=work / "engine.log") as engine,
            SentinelProcess(handle, log_file=work / "sentinel.log"),
        ):
            console.print(f"nats-server {handle.url}, engine and sentinel started")
            code = asyncio.run(run_demo(handle, ns.sync, ns.queued, ns.batch))
            configured = asyncio.run(config_change_tour(handle, console))
            observed = asyncio.run(observability_tour(handle, engine, console))
            secure = asyncio.run(security_tour(handle, console))
            code = code or (0 if configured and observed and secure else 1)
    console.print("[dim]sentinel, engine and nats-server stopped[/dim]")
    return code


if __name__ == "__main__":
    sys.exit(main())
