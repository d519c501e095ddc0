"""Shared machinery of the fault-injection tests: order flows, the ledger check, the report.

Every fault test ends with :func:`verify`, which reads the durable EXECUTIONS stream (not a
live subscription, which a reconnect could have interrupted) and counts, for the orders whose
publish or submit was acknowledged: lost (no final report), duplicated (more than one final
report, or an exec id stored twice), over-filled (cum qty above order qty). The test then
asserts lost = duplicated = over-filled = 0 and records the figures, which
``pytest_terminal_summary`` (tests/conftest.py) prints as the fault-injection table.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, StreamInfo

from bridge import (
    BridgeClient,
    BridgeError,
    Order,
    OrderType,
    Side,
    StreamFullError,
    TimeInForce,
    audit,
    contract,
)
from bridge.models import decimal_from_proto
from bridge.v1 import orders_pb2
from bridge_dev.server import ServerHandle, connect_as

FINAL = {
    orders_pb2.ORDER_STATUS_FILLED,
    orders_pb2.ORDER_STATUS_CANCELED,
    orders_pb2.ORDER_STATUS_REJECTED,
    orders_pb2.ORDER_STATUS_EXPIRED,
}


@dataclass
class FaultResult:
    """One row of the fault-injection table."""

    fault: str
    sent: int = 0
    acked: int = 0
    lost: int = 0
    duplicated: int = 0
    overfilled: int = 0
    refused: int = 0
    recovery_s: float | None = None
    notes: dict[str, object] = field(default_factory=dict)


RESULTS: list[FaultResult] = []


def new_account(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}".upper()


def order_flow(account: str, count: int, seed: int) -> list[Order]:
    """``count`` orders that each reach a final state: market and IOC limit, both sides."""
    rng = random.Random(seed)
    orders: list[Order] = []
    for i in range(count):
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        qty = Decimal(rng.choice((1, 5, 10, 25, 50)))
        if rng.random() < 0.5:
            o = Order(
                client_order_id=f"f{i}-{uuid.uuid4().hex[:10]}",
                account=account,
                symbol="AAPL",
                side=side,
                order_type=OrderType.MARKET,
                quantity=qty,
                time_in_force=TimeInForce.IOC,
            )
        else:
            offset = Decimal(rng.randint(-3, 3)) / 100
            o = Order(
                client_order_id=f"f{i}-{uuid.uuid4().hex[:10]}",
                account=account,
                symbol="AAPL",
                side=side,
                order_type=OrderType.LIMIT,
                quantity=qty,
                limit_price=Decimal("190.00") + offset,
                time_in_force=TimeInForce.IOC,
            )
        orders.append(o)
    return orders


async def update_orders_stream(handle: ServerHandle, **changes: object) -> None:
    """Change the ORDERS stream's configuration as the operator (e.g. ``max_msgs=300``)."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        config = (await js.stream_info(contract.ORDERS_STREAM)).config
        await js.update_stream(config.evolve(**changes))
    finally:
        await nc.close()


async def _stream_info_retried(js: JetStreamContext, subject: str, timeout: float) -> StreamInfo:
    """EXECUTIONS' info for ``subject``, asked again while the cluster elects a leader (503)."""
    async with asyncio.timeout(timeout):
        while True:  # each turn is a round trip to the server: a bounded poll
            try:
                return await js.stream_info(contract.EXECUTIONS_STREAM, subjects_filter=subject)
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.2)  # polling interval of a server-side state


async def stored_entries(
    handle: ServerHandle, account: str | None, timeout: float = 60
) -> list[tuple[int, orders_pb2.ExecutionReport]]:
    """Every report EXECUTIONS holds for ``account`` (None: for every account) with its stream
    sequence, read to the end the stream had when the read started.

    How many there are is asked of the stream leader first: the reading consumer may sit on a
    replica still catching up (a cluster node just restarted), whose own idea of the end comes
    too early, so the read goes on until the leader's count is reached."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    out: list[tuple[int, orders_pb2.ExecutionReport]] = []
    subject = contract.executions_for_account(account) if account else contract.EXECUTIONS_ALL
    try:
        js = nc.jetstream()
        info = await _stream_info_retried(js, subject, timeout)
        by_subject = info.state.subjects or {}
        expected = info.state.messages if account is None else sum(by_subject.values())
        if not expected:
            return out
        sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        try:
            async with asyncio.timeout(timeout):
                while len(out) < expected:
                    m = await sub.next_msg(timeout=timeout)
                    seq = m.metadata.sequence.stream
                    out.append((seq, orders_pb2.ExecutionReport.FromString(m.data)))
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    return out


async def verify_journal(
    handle: ServerHandle, stream: str = contract.EXECUTIONS_STREAM, timeout: float = 30
) -> audit.Result:
    """Every engine's hash chain in ``stream`` (``bridge audit verify``'s check), read as the
    operator, with the dev engine identity's key."""
    keys = audit.engine_keys([("engine", handle.creds.role("engine").public_nkey)])
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        return await audit.verify_stream(nc.jetstream(), stream, keys, timeout=timeout)
    finally:
        await nc.close()


async def stored_reports(
    handle: ServerHandle, account: str, timeout: float = 60
) -> list[orders_pb2.ExecutionReport]:
    """Every report EXECUTIONS holds for ``account`` (the durable record), read to its end."""
    return [r for _, r in await stored_entries(handle, account, timeout)]


async def wait_for_ack_floor(handle: ServerHandle, timeout: float = 60) -> int:
    """Wait until the engine has acknowledged every ORDERS message delivered to it (nothing
    pending, nothing awaiting an ack); returns EXECUTIONS' last sequence at that moment.

    The engine acks a queued order only after JetStream confirmed the storage of every report
    the order caused, so every such report has a sequence at or below the returned one.
    """
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        async with asyncio.timeout(timeout):
            while True:  # each turn is a round trip to the server: a bounded poll
                try:
                    info = await js.consumer_info(contract.ORDERS_STREAM, contract.ENGINE_CONSUMER)
                    if info.num_pending == 0 and info.num_ack_pending == 0:
                        stream = await js.stream_info(contract.EXECUTIONS_STREAM)
                        return stream.state.last_seq
                except (nats.errors.Error, TimeoutError):
                    pass  # a cluster still electing leaders after a fault (503): ask again
                await asyncio.sleep(0.05)  # polling interval of a server-side state
    finally:
        await nc.close()


def finals_by_order(reports: Sequence[orders_pb2.ExecutionReport]) -> Counter[str]:
    return Counter(r.client_order_id for r in reports if r.order_status in FINAL)


async def wait_for_finals(
    handle: ServerHandle, account: str, ids: set[str], timeout: float
) -> list[orders_pb2.ExecutionReport]:
    """Poll the durable stream until every order of ``ids`` has a final report."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reports = await stored_reports(handle, account)
        except (nats.errors.Error, TimeoutError, OSError):
            # The cluster may still be electing leaders after a fault (503): read again.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        missing = ids - set(finals_by_order(reports))
        if not missing:
            return reports
        if time.monotonic() > deadline:
            return reports  # verify() reports what is missing
        await asyncio.sleep(0.5)  # polling interval of a durable store, not a synchronisation


def verify(
    result: FaultResult,
    orders: Sequence[Order],
    acked: set[str],
    reports: Sequence[orders_pb2.ExecutionReport],
) -> FaultResult:
    """Fill in lost / duplicated / over-filled from the stored reports and record the row."""
    finals = finals_by_order(reports)
    exec_ids = Counter(r.exec_id for r in reports)
    qty = {o.client_order_id: o.quantity for o in orders}
    cum: dict[str, Decimal] = defaultdict(Decimal)
    for r in reports:
        cum[r.client_order_id] = max(cum[r.client_order_id], decimal_from_proto(r.cum_qty))
    result.acked = len(acked)
    result.lost = sum(1 for order_id in acked if finals[order_id] == 0)
    result.duplicated = sum(1 for n in finals.values() if n > 1) + sum(
        1 for n in exec_ids.values() if n > 1
    )
    result.overfilled = sum(
        1 for order_id, c in cum.items() if order_id in qty and c > qty[order_id]
    )
    unknown = {r.client_order_id for r in reports} - set(qty)
    result.notes["reports"] = len(reports)
    if unknown:
        result.notes["unknown_orders"] = len(unknown)
    RESULTS.append(result)
    return result


def assert_clean(result: FaultResult) -> None:
    assert (result.lost, result.duplicated, result.overfilled) == (0, 0, 0), result
    assert "unknown_orders" not in result.notes, result


class Publisher:
    """Queues ``orders`` with ``workers`` concurrent callers, one order per call, recording
    when each JetStream ack arrived (to measure publish gaps during a fault). Like a real
    orchestrator it re-sends an order that failed transiently, a bounded number of times:
    re-sending the same client order id is safe by design."""

    def __init__(self, bridge: BridgeClient, orders: Sequence[Order], workers: int = 8) -> None:
        self.bridge = bridge
        self.orders = list(orders)
        self.workers = workers
        self.acked: set[str] = set()
        self.refused: set[str] = set()
        self.ack_times: list[float] = []
        self.errors: Counter[str] = Counter()
        self._progress = asyncio.Condition()

    async def run(self) -> None:
        todo = iter(self.orders)
        await asyncio.gather(*(self._worker(todo) for _ in range(self.workers)))

    async def _worker(self, todo: Iterator[Order]) -> None:
        for order in todo:
            await self._one(order)

    async def _one(self, order: Order) -> None:
        for _ in range(30):
            try:
                await self.bridge.enqueue(order)
            except StreamFullError:
                self.refused.add(order.client_order_id)
                return
            except BridgeError as exc:
                self.errors[type(exc).__name__] += 1
                continue
            self.acked.add(order.client_order_id)
            self.ack_times.append(time.monotonic())
            async with self._progress:
                self._progress.notify_all()
            return
        raise AssertionError(f"{order.client_order_id} not acked after 30 attempts")

    def acked_count(self) -> int:
        return len(self.acked)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Until ``predicate()`` holds, re-checked at every publish ack (bounded)."""
        try:
            async with asyncio.timeout(timeout), self._progress:
                await self._progress.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from None

    def max_gap(self, since: float) -> float:
        """The longest interval without any publish ack, from ``since`` to the last ack."""
        times = sorted(t for t in self.ack_times if t >= since)
        points = [since, *times]
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)
