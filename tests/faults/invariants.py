"""The invariants every fault test ends with, checked against the durable record and a freshly
restarted engine (so they also check that recovery restores exactly what was):

* **conservation**: per symbol, the quantity bought equals the quantity sold, counting the
  house's seeded liquidity (every fill has a BUY-side and a SELL-side TRADE report);
* **per order** (an engine order id: a replaced order's reports carry its replaces' ids):
  report sequences run 1, 2, 3, ... with no report after a final one, and while an order is
  live ``cum_qty + leaves_qty == order_qty``;
* **status agrees**: ``status()`` answers each client order's last stored report (the house's
  orders are nobody's to query: no identity is entitled to a reserved account);
* **live means in a book**: every client order whose last report is live can be canceled
  (the engine finds it in a book); none is neither in a book nor final;
* **the journal holds**: every engine's execution report hash chain verifies (``bridge audit
  verify``), through whatever the fault did to the engine and the stream.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from bridge import AckStatus, BridgeClient, OrderStatus
from bridge.models import decimal_from_proto
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import ServerHandle
from tests.faults.harness import FINAL, stored_entries, verify_journal

HOUSE = "_house"
# status() is asked for every live order and for at most this many final ones.
STATUS_SAMPLE = 200


@dataclass
class Invariants:
    """What the check saw (for the fault table's notes) and what it found wrong."""

    reports: int = 0
    bought: dict[str, Decimal] = field(default_factory=dict)
    live_canceled: int = 0
    violations: list[str] = field(default_factory=list)


async def all_reports(handle: ServerHandle) -> list[orders_pb2.ExecutionReport]:
    """Every report EXECUTIONS holds, in stream order."""
    return [r for _, r in await stored_entries(handle, None, timeout=120)]


def check_reports(reports: list[orders_pb2.ExecutionReport], found: Invariants) -> None:
    """Conservation and the per-order rules, from the durable record alone."""
    side_qty: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    # One order = one engine order id: a replaced order's reports carry the replace's id.
    by_order: dict[tuple[str, str], list[orders_pb2.ExecutionReport]] = defaultdict(list)
    for r in reports:
        by_order[(r.account, r.engine_order_id)].append(r)
        if r.exec_type == orders_pb2.EXEC_TYPE_TRADE:
            side_qty[(r.symbol, r.side)] += decimal_from_proto(r.last_qty)
    for symbol in sorted({s for s, _ in side_qty}):
        bought = side_qty[(symbol, orders_pb2.SIDE_BUY)]
        sold = side_qty[(symbol, orders_pb2.SIDE_SELL)]
        found.bought[symbol] = bought
        if bought != sold:
            found.violations.append(f"{symbol}: bought {bought} != sold {sold}")
    for (account, order_id), rs in by_order.items():
        seqs = [r.seq for r in rs]
        if seqs != list(range(1, len(rs) + 1)):
            found.violations.append(f"{account}.{order_id}: report seqs {seqs[:8]}...")
        finals = [i for i, r in enumerate(rs) if r.order_status in FINAL]
        if finals and finals[0] != len(rs) - 1:
            found.violations.append(f"{account}.{order_id}: a report after its final report")
        for r in rs:
            if r.order_status not in FINAL:
                cum, leaves = decimal_from_proto(r.cum_qty), decimal_from_proto(r.leaves_qty)
                if cum + leaves != decimal_from_proto(r.order_qty):
                    found.violations.append(f"{account}.{order_id}: cum {cum} + leaves {leaves}")
    found.reports = len(reports)


async def check_engine_agrees(
    handle: ServerHandle, reports: list[orders_pb2.ExecutionReport], found: Invariants
) -> None:
    """status() answers each order's last stored report; every live client order is in a book
    (its cancel succeeds)."""
    # Each order by its latest id (a replace's, which status and cancel follow to the order).
    by_order: dict[tuple[str, str], orders_pb2.ExecutionReport] = {}
    for r in reports:
        by_order[(r.account, r.engine_order_id)] = r
    last = {(r.account, r.client_order_id): r for r in by_order.values()}
    # The venue's own orders (account _house) are nobody's to query or cancel: no identity is
    # entitled to a reserved account (the engine answers NOT_ENTITLED).
    live = [k for k, r in last.items() if r.order_status not in FINAL and k[0] != HOUSE]
    finals = [k for k, r in last.items() if r.order_status in FINAL and k[0] != HOUSE]
    finals = finals[:STATUS_SAMPLE]
    settings = client_settings(handle, request_timeout_ms=10_000)
    async with BridgeClient(settings) as bridge:
        for account, order_id in live + finals:
            state = await bridge.status(account, order_id)
            want = last[(account, order_id)]
            got = state.last_report
            if not state.found or got is None or got.exec_id != want.exec_id:
                seen = got.exec_id if got else None
                found.violations.append(
                    f"{account}.{order_id}: status {seen} != stored {want.exec_id}"
                )
        for account, order_id in live:
            ack = await bridge.cancel(account, order_id)
            if ack.status is not AckStatus.ACCEPTED or ack.order_status is not OrderStatus.CANCELED:
                found.violations.append(
                    f"{account}.{order_id}: live in EXECUTIONS but not in a book ({ack.text})"
                )
            else:
                found.live_canceled += 1


async def assert_invariants(handle: ServerHandle, log_dir: Path) -> Invariants:
    """Restart an engine on ``handle`` (the test's own must be stopped), check every invariant
    of the module docs, stop it; raises AssertionError listing every violation."""
    found = Invariants()
    engine = EngineProcess(handle, log_file=log_dir / "invariants-engine.log")
    await asyncio.to_thread(engine.start)
    try:
        reports = await all_reports(handle)
        check_reports(reports, found)
        await check_engine_agrees(handle, reports, found)
        # Conservation again, now that the cancels are reported too.
        check_reports(await all_reports(handle), found)
    finally:
        code = await asyncio.to_thread(engine.stop)
    assert code == 0, engine.log_tail()
    journal = await verify_journal(handle)
    if not journal.ok:
        found.violations.append(journal.render())
    assert not found.violations, "\n".join(found.violations[:20])
    return found
