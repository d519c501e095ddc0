"""The 3-node cluster (R3 streams) under mixed load, with client orders resting on both sides of
two books: the leader of ORDERS, of the order store (the KV bucket ``bridge_orders``, stream
``KV_bridge_orders``) and of EXECUTIONS, each killed with kill -9 (then restarted) and,
separately, frozen with SIGSTOP for longer than the JetStream election timeout.

Four accounts first rest GTC bids below the best bid and asks above the best ask of AAPL and
MSFT, then run their mixed operations concurrently: synchronous submits, queued batches and
cancels of resting orders; market and IOC orders take the house's seeded liquidity, and one
sweep per account (side and symbol) reaches the client orders resting behind it. The fault
is injected once a third of the operations are done.

Afterwards: every acknowledged order has its durable outcome (a final report for IOC and market
orders, at least one report for GTC ones); the engine either stayed up, or exited non-zero on
purpose and was restarted, recovering (recorded in the notes of the fault table); every order
the surviving engine's ``status()`` calls live is in its book (half of them are canceled there,
the rest are left for the restarted engine of :func:`assert_invariants`), and the invariants
hold: conservation, per-order report rules, status agreement, live means in a book.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pytest

from bridge import (
    AckStatus,
    BridgeClient,
    BridgeError,
    Order,
    OrderStatus,
    OrderType,
    PartialBatchError,
    Side,
    TimeInForce,
    contract,
)
from bridge.retry import is_transient
from bridge.v1 import orders_pb2
from bridge_dev.cluster import LocalNatsCluster
from bridge_dev.engine import EngineError, EngineProcess, client_settings
from bridge_dev.server import ServerHandle
from tests.faults.harness import (
    FINAL,
    FaultResult,
    assert_clean,
    new_account,
    stored_reports,
    verify,
    wait_for_ack_floor,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants

pytestmark = pytest.mark.integration

STORE_STREAM = contract.kv_stream(contract.ORDERS_KV_BUCKET)
STREAMS = (contract.ORDERS_STREAM, STORE_STREAM, contract.EXECUTIONS_STREAM)
ACCOUNTS = 4
OPS_PER_ACCOUNT = int(os.environ.get("BRIDGE_FAULT_MIXED_OPS", "100"))
# nats-server's Raft election timeout is randomised between 4 and 9 s (as in test_cluster.py).
PAUSE_S = float(os.environ.get("BRIDGE_FAULT_PAUSE_S", "10"))
FAST_PINGS = {"BRIDGE_PING_INTERVAL_MS": "1000"}
# Attempts the test itself makes per operation on top of the client's own retries (each up to
# order_retry_deadline_ms); re-sending the same client order id is safe by design.
ATTEMPTS = 4
# The engine is restarted at most this many times if it exits on purpose during the run.
MAX_ENGINE_RESTARTS = 3
RUN_TIMEOUT_S = 240.0

TICK = {"AAPL": Decimal("0.01"), "MSFT": Decimal("0.05")}
MID = {"AAPL": Decimal("190.00"), "MSFT": Decimal("420.00")}
# Client GTC orders resting behind the seeded liquidity (best bid/ask 189.99/190.01 and
# 419.95/420.05): the inner level is what the sweeps reach, the outer one is what cancels
# target (and market orders reach once a sweep has emptied a side), the deep one stays resting
# for the "live means in a book" checks.
INNER = {
    "AAPL": (Decimal("189.50"), Decimal("190.50")),
    "MSFT": (Decimal("419.00"), Decimal("421.00")),
}
OUTER = {
    "AAPL": (Decimal("189.40"), Decimal("190.60")),
    "MSFT": (Decimal("418.90"), Decimal("421.10")),
}
DEEP = {
    "AAPL": (Decimal("188.00"), Decimal("192.00")),
    "MSFT": (Decimal("415.00"), Decimal("425.00")),
}
# One sweep per account: IOC limit at the inner level, larger than the house's whole side
# (AAPL 4,500, MSFT 3,000), so it fills against the client orders resting there too.
SWEEPS = (("AAPL", Side.BUY), ("AAPL", Side.SELL), ("MSFT", Side.BUY), ("MSFT", Side.SELL))
SWEEP_QTY = Decimal(5000)


# -- the flow -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One operation of an account: a submit of one order, a queued batch, or a cancel (of one
    of the account's resting orders, picked when the operation runs)."""

    kind: Literal["submit", "batch", "cancel"]
    orders: tuple[Order, ...] = ()


@dataclass
class Flow:
    """One account's part of the run."""

    account: str
    resting: list[Order]
    ops: list[Op]
    cancelable: list[str] = field(default_factory=list)


def _cid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def _limit(
    account: str, symbol: str, side: Side, qty: Decimal, price: Decimal, tif: TimeInForce, tag: str
) -> Order:
    return Order(
        client_order_id=_cid(tag),
        account=account,
        symbol=symbol,
        side=side,
        order_type=OrderType.LIMIT,
        quantity=qty,
        limit_price=price,
        time_in_force=tif,
    )


def _mixed_order(account: str, rng: random.Random) -> Order:
    """Market IOC, IOC limit around the touch, or GTC limit around the touch (rests or
    crosses, and becomes a maker for later orders)."""
    symbol = rng.choice(("AAPL", "MSFT"))
    side = rng.choice((Side.BUY, Side.SELL))
    qty = Decimal(rng.choice((1, 5, 10, 20, 40)))
    kind = rng.random()
    if kind < 0.2:
        return Order(
            client_order_id=_cid("m"),
            account=account,
            symbol=symbol,
            side=side,
            order_type=OrderType.MARKET,
            quantity=qty,
            time_in_force=TimeInForce.IOC,
        )
    price = MID[symbol] + TICK[symbol] * rng.randint(-2, 2)
    tif = TimeInForce.IOC if kind < 0.65 else TimeInForce.GTC
    return _limit(account, symbol, side, qty, price, tif, "i" if tif is TimeInForce.IOC else "g")


def _flow(index: int, rng: random.Random) -> Flow:
    account = new_account(f"LD{index}")
    resting: list[Order] = []
    outer: list[str] = []
    for symbol in ("AAPL", "MSFT"):
        for level, ids in ((INNER, None), (OUTER, outer), (DEEP, None)):
            bid, ask = level[symbol]
            for side, price in ((Side.BUY, bid), (Side.SELL, ask)):
                qty = Decimal(rng.choice((10, 20, 30)))
                o = _limit(account, symbol, side, qty, price, TimeInForce.GTC, "r")
                resting.append(o)
                if ids is not None:
                    ids.append(o.client_order_id)
    symbol, side = SWEEPS[index % len(SWEEPS)]
    bid, ask = INNER[symbol]
    sweep = _limit(
        account, symbol, side, SWEEP_QTY, ask if side is Side.BUY else bid, TimeInForce.IOC, "s"
    )
    sweep_at = rng.randrange(OPS_PER_ACCOUNT // 5, 4 * OPS_PER_ACCOUNT // 5)
    ops: list[Op] = []
    for n in range(OPS_PER_ACCOUNT):
        r = rng.random()
        if n == sweep_at:
            ops.append(Op("submit", (sweep,)))
        elif r < 0.12:
            ops.append(Op("cancel"))
        elif r < 0.30:
            batch = tuple(_mixed_order(account, rng) for _ in range(rng.randint(3, 6)))
            ops.append(Op("batch", batch))
        else:
            ops.append(Op("submit", (_mixed_order(account, rng),)))
    return Flow(account, resting, ops, cancelable=outer)


def _is_gtc(order: Order) -> bool:
    return order.time_in_force is TimeInForce.GTC


# -- the load -------------------------------------------------------------------------------


class Load:
    """Runs every account's operations concurrently, one client per account, tolerating the
    fault: a transient failure is re-sent (same ids) up to :data:`ATTEMPTS` times on top of the
    client's own retries; an order still without an answer is *unknown* (resolved later with
    ``status()``)."""

    def __init__(self, flows: Sequence[Flow]) -> None:
        self.flows = list(flows)
        self.orders: dict[str, Order] = {}
        self.acked: set[str] = set()
        self.rejected: Counter[str] = Counter()
        self.unknown: set[str] = set()
        self.canceled: set[str] = set()
        self.cancels: Counter[str] = Counter()
        self.ops: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.done = 0
        self.finished = False
        self.done_times: list[float] = []
        self._progress = asyncio.Condition()

    def total_ops(self) -> int:
        return sum(len(f.ops) for f in self.flows)

    async def place_resting(self, bridges: Sequence[BridgeClient]) -> None:
        async def place(bridge: BridgeClient, flow: Flow) -> None:
            for order in flow.resting:
                await self._submit(bridge, order)

        await asyncio.gather(*(place(b, f) for b, f in zip(bridges, self.flows, strict=True)))
        resting = {o.client_order_id for f in self.flows for o in f.resting}
        assert resting <= self.acked, f"resting orders not accepted: {resting - self.acked}"

    async def run(self, bridges: Sequence[BridgeClient], seed: int) -> None:
        try:
            await asyncio.gather(
                *(
                    self._run_account(b, f, random.Random(seed + i))
                    for i, (b, f) in enumerate(zip(bridges, self.flows, strict=True))
                )
            )
        finally:
            self.finished = True
            async with self._progress:
                self._progress.notify_all()

    async def _run_account(self, bridge: BridgeClient, flow: Flow, rng: random.Random) -> None:
        for op in flow.ops:
            if op.kind == "submit":
                await self._submit(bridge, op.orders[0])
            elif op.kind == "batch":
                await self._batch(bridge, op.orders)
            else:
                await self._cancel(bridge, flow, rng)
            for o in op.orders:
                if _is_gtc(o) and o.client_order_id in self.acked:
                    flow.cancelable.append(o.client_order_id)
            self.ops[op.kind] += 1
            self.done += 1
            self.done_times.append(time.monotonic())
            async with self._progress:
                self._progress.notify_all()

    def _transient(self, exc: BridgeError) -> None:
        if not is_transient(exc):
            raise exc
        self.retries[type(exc).__name__] += 1

    async def _submit(self, bridge: BridgeClient, order: Order) -> None:
        order_id = order.client_order_id
        self.orders[order_id] = order
        for _ in range(ATTEMPTS):
            try:
                ack = await bridge.submit(order)
            except BridgeError as exc:
                self._transient(exc)
                continue
            if ack.accepted:
                self.acked.add(order_id)
            else:  # an answer, not a failure: recorded in the notes
                self.rejected[f"{ack.reason.value}: {ack.text}"[:80]] += 1
            return
        self.unknown.add(order_id)

    async def _batch(self, bridge: BridgeClient, orders: Sequence[Order]) -> None:
        for o in orders:
            self.orders[o.client_order_id] = o
        pending = list(orders)
        for _ in range(ATTEMPTS):
            try:
                queued = await bridge.enqueue_batch(pending)
            except PartialBatchError as exc:
                self.acked.update(q.client_order_id for q in exc.queued)
                self._transient(exc.failure)
                pending = [o for o in pending if o.client_order_id not in self.acked]
                continue
            self.acked.update(q.client_order_id for q in queued)
            return
        self.unknown.update(o.client_order_id for o in pending)

    async def _cancel(self, bridge: BridgeClient, flow: Flow, rng: random.Random) -> None:
        if not flow.cancelable:
            self.cancels["no target"] += 1
            return
        order_id = flow.cancelable.pop(rng.randrange(len(flow.cancelable)))
        for _ in range(ATTEMPTS):
            try:
                ack = await bridge.cancel(flow.account, order_id)
            except BridgeError as exc:
                self._transient(exc)
                continue
            if ack.status is AckStatus.ACCEPTED and ack.order_status is OrderStatus.CANCELED:
                self.canceled.add(order_id)
                self.cancels["canceled"] += 1
            else:
                self.cancels["refused"] += 1  # already filled, or not executed yet
            return
        self.cancels["unknown"] += 1

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Until ``predicate()`` holds, re-checked at every completed operation (bounded)."""
        try:
            async with asyncio.timeout(timeout), self._progress:
                await self._progress.wait_for(lambda: predicate() or self.finished)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from None

    def max_gap(self, since: float) -> float:
        """The longest interval without a completed operation, from ``since`` to the last."""
        points = [since, *sorted(t for t in self.done_times if t >= since)]
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


# -- the engine -----------------------------------------------------------------------------


def _exit_reason(engine: EngineProcess) -> str | None:
    """The error chain of the engine's last ``Error: ...`` exit (anyhow's report on stderr,
    without its backtrace), or None if it logged none."""
    try:
        lines = engine.log_file.read_text(errors="replace").splitlines()
    except OSError:
        return None
    starts = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
    if not starts:
        return None
    chain: list[str] = []
    for line in lines[starts[-1] : starts[-1] + 20]:
        if line.startswith("Stack backtrace"):
            break
        if line.strip():
            chain.append(line.strip())
    return " | ".join(chain)


class EngineWatch:
    """Watches the engine during the run. An engine that exits on purpose (exit code 1: a
    failure past its retries, ``engine failed`` in its log) is started again, so its recovery
    is part of the scenario; any other exit is left for the test to report."""

    def __init__(self, engine: EngineProcess) -> None:
        self.engine = engine
        self.stopping = False
        self.exits: list[tuple[int, float, str]] = []
        self.restarts: list[str] = []
        self.failure: str | None = None

    def _wait_exit(self) -> int | None:
        try:
            return self.engine.wait(RUN_TIMEOUT_S + 120)
        except EngineError:
            return None  # still running at the bound, or never started

    async def run(self) -> None:
        started = time.monotonic()
        for _ in range(MAX_ENGINE_RESTARTS + 1):
            code = await asyncio.to_thread(self._wait_exit)
            if code is None or self.stopping:
                return
            reason = _exit_reason(self.engine)
            self.exits.append((code, time.monotonic() - started, reason or "no error logged"))
            if code != 1 or reason is None:
                self.failure = f"engine exited with {code} (not on purpose): {reason}"
                return
            try:
                await asyncio.to_thread(self.engine.start)
            except EngineError:
                self.failure = f"restart after exit {code} failed: {_exit_reason(self.engine)}"
                return
            self.restarts.append(f"ready (recovered {self.engine.recovered})")
            if self.stopping:
                return  # the test's stop raced this restart: it stops the engine again
        self.failure = f"engine exited more than {MAX_ENGINE_RESTARTS} times"

    def summary(self) -> str:
        if not self.exits:
            return "stayed up"
        parts = [f"exit {c} at {t:.1f}s ({why[:160]})" for c, t, why in self.exits]
        return "; ".join(parts) + " -> restarted: " + ", ".join(self.restarts or ["no"])


# -- after the run --------------------------------------------------------------------------


async def _outcomes(
    handle: ServerHandle, account: str, finals: set[str], any_report: set[str], timeout: float
) -> list[orders_pb2.ExecutionReport]:
    """The account's stored reports once every order of ``finals`` has a final report and
    every order of ``any_report`` has at least one (or ``timeout`` passed: verify counts)."""
    deadline = time.monotonic() + timeout
    reports = await wait_for_finals(handle, account, finals, timeout)
    for _ in range(int(timeout / 0.5) + 1):
        if any_report <= {r.client_order_id for r in reports} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)  # polling interval of a durable store, not a synchronisation
        reports = await stored_reports(handle, account)
    return reports


async def _check_live_engine(
    bridge: BridgeClient, load: Load, reports: Sequence[orders_pb2.ExecutionReport]
) -> tuple[int, int, list[str]]:
    """On the engine that lived through the fault: every GTC order ``status()`` calls live is in
    its book: every other one is canceled here (the cancel must find it), the rest are left for
    the restarted engine of the invariants. Returns (live, canceled, violations)."""
    last = {r.client_order_id: r for r in reports}
    violations: list[str] = []
    live: list[tuple[str, str]] = []
    gtc = sorted(c for c in load.acked if _is_gtc(load.orders[c]))
    for order_id in gtc:
        account = load.orders[order_id].account
        state = await bridge.status(account, order_id)
        report = state.last_report
        if not state.found or report is None:
            violations.append(f"{account}.{order_id}: acked but status() does not find it")
        elif not report.order_status.is_final:
            live.append((account, order_id))
            stored = last.get(order_id)
            if stored is not None and stored.order_status in FINAL:
                violations.append(f"{account}.{order_id}: status() live, EXECUTIONS final")
    canceled = 0
    for account, order_id in live[::2]:
        ack = await bridge.cancel(account, order_id)
        if ack.status is not AckStatus.ACCEPTED or ack.order_status is not OrderStatus.CANCELED:
            violations.append(
                f"{account}.{order_id}: status() live but not in the book ({ack.text})"
            )
        else:
            canceled += 1
    return len(live), canceled, violations


async def _until_load_ends(
    running: asyncio.Task[None], watching: asyncio.Task[None], watch: EngineWatch
) -> None:
    """Until every operation is done; fails at once if the engine exits and does not come
    back (the load would only retry against no engine), or after :data:`RUN_TIMEOUT_S`."""
    done, _ = await asyncio.wait(
        {running, watching}, timeout=RUN_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
    )
    if running in done:
        running.result()
        return
    await _cancel(running)
    if watching in done:
        error = watching.exception() or watch.failure
        raise AssertionError(f"engine: {error}; exits {watch.exits}")
    raise AssertionError(f"the load did not end within {RUN_TIMEOUT_S:.0f}s")


async def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _leader(cluster: LocalNatsCluster, stream: str) -> int:
    return await asyncio.to_thread(cluster.stream_leader, stream)


async def _run_scenario(
    cluster: LocalNatsCluster, tmp_path: Path, stream: str, pause: bool
) -> FaultResult:
    handle = cluster.handle
    what = f"SIGSTOP {PAUSE_S:.0f}s" if pause else "kill -9"
    fault = f"cluster mixed: {stream} leader {what}"
    seed = STREAMS.index(stream) * 10 + int(pause)
    rng = random.Random(seed)
    load = Load([_flow(i, rng) for i in range(ACCOUNTS)])
    # Retries sized to ride out a leader election (up to ~9 s) or the pause, as in
    # test_cluster.py; the test re-sends on top (ATTEMPTS).
    settings = client_settings(
        handle,
        ping_interval_ms=1000,
        request_timeout_ms=2000,
        publish_timeout_ms=2000,
        order_retry_max_attempts=20,
        order_retry_deadline_ms=15000,
    )
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log", env=FAST_PINGS)
    await asyncio.to_thread(engine.start)
    watch = EngineWatch(engine)
    watching = asyncio.create_task(watch.run())
    started = time.monotonic()
    violations: list[str] = []
    try:
        async with AsyncExitStack() as stack:
            bridges = [await stack.enter_async_context(BridgeClient(settings)) for _ in load.flows]
            await load.place_resting(bridges)
            running = asyncio.create_task(load.run(bridges, seed))
            stack.push_async_callback(_cancel, running)  # on failure, before the clients close
            total = load.total_ops()
            await load.wait_until(lambda: load.done >= total // 3, 120, "a third of the ops")
            leader = await _leader(cluster, stream)
            fault_at = time.monotonic()
            if pause:
                cluster.pause(leader)
                await asyncio.sleep(PAUSE_S)  # the fault's duration, not a synchronisation
                cluster.resume(leader)
            else:
                cluster.kill(leader)
            await _until_load_ends(running, watching, watch)
            load_s = time.monotonic() - started
            new_leader = await _leader(cluster, stream)
            if not pause:
                await asyncio.to_thread(cluster.nodes[leader].start)
            # Durable outcomes: everything queued has been taken by the engine, unknown
            # outcomes are settled by status() (found: acked; not found: retired for good).
            phase = time.monotonic()
            await wait_for_ack_floor(handle, timeout=120)
            phases = {"ack_floor": time.monotonic() - phase}
            retired: set[str] = set()
            for order_id in sorted(load.unknown):
                state = await bridges[0].status(load.orders[order_id].account, order_id)
                (load.acked if state.found else retired).add(order_id)
            phase = time.monotonic()
            reports: list[orders_pb2.ExecutionReport] = []
            for flow in load.flows:
                mine = {c for c in load.acked if load.orders[c].account == flow.account}
                finals = {c for c in mine if not _is_gtc(load.orders[c])} | load.canceled
                reports += await _outcomes(handle, flow.account, finals & mine, mine, 120)
            phases["outcomes"] = time.monotonic() - phase
            phase = time.monotonic()
            live, canceled_live, violations = await _check_live_engine(bridges[0], load, reports)
            phases["live_check"] = time.monotonic() - phase
    finally:
        watch.stopping = True
        code = await asyncio.to_thread(engine.stop)
        await watching
        if engine.running:  # a restart that raced the stop
            code = await asyncio.to_thread(engine.stop)
    # Every acked order needs a final report except the GTC ones still resting.
    must_be_final = {c for c in load.acked if not _is_gtc(load.orders[c]) or c in load.canceled}
    result = verify(
        FaultResult(
            fault,
            sent=len(load.orders),
            recovery_s=load.max_gap(fault_at),
            notes={
                "leader": f"n{leader}->n{new_leader}",
                "engine": watch.summary(),
                "ops": dict(load.ops),
                "cancels": dict(load.cancels),
                "unknown": f"{len(load.unknown)} ({len(retired)} not found)",
                "resends": dict(load.retries),
                "rejected": dict(load.rejected),
                "load_s": round(load_s, 1),
                "after_s": {k: round(v, 1) for k, v in phases.items()},
            },
        ),
        list(load.orders.values()),
        must_be_final,
        reports,
    )
    result.acked = len(load.acked)
    with_report = {r.client_order_id for r in reports}
    no_report = sorted(c for c in load.acked if c not in with_report)
    result.lost += sum(1 for c in no_report if c not in must_be_final)
    resting_ids = {o.client_order_id for f in load.flows for o in f.resting}
    maker_fills = sum(
        1
        for r in reports
        if r.client_order_id in resting_ids and r.exec_type == orders_pb2.EXEC_TYPE_TRADE
    )
    result.notes["maker_fills"] = maker_fills
    result.notes["live_checked"] = f"{live} live, {canceled_live} canceled"
    for order_id in sorted(retired):
        executed = [r for r in reports if r.client_order_id == order_id]
        if any(r.exec_type != orders_pb2.EXEC_TYPE_REJECTED for r in executed):
            violations.append(f"{order_id}: status() said not found, yet it executed")
    assert watch.failure is None, f"{watch.failure}: {watch.exits}\n{engine.log_tail(60)}"
    assert code == 0, engine.log_tail(60)
    assert_clean(result)
    assert not no_report, f"acked orders without any report: {no_report[:10]}"
    assert not violations, "\n".join(violations[:20])
    assert maker_fills > 0, "no fill against a resting client order: the flow missed its aim"
    return result


def _fault_params() -> list[object]:
    """Every stream with each fault; the normal suite runs each stream once and each fault at
    least once (alternating), the other three are soak variants (``-m soak``)."""
    return [
        pytest.param(
            stream,
            pause,
            id=f"{stream}-{'sigstop' if pause else 'kill9'}",
            marks=[pytest.mark.soak] if pause != (i % 2 == 1) else [],
        )
        for i, stream in enumerate(STREAMS)
        for pause in (False, True)
    ]


@pytest.mark.parametrize(("stream", "pause"), _fault_params())
async def test_leader_fault_under_mixed_load(
    cluster: LocalNatsCluster, tmp_path: Path, stream: str, pause: bool
) -> None:
    """A stream leader killed or frozen mid-load: nothing lost, engine serves, invariants hold."""
    result = await _run_scenario(cluster, tmp_path, stream, pause)
    checked = await assert_invariants(cluster.handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"
