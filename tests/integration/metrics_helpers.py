"""Helpers of the metrics tests: orders that touch every labelled series, and bounded polling."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

from bridge import BridgeClient, Order, OrderType, ReportStream, Side, TimeInForce


def market(account: str, symbol: str = "AAPL") -> Order:
    return Order(
        client_order_id=f"x-{uuid.uuid4().hex[:12]}",
        account=account,
        symbol=symbol,
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(10),
        time_in_force=TimeInForce.IOC,
    )


async def first_report_of(stream: ReportStream, client_order_id: str) -> None:
    async with asyncio.timeout(30):
        while (await stream.next(timeout=30)).client_order_id != client_order_id:
            pass


async def send_orders(bridge: BridgeClient, account: str) -> None:
    """Sync accepted and rejected, queued accepted; waits for the first reports it expects."""
    async with bridge.reports(account) as stream:
        accepted = market(account)
        assert (await bridge.submit(accepted)).accepted
        await first_report_of(stream, accepted.client_order_id)
        assert not (await bridge.submit(market(account, symbol="NOPE"))).accepted
        queued = market(account)
        await bridge.enqueue(queued)
        await first_report_of(stream, queued.client_order_id)


async def until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30, attempts: int = 300
) -> None:
    """Poll ``check`` (each call a scrape or an HTTP query) until it holds, bounded in time and
    attempts. The pause between calls only spaces them out: what is awaited is the state the
    server reports (a scrape that happened, a rule that was evaluated)."""
    async with asyncio.timeout(timeout):
        for _ in range(attempts):
            if await check():
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")
