"""Write the bridge.v1 golden wire vectors (schemas/testdata/<name>.py.bin).

Each vector is one fixed, deterministic message built by a function in ``BUILDERS`` and encoded
by Python protobuf with ``SerializeToString(deterministic=True)`` (map entries sorted by key).
The Rust integration test ``engine-rs/tests/golden.rs`` decodes these files and writes the
prost-encoded ``<name>.rs.bin`` counterparts; ``tests/unit/test_golden.py`` decodes those and
checks that the ``.py.bin`` files are still exactly what the builders below produce.

The vectors are a compatibility contract: never change a vector of an existing message version,
add a new one instead. Usage: ``python scripts/gen_golden.py [--out DIR]``
(default: schemas/testdata).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import Message

from bridge.v1 import common_pb2, orders_pb2

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / "schemas" / "testdata"

# Fixed instants (Unix epoch ns) so the vectors never depend on the clock.
CREATED_AT_NS = 1_700_000_000_000_000_000
DEADLINE_NS = 1_700_000_005_000_000_000
ACK_TIME_NS = 1_700_000_000_123_456_789
TRANSACT_TIME_NS = 1_700_000_001_500_000_000
STATUS_REPORT_TIME_NS = 1_700_000_000_200_000_000


def _dec(units: int, scale: int) -> common_pb2.Decimal:
    return common_pb2.Decimal(units=units, scale=scale)


def new_order_limit() -> orders_pb2.NewOrder:
    """A LIMIT NewOrder with every field set: BUY 0.5 ACME @ 101.25 GTC, deadline, two tags."""
    return orders_pb2.NewOrder(
        client_order_id="ord-0001",
        account="acct-1",
        symbol="ACME",
        side=orders_pb2.SIDE_BUY,
        order_type=orders_pb2.ORDER_TYPE_LIMIT,
        quantity=_dec(5, 1),
        limit_price=_dec(10125, 2),
        time_in_force=orders_pb2.TIME_IN_FORCE_GTC,
        created_at_unix_ns=CREATED_AT_NS,
        deadline_unix_ns=DEADLINE_NS,
        tags={"strategy": "mm-1", "desk": "alpha"},
    )


def new_order_market_minimal() -> orders_pb2.NewOrder:
    """A MARKET NewOrder with only the fields a valid order needs: SELL 3 ACME IOC."""
    return orders_pb2.NewOrder(
        client_order_id="ord-0002",
        account="acct-1",
        symbol="ACME",
        side=orders_pb2.SIDE_SELL,
        order_type=orders_pb2.ORDER_TYPE_MARKET,
        quantity=_dec(3, 0),
        time_in_force=orders_pb2.TIME_IN_FORCE_IOC,
    )


def cancel_request() -> orders_pb2.CancelRequest:
    """A CancelRequest for ord-0001."""
    return orders_pb2.CancelRequest(account="acct-1", client_order_id="ord-0001")


def order_status_request() -> orders_pb2.OrderStatusRequest:
    """An OrderStatusRequest for ord-0001."""
    return orders_pb2.OrderStatusRequest(account="acct-1", client_order_id="ord-0001")


def order_ack_rejected() -> orders_pb2.OrderAck:
    """A REJECTED OrderAck (INVALID_FIELD) carrying two field errors, in order."""
    return orders_pb2.OrderAck(
        client_order_id="ord-0003",
        account="acct-1",
        engine_order_id="e1-3",
        status=orders_pb2.ACK_STATUS_REJECTED,
        reason=orders_pb2.REJECT_REASON_INVALID_FIELD,
        field_errors=[
            common_pb2.FieldError(
                field="limit_price",
                rule="required_for_limit",
                message="a LIMIT order needs a price",
            ),
            common_pb2.FieldError(
                field="quantity",
                rule="positive",
                message="quantity must be greater than 0",
            ),
        ],
        order_status=orders_pb2.ORDER_STATUS_REJECTED,
        duplicate=True,
        ack_time_unix_ns=ACK_TIME_NS,
        engine_id="e1",
        text="2 invalid fields",
    )


def execution_report_trade() -> orders_pb2.ExecutionReport:
    """A TRADE ExecutionReport (partial fill 0.2 of 0.5 @ 101.25) with every decimal and tags."""
    return orders_pb2.ExecutionReport(
        exec_id="e1-1-2",
        engine_order_id="e1-1",
        client_order_id="ord-0001",
        account="acct-1",
        symbol="ACME",
        side=orders_pb2.SIDE_BUY,
        exec_type=orders_pb2.EXEC_TYPE_TRADE,
        order_status=orders_pb2.ORDER_STATUS_PARTIALLY_FILLED,
        order_qty=_dec(5, 1),
        last_qty=_dec(2, 1),
        last_px=_dec(10125, 2),
        cum_qty=_dec(2, 1),
        leaves_qty=_dec(3, 1),
        avg_px=_dec(10_125_000_000, 8),
        transact_time_unix_ns=TRANSACT_TIME_NS,
        text="partial fill",
        seq=2,
        engine_id="e1",
        tags={"strategy": "mm-1", "desk": "alpha"},
    )


def order_status_reply() -> orders_pb2.OrderStatusReply:
    """A found OrderStatusReply wrapping the order's NEW report (one tag: deterministic)."""
    report = orders_pb2.ExecutionReport(
        exec_id="e1-1-1",
        engine_order_id="e1-1",
        client_order_id="ord-0001",
        account="acct-1",
        symbol="ACME",
        side=orders_pb2.SIDE_BUY,
        exec_type=orders_pb2.EXEC_TYPE_NEW,
        order_status=orders_pb2.ORDER_STATUS_NEW,
        order_qty=_dec(5, 1),
        last_qty=_dec(0, 0),
        last_px=_dec(0, 0),
        cum_qty=_dec(0, 0),
        leaves_qty=_dec(5, 1),
        avg_px=_dec(0, 0),
        transact_time_unix_ns=STATUS_REPORT_TIME_NS,
        seq=1,
        engine_id="e1",
        tags={"desk": "alpha"},
    )
    return orders_pb2.OrderStatusReply(
        found=True,
        last_report=report,
        order_status=orders_pb2.ORDER_STATUS_NEW,
        text="resting",
    )


# Vector name -> builder. Names are file stems: schemas/testdata/<name>.py.bin (and .rs.bin).
BUILDERS: dict[str, Callable[[], Message]] = {
    "new_order_limit": new_order_limit,
    "new_order_market_minimal": new_order_market_minimal,
    "cancel_request": cancel_request,
    "order_status_request": order_status_request,
    "order_ack_rejected": order_ack_rejected,
    "execution_report_trade": execution_report_trade,
    "order_status_reply": order_status_reply,
}


def encode(msg: Message) -> bytes:
    """Deterministic wire bytes (map entries sorted by key)."""
    return msg.SerializeToString(deterministic=True)


def vectors() -> dict[str, bytes]:
    """Every golden vector's name and its Python-encoded bytes."""
    return {name: encode(build()) for name, build in BUILDERS.items()}


def write(out: Path) -> list[Path]:
    """Write ``<name>.py.bin`` for every vector into ``out``; returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in vectors().items():
        path = out / f"{name}.py.bin"
        path.write_bytes(data)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=TESTDATA)
    ns = parser.parse_args()
    written = write(ns.out)
    print(f"wrote {len(written)} golden vector(s) into {ns.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
