"""Helpers of the replace tests (tests/integration/test_replace.py, tests/faults/
test_replace_recovery.py): orders at a level of their own, a desk that places, replaces,
sweeps and cleans up, and the FIX invariants on every report."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from decimal import Decimal

from bridge import (
    AckStatus,
    BridgeClient,
    BridgeSettings,
    Order,
    OrderAck,
    OrderStatus,
    OrderType,
    Replace,
    Side,
    TimeInForce,
)
from bridge.models import decimal_from_proto
from bridge.v1 import common_pb2, orders_pb2
from bridge_dev.server import ServerHandle
from tests.faults.harness import FINAL, stored_reports

PRICE = "190.00"
TRADE = orders_pb2.EXEC_TYPE_TRADE
REPLACED = orders_pb2.EXEC_TYPE_REPLACED
PENDING_REPLACE = orders_pb2.EXEC_TYPE_PENDING_REPLACE


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def limit(
    account: str,
    order_id: str,
    qty: int,
    price: str = PRICE,
    side: Side = Side.BUY,
    tif: TimeInForce = TimeInForce.GTC,
) -> Order:
    return Order(
        client_order_id=order_id,
        account=account,
        symbol="AAPL",
        side=side,
        order_type=OrderType.LIMIT,
        limit_price=Decimal(price),
        quantity=Decimal(qty),
        time_in_force=tif,
    )


def dec(d: common_pb2.Decimal) -> Decimal:
    return decimal_from_proto(d)


def assert_fix(reports: Iterable[orders_pb2.ExecutionReport]) -> None:
    """FIX invariants per order (engine order id: a replaced order's reports carry its
    replaces' ids): seqs 1..n, unique exec ids, no report after a final one, and
    cum + leaves = order_qty while the order is live."""
    by_order: dict[str, list[orders_pb2.ExecutionReport]] = defaultdict(list)
    exec_ids: set[str] = set()
    for r in reports:
        assert r.exec_id not in exec_ids, f"exec id {r.exec_id} twice"
        exec_ids.add(r.exec_id)
        by_order[r.engine_order_id].append(r)
    for order_id, rs in by_order.items():
        assert [r.seq for r in rs] == list(range(1, len(rs) + 1)), order_id
        finals = [i for i, r in enumerate(rs) if r.order_status in FINAL]
        assert not finals or finals[0] == len(rs) - 1, f"{order_id}: a report after its final"
        for r in rs:
            if r.order_status not in FINAL:
                assert dec(r.cum_qty) + dec(r.leaves_qty) == dec(r.order_qty), r


def conserved(reports: Iterable[orders_pb2.ExecutionReport]) -> None:
    """Per symbol, the quantity bought equals the quantity sold (house included)."""
    qty: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    for r in reports:
        if r.exec_type == TRADE:
            qty[(r.symbol, r.side)] += dec(r.last_qty)
    for symbol in {s for s, _ in qty}:
        assert qty[(symbol, orders_pb2.SIDE_BUY)] == qty[(symbol, orders_pb2.SIDE_SELL)], symbol


class Desk:
    """One test's account on one client: places orders, replaces them, sweeps its level, and
    cancels whatever it left resting."""

    def __init__(self, bridge: BridgeClient, handle: ServerHandle) -> None:
        self.bridge, self.handle = bridge, handle
        self.account = new_id("RP")
        self.acks: dict[str, OrderAck] = {}

    async def buy(self, order_id: str, qty: int, price: str = PRICE) -> OrderAck:
        ack = await self.bridge.submit(limit(self.account, order_id, qty, price))
        assert ack.status is AckStatus.ACCEPTED, ack
        self.acks[order_id] = ack
        return ack

    def replace(
        self, orig: str, replace_id: str, qty: int | None = None, price: str | None = None
    ) -> Replace:
        return Replace(
            account=self.account,
            orig_client_order_id=orig,
            client_order_id=replace_id,
            quantity=None if qty is None else Decimal(qty),
            limit_price=None if price is None else Decimal(price),
        )

    async def sweep(self, qty: int, price: str = PRICE) -> list[str]:
        """Sells ``qty`` IOC at ``price``; the ids (original) of the buys it filled, in order."""
        sell_id = new_id("sell")
        ack = await self.bridge.submit(
            limit(self.account, sell_id, qty, price, Side.SELL, TimeInForce.IOC)
        )
        assert ack.accepted, ack
        # Answered from the order store once the sell executed (the engine takes one request
        # at a time): its reports, written before its record, are stored.
        state = await self.bridge.status(self.account, sell_id)
        assert state.last_report is not None
        assert state.last_report.is_final
        names = {a.engine_order_id: name for name, a in self.acks.items()}
        batch = [
            r
            for r in await self.reports()
            if r.exec_type == TRADE and r.transact_time_unix_ns >= ack.ack_time_unix_ns
        ]
        return [names[r.engine_order_id] for r in batch if r.engine_order_id in names]

    async def reports(self) -> list[orders_pb2.ExecutionReport]:
        return await stored_reports(self.handle, self.account)

    async def close(self) -> None:
        """Cancels every order of the account still live, then checks the FIX invariants."""
        last: dict[str, orders_pb2.ExecutionReport] = {}
        for r in await self.reports():
            last[r.engine_order_id] = r
        for r in last.values():
            if r.order_status not in FINAL:
                ack = await self.bridge.cancel(self.account, r.client_order_id)
                assert ack.order_status is OrderStatus.CANCELED, ack
        assert_fix(await self.reports())


@asynccontextmanager
async def desk(settings: BridgeSettings, handle: ServerHandle) -> AsyncIterator[Desk]:
    async with BridgeClient(settings) as bridge:
        d = Desk(bridge, handle)
        try:
            yield d
        finally:
            await d.close()


def of_order(
    reports: list[orders_pb2.ExecutionReport], ack: OrderAck
) -> list[orders_pb2.ExecutionReport]:
    return [r for r in reports if r.engine_order_id == ack.engine_order_id]
