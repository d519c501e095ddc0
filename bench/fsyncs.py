"""``python -m bench.fsyncs``: how many fsync/fdatasync calls an order costs, per process and
per path, counted with ``strace -c`` (``bench.syscall_count``).

    python -m bench.fsyncs [--orders 10000] [--sync 1000] [--concurrency 16] [--json FILE]
    ./dev bench-fsyncs [...]      the same, after installing strace if it is missing

Starts its own nats-server (``nats/server.conf``: ``sync_interval: always``) and the release
engine with ``bench/engine.toml``, like ``./dev bench``, connects one ``BridgeClient`` and warms
the paths up, then for each path attaches one strace to nats-server and one to the engine
(all threads), runs the path to completion and detaches before anything stops:

* ``queued``: ``--orders`` orders through ``enqueue_batch`` (calls of 5,000, two in flight);
* ``sync``: ``--sync`` orders through ``submit``, one at a time (a lone order's cost);
* ``sync xC``: ``--sync`` orders from ``--concurrency`` concurrent submitters (group commit's
  case).

A path is complete when every order's final report has arrived (the report sink), a
``status()`` request has been answered (the engine has finished the last order's store
updates) and ORDERS is empty (the server has processed every ack). Prints fsyncs per order for
each process and path. strace stops the traced processes at every system call, so paths run
slower while counted: the counts are exact, the durations are not what the system does
untraced (and a design that groups concurrent work may group more under strace).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.bridge_paths.common import Engine, make_orders, operator, settings_for
from bench.bridge_paths.e2e import publish_until
from bench.procs import BenchError
from bench.report_sink import ReportSink
from bench.run import ENGINE_CONFIG, _provision, _server, run_async
from bench.syscall_count import SYSCALLS, SyscallCounter, strace_binary
from bridge import AckStatus, BridgeClient, Order, contract
from bridge.logs import configure_logging
from bridge_dev.pki import default_root, ensure_dev_credentials
from bridge_dev.server import ServerHandle

ACCOUNT = "FSYNCS"
PATH_TIMEOUT = 300.0
"""Longest a path may take under strace before the run is declared broken."""


@dataclass
class PathCount:
    path: str
    orders: int
    seconds: float
    nats_server: dict[str, int]
    engine: dict[str, int]

    def per_order(self, counts: dict[str, int]) -> float:
        return sum(counts.values()) / self.orders if self.orders else 0.0


async def _orders_empty(handle: ServerHandle, timeout: float) -> None:
    """Wait until ORDERS holds no message (every ack of the engine processed), bounded. The
    server has no event for it: its state is read until it says so."""
    deadline = time.monotonic() + timeout
    async with operator(handle) as jsm:
        while (await jsm.stream_info(contract.ORDERS_STREAM)).state.messages:
            if time.monotonic() > deadline:
                raise BenchError(f"ORDERS not empty {timeout}s after the last final report")
            await asyncio.sleep(0.05)


class Paths:
    """The three paths, each run to completion (see the module doc)."""

    def __init__(self, handle: ServerHandle, bridge: BridgeClient, sink: ReportSink) -> None:
        self.handle = handle
        self.bridge = bridge
        self.sink = sink
        self.tag = 0

    def _orders(self, n: int) -> tuple[str, list[Order]]:
        self.tag += 1
        prefix = f"f{time.time_ns() % 10**9}p{self.tag}"
        return prefix, make_orders(prefix, n, ACCOUNT)

    async def _complete(
        self, prefix: str, orders: list[Order], send: Callable[[], Awaitable[object]]
    ) -> None:
        """Subscribe to the reports, ``send()``, wait until the path is complete."""
        watch = await self.sink.watch(contract.executions_for_account(ACCOUNT), prefix, len(orders))
        await send()
        finals = await self.sink.finish(watch, PATH_TIMEOUT)
        if len(finals) < len(orders):
            raise BenchError(f"{len(finals)}/{len(orders)} orders final")
        await self.bridge.status(ACCOUNT, orders[-1].client_order_id)
        await _orders_empty(self.handle, PATH_TIMEOUT)

    async def queued(self, n: int) -> None:
        prefix, orders = self._orders(n)
        deadline = time.monotonic_ns() + int(PATH_TIMEOUT * 1e9)

        async def send() -> None:
            sent = await publish_until(self.bridge, orders, deadline)
            if sent.stored < n:
                raise BenchError(f"{sent.stored}/{n} orders queued: {sent}")

        await self._complete(prefix, orders, send)

    async def sync(self, n: int, concurrency: int) -> None:
        prefix, orders = self._orders(n)
        cursor = 0

        async def submitter() -> None:
            nonlocal cursor
            while cursor < len(orders):
                order = orders[cursor]
                cursor += 1
                ack = await self.bridge.submit(order)
                if ack.status is not AckStatus.ACCEPTED:
                    raise BenchError(f"order {order.client_order_id} not accepted: {ack!r}")

        await self._complete(
            prefix, orders, lambda: asyncio.gather(*(submitter() for _ in range(concurrency)))
        )


async def measure(
    handle: ServerHandle, engine: Engine, sink: ReportSink, ns: argparse.Namespace, work: Path
) -> list[PathCount]:
    out: list[PathCount] = []
    async with BridgeClient(settings_for(handle)) as bridge:
        paths = Paths(handle, bridge, sink)
        await paths.queued(200)  # warm-up, not counted
        await paths.sync(20, 1)
        runs: list[tuple[str, int, Callable[[], Awaitable[None]]]] = [
            ("queued", ns.orders, lambda: paths.queued(ns.orders)),
            ("sync", ns.sync, lambda: paths.sync(ns.sync, 1)),
            (
                f"sync x{ns.concurrency}",
                ns.sync,
                lambda: paths.sync(ns.sync, ns.concurrency),
            ),
        ]
        for name, orders, run in runs:
            slug = name.replace(" ", "")
            counters = [
                SyscallCounter(handle.pid, work / f"{slug}-nats-server.strace"),
                SyscallCounter(engine.pid, work / f"{slug}-engine.strace"),
            ]
            started = time.perf_counter()
            try:
                for counter in counters:
                    await asyncio.to_thread(counter.start)
                started = time.perf_counter()
                await run()
            finally:  # every strace that attached is detached (stop() of one that did not: {})
                seconds = time.perf_counter() - started
                counts = [await asyncio.to_thread(c.stop) for c in counters]
            out.append(PathCount(name, orders, seconds, counts[0], counts[1]))
    return out


def render(console: Console, rows: Sequence[PathCount]) -> None:
    table = Table(title="fsync + fdatasync calls per order (strace -c, all threads)")
    table.add_column("path")
    table.add_column("orders", justify="right")
    table.add_column("s (traced)", justify="right")
    for who in ("nats-server", "engine"):
        for call in SYSCALLS:
            table.add_column(f"{who} {call}", justify="right")
        table.add_column(f"{who} per order", justify="right")
    table.add_column("total per order", justify="right")
    for r in rows:
        cells = [r.path, f"{r.orders:,}", f"{r.seconds:.1f}"]
        for counts in (r.nats_server, r.engine):
            cells += [f"{counts.get(c, 0):,}" for c in SYSCALLS]
            cells.append(f"{r.per_order(counts):.3f}")
        total = r.per_order(r.nats_server) + r.per_order(r.engine)
        cells.append(f"{total:.3f}")
        table.add_row(*cells)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fsyncs",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--orders", type=int, default=10_000, help="queued orders (10,000)")
    parser.add_argument("--sync", type=int, default=1000, help="synchronous orders (1,000)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent submitters")
    parser.add_argument("--json", type=Path, default=None, help="also write the counts here")
    parser.add_argument("--creds", type=Path, default=None, help="dev PKI root (default .dev)")
    parser.add_argument("--keep-work", action="store_true", help="keep stores, logs, summaries")
    ns = parser.parse_args(argv)
    configure_logging("WARNING", json=True)
    strace_binary()  # fail early, with the way to get it
    console = Console(width=None if sys.stdout.isatty() else 200)
    creds = ensure_dev_credentials(ns.creds if ns.creds is not None else default_root())
    work = Path(tempfile.mkdtemp(prefix="bridge-fsyncs-"))
    try:
        with _server(creds, work, "fsyncs") as server:
            handle = server.handle
            run_async(_provision(handle, drop_executions=False))
            engine = Engine(handle, ENGINE_CONFIG, work / "engine.log")
            sink = ReportSink(handle, work)
            try:
                engine.start()
                sink.start()
                console.log(
                    f"counting: {ns.orders} queued, {ns.sync} sync, "
                    f"{ns.sync} sync from {ns.concurrency} submitters"
                )
                rows = run_async(measure(handle, engine, sink, ns, work))
            finally:
                sink.stop()
                engine.stop()
    except BaseException:
        console.print(f"[red]fsync count failed; stores, logs and summaries kept in {work}[/red]")
        raise
    render(console, rows)
    if ns.json is not None:
        ns.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", "utf-8")
    if ns.keep_work:
        console.print(f"stores, logs and strace summaries: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
