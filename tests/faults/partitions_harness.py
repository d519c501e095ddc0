"""What the fault tests of partitioned engines on the 3-node cluster share
(test_partitions_cluster.py): the engines, a watch of the partition leases, crossing load from
several clients on both paths, the ledger and FIX checks, and the journal of a partition.

Ownership is followed by watching the ``partition.*`` keys of ``bridge_leases`` (each value
names the holder's engine id and pid; the revision of the holder's first write is its epoch),
so a test waits for the event it needs (every partition owned by a live process, a share of
3/3/2) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import nats.errors
from nats.js.api import DeliverPolicy

from bridge import (
    BridgeClient,
    BridgeError,
    Order,
    OrderType,
    Side,
    TimeInForce,
    contract,
)
from bridge.partition import partition_of
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import ServerHandle, connect_as
from tests.faults.harness import FINAL, FaultResult, verify, wait_for_finals
from tests.faults.invariants import Invariants, check_reports
from tests.faults.journal_harness import set_ack_wait

PARTITIONS = 8
PRICE = Decimal("50.00")
QTY = Decimal(10)
# Engines and clients give a silent node up within ~3 s (as in test_cluster.py).
ENGINE_ENV = {"BRIDGE_PARTITIONED": "true", "BRIDGE_PING_INTERVAL_MS": "1000"}
# A queued message held by a killed or frozen engine comes back after this (default 30 s).
ACK_WAIT_S = 4.0


def one_symbol_per_partition() -> tuple[str, ...]:
    """A symbol in each of the contract's partitions, so every engine has traffic."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < PARTITIONS:
        s = f"PC-{i}"
        found.setdefault(partition_of(s), s)
        i += 1
    return tuple(found[p] for p in sorted(found))


SYMBOLS = one_symbol_per_partition()


def config(tmp_path: Path) -> Path:
    path = tmp_path / "partitioned.toml"
    lines = ['max_order_notional = "2500000"']
    for s in SYMBOLS:
        lines += [f'[symbols."{s}"]', 'max_order_qty = "5000"', f'reference_price = "{PRICE}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def engine(handle: ServerHandle, tmp_path: Path, name: str) -> EngineProcess:
    return EngineProcess(
        handle,
        engine_id=name,
        config_file=config(tmp_path),
        log_file=tmp_path / f"{name}.log",
        env=ENGINE_ENV,
    )


async def start(*engines: EngineProcess) -> None:
    """Start ``engines`` together; each returns once /readyz answers 200."""
    await asyncio.gather(*(asyncio.to_thread(e.start) for e in engines))


async def prepare(handle: ServerHandle) -> None:
    await set_ack_wait(handle, ACK_WAIT_S)


# ----------------------------------------------------------------------------- the leases


@dataclass
class Lease:
    engine_id: str
    pid: int
    epoch: int
    revision: int


class LeaseWatch:
    """Follows the partition leases; ``wait(predicate)`` returns once it holds. A watch that
    fails (its node killed) is opened again and rebuilt from the bucket's current values."""

    def __init__(self, handle: ServerHandle) -> None:
        self.handle = handle
        self.owners: dict[int, Lease] = {}
        self.history: list[tuple[float, int, Lease | None]] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LeaseWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            # Bounded: closing a connection whose node was killed can hang.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 10)

    async def _run(self) -> None:
        prefix = contract.LEASE_PARTITION_KEY_PREFIX
        while True:
            try:
                nc = await connect_as(self.handle.url, self.handle.creds, "operator")
            except (nats.errors.Error, OSError, TimeoutError):
                continue
            try:
                kv = await nc.jetstream().key_value(contract.LEASES_KV_BUCKET)
                watcher = await kv.watch(f"{prefix}*")
                fresh: dict[int, Lease] = {}
                initial = True
                while True:
                    try:
                        entry = await watcher.updates(timeout=5)  # type: ignore[no-untyped-call]
                    except nats.errors.TimeoutError:
                        continue
                    if entry is None:
                        initial = False
                        await self._set(dict(fresh), replace=True)
                        continue
                    p = int(entry.key.removeprefix(prefix))
                    lease = None
                    if entry.operation in (None, "PUT") and entry.value:
                        holder = json.loads(entry.value)
                        before = (fresh if initial else self.owners).get(p)
                        same = before is not None and before.pid == holder["pid"]
                        lease = Lease(
                            holder["engine_id"],
                            int(holder["pid"]),
                            before.epoch if same and before else int(entry.revision or 0),
                            int(entry.revision or 0),
                        )
                    if initial:
                        if lease is None:
                            fresh.pop(p, None)
                        else:
                            fresh[p] = lease
                    else:
                        await self._set({p: lease})
            except asyncio.CancelledError:
                raise
            except Exception:  # a node killed under the watch: watch again
                pass
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 5)

    async def _set(self, changes: dict[int, Lease | None], replace: bool = False) -> None:
        async with self._changed:
            if replace:
                self.owners.clear()
            for p, lease in changes.items():
                if lease is None:
                    self.owners.pop(p, None)
                else:
                    if (old := self.owners.get(p)) is None or old.pid != lease.pid:
                        self.history.append((time.monotonic(), p, lease))
                    self.owners[p] = lease
            self._changed.notify_all()

    async def wait(
        self, predicate: Callable[[dict[int, Lease]], bool], timeout: float, what: str
    ) -> dict[int, Lease]:
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: predicate(self.owners))
        except TimeoutError:
            raise AssertionError(f"{what} not reached in {timeout:.0f}s: {self.render()}") from None
        return dict(self.owners)

    def render(self) -> str:
        return " ".join(f"{p}:{o.engine_id}@{o.epoch}" for p, o in sorted(self.owners.items()))


def shares(owners: dict[int, Lease]) -> Counter[str]:
    return Counter(o.engine_id for o in owners.values())


def all_owned_by(pids: Callable[[], set[int]]) -> Callable[[dict[int, Lease]], bool]:
    """Every partition held by one of the live processes ``pids()``."""

    def check(owners: dict[int, Lease]) -> bool:
        live = pids()
        return len(owners) == PARTITIONS and all(o.pid in live for o in owners.values())

    return check


def share_is(want: Sequence[int]) -> Callable[[dict[int, Lease]], bool]:
    """Every partition owned and the engines' shares are ``want`` (in any order)."""

    def check(owners: dict[int, Lease]) -> bool:
        got = sorted(shares(owners).values(), reverse=True)
        return len(owners) == PARTITIONS and got == sorted(want, reverse=True)

    return check


def live_pids(engines: Sequence[EngineProcess]) -> Callable[[], set[int]]:
    return lambda: {e.pid for e in engines if e.running and e.pid is not None}


# ----------------------------------------------------------------------------- the load


def new_order(account: str, side: Side, symbol: str) -> Order:
    return Order(
        client_order_id=f"{side.name[0]}-{uuid.uuid4().hex[:12]}",
        account=account,
        symbol=symbol,
        side=side,
        order_type=OrderType.LIMIT,
        quantity=QTY,
        limit_price=PRICE,
        time_in_force=TimeInForce.GTC,
    )


@dataclass
class Load:
    """Crossing pairs (a buy and a sell of one symbol at one price, from two different
    clients) sent by ``workers`` tasks until stopped, alternating the synchronous and the
    queued path. An order failing transiently is sent again with its id (safe by design) until
    acked: a pair left half sent would leave its other half resting."""

    handle: ServerHandle
    account: str
    clients: int = 3
    workers: int = 6
    orders: list[Order] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)
    path_of: dict[str, str] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, pairs: int | None = None) -> None:
        """Until :meth:`stop` (or ``pairs`` pairs in all)."""
        settings = client_settings(
            self.handle,
            ping_interval_ms=1000,
            request_timeout_ms=2000,
            publish_timeout_ms=2000,
            order_retry_max_attempts=20,
            order_retry_deadline_ms=15000,
        )
        async with contextlib.AsyncExitStack() as stack:
            bridges = [
                await stack.enter_async_context(BridgeClient(settings)) for _ in range(self.clients)
            ]
            budget = iter(range(pairs)) if pairs is not None else None
            await asyncio.gather(*(self._worker(w, bridges, budget) for w in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()

    async def _worker(self, w: int, bridges: list[BridgeClient], budget: object) -> None:
        rng = random.Random(w)
        n = 0
        while not self._stop.is_set():
            if budget is not None and next(budget, None) is None:  # type: ignore[call-overload]
                return
            symbol = SYMBOLS[(w + n) % len(SYMBOLS)]
            a, b = rng.sample(bridges, 2)
            path = "sync" if (w + n) % 2 == 0 else "queued"
            pair = [
                new_order(self.account, Side.BUY, symbol),
                new_order(self.account, Side.SELL, symbol),
            ]
            if n % 2:
                pair.reverse()
            for client, o in zip((a, b), pair, strict=True):
                self.orders.append(o)
                await self._send(client, o, path)
            n += 1

    async def _send(self, client: BridgeClient, o: Order, path: str) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if path == "sync":
                    ack = await client.submit(o)
                    assert ack.accepted, ack
                else:
                    await client.enqueue(o)
            except BridgeError as exc:
                self.errors[type(exc).__name__] += 1
                continue
            self.acked.add(o.client_order_id)
            self.paths[path] += 1
            self.path_of[o.client_order_id] = path
            async with self._progress:
                self._progress.notify_all()
            return
        raise AssertionError(f"{o.client_order_id} not acked in 90 s: {dict(self.errors)}")

    async def until_acked(self, more_than: int, timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout), self._progress:
                await self._progress.wait_for(lambda: len(self.acked) > more_than)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from None


# ----------------------------------------------------------------------------- the checks


@dataclass
class Checked:
    result: FaultResult
    reports: list[orders_pb2.ExecutionReport]
    invariants: Invariants


async def check(
    handle: ServerHandle, load: Load, fault: str, takeover_s: float | None, timeout: float = 90
) -> Checked:
    """Every acked order final in EXECUTIONS, counted (lost, duplicated, over-filled) and held
    to the FIX invariants; every order of a crossing pair FILLED, bought = sold. Prints the
    fault's line."""
    reports = await wait_for_finals(handle, load.account, load.acked, timeout=timeout)
    result = verify(
        FaultResult(fault, sent=len(load.orders), recovery_s=takeover_s),
        load.orders,
        load.acked,
        reports,
    )
    result.notes["client_retries"] = dict(load.errors)
    result.notes["paths"] = dict(load.paths)
    takeover = f"{takeover_s:.2f}" if takeover_s is not None else "-"
    print(
        f"\nFAULT {fault}: sent={result.sent} acked={result.acked} lost={result.lost} "
        f"dup={result.duplicated} over={result.overfilled} takeover_s={takeover}"
    )
    found = Invariants()
    check_reports(reports, found)
    last = {r.client_order_id: r for r in reports}
    not_filled = [
        (i, orders_pb2.OrderStatus.Name(r.order_status))
        for i, r in last.items()
        if r.order_status != orders_pb2.ORDER_STATUS_FILLED
    ]
    if result.lost:
        lost = sorted(
            i
            for i in load.acked
            if i not in {r.client_order_id for r in reports if r.order_status in FINAL}
        )
        symbol = {o.client_order_id: o.symbol for o in load.orders}
        for i in lost:
            seen = [
                (orders_pb2.OrderStatus.Name(r.order_status), r.engine_id)
                for r in reports
                if r.client_order_id == i
            ]
            print(
                f"LOST {i} {symbol[i]} p{partition_of(symbol[i])} via {load.path_of.get(i)}: {seen}"
            )
    assert (result.lost, result.duplicated, result.overfilled) == (0, 0, 0), result
    assert result.acked == result.sent, result
    assert not found.violations, "\n".join(found.violations[:20])
    assert not not_filled, not_filled[:10]
    bought = sum(found.bought.values(), Decimal(0))
    assert bought == QTY * len(load.acked) / 2, (bought, len(load.acked))
    return Checked(result, reports, found)


# ----------------------------------------------------------------------------- the journal


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        f, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
            out.append((f, v))
        elif wire == 2:
            size, i = _varint(buf, i)
            out.append((f, buf[i : i + size]))
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
    return out


@dataclass(frozen=True)
class Entry:
    """One journal entry: its stream sequence, epoch (field 8) and the exec ids of its reports
    (field 4, a JournalReport whose field 1 is the ExecutionReport)."""

    seq: int
    epoch: int
    exec_ids: tuple[str, ...]


def entry(seq: int, payload: bytes) -> Entry:
    epoch, exec_ids = 0, []
    for f, v in _fields(payload):
        if f == 8 and isinstance(v, int):
            epoch = v
        elif f == 4 and isinstance(v, bytes):
            for g, r in _fields(v):
                if g == 1 and isinstance(r, bytes):
                    exec_ids.append(orders_pb2.ExecutionReport.FromString(r).exec_id)
    return Entry(seq, epoch, tuple(exec_ids))


async def journal_entries(handle: ServerHandle, engine_id: str, timeout: float = 30) -> list[Entry]:
    """The journal of ``engine_id`` (a partition id, ``p3``), oldest first, read to the end it
    had when the read started."""
    subject = contract.journal(engine_id)
    nc = await connect_as(handle.url, handle.creds, "operator")
    out: list[Entry] = []
    try:
        js = nc.jetstream()
        info = await js.stream_info(contract.JOURNAL_STREAM, subjects_filter=subject)
        expected = sum((info.state.subjects or {}).values())
        if not expected:
            return out
        sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        try:
            async with asyncio.timeout(timeout):
                while len(out) < expected:
                    m = await sub.next_msg(timeout=timeout)
                    out.append(entry(m.metadata.sequence.stream, m.data))
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    return out
