"""A commit group larger than one journal entry (issue 17: "a torn tail after kill -9
mid-write", for the journal's own format).

One synchronous BUY sweeps 400 resting 1-lot asks (the most fills one order may make,
engine-rs/src/book.rs MAX_FILLS_PER_ORDER), every order carrying the most tags intake allows
(which every report and record of it repeats): one execution of 801 reports and 401 records,
about 4 MB, more than one JetStream message may hold (engine-rs/src/journal.rs
MAX_ENTRY_BYTES). Written as one entry, the server would refuse it and the engine would stop,
then execute the order again at every restart and stop again. It is journaled as several
consecutive entries of one group (engine-rs/src/commit/split.rs), each saying how many entries
of its group follow it; the order is answered once the last one is stored.

* Without a fault the sweep is accepted and reported: the taker's 400 equal the makers' 400,
  each maker filled once.
* Failpoint ``mid_journal``: the engine aborts after the first entry of the group, before the
  rest. The group is torn: nothing of it was answered, so none of it is a fact. The restarted
  engine's repair skips the torn entries (engine-rs/src/repair/walk.rs), recovery executes the
  sweep (created PENDING_NEW, never answered) against the restored book, and a re-send is its
  duplicate: still one execution, each report stored once, bought == sold.
"""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import BridgeClient, BridgeError, Order, OrderType, Side, TimeInForce
from bridge.models import decimal_from_proto
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer
from tests.faults.harness import (
    FaultResult,
    assert_clean,
    new_account,
    stored_reports,
    verify,
    wait_for_ack_floor,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants
from tests.faults.journal_harness import (
    assert_book_is_the_record,
    exec_id_counts,
    journal,
    log_records,
    stored_twice,
)

pytestmark = pytest.mark.integration

MAKERS = 400
"""engine-rs/src/book.rs MAX_FILLS_PER_ORDER: the sweep trades with every one of them."""
TAGS = {f"k{i:02d}".ljust(32, "x"): "v" * 64 for i in range(30)}
"""Within intake's limits (32 tags, 32-byte keys, 64-byte values, a 4,096-byte order)."""
MAX_PAYLOAD = 1024 * 1024
"""nats/server.conf max_payload: no journal entry may be larger."""
TRADE = orders_pb2.EXEC_TYPE_TRADE
TORN = "journal entries of a commit group whose last entry was never stored skipped"


def ask(account: str, i: int) -> Order:
    return Order(
        client_order_id=f"ask{i:05d}",
        account=account,
        symbol="AAPL",
        side=Side.SELL,
        order_type=OrderType.LIMIT,
        limit_price=Decimal(f"190.00{6 + i % 4}"),  # ahead of the seeded asks at 190.01
        quantity=Decimal(1),
        time_in_force=TimeInForce.GTC,
        tags=TAGS,
    )


def traded(reports: list[orders_pb2.ExecutionReport]) -> Decimal:
    return sum((decimal_from_proto(r.last_qty) for r in reports if r.exec_type == TRADE), Decimal())


@pytest.mark.parametrize("crash", [None, "mid_journal"])
async def test_a_sweep_larger_than_one_journal_entry(
    fresh_server: LocalNatsServer, tmp_path: Path, crash: str | None
) -> None:
    handle = fresh_server.handle
    makers, taker = new_account("LM"), new_account("LT")
    sweep = Order(
        client_order_id="sweep",
        account=taker,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        limit_price=Decimal("190.009"),
        quantity=Decimal(MAKERS),
        time_in_force=TimeInForce.IOC,
        tags=TAGS,
    )
    settings = client_settings(handle, request_timeout_ms=15_000, order_retry_max_attempts=1)
    env = {"BRIDGE_FAILPOINT": crash} if crash else {}
    # The asks are placed by an engine without the failpoint: their own groups (batches of
    # large orders) may span two entries too, and only the sweep's may stop the engine.
    with EngineProcess(handle, log_file=tmp_path / "makers.log"):
        async with BridgeClient(settings) as bridge:
            queued = await bridge.enqueue_batch([ask(makers, i) for i in range(MAKERS)])
            assert len(queued) == MAKERS
            await wait_for_ack_floor(handle)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log", env=env).start()
    answered: BridgeError | None = None
    try:
        async with BridgeClient(settings) as bridge:
            before = len(await journal(handle))
            try:
                ack = await bridge.submit(sweep)
                assert ack.accepted, ack
            except BridgeError as exc:
                answered = exc
        if crash:
            assert answered is not None, "the torn sweep was answered"
            assert await asyncio.to_thread(engine.wait, 30) == -signal.SIGABRT
            torn = (await journal(handle))[before:]
            assert len(torn) == 1, torn
            assert torn[0].parts_after > 0, torn
            assert await stored_reports(handle, taker) == []  # nothing of it visible
            engine = EngineProcess(handle, log_file=tmp_path / "restart.log").start()
            assert engine.recovered == MAKERS + 1  # the asks restored, the sweep executed
            async with BridgeClient(settings) as bridge:
                again = await bridge.submit(sweep)
                assert again.accepted, again
                assert again.duplicate, again
        else:
            assert answered is None, answered
        taker_reports = await wait_for_finals(handle, taker, {"sweep"}, timeout=60)
        await assert_book_is_the_record(handle)
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    group = (await journal(handle))[before:]
    if crash:
        group = group[1:]  # the torn entry, then the re-executed sweep's group
        (skipped,) = log_records(tmp_path / "restart.log", TORN)
        assert skipped["entries"] == 1
    parts = [e.parts_after for e in group]
    assert len(group) >= 2, group
    assert parts == list(range(len(group) - 1, -1, -1)), group
    assert max(e.size for e in group) < MAX_PAYLOAD
    maker_reports = await stored_reports(handle, makers)
    bought, sold = traded(taker_reports), traded(maker_reports)
    assert bought == sold == MAKERS, (bought, sold)
    fills = [r.client_order_id for r in maker_reports if r.exec_type == TRADE]
    assert len(fills) == len(set(fills)) == MAKERS
    assert sum(e.reports for e in group) == 1 + 2 * MAKERS
    asks = [ask(makers, i) for i in range(MAKERS)]
    result = verify(
        FaultResult(
            f"sweep of {MAKERS} makers in {len(group)} journal entries"
            + (", engine abort between them" if crash else ""),
            sent=MAKERS + 1,
            notes={"entry_kib": [e.size // 1024 for e in group]},
        ),
        [*asks, sweep],
        {o.client_order_id for o in [*asks, sweep]},
        [*maker_reports, *taker_reports],
    )
    assert_clean(result)
    assert stored_twice(await exec_id_counts(handle)) == []
    checked = await assert_invariants(handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"
