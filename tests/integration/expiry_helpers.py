"""Helpers of the expiry tests (tests/integration/test_expiry.py and
tests/faults/test_expiry_restart.py): orders that rest, a session end a few seconds ahead,
reading reports until orders end, and the FIX invariants and money conservation over everything
the server holds."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from bridge import ExecType, ExecutionReport, Order, OrderType, ReportStream, Side, TimeInForce
from bridge_dev.server import ServerHandle
from tests.faults.invariants import Invariants, all_reports, check_reports

S = 1_000_000_000
REST_BUY = Decimal("150.00")
"""A buy price far below the seeded asks of AAPL (190.01 and up): the order rests."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def resting(
    account: str,
    *,
    tif: TimeInForce = TimeInForce.GTC,
    deadline_unix_ns: int | None = None,
    side: Side = Side.BUY,
    price: Decimal = REST_BUY,
    qty: str = "10",
) -> Order:
    """A limit order of ``account`` on AAPL that rests (at ``price``)."""
    return Order(
        client_order_id=new_id("x"),
        account=account,
        symbol="AAPL",
        side=side,
        order_type=OrderType.LIMIT,
        limit_price=price,
        quantity=Decimal(qty),
        time_in_force=tif,
        deadline_unix_ns=deadline_unix_ns,
    )


def session_end(after_ns: int) -> tuple[str, int]:
    """The ``day_session_end_utc`` of the first whole second at or after ``after_ns`` (Unix ns),
    and that instant."""
    at = math.ceil(after_ns / S) * S
    return datetime.fromtimestamp(at // S, UTC).strftime("%H:%M:%S"), at


async def until_final(
    stream: ReportStream, ids: set[str], timeout: float = 60
) -> dict[str, list[ExecutionReport]]:
    """Read ``stream`` until every order of ``ids`` has its final report."""
    got: dict[str, list[ExecutionReport]] = defaultdict(list)
    pending = set(ids)
    async with asyncio.timeout(timeout):
        async for report in stream:
            got[report.client_order_id].append(report)
            if report.is_final:
                pending.discard(report.client_order_id)
            if not pending:
                return got
    raise AssertionError(f"report stream ended; no final report for {pending}")


async def until_new(stream: ReportStream, ids: set[str], timeout: float = 30) -> None:
    """Read ``stream`` until every order of ``ids`` has its NEW report (it rests)."""
    pending = set(ids)
    async with asyncio.timeout(timeout):
        async for report in stream:
            assert not report.is_final, report
            if report.exec_type is ExecType.NEW:
                pending.discard(report.client_order_id)
            if not pending:
                return


def assert_expired(
    reports: list[ExecutionReport],
    reason: str,
    at_ns: int,
    cum: str = "0",
    within_ns: int = 5 * S,
) -> ExecutionReport:
    """The order's last report is its one EXPIRED report, for ``reason``, at or after ``at_ns``
    and less than ``within_ns`` after it (the timer is on time), with ``cum`` filled and
    nothing left."""
    last = reports[-1]
    assert last.exec_type is ExecType.EXPIRED, reports
    assert [r.exec_type for r in reports].count(ExecType.EXPIRED) == 1, reports
    assert last.reason.value == reason, last
    assert last.cum_qty == Decimal(cum), last
    assert last.leaves_qty == 0, last
    assert at_ns <= last.transact_time_unix_ns < at_ns + within_ns, (
        last.transact_time_unix_ns - at_ns
    )
    return last


async def assert_fix_invariants(handle: ServerHandle) -> Invariants:
    """Over every report the server holds: per symbol bought == sold (the house included);
    per order report seqs 1, 2, 3..., nothing after a final report, cum + leaves == qty while
    live; exec ids unique."""
    reports = await all_reports(handle)
    found = Invariants()
    check_reports(reports, found)
    exec_ids = [r.exec_id for r in reports]
    if len(set(exec_ids)) != len(exec_ids):
        found.violations.append("duplicate exec ids")
    assert not found.violations, "\n".join(found.violations[:20])
    return found


def now_ns() -> int:
    return time.time_ns()
