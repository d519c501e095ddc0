"""A contract 1.0 client's order path, run as a script by tests/integration/test_compat_n1.py.

Run with ``PYTHONPATH`` = ``.dev/compat/1.0/py`` (``bridge_dev.compat.client_path()``) and
``python -P``, so that ``import bridge`` is release 1.0's package, not the current one. Reads
``{"settings": {...}, "account": "..."}`` (JSON, stdin), writes what happened as one JSON object
(stdout):

* a synchronous market order (submit), its ack and reports;
* a queued market order (enqueue), JetStream's ack and its reports;
* a resting limit order (submit), its cancel and the status query after it;
* every report as read by ``reports()``, and the raw bytes of each (the report stream's decoder
  wrapped): re-encoded by 1.0's generated Python, which keeps the fields it does not know.

Nothing here may use an API release 1.0 did not have.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from decimal import Decimal
from typing import Any

import bridge
import bridge.reports
from bridge import BridgeClient, BridgeSettings, Order, OrderType, Side, TimeInForce
from bridge.v1 import orders_pb2

RESTING_PRICE = Decimal("150.00")
"""Far below the seeded AAPL book (about 190): a buy limit there rests until canceled."""


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def order_path(settings: BridgeSettings, account: str) -> dict[str, Any]:
    raw: list[bytes] = []
    decode = bridge.reports._decode_report

    def capture(data: bytes) -> Any:
        raw.append(data)
        return decode(data)

    bridge.reports._decode_report = capture

    def market(qty: str) -> Order:
        return Order(
            client_order_id=_id("m"),
            account=account,
            symbol="AAPL",
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quantity=Decimal(qty),
            time_in_force=TimeInForce.IOC,
        )

    sync, queued = market("10"), market("20")
    resting = Order(
        client_order_id=_id("l"),
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        limit_price=RESTING_PRICE,
        quantity=Decimal(5),
        time_in_force=TimeInForce.GTC,
    )
    out: dict[str, Any] = {"bridge": bridge.__file__}
    async with BridgeClient(settings) as client, client.reports(account) as stream:
        out["sync_ack"] = (await client.submit(sync)).model_dump(mode="json")
        out["queued_ack"] = (await client.enqueue(queued)).model_dump(mode="json")
        out["resting_ack"] = (await client.submit(resting)).model_dump(mode="json")
        out["cancel_ack"] = (await client.cancel(account, resting.client_order_id)).model_dump(
            mode="json"
        )
        out["status"] = (await client.status(account, resting.client_order_id)).model_dump(
            mode="json"
        )
        pending = {sync.client_order_id, queued.client_order_id, resting.client_order_id}
        reports = []
        async with asyncio.timeout(60):
            while pending:
                report = await stream.next(timeout=30)
                reports.append(report.model_dump(mode="json"))
                if report.is_final:
                    pending.discard(report.client_order_id)
    out["ids"] = {
        "sync": sync.client_order_id,
        "queued": queued.client_order_id,
        "resting": resting.client_order_id,
    }
    out["reports"] = reports
    # The raw reports, read and written back by 1.0's generated Python.
    again = []
    for data in raw:
        msg = orders_pb2.ExecutionReport()
        msg.ParseFromString(data)
        again.append(msg.SerializeToString().hex())
    out["reports_reencoded"] = again
    out["report_fields_1_0"] = sorted(orders_pb2.ExecutionReport.DESCRIPTOR.fields_by_name)
    return out


def main() -> None:
    request = json.load(sys.stdin)
    settings = BridgeSettings(**request["settings"])
    result = asyncio.run(order_path(settings, request["account"]))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
