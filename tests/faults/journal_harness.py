"""What the journal's crash tests (test_journal_*.py, test_projection_repair.py) share: reading an
engine's journal (stream JOURNAL) and counting what EXECUTIONS holds per exec id, the book an
engine serves against the book the durable record implies, a synchronous publisher, engines
that are expected to die, and the operator's changes to a stream or the consumer.

The journal entry (``JournalEntry`` in engine-rs/proto/engine/v1/state.proto) has no Python
class: :func:`entry_shape` reads the few top-level fields the tests need from the protobuf wire
format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from nats.js.api import DeliverPolicy

from bridge import BridgeClient, BridgeError, Order, QueuedOrder, contract
from bridge.models import decimal_from_proto
from bridge.v1 import market_data_pb2, orders_pb2
from bridge_dev.engine import EngineError, EngineProcess
from bridge_dev.server import ServerHandle, connect_as
from tests.faults.harness import Publisher, stored_entries

LIVE = {orders_pb2.ORDER_STATUS_NEW, orders_pb2.ORDER_STATUS_PARTIALLY_FILLED}
REPAIRED = "projections repaired from the journal"
"""The engine's INFO line when a repair re-projected at least one journal entry."""
RECONNECT_REPAIR = "reconnected: repairing the projections before serving"


# ----------------------------------------------------------------------------- the journal


@dataclass(frozen=True)
class EntryShape:
    """The top-level fields of one journal entry the tests look at."""

    seq: int
    engine_id: str
    prev_stream_seq: int
    records: int
    reports: int
    size: int
    parts_after: int = 0
    """Entries of its commit group after it (0: the group's last)."""
    group_prev_seq: int = 0


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def entry_shape(seq: int, payload: bytes) -> EntryShape:
    """Fields 1 (engine_id), 2 (prev_stream_seq), 3 (records), 4 (reports), 6 (parts_after)
    and 7 (group_prev_seq) of a ``JournalEntry``; raises ValueError if ``payload`` is not
    one."""
    engine_id, records, reports = "", 0, 0
    varints: dict[int, int] = {}
    i = 0
    try:
        while i < len(payload):
            key, i = _varint(payload, i)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, i = _varint(payload, i)
                varints[field] = value
            elif wire == 2:
                size, i = _varint(payload, i)
                data, i = payload[i : i + size], i + size
                if field == 1:
                    engine_id = data.decode()
                records += field == 3
                reports += field == 4
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            else:
                raise ValueError(f"wire type {wire}")
    except (IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a JournalEntry: {exc}") from exc
    if i != len(payload):
        raise ValueError("not a JournalEntry: truncated")
    return EntryShape(
        seq,
        engine_id,
        varints.get(2, 0),
        records,
        reports,
        len(payload),
        parts_after=varints.get(6, 0),
        group_prev_seq=varints.get(7, 0),
    )


def encode_entry(engine_id: str, prev_stream_seq: int) -> bytes:
    """A minimal valid ``JournalEntry`` (no records, no reports): what another writer of an
    engine's journal would append."""
    name = engine_id.encode()
    prev = bytearray()
    value = prev_stream_seq
    while True:
        prev.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            break
    return b"\x0a" + bytes([len(name)]) + name + b"\x10" + bytes(prev)


async def journal_messages(
    handle: ServerHandle, engine_id: str = "engine-1", timeout: float = 30
) -> list[tuple[int, bytes]]:
    """Every message of ``engine_id``'s journal (stream sequence, payload), read as the
    operator to the end the stream had when the read started."""
    subject = contract.journal(engine_id)
    nc = await connect_as(handle.url, handle.creds, "operator")
    out: list[tuple[int, bytes]] = []
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
                    out.append((m.metadata.sequence.stream, m.data))
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    return out


async def journal(handle: ServerHandle, engine_id: str = "engine-1") -> list[EntryShape]:
    """``engine_id``'s journal entries, oldest first (every one must decode)."""
    return [entry_shape(seq, data) for seq, data in await journal_messages(handle, engine_id)]


async def update_journal_stream(handle: ServerHandle, **changes: object) -> int:
    """Change JOURNAL's configuration as the operator; returns its message count before."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        info = await js.stream_info(contract.JOURNAL_STREAM)
        await js.update_stream(info.config.evolve(**changes))
        return info.state.messages
    finally:
        await nc.close()


async def set_ack_wait(handle: ServerHandle, seconds: float) -> None:
    """The engine consumer's ack_wait, as the operator (a killed engine's unacked orders come
    back after it: the tests shorten it so that their redeliveries happen within the test)."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        info = await js.consumer_info(contract.ORDERS_STREAM, contract.ENGINE_CONSUMER)
        config = info.config
        config.ack_wait = seconds
        await js.add_consumer(contract.ORDERS_STREAM, config)
    finally:
        await nc.close()


# ----------------------------------------------------------------------------- EXECUTIONS


async def exec_id_counts(handle: ServerHandle) -> Counter[str]:
    """How many EXECUTIONS messages hold each exec id (every report of every account)."""
    return Counter(r.exec_id for _, r in await stored_entries(handle, None, timeout=120))


def stored_twice(counts: Counter[str]) -> list[str]:
    return sorted(e for e, n in counts.items() if n > 1)


# ----------------------------------------------------------------------------- the book

BookSide = tuple[tuple[Decimal, Decimal, int], ...]
"""One side of a book, best first: (price, quantity, orders) per level."""
Levels = tuple[BookSide, BookSide]
"""(bids, asks)."""


def book_from_reports(reports: Iterable[orders_pb2.ExecutionReport], symbol: str) -> Levels:
    """The book the durable record implies: every order whose last report is live rests its
    leaves quantity at its price."""
    last: dict[str, orders_pb2.ExecutionReport] = {}
    for r in reports:
        if r.symbol == symbol:
            last[r.engine_order_id] = r
    sides: dict[int, dict[Decimal, list[Decimal]]] = defaultdict(lambda: defaultdict(list))
    for r in last.values():
        if r.order_status in LIVE:
            price = decimal_from_proto(r.price)
            sides[r.side][price].append(decimal_from_proto(r.leaves_qty))

    def side(levels: dict[Decimal, list[Decimal]], best_first_high: bool) -> BookSide:
        return tuple(
            (p, sum(qs, Decimal()), len(qs))
            for p, qs in sorted(levels.items(), reverse=best_first_high)
        )

    return side(sides[orders_pb2.SIDE_BUY], True), side(sides[orders_pb2.SIDE_SELL], False)


async def engine_book(handle: ServerHandle, symbol: str) -> Levels:
    """The book the running engine publishes for ``symbol`` (its market data snapshot)."""
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    try:
        request = market_data_pb2.MarketDataSnapshotRequest(symbol=symbol).SerializeToString()
        reply = await nc.request(contract.md_snapshot(symbol), request, timeout=5)
    finally:
        await nc.close()
    snapshot = market_data_pb2.MarketDataSnapshot.FromString(reply.data)
    assert not snapshot.errors, snapshot.errors

    def side(levels: Sequence[market_data_pb2.PriceLevel]) -> BookSide:
        return tuple(
            (decimal_from_proto(lv.price), decimal_from_proto(lv.quantity), lv.orders)
            for lv in levels
        )

    return side(snapshot.bids), side(snapshot.asks)


async def assert_book_is_the_record(
    handle: ServerHandle, symbols: Sequence[str] = ("AAPL", "MSFT"), timeout: float = 10
) -> dict[str, Levels]:
    """The running engine's book of each symbol is exactly the book EXECUTIONS implies (market
    data is published coalesced: asked again until it is, bounded); returns the books."""
    books: dict[str, Levels] = {}
    deadline = time.monotonic() + timeout
    for symbol in symbols:
        while True:
            want = book_from_reports(
                (r for _, r in await stored_entries(handle, None, timeout=120)), symbol
            )
            got = await engine_book(handle, symbol)
            if got == want:
                books[symbol] = got
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{symbol}: engine book {got} != the record's {want}")
            await asyncio.sleep(0.1)  # polling interval of a coalesced publication
    return books


# ----------------------------------------------------------------------------- clients


class SyncPublisher(Publisher):
    """:class:`Publisher` for synchronous orders: ``submit`` each order until it is answered
    (ACCEPTED or REJECTED, ``duplicate`` when an earlier attempt was taken), re-sending the
    same client order id after a failure (outcome unknown, engine unavailable)."""

    async def _one(self, order: Order) -> None:
        for _ in range(60):
            try:
                await self.bridge.submit(order)
            except BridgeError as exc:
                self.errors[type(exc).__name__] += 1
                continue
            self.acked.add(order.client_order_id)
            self.ack_times.append(time.monotonic())
            async with self._progress:
                self._progress.notify_all()
            return
        raise AssertionError(f"{order.client_order_id} not answered after 60 attempts")


# ----------------------------------------------------------------------------- engines


LONG_PULL = {"BRIDGE_PULL_EXPIRES_MS": "60000"}
"""Engine environment for :func:`queue_while_paused`: a pull request that outlives the pause."""


async def queue_while_paused(
    engine: EngineProcess, bridge: BridgeClient, orders: Sequence[Order]
) -> list[QueuedOrder]:
    """Queue ``orders`` while ``engine`` is stopped (SIGSTOP) with its pull request pending
    (started with :data:`LONG_PULL` and a ``pull_batch`` of at least ``len(orders)``), then
    let it run (SIGCONT): the server delivers them to it together, and its next commit group
    takes every one that has arrived when it looks (from a few to all of them, depending on
    how fast the client library hands them over)."""
    assert engine.pid is not None
    os.kill(engine.pid, signal.SIGSTOP)
    try:
        return await bridge.enqueue_batch(orders)
    finally:
        os.kill(engine.pid, signal.SIGCONT)


def run_until_exit(engine: EngineProcess, timeout: float = 60) -> int:
    """Start ``engine``, which is expected to die (a failpoint, a fatal error) whether or not
    it became ready first; its exit code."""
    with contextlib.suppress(EngineError):  # it died before it was ready: its code is kept
        engine.start()
    return engine.wait(timeout)


def log_records(log_file: Path, message: str) -> list[dict[str, object]]:
    """The engine's JSON log lines whose message contains ``message``."""
    out: list[dict[str, object]] = []
    for line in log_file.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and message in str(record.get("message", "")):
            out.append(record)
    return out
