"""An orchestrator: one urgent order, a queued batch, and the execution reports of both.

Connection settings come from BRIDGE_* environment variables and/or the TOML file named by
BRIDGE_CONFIG_FILE. `./dev server --engine` runs a server and an engine and writes that file:

    BRIDGE_CONFIG_FILE=.dev/orchestrator.toml python examples/orchestrator.py
"""

import asyncio
import uuid
from decimal import Decimal

from bridge import AckStatus, BridgeClient, BridgeSettings, Order, OrderType, Side, TimeInForce


def limit_order(client_order_id: str, side: Side, price: str) -> Order:
    return Order(
        client_order_id=client_order_id,  # unique per account; re-sending it is always safe
        account="ACC1",
        symbol="AAPL",
        side=side,
        order_type=OrderType.LIMIT,
        limit_price=Decimal(price),  # Decimal or str: floats are refused for money
        quantity=Decimal("100"),
        time_in_force=TimeInForce.IOC,
    )


async def main() -> None:
    settings = BridgeSettings()  # BRIDGE_* environment variables and/or BRIDGE_CONFIG_FILE
    run = uuid.uuid4().hex[:8]
    async with BridgeClient(settings) as bridge, bridge.reports("ACC1") as reports:
        order = limit_order(f"ord-{run}-0", Side.BUY, "190.01")
        ack = await bridge.submit(order)  # urgent: request-reply, ACCEPTED once durable
        print(f"{order.client_order_id}: {ack.status} {ack.reason}")
        waiting = {order.client_order_id} if ack.status is AckStatus.ACCEPTED else set()

        batch = [limit_order(f"ord-{run}-{i}", Side.SELL, "189.99") for i in (1, 2, 3)]
        queued = await bridge.enqueue_batch(batch)  # JetStream, OrderBatch messages (idempotent)
        print(f"queued {len(queued)} orders, stream sequences {[q.seq for q in queued]}")
        waiting |= {q.client_order_id for q in queued}

        async for report in reports:  # NEW, TRADE..., then one final report per order
            if report.is_final and report.client_order_id in waiting:
                waiting.discard(report.client_order_id)
                print(
                    f"{report.client_order_id}: {report.order_status}, "
                    f"filled {report.cum_qty} at {report.avg_px}"
                )
                if not waiting:
                    break


if __name__ == "__main__":
    asyncio.run(main())
