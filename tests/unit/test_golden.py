"""Golden wire vectors (schemas/testdata): Python reads what prost wrote, byte for byte.

``<name>.rs.bin`` files are written by ``engine-rs/tests/golden.rs`` (prost);
``<name>.py.bin`` files by ``scripts/gen_golden.py``. The expected values below are hard-coded
on purpose: they are the contract, not a copy of the builders.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import ModuleType

from google.protobuf.message import Message

from bridge.models import (
    AckStatus,
    ExecType,
    ExecutionReport,
    Order,
    OrderAck,
    OrderState,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from bridge.v1 import common_pb2, orders_pb2

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "schemas" / "testdata"
REGEN = "run `python scripts/gen_golden.py`"


def _load_gen_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_gen_golden", REPO / "scripts" / "gen_golden.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_GEN = _load_gen_golden()
BUILDERS: dict[str, Callable[[], Message]] = _GEN.BUILDERS


def _read(file: str) -> bytes:
    path = TESTDATA / file
    assert path.is_file(), (
        f"{path} is missing: {REGEN}, then `BRIDGE_WRITE_GOLDEN=1 cargo test --test golden` "
        "in engine-rs/"
    )
    return path.read_bytes()


def _dec(units: int, scale: int) -> common_pb2.Decimal:
    return common_pb2.Decimal(units=units, scale=scale)


def _rs_new_order(name: str) -> orders_pb2.NewOrder:
    return orders_pb2.NewOrder.FromString(_read(f"{name}.rs.bin"))


def _rs_report() -> orders_pb2.ExecutionReport:
    return orders_pb2.ExecutionReport.FromString(_read("execution_report_trade.rs.bin"))


def _rs_ack() -> orders_pb2.OrderAck:
    return orders_pb2.OrderAck.FromString(_read("order_ack_rejected.rs.bin"))


def _rs_status_reply() -> orders_pb2.OrderStatusReply:
    return orders_pb2.OrderStatusReply.FromString(_read("order_status_reply.rs.bin"))


# --- the vector set -------------------------------------------------------------------------


def test_vector_files_match_the_builders() -> None:
    """Every builder has a .py.bin and a .rs.bin vector, and no vector file lacks a builder."""
    names = set(BUILDERS)
    on_disk = {p.name for p in TESTDATA.glob("*.bin")}
    expected = {f"{n}.py.bin" for n in names} | {f"{n}.rs.bin" for n in names}
    assert on_disk == expected, (
        f"missing: {sorted(expected - on_disk)}, unknown: {sorted(on_disk - expected)}; {REGEN}"
    )


def test_py_vectors_are_what_the_builders_produce() -> None:
    """The committed .py.bin bytes equal gen_golden.py's deterministic encoding today."""
    for name, build in BUILDERS.items():
        now = build().SerializeToString(deterministic=True)
        assert _read(f"{name}.py.bin") == now, (
            f"{name}.py.bin differs from gen_golden.py: a vector of an existing message "
            f"version must never change (add a new vector instead); if intended, {REGEN}"
        )


def test_rs_vectors_decode_to_the_python_messages() -> None:
    """Each prost-encoded .rs.bin decodes to the same message as its .py.bin, losing nothing."""
    for name, build in BUILDERS.items():
        expected = build()
        decoded = type(expected).FromString(_read(f"{name}.rs.bin"))
        assert decoded == expected, f"{name}: Rust and Python vectors disagree"
        assert decoded.SerializeToString(deterministic=True) == _read(f"{name}.py.bin"), name


# --- field by field, from the Rust (prost) encoding -----------------------------------------


def test_rs_new_order_limit_fields() -> None:
    """prost's LIMIT NewOrder carries every field, decimals as exact {units, scale}."""
    m = _rs_new_order("new_order_limit")
    assert m.client_order_id == "ord-0001"
    assert m.account == "acct-1"
    assert m.symbol == "ACME"
    assert m.side == orders_pb2.SIDE_BUY
    assert m.order_type == orders_pb2.ORDER_TYPE_LIMIT
    assert m.HasField("quantity")
    assert (m.quantity.units, m.quantity.scale) == (5, 1)
    assert m.HasField("limit_price")
    assert (m.limit_price.units, m.limit_price.scale) == (10125, 2)
    assert m.time_in_force == orders_pb2.TIME_IN_FORCE_GTC
    assert m.created_at_unix_ns == 1_700_000_000_000_000_000
    assert m.deadline_unix_ns == 1_700_000_005_000_000_000
    assert dict(m.tags) == {"desk": "alpha", "strategy": "mm-1"}


def test_rs_new_order_market_minimal_fields() -> None:
    """prost's minimal MARKET NewOrder: no limit_price, defaulted optional fields."""
    m = _rs_new_order("new_order_market_minimal")
    assert m.client_order_id == "ord-0002"
    assert m.account == "acct-1"
    assert m.symbol == "ACME"
    assert m.side == orders_pb2.SIDE_SELL
    assert m.order_type == orders_pb2.ORDER_TYPE_MARKET
    assert m.quantity == _dec(3, 0)
    assert not m.HasField("limit_price")
    assert m.time_in_force == orders_pb2.TIME_IN_FORCE_IOC
    assert m.created_at_unix_ns == 0
    assert m.deadline_unix_ns == 0
    assert dict(m.tags) == {}


def test_rs_cancel_request_fields() -> None:
    """prost's CancelRequest names the account and the client order id."""
    m = orders_pb2.CancelRequest.FromString(_read("cancel_request.rs.bin"))
    assert m.account == "acct-1"
    assert m.client_order_id == "ord-0001"


def test_rs_order_status_request_fields() -> None:
    """prost's OrderStatusRequest names the account and the client order id."""
    m = orders_pb2.OrderStatusRequest.FromString(_read("order_status_request.rs.bin"))
    assert m.account == "acct-1"
    assert m.client_order_id == "ord-0001"


def test_rs_order_ack_rejected_fields() -> None:
    """prost's REJECTED OrderAck keeps both field errors, in order, and every scalar."""
    m = _rs_ack()
    assert m.client_order_id == "ord-0003"
    assert m.account == "acct-1"
    assert m.engine_order_id == "e1-3"
    assert m.status == orders_pb2.ACK_STATUS_REJECTED
    assert m.reason == orders_pb2.REJECT_REASON_INVALID_FIELD
    assert [(e.field, e.rule, e.message) for e in m.field_errors] == [
        ("limit_price", "required_for_limit", "a LIMIT order needs a price"),
        ("quantity", "positive", "quantity must be greater than 0"),
    ]
    assert m.order_status == orders_pb2.ORDER_STATUS_REJECTED
    assert m.duplicate is True
    assert m.ack_time_unix_ns == 1_700_000_000_123_456_789
    assert m.engine_id == "e1"
    assert m.text == "2 invalid fields"


def test_rs_execution_report_trade_fields() -> None:
    """prost's TRADE ExecutionReport carries all six decimals exactly, and the tags."""
    m = _rs_report()
    assert m.exec_id == "e1-1-2"
    assert m.engine_order_id == "e1-1"
    assert m.client_order_id == "ord-0001"
    assert m.account == "acct-1"
    assert m.symbol == "ACME"
    assert m.side == orders_pb2.SIDE_BUY
    assert m.exec_type == orders_pb2.EXEC_TYPE_TRADE
    assert m.order_status == orders_pb2.ORDER_STATUS_PARTIALLY_FILLED
    assert m.order_qty == _dec(5, 1)
    assert m.last_qty == _dec(2, 1)
    assert m.last_px == _dec(10125, 2)
    assert m.cum_qty == _dec(2, 1)
    assert m.leaves_qty == _dec(3, 1)
    assert m.avg_px == _dec(10_125_000_000, 8)
    assert m.transact_time_unix_ns == 1_700_000_001_500_000_000
    assert m.reason == orders_pb2.REJECT_REASON_UNSPECIFIED
    assert len(m.field_errors) == 0
    assert m.text == "partial fill"
    assert m.seq == 2
    assert m.engine_id == "e1"
    assert dict(m.tags) == {"desk": "alpha", "strategy": "mm-1"}


def test_rs_order_status_reply_fields() -> None:
    """prost's OrderStatusReply wraps the full NEW report; zero decimals stay present."""
    m = _rs_status_reply()
    assert m.found is True
    assert m.reason == orders_pb2.REJECT_REASON_UNSPECIFIED
    assert m.text == "resting"
    assert m.order_status == orders_pb2.ORDER_STATUS_NEW
    assert m.HasField("last_report")
    r = m.last_report
    assert r.exec_id == "e1-1-1"
    assert r.engine_order_id == "e1-1"
    assert r.client_order_id == "ord-0001"
    assert r.account == "acct-1"
    assert r.symbol == "ACME"
    assert r.side == orders_pb2.SIDE_BUY
    assert r.exec_type == orders_pb2.EXEC_TYPE_NEW
    assert r.order_status == orders_pb2.ORDER_STATUS_NEW
    assert r.order_qty == _dec(5, 1)
    for field in ("last_qty", "last_px", "cum_qty", "avg_px"):
        assert r.HasField(field), field
        assert getattr(r, field) == _dec(0, 0), field
    assert r.leaves_qty == _dec(5, 1)
    assert r.transact_time_unix_ns == 1_700_000_000_200_000_000
    assert r.reason == orders_pb2.REJECT_REASON_UNSPECIFIED
    assert len(r.field_errors) == 0
    assert r.text == ""
    assert r.seq == 1
    assert r.engine_id == "e1"
    assert dict(r.tags) == {"desk": "alpha"}


# --- through the orchestrator-facing models --------------------------------------------------


def test_execution_report_model_decimals_are_exact() -> None:
    """ExecutionReport.from_proto turns the golden report's decimals into exact Decimals."""
    report = ExecutionReport.from_proto(_rs_report())
    assert report.exec_id == "e1-1-2"
    assert report.side is Side.BUY
    assert report.exec_type is ExecType.TRADE
    assert report.order_status is OrderStatus.PARTIALLY_FILLED
    assert report.order_qty == Decimal("0.5")
    assert report.last_qty == Decimal("0.2")
    assert report.last_px == Decimal("101.25")
    assert str(report.last_px) == "101.25"
    assert report.cum_qty == Decimal("0.2")
    assert report.leaves_qty == Decimal("0.3")
    assert report.avg_px == Decimal("101.25")
    assert str(report.avg_px) == "101.25000000"
    assert report.reason is RejectReason.NONE
    assert report.field_errors == ()
    assert report.seq == 2
    assert report.tags == {"desk": "alpha", "strategy": "mm-1"}
    assert not report.is_final


def test_order_ack_model_keeps_rejection_details() -> None:
    """OrderAck.from_proto keeps the golden ack's status, reason and ordered field errors."""
    ack = OrderAck.from_proto(_rs_ack())
    assert ack.status is AckStatus.REJECTED
    assert not ack.accepted
    assert ack.reason is RejectReason.INVALID_FIELD
    assert ack.order_status is OrderStatus.REJECTED
    assert [(e.field, e.rule) for e in ack.field_errors] == [
        ("limit_price", "required_for_limit"),
        ("quantity", "positive"),
    ]
    assert ack.duplicate is True
    assert ack.ack_time_unix_ns == 1_700_000_000_123_456_789


def test_order_state_model_wraps_the_golden_report() -> None:
    """OrderState.from_proto exposes the wrapped report with exact zero and non-zero Decimals."""
    state = OrderState.from_proto("acct-1", "ord-0001", _rs_status_reply())
    assert state.found
    assert state.last_report is not None
    assert state.last_report.order_status is OrderStatus.NEW
    assert state.last_report.leaves_qty == Decimal("0.5")
    assert state.last_report.cum_qty == Decimal(0)


def test_order_model_reproduces_the_golden_new_orders() -> None:
    """Order.from_proto(...).to_proto() re-encodes both golden NewOrders to the same bytes."""
    limit = Order.from_proto(_rs_new_order("new_order_limit"))
    assert limit.order_type is OrderType.LIMIT
    assert limit.time_in_force is TimeInForce.GTC
    assert limit.quantity == Decimal("0.5")
    assert limit.limit_price == Decimal("101.25")
    for name in ("new_order_limit", "new_order_market_minimal"):
        order = Order.from_proto(_rs_new_order(name))
        again = order.to_proto().SerializeToString(deterministic=True)
        assert again == _read(f"{name}.py.bin"), name
