"""A stand-in orchestrator with a session, for tests/faults/test_cancel_on_disconnect.py.

``python -m tests.faults.session_child ACCOUNT COUNT`` connects with the session its
``BRIDGE_SESSION_*`` variables name, places COUNT resting orders (GTC limit buys of AAPL far
below the market: half submitted, half queued), waits until every one rests (its NEW report),
prints ``READY {json}`` (the client order ids, the grace and heartbeat in force) and then lives,
heartbeating, until it is killed. Settings come from ``BRIDGE_*`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from decimal import Decimal

from bridge import BridgeClient, BridgeSettings, ExecType, Order, OrderType, Side, TimeInForce


def resting_order(account: str, i: int, prefix: str) -> Order:
    """A GTC limit buy far below AAPL's market (~190): it rests, nothing trades with it."""
    return Order(
        client_order_id=f"{prefix}{i}-{uuid.uuid4().hex[:8]}",
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal(1),
        limit_price=Decimal("150.00") + Decimal(i) / 100,
        time_in_force=TimeInForce.GTC,
    )


async def main(account: str, count: int) -> None:
    async with BridgeClient(BridgeSettings()) as bridge, bridge.reports(account) as reports:
        session = bridge.session
        assert session is not None, "BRIDGE_SESSION_ID is not set"
        assert session.info is not None
        orders = [resting_order(account, i, "kid") for i in range(count)]
        half = count // 2
        for order in orders[:half]:
            (await bridge.submit(order)).raise_for_status()
        await bridge.enqueue_batch(orders[half:])
        waiting = {o.client_order_id for o in orders}
        async with asyncio.timeout(60):
            async for report in reports:
                if report.exec_type is ExecType.NEW:
                    waiting.discard(report.client_order_id)
                if not waiting:
                    break
        ready = {
            "orders": [o.client_order_id for o in orders],
            "session_id": session.session_id,
            "grace_ms": session.info.grace_ms,
            "heartbeat_ms": session.info.heartbeat_ms,
        }
        print("READY", json.dumps(ready), flush=True)
        await asyncio.Event().wait()  # heartbeats go on until the parent kills this process


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("account")
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    asyncio.run(main(args.account, args.count))
