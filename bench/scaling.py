"""Scaling of symbol-partitioned engines (issue 18): 1, 2 and 3 engines with
``partitioned = true``, on one nats-server and on the 3-node cluster with R3 streams, in one run.

For each server set-up (``single``: one nats-server, every stream R1; ``cluster R3``: three
nodes, ``provision(replicas=3)``) the engines are started one after the other on the same
servers; after each start the partition leases are watched until the 8 partitions are held in
fair shares (8/n each, the first 8 mod n one more), then:

* **drain**: ``drain_orders`` 1-share market IOC orders over one symbol per partition
  (:func:`spread_symbols`, round robin), published with ``enqueue_batch`` calls of
  ``ENQUEUE_CHUNK`` while the engines run; orders/s = orders final / (last final report, seen
  by the report sink - first publish). The interval then runs on until the engines' durable
  consumer has acked every message (its ack floor: nothing pending, nothing unacked), and
  the CPU of every engine process, every nats-server process and this Python process is
  metered over the whole interval (divided by the orders final: CPU per order).
* **sync**: ``sync_orders`` ``submit`` calls one at a time (after ``sync_warmup`` unmeasured),
  the same symbols round robin; ack latency in an HdrHistogram, CPU metered likewise.

Each row's drain rate is also given as a ratio against the first row (1 engine, single
server). The machine's core count is recorded: on 2 cores, 3 engines and 3 nats-servers share
two CPUs with the client, so more engines mostly contend for CPU; the CPU per order of each
component is the figure that projects to a machine with more cores.

``python -m bench`` runs this as its last phase and writes the rows under ``scaling`` in
``latest.json``; ``python -m bench.scaling [--quick] [--out DIR]`` runs it alone and replaces
only that key of ``<out>/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from nats.js.errors import KeyNotFoundError
from rich import box
from rich.console import Console
from rich.table import Table

from bench.measure import closed_loop, summary_us
from bench.procs import BenchError, CpuMeter, cpu_seconds
from bench.profile import Budget
from bench.report_sink import ReportSink
from bridge import BridgeClient, Order, OrderType, Side, TimeInForce, contract
from bridge.errors import EngineUnavailableError, OutcomeUnknownError
from bridge.logs import configure_logging
from bridge.partition import partition_of
from bridge_dev.cluster import LocalNatsCluster
from bridge_dev.engine import EngineProcess, client_settings, lease_ttl
from bridge_dev.pki import DevCredentials, default_root, ensure_dev_credentials
from bridge_dev.provision import provision
from bridge_dev.server import REPO_ROOT, LocalNatsServer, ServerHandle, connect_as

RESULTS_DIR = REPO_ROOT / "bench" / "results"
ACCOUNT = "SCALE"
ENQUEUE_CHUNK = 500
REPLY_TIMEOUT = 10.0
SYMBOL_PREFIX = "SC"
SERVER_SETUPS = ("single", "cluster R3")


@dataclass(frozen=True)
class ScalingProfile:
    name: str
    engines: tuple[int, ...]
    drain_orders: int
    drain_timeout: float
    """Longest wait for the drain's final reports (then the rate is over what was final)."""
    sync: Budget
    setups: tuple[str, ...] = SERVER_SETUPS


FULL = ScalingProfile(
    name="full",
    engines=(1, 2, 3),
    drain_orders=3000,
    drain_timeout=15.0,
    sync=Budget(warmup=20, count=500, seconds=6.0),
)
QUICK = ScalingProfile(
    name="quick",
    engines=(1, 2),
    drain_orders=200,
    drain_timeout=15.0,
    sync=Budget(warmup=5, count=30, seconds=2.0),
)


# -- pure helpers -------------------------------------------------------------------------


def spread_symbols(
    partitions: int = contract.PARTITIONS,
    prefix: str = SYMBOL_PREFIX,
    of: Callable[[str], int] = partition_of,
) -> list[str]:
    """One symbol per partition, ``[symbol of partition 0, ..., of partition n-1]``: the first
    ``<prefix><i>`` (i = 0, 1, ...) that lands in each partition."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        symbol = f"{prefix}{i}"
        found.setdefault(of(symbol), symbol)
        i += 1
        if i > 1000 * partitions:
            raise ValueError(f"no symbol found for some of {partitions} partitions")
    return [found[p] for p in range(partitions)]


def fair_shares(engines: int, partitions: int = contract.PARTITIONS) -> list[int]:
    """Partitions per engine once balanced, largest first: ``partitions // engines`` each, one
    more for the first ``partitions % engines`` (``engine-rs/src/partitions/balance.rs``)."""
    if engines <= 0:
        raise ValueError("at least one engine")
    base, extra = divmod(partitions, engines)
    return [base + (1 if i < extra else 0) for i in range(engines)]


def per_order_us(cpu_s: Sequence[float], orders: int) -> list[float | None]:
    """CPU microseconds per order of each process (None when no order was done)."""
    return [None if orders <= 0 else s * 1e6 / orders for s in cpu_s]


@dataclass
class Row:
    """One set-up (servers x engines): the drain, the synchronous sample and their costs."""

    servers: str
    engines: int
    nats_servers: int
    drain_orders: int
    drain_final: int
    drain_seconds: float
    """First publish -> last final report."""
    acked_seconds: float | None
    """First publish -> the consumer's ack floor covers every message (None: not reached)."""
    sync_count: int
    sync_ack_us: dict[str, float]
    """count, p50, p90, p99, p99.9, max, mean of the ack latency (microseconds)."""
    drain_cpu_s: dict[str, list[float]]
    """``engine`` / ``nats`` / ``python``: CPU seconds of each process over the drain."""
    sync_cpu_s: dict[str, list[float]]
    sync_failed: int = 0
    """Submits that failed after the client's retries (relay to a busy owner timed out)."""
    relay_retries: int = 0
    """Queued orders whose relay to their owner timed out during the drain (redelivered)."""
    duplicates: int = 0
    """Repeats answered as duplicates during the drain (the redeliveries' second arrivals)."""
    backlog_discarded: bool = False
    """Orders were left at the drain's deadline: ORDERS was purged before the next row."""
    ratio_vs_base: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drain_rate(self) -> float | None:
        return self.drain_final / self.drain_seconds if self.drain_seconds > 0 else None

    def drain_us(self, who: str) -> list[float | None]:
        return per_order_us(self.drain_cpu_s.get(who, []), self.drain_final)

    def sync_us(self, who: str) -> list[float | None]:
        return per_order_us(self.sync_cpu_s.get(who, []), self.sync_count)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["drain_rate_per_s"] = None if self.drain_rate is None else round(self.drain_rate, 1)
        for who in ("engine", "nats", "python"):
            out[f"drain_cpu_us_per_order_{who}"] = [_r(v) for v in self.drain_us(who)]
            out[f"sync_cpu_us_per_order_{who}"] = [_r(v) for v in self.sync_us(who)]
        return out


def row_from_json(doc: dict[str, Any]) -> Row:
    """The inverse of :meth:`Row.to_json` (its computed keys dropped)."""
    names = {f.name for f in dataclasses.fields(Row)}
    return Row(**{k: v for k, v in doc.items() if k in names})


def with_ratios(rows: Sequence[Row]) -> list[Row]:
    """Each row's drain rate over the first row's (1 engine, single server: the baseline)."""
    base = rows[0].drain_rate if rows else None
    for r in rows:
        rate = r.drain_rate
        r.ratio_vs_base = None if not base or rate is None else round(rate / base, 3)
    return list(rows)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _us(values: Sequence[float | None]) -> str:
    """``total (a + b + c)`` in whole microseconds; one value alone; ``-`` if unknown."""
    known = [v for v in values if v is not None]
    if not known or len(known) < len(values):
        return "-"
    total = f"{sum(known):.0f}"
    if len(known) == 1:
        return total
    return f"{total} ({' + '.join(f'{v:.0f}' for v in known)})"


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


COLUMNS = (
    "servers",
    "engines",
    "drain orders/s",
    "vs 1 engine, single",
    "sync ack p50 / p99 ms",
    "relay timeouts / duplicates (queued)",
    "engine CPU µs/order (queued)",
    "nats-server CPU µs/order (queued)",
    "engine CPU µs/order (sync)",
    "nats-server CPU µs/order (sync)",
)


def table_cells(r: Row) -> list[str]:
    """The row's cells, in :data:`COLUMNS` order."""
    rate = r.drain_rate
    drain = "-" if rate is None else f"{rate:,.0f}"
    if r.drain_final < r.drain_orders:
        drain += f" ({r.drain_final}/{r.drain_orders} final)"
    ratio = "-" if r.ratio_vs_base is None else f"{r.ratio_vs_base:.2f}x"
    return [
        r.servers,
        str(r.engines),
        drain,
        ratio,
        f"{_ms(r.sync_ack_us.get('p50'))} / {_ms(r.sync_ack_us.get('p99'))} (n={r.sync_count}"
        + (f", {r.sync_failed} failed)" if r.sync_failed else ")"),
        f"{r.relay_retries} / {r.duplicates}",
        _us(r.drain_us("engine")),
        _us(r.drain_us("nats")),
        _us(r.sync_us("engine")),
        _us(r.sync_us("nats")),
    ]


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (the README's), one line each."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render(console: Console, rows: Sequence[Row]) -> None:
    table = Table(
        title="Partitioned engines: drain (queued) and sync ack; CPU per order of each process "
        "(total (per process))",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*table_cells(r))
    console.print(table)


# -- the measurement ----------------------------------------------------------------------


def engine_config(path: Path, symbols: Sequence[str]) -> Path:
    """``bench/engine.toml``'s set-up for each symbol: ample seeded liquidity on both sides,
    so that every 1-share market order fills once."""
    lines = ['max_order_notional = "1000000000"']
    for s in symbols:
        lines += [
            f'[symbols."{s}"]',
            'max_order_qty = "1000"',
            'reference_price = "100.00"',
            "seed = [",
            '  { side = "buy", price = "99.99", qty = "1000000000", orders = 1 },',
            '  { side = "sell", price = "100.01", qty = "1000000000", orders = 1 },',
            "]",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_orders(prefix: str, n: int, symbols: Sequence[str]) -> list[Order]:
    """``n`` 1-share market IOC orders over ``symbols`` round robin, buy and sell alternating
    every full round (so each symbol gets both sides)."""
    return [
        Order(
            client_order_id=f"{prefix}-{i:07d}",
            account=ACCOUNT,
            symbol=symbols[i % len(symbols)],
            side=Side.BUY if (i // len(symbols)) % 2 == 0 else Side.SELL,
            order_type=OrderType.MARKET,
            quantity=Decimal(1),
            time_in_force=TimeInForce.IOC,
        )
        for i in range(n)
    ]


@asynccontextmanager
async def _operator_js(handle: ServerHandle) -> AsyncIterator[Any]:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        yield nc
    finally:
        await nc.close()


async def _provision(handle: ServerHandle, replicas: int) -> None:
    async with _operator_js(handle) as nc:
        await provision(nc, replicas=replicas)


async def _balanced(handle: ServerHandle, engine_ids: Sequence[str], timeout: float) -> None:
    """Until the partition leases are held by exactly ``engine_ids`` in fair shares."""
    want = fair_shares(len(engine_ids))
    prefix = contract.LEASE_PARTITION_KEY_PREFIX
    deadline = time.monotonic() + timeout
    async with _operator_js(handle) as nc:
        kv = await nc.jetstream().key_value(contract.LEASES_KV_BUCKET)
        while True:
            owners: dict[str, int] = {}
            for p in range(contract.PARTITIONS):
                try:
                    entry = await kv.get(f"{prefix}{p}")
                except KeyNotFoundError:  # not held (deleted or never created)
                    continue
                if entry.value:
                    owner = json.loads(entry.value)["engine_id"]
                    owners[owner] = owners.get(owner, 0) + 1
            if set(owners) <= set(engine_ids) and sorted(owners.values(), reverse=True) == want:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"partitions not balanced over {list(engine_ids)}: {owners}")
            await asyncio.sleep(0.1)


async def _ack_floor_reached(handle: ServerHandle, timeout: float) -> bool:
    """Until the engines' durable consumer has nothing pending and nothing unacked."""
    deadline = time.monotonic() + timeout
    async with _operator_js(handle) as nc:
        jsm = nc.jsm()
        while time.monotonic() < deadline:
            info = await jsm.consumer_info(contract.ORDERS_STREAM, contract.ENGINE_CONSUMER)
            if not info.num_pending and not info.num_ack_pending:
                return True
            await asyncio.sleep(0.01)
    return False


RELAY_RETRY_LINE = "queued order not relayed"
"""The engine's warning when a relayed queued order got no answer from its owner in time (the
message is delivered again)."""
DUPLICATE_LINE = "duplicate client order id answered"
"""The engine's line when a repeat of an order already done is answered (a redelivery)."""


def count_lines(paths: Sequence[Path], needle: str) -> int:
    """Lines containing ``needle`` over the files (missing files count 0)."""
    total = 0
    for path in paths:
        try:
            with path.open(encoding="utf-8", errors="replace") as lines:
                total += sum(1 for line in lines if needle in line)
        except OSError:
            continue
    return total


async def _purge_orders(handle: ServerHandle) -> None:
    async with _operator_js(handle) as nc:
        await nc.jsm().purge_stream(contract.ORDERS_STREAM)


def _cpu(pids: Sequence[int]) -> list[float]:
    return [cpu_seconds(p) for p in pids]


async def drain(
    handle: ServerHandle,
    sink: ReportSink,
    engine_pids: Sequence[int],
    nats_pids: Sequence[int],
    symbols: Sequence[str],
    n: int,
    timeout: float,
    prefix: str,
) -> tuple[int, float, float | None, dict[str, list[float]], bool]:
    """(orders final, first publish -> last final s, -> ack floor s, CPU s per process, whether
    a backlog left at the deadline was discarded: ORDERS purged, so that the next measurement
    starts on idle engines)."""
    orders = make_orders(prefix, n, symbols)
    watch = await sink.watch(contract.executions_for_account(ACCOUNT), prefix, n)
    async with BridgeClient(client_settings(handle, request_timeout_ms=10_000)) as bridge:
        e0, n0, py0 = _cpu(engine_pids), _cpu(nats_pids), time.process_time()
        first_ns = time.monotonic_ns()
        for i in range(0, n, ENQUEUE_CHUNK):
            await bridge.enqueue_batch(orders[i : i + ENQUEUE_CHUNK])
        left = timeout - (time.monotonic_ns() - first_ns) / 1e9
        finals = await sink.finish(watch, max(0.0, left))
        acked = await _ack_floor_reached(handle, 5.0 if len(finals) == n else 0.0)
        acked_ns = time.monotonic_ns()
        e1, n1, py1 = _cpu(engine_pids), _cpu(nats_pids), time.process_time()
    discarded = not acked
    if discarded:
        await _purge_orders(handle)
        await _ack_floor_reached(handle, 15.0)
    seconds = (max(finals.values()) - first_ns) / 1e9 if finals else 0.0
    cpu = {
        "engine": [b - a for a, b in zip(e0, e1, strict=True)],
        "nats": [b - a for a, b in zip(n0, n1, strict=True)],
        "python": [py1 - py0],
    }
    acked_s = (acked_ns - first_ns) / 1e9 if acked else None
    return len(finals), seconds, acked_s, cpu, discarded


async def sync_sample(
    handle: ServerHandle,
    engine_pids: Sequence[int],
    nats_pids: Sequence[int],
    symbols: Sequence[str],
    budget: Budget,
    prefix: str,
) -> tuple[int, dict[str, float], dict[str, list[float]], int]:
    """(orders measured, ack latency summary in us, CPU s per process, submits that failed
    after the client's retries: their time to the error is in the histogram too)."""
    orders = make_orders(prefix, budget.warmup + budget.count, symbols)
    pids = {f"e{i}": p for i, p in enumerate(engine_pids)}
    pids |= {f"n{i}": p for i, p in enumerate(nats_pids)}
    async with BridgeClient(client_settings(handle, request_timeout_ms=10_000)) as bridge:
        failed = 0

        async def op(i: int) -> None:
            nonlocal failed
            try:
                ack = await bridge.submit(orders[i])
            except (OutcomeUnknownError, EngineUnavailableError):
                failed += 1
                return
            if not ack.accepted:
                raise BenchError(f"sync order not accepted: {ack}")

        timed = await closed_loop(op, budget, pids)
    meter: CpuMeter = timed.meter
    cpu = {
        "engine": [meter.others_s[f"e{i}"] for i in range(len(engine_pids))],
        "nats": [meter.others_s[f"n{i}"] for i in range(len(nats_pids))],
        "python": [meter.python_s],
    }
    return timed.count, summary_us(timed.histogram), cpu, failed


class _Servers:
    """The nats-server(s) of one set-up: one server (R1) or the 3-node cluster (R3)."""

    def __init__(self, setup: str, creds: DevCredentials, work: Path) -> None:
        self.setup = setup
        self.cluster: LocalNatsCluster | None = None
        self.server: LocalNatsServer | None = None
        if setup == "single":
            self.server = LocalNatsServer(
                creds,
                name="bench-scaling",
                store_dir=work / "scaling-store",
                log_file=work / "scaling-nats.log",
            )
        else:
            self.cluster = LocalNatsCluster(creds, name="bench-scaling")

    def start(self) -> tuple[ServerHandle, list[int], int]:
        """(handle, nats-server pids, stream replicas)."""
        if self.server is not None:
            self.server.start()
            handle = self.server.handle
            return handle, [handle.pid], 1
        assert self.cluster is not None
        self.cluster.start()
        return self.cluster.handle, [n.handle.pid for n in self.cluster.nodes], 3

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
        if self.cluster is not None:
            self.cluster.stop()


def run_setup(
    setup: str,
    creds: DevCredentials,
    work: Path,
    profile: ScalingProfile,
    run_id: str,
    log: Callable[[str], None],
) -> list[Row]:
    """Every engine count of ``profile`` on one server set-up (engines added one by one)."""
    symbols = spread_symbols()
    config = engine_config(work / "scaling-engine.toml", symbols)
    servers = _Servers(setup, creds, work)
    engines: list[EngineProcess] = []
    rows: list[Row] = []
    sink: ReportSink | None = None
    try:
        handle, nats_pids, replicas = servers.start()
        asyncio.run(_provision(handle, replicas))
        # The sink takes one URL: its core subscription on one node sees every node's reports.
        sink = ReportSink(dataclasses.replace(handle, url=handle.url.split(",")[0]), work)
        sink.start()
        for count in profile.engines:
            while len(engines) < count:
                engine_id = f"scale-{len(engines) + 1}"
                proc = EngineProcess(
                    handle,
                    engine_id=engine_id,
                    config_file=config,
                    log_file=work / f"scaling-{setup.split()[0]}-{engine_id}.log",
                    env={"BRIDGE_PARTITIONED": "true"},
                )
                engines.append(proc.start())
            log(f"scaling ({setup}): {count} engine(s), waiting for the partitions to balance")
            t0 = time.monotonic()
            asyncio.run(_balanced(handle, [e.engine_id for e in engines], 8 * lease_ttl()))
            balanced_s = time.monotonic() - t0
            engine_pids = [e.pid for e in engines if e.pid is not None]
            tag = f"{run_id}{setup[0]}{count}"
            # Warm-up: a sync order of every symbol through every instance's paths.
            asyncio.run(
                sync_sample(
                    handle,
                    engine_pids,
                    nats_pids,
                    symbols,
                    Budget(0, 2 * len(symbols), 10.0),
                    f"{tag}w",
                )
            )
            logs = [e.log_file for e in engines]
            retries0, dups0 = count_lines(logs, RELAY_RETRY_LINE), count_lines(logs, DUPLICATE_LINE)
            log(f"scaling ({setup}): {count} engine(s), drain of {profile.drain_orders} orders")
            final, seconds, acked, drain_cpu, discarded = asyncio.run(
                drain(
                    handle,
                    sink,
                    engine_pids,
                    nats_pids,
                    symbols,
                    profile.drain_orders,
                    profile.drain_timeout,
                    f"{tag}q",
                )
            )
            retries1, dups1 = count_lines(logs, RELAY_RETRY_LINE), count_lines(logs, DUPLICATE_LINE)
            log(f"scaling ({setup}): {count} engine(s), {profile.sync.count} sync submits")
            sync_n, ack_us, sync_cpu, sync_failed = asyncio.run(
                sync_sample(handle, engine_pids, nats_pids, symbols, profile.sync, f"{tag}s")
            )
            rows.append(
                Row(
                    servers=setup,
                    engines=count,
                    nats_servers=len(nats_pids),
                    drain_orders=profile.drain_orders,
                    drain_final=final,
                    drain_seconds=seconds,
                    acked_seconds=acked,
                    sync_count=sync_n,
                    sync_ack_us=ack_us,
                    drain_cpu_s=drain_cpu,
                    sync_cpu_s=sync_cpu,
                    sync_failed=sync_failed,
                    relay_retries=retries1 - retries0,
                    duplicates=dups1 - dups0,
                    backlog_discarded=discarded,
                    extra={"balanced_after_s": round(balanced_s, 2), "replicas": replicas},
                )
            )
    finally:
        codes = []
        for e in reversed(engines):
            codes.append(e.stop())
        if sink is not None:
            sink.stop()
        servers.stop()
    if any(c != 0 for c in codes):
        raise BenchError(f"a partitioned engine exited badly: {codes}")
    return rows


def run(
    creds: DevCredentials,
    work: Path,
    profile: ScalingProfile,
    run_id: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every set-up of ``profile``; the document stored under ``scaling`` in latest.json."""
    started = time.perf_counter()
    rows: list[Row] = []
    for setup in profile.setups:
        rows += run_setup(setup, creds, work, profile, run_id, log)
    with_ratios(rows)
    return {
        "profile": profile.name,
        "logical_cores": os.cpu_count(),
        "symbols": {s: partition_of(s) for s in spread_symbols()},
        "duration_s": round(time.perf_counter() - started, 1),
        "method": (
            "engines added one by one on the same servers (BRIDGE_PARTITIONED=true), each count "
            "measured once the 8 partition leases are held in fair shares; drain = orders final "
            "/ (last final report - first publish), enqueue_batch calls of "
            f"{ENQUEUE_CHUNK} while the engines run; CPU metered from the first publish to the "
            "consumer's ack floor (drain) or over the closed loop (sync), per process, divided "
            "by the orders; a backlog left at the drain's deadline is purged from ORDERS before "
            "the next row; relay timeouts and duplicates are counted from the engines' logs; every "
            "process shares the machine's cores"
        ),
        "rows": [r.to_json() for r in rows],
        "table_md": markdown_table(rows),
        "_rows": rows,
    }


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without its in-memory rows (what is written to JSON)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 and 2 engines, few orders")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where latest.json is")
    parser.add_argument("--creds", type=Path, default=None, help="dev PKI root (default .dev)")
    parser.add_argument("--keep-work", action="store_true", help="keep stores and logs")
    ns = parser.parse_args(argv)
    configure_logging("WARNING", json=True)  # as python -m bench: the library's logs quiet
    console = Console(width=None if sys.stdout.isatty() else 240)
    creds = ensure_dev_credentials(ns.creds if ns.creds is not None else default_root())
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-scaling-"))
    try:
        doc = run(
            creds,
            work,
            QUICK if ns.quick else FULL,
            os.urandom(3).hex(),
            lambda text: console.log(f"[bold]{text}[/bold]"),
        )
    except BaseException:
        console.print(f"[red]scaling failed; stores and logs kept in {work}[/red]")
        raise
    render(console, doc["_rows"])
    out: Path = ns.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / "latest.json"
    existing = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    existing["scaling"] = public(doc)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(existing, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    console.print(doc["table_md"])
    console.print(f"wrote the 'scaling' key of {path} in {doc['duration_s']} s")
    if not ns.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
