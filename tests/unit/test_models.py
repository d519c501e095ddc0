"""Unit tests for ``bridge.models``: validation, immutability and protobuf conversion.

Pure: no NATS, no engine. Expected wire values are hard-coded, not derived from the code.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pydantic
import pytest

from bridge.errors import FieldIssue, InvalidOrderError
from bridge.models import (
    MAX_SCALE,
    AckStatus,
    ExecType,
    ExecutionReport,
    Order,
    OrderAck,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    decimal_from_proto,
    decimal_to_proto,
)
from bridge.v1 import common_pb2, orders_pb2

INT64_MAX = 2**63 - 1


def _limit(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a valid LIMIT order, with ``overrides`` applied."""
    fields: dict[str, Any] = {
        "client_order_id": "ord-0001",
        "account": "acct-1",
        "symbol": "ACME",
        "side": Side.BUY,
        "order_type": OrderType.LIMIT,
        "quantity": Decimal("0.5"),
        "limit_price": Decimal("101.25"),
        "time_in_force": TimeInForce.GTC,
        "created_at_unix_ns": 1_700_000_000_000_000_000,
        "deadline_unix_ns": 1_700_000_005_000_000_000,
        "tags": {"desk": "alpha"},
    }
    fields.update(overrides)
    return fields


def _market(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a valid MARKET order, with ``overrides`` applied."""
    fields: dict[str, Any] = {
        "client_order_id": "ord-0002",
        "account": "acct-1",
        "symbol": "ACME",
        "side": Side.SELL,
        "order_type": OrderType.MARKET,
        "quantity": Decimal("3"),
    }
    fields.update(overrides)
    return fields


def _issues(fields: dict[str, Any]) -> tuple[FieldIssue, ...]:
    """Build an Order that must fail and return its field issues."""
    with pytest.raises(InvalidOrderError) as info:
        Order(**fields)
    return info.value.errors


def _pairs(issues: tuple[FieldIssue, ...]) -> set[tuple[str, str]]:
    return {(i.field, i.rule) for i in issues}


# --- valid orders and the wire format ------------------------------------------------------------


def test_valid_limit_order_keeps_every_field() -> None:
    """A valid LIMIT order is built with exactly the values given, as Decimals and enums."""
    order = Order(**_limit())
    assert order.client_order_id == "ord-0001"
    assert order.side is Side.BUY
    assert order.order_type is OrderType.LIMIT
    assert order.quantity == Decimal("0.5")
    assert isinstance(order.quantity, Decimal)
    assert order.limit_price == Decimal("101.25")
    assert order.time_in_force is TimeInForce.GTC
    assert order.tags == {"desk": "alpha"}


def test_market_order_defaults() -> None:
    """A MARKET order defaults to DAY, no price, no deadline, no tags, created now-ish."""
    order = Order(**_market())
    assert order.limit_price is None
    assert order.time_in_force is TimeInForce.DAY
    assert order.deadline_unix_ns is None
    assert order.tags == {}
    assert order.created_at_unix_ns > 1_600_000_000_000_000_000


def test_string_and_int_quantities_are_accepted_exactly() -> None:
    """Strings and ints convert to exact Decimals (only floats are refused)."""
    assert Order(**_market(quantity="0.1")).quantity == Decimal("0.1")
    assert Order(**_market(quantity=7)).quantity == Decimal(7)


def test_limit_order_to_proto_uses_exact_decimals() -> None:
    """to_proto encodes 101.25 as {10125, 2} and 0.5 as {5, 1}, with every field mapped."""
    msg = Order(**_limit()).to_proto()
    assert (msg.limit_price.units, msg.limit_price.scale) == (10125, 2)
    assert (msg.quantity.units, msg.quantity.scale) == (5, 1)
    assert msg.client_order_id == "ord-0001"
    assert msg.account == "acct-1"
    assert msg.symbol == "ACME"
    assert msg.side == orders_pb2.SIDE_BUY
    assert msg.order_type == orders_pb2.ORDER_TYPE_LIMIT
    assert msg.time_in_force == orders_pb2.TIME_IN_FORCE_GTC
    assert msg.created_at_unix_ns == 1_700_000_000_000_000_000
    assert msg.deadline_unix_ns == 1_700_000_005_000_000_000
    assert dict(msg.tags) == {"desk": "alpha"}


def test_market_order_to_proto_has_no_price_and_zero_deadline() -> None:
    """A MARKET order leaves limit_price unset on the wire and encodes no deadline as 0."""
    msg = Order(**_market()).to_proto()
    assert not msg.HasField("limit_price")
    assert msg.deadline_unix_ns == 0
    assert msg.order_type == orders_pb2.ORDER_TYPE_MARKET
    assert msg.side == orders_pb2.SIDE_SELL
    assert msg.time_in_force == orders_pb2.TIME_IN_FORCE_DAY
    assert (msg.quantity.units, msg.quantity.scale) == (3, 0)


@pytest.mark.parametrize("fields", [_limit(), _market(created_at_unix_ns=0)], ids=["limit", "mkt"])
def test_order_proto_round_trip_is_lossless(fields: dict[str, Any]) -> None:
    """Order -> NewOrder -> Order gives back an equal order, through the serialized bytes too."""
    order = Order(**fields)
    wire = order.to_proto().SerializeToString()
    again = Order.from_proto(orders_pb2.NewOrder.FromString(wire))
    assert again == order
    assert again.to_proto() == order.to_proto()


@pytest.mark.parametrize(
    ("value", "units", "scale"),
    [
        (Decimal("101.25"), 10125, 2),
        (Decimal("0.5"), 5, 1),
        (Decimal("3"), 3, 0),
        (Decimal("1.10"), 11, 1),  # trailing zeros are dropped: same value, smaller scale
        (Decimal("0.00000001"), 1, 8),
        (Decimal("1E+2"), 100, 0),
        (Decimal("-2.5"), -25, 1),
        (Decimal(INT64_MAX), INT64_MAX, 0),
    ],
)
def test_decimal_to_proto_is_exact(value: Decimal, units: int, scale: int) -> None:
    """decimal_to_proto gives the exact {units, scale}, and decimal_from_proto inverts it."""
    msg = decimal_to_proto(value)
    assert (msg.units, msg.scale) == (units, scale)
    assert decimal_from_proto(msg) == value


@pytest.mark.parametrize(
    "value", [Decimal(2**63), Decimal(-(2**63) - 1), Decimal("1E+30"), Decimal("1.0000000000E+19")]
)
def test_decimal_to_proto_overflow_raises_value_error(value: Decimal) -> None:
    """A decimal whose units do not fit in int64 raises ValueError instead of wrapping."""
    with pytest.raises(ValueError, match="64-bit"):
        decimal_to_proto(value)


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_decimal_to_proto_refuses_non_finite(value: Decimal) -> None:
    """NaN and infinities have no fixed-point encoding and raise ValueError."""
    with pytest.raises(ValueError, match="finite"):
        decimal_to_proto(value)


def test_decimal_from_proto_reads_engine_scale_8() -> None:
    """The engine's always-scale-8 decimals read back as the exact value."""
    assert decimal_from_proto(common_pb2.Decimal(units=10_125_000_000, scale=8)) == Decimal(
        "101.25"
    )


# --- validation failures -------------------------------------------------------------------------


def test_invalid_order_error_is_a_value_error() -> None:
    """InvalidOrderError is also a ValueError, so generic input handling catches it."""
    with pytest.raises(ValueError, match="client_order_id"):
        Order(**_limit(client_order_id="a b"))


def test_bad_client_order_id_pattern() -> None:
    """A client_order_id with a space fails the id pattern and names the field."""
    issues = _issues(_limit(client_order_id="a b"))
    assert _pairs(issues) == {("client_order_id", "string_pattern_mismatch")}


@pytest.mark.parametrize("bad", ["", "ord.1", "ord*", "ord>", "ünï"])
def test_client_order_id_must_be_one_subject_token(bad: str) -> None:
    """Empty ids and ids with subject metacharacters or non-ASCII are refused."""
    issues = _issues(_limit(client_order_id=bad))
    assert [i.field for i in issues] == ["client_order_id"]


@pytest.mark.parametrize(
    ("field", "limit"),
    [("client_order_id", 64), ("account", 32), ("symbol", 32)],
)
def test_too_long_ids_are_refused(field: str, limit: int) -> None:
    """Ids one character over their maximum length are refused; exactly the maximum is fine."""
    Order(**_limit(**{field: "a" * limit}))
    issues = _issues(_limit(**{field: "a" * (limit + 1)}))
    assert _pairs(issues) == {(field, "string_too_long")}


@pytest.mark.parametrize("field", ["quantity", "limit_price"])
def test_float_money_is_refused(field: str) -> None:
    """A float quantity or price is refused with a message that says floats are not accepted."""
    issues = _issues(_limit(**{field: 1.5}))
    assert [i.field for i in issues] == [field]
    assert "float" in issues[0].message


@pytest.mark.parametrize("qty", [Decimal("0"), Decimal("-1"), "-0.00000001", 0])
def test_non_positive_quantity_is_refused(qty: object) -> None:
    """A quantity of zero or below is refused as not greater than 0."""
    issues = _issues(_limit(quantity=qty))
    assert _pairs(issues) == {("quantity", "greater_than")}


def test_non_positive_price_is_refused() -> None:
    """A limit price of zero is refused as not greater than 0."""
    issues = _issues(_limit(limit_price=Decimal("0")))
    assert _pairs(issues) == {("limit_price", "greater_than")}


@pytest.mark.parametrize("field", ["quantity", "limit_price"])
def test_more_than_8_decimal_places_is_refused(field: str) -> None:
    """Nine decimal places exceed the engine's fixed point and are refused; eight are fine."""
    assert MAX_SCALE == 8
    Order(**_limit(**{field: Decimal("1.12345678")}))
    issues = _issues(_limit(**{field: Decimal("1.123456789")}))
    assert _pairs(issues) == {(field, "decimal_max_places")}


@pytest.mark.parametrize("qty", [Decimal("NaN"), Decimal("Infinity"), "abc"])
def test_non_numeric_quantity_is_refused(qty: object) -> None:
    """NaN, infinity and non-numbers are refused for quantity."""
    issues = _issues(_limit(quantity=qty))
    assert [i.field for i in issues] == ["quantity"]


def test_limit_without_price_is_refused() -> None:
    """A LIMIT order without limit_price is reported on limit_price as required_for_limit."""
    issues = _issues(_limit(limit_price=None))
    assert _pairs(issues) == {("limit_price", "required_for_limit")}
    assert issues[0].message == "a LIMIT order needs a price"


def test_market_with_price_is_refused() -> None:
    """A MARKET order with limit_price is reported on limit_price as forbidden_for_market."""
    issues = _issues(_market(limit_price=Decimal("1")))
    assert _pairs(issues) == {("limit_price", "forbidden_for_market")}


def test_unknown_extra_field_is_refused() -> None:
    """An unknown keyword (extra=forbid) is reported under its own name."""
    issues = _issues(_limit(price=Decimal("1")))
    assert _pairs(issues) == {("price", "extra_forbidden")}


def test_missing_required_fields_are_named() -> None:
    """Every missing required field is reported as missing."""
    with pytest.raises(InvalidOrderError) as info:
        Order(client_order_id="x", account="a", symbol="s")  # type: ignore[call-arg]
    assert _pairs(info.value.errors) == {
        ("side", "missing"),
        ("order_type", "missing"),
        ("quantity", "missing"),
    }


@pytest.mark.parametrize(("field", "value"), [("side", "HOLD"), ("order_type", "STOP")])
def test_unknown_enum_value_is_refused(field: str, value: str) -> None:
    """A side or order type outside the enum is refused and names the field."""
    issues = _issues(_limit(**{field: value}))
    assert _pairs(issues) == {(field, "enum")}


def test_negative_timestamps_are_refused() -> None:
    """created_at and deadline must be non-negative nanosecond timestamps."""
    issues = _issues(_limit(created_at_unix_ns=-1, deadline_unix_ns=-1))
    assert _pairs(issues) == {
        ("created_at_unix_ns", "greater_than_equal"),
        ("deadline_unix_ns", "greater_than_equal"),
    }


def test_too_many_tags_are_refused() -> None:
    """More than 32 tags are refused on the tags field; 32 are fine."""
    Order(**_limit(tags={str(i): "v" for i in range(32)}))
    issues = _issues(_limit(tags={str(i): "v" for i in range(33)}))
    assert _pairs(issues) == {("tags", "too_long")}


def test_several_bad_fields_are_reported_together() -> None:
    """One InvalidOrderError lists every bad field, and its message names each of them."""
    with pytest.raises(InvalidOrderError) as info:
        Order(**_limit(client_order_id="a b", quantity=1.0, account="x" * 33, bogus=1))
    err = info.value
    assert _pairs(err.errors) == {
        ("client_order_id", "string_pattern_mismatch"),
        ("quantity", "value_error"),
        ("account", "string_too_long"),
        ("bogus", "extra_forbidden"),
    }
    text = str(err)
    assert text.startswith("invalid Order: ")
    for name in ("client_order_id", "quantity", "account", "bogus"):
        assert name in text


def test_invalid_order_error_chains_the_pydantic_error() -> None:
    """The original pydantic ValidationError is kept as the cause for debugging."""
    with pytest.raises(InvalidOrderError) as info:
        Order(**_limit(quantity=Decimal("0")))
    assert isinstance(info.value.__cause__, pydantic.ValidationError)


def test_accepted_order_encodes_within_engine_scale() -> None:
    """An order that passes validation never puts more than 8 decimal places on the wire."""
    msg = Order(**_limit(quantity=Decimal("1.000000000"))).to_proto()
    assert msg.quantity.scale <= MAX_SCALE
    assert decimal_from_proto(msg.quantity) == Decimal(1)


@pytest.mark.parametrize("qty", [Decimal("1E+30"), Decimal("100000000000")])
def test_quantity_beyond_fixed_point_range_is_refused(qty: Decimal) -> None:
    """A quantity the engine's 64-bit 1e-8 fixed point cannot hold is an InvalidOrderError."""
    issues = _issues(_limit(quantity=qty))
    assert [i.field for i in issues] == ["quantity"]


# --- immutability --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("quantity", Decimal("2")), ("limit_price", None), ("client_order_id", "other")],
)
def test_orders_are_immutable(field: str, value: object) -> None:
    """Assigning to a field of a built order raises and leaves the order unchanged."""
    order = Order(**_limit())
    before = order.model_dump()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        setattr(order, field, value)
    assert order.model_dump() == before


def test_order_tags_are_immutable() -> None:
    """The tags of a built order cannot be changed in place."""
    order = Order(**_limit())
    with pytest.raises(TypeError):
        order.tags["desk"] = "beta"  # type: ignore[index]


# --- statuses and inbound messages ---------------------------------------------------------------


FINAL_BY_STATUS = {
    OrderStatus.PENDING_NEW: False,
    OrderStatus.NEW: False,
    OrderStatus.PARTIALLY_FILLED: False,
    OrderStatus.FILLED: True,
    OrderStatus.CANCELED: True,
    OrderStatus.REJECTED: True,
    OrderStatus.EXPIRED: True,
    OrderStatus.PENDING_REPLACE: False,
}


@pytest.mark.parametrize(("status", "final"), FINAL_BY_STATUS.items())
def test_order_status_is_final(status: OrderStatus, final: bool) -> None:
    """Only FILLED, CANCELED, REJECTED and EXPIRED are final."""
    assert status.is_final is final


def test_every_order_status_is_classified() -> None:
    """The is_final table above covers every OrderStatus member, so none is left untested."""
    assert set(FINAL_BY_STATUS) == set(OrderStatus)


def _dec(units: int, scale: int) -> common_pb2.Decimal:
    return common_pb2.Decimal(units=units, scale=scale)


def _report_pb(**overrides: Any) -> orders_pb2.ExecutionReport:
    fields: dict[str, Any] = {
        "exec_id": "e1-1-2",
        "engine_order_id": "e1-1",
        "client_order_id": "ord-0001",
        "account": "acct-1",
        "symbol": "ACME",
        "side": orders_pb2.SIDE_BUY,
        "exec_type": orders_pb2.EXEC_TYPE_TRADE,
        "order_status": orders_pb2.ORDER_STATUS_PARTIALLY_FILLED,
        "order_qty": _dec(5, 1),
        "last_qty": _dec(2, 1),
        "last_px": _dec(10125, 2),
        "cum_qty": _dec(2, 1),
        "leaves_qty": _dec(3, 1),
        "avg_px": _dec(10_125_000_000, 8),
        "seq": 2,
        "engine_id": "e1",
        "tags": {"desk": "alpha"},
    }
    fields.update(overrides)
    return orders_pb2.ExecutionReport(**fields)


def test_execution_report_from_proto_maps_fields() -> None:
    """A TRADE report converts with exact decimals, mapped enums and no reject reason."""
    report = ExecutionReport.from_proto(_report_pb())
    assert report.exec_type is ExecType.TRADE
    assert report.order_status is OrderStatus.PARTIALLY_FILLED
    assert report.side is Side.BUY
    assert report.last_px == Decimal("101.25")
    assert report.avg_px == Decimal("101.25")
    assert report.leaves_qty == Decimal("0.3")
    assert report.reason is RejectReason.NONE
    assert report.tags == {"desk": "alpha"}
    assert report.is_final is False


def test_execution_report_unspecified_side_is_none() -> None:
    """A report without a side (e.g. for an unknown order) has side None, not an error."""
    assert ExecutionReport.from_proto(_report_pb(side=orders_pb2.SIDE_UNSPECIFIED)).side is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"exec_type": orders_pb2.EXEC_TYPE_UNSPECIFIED},
        {"order_status": orders_pb2.ORDER_STATUS_UNSPECIFIED},
    ],
    ids=["exec_type", "order_status"],
)
def test_execution_report_rejects_unspecified_enums(overrides: dict[str, int]) -> None:
    """A report with an unspecified exec_type or order_status raises ValueError."""
    with pytest.raises(ValueError, match="exec_type or order_status"):
        ExecutionReport.from_proto(_report_pb(**overrides))


def _ack_pb(**overrides: Any) -> orders_pb2.OrderAck:
    fields: dict[str, Any] = {
        "client_order_id": "ord-0003",
        "account": "acct-1",
        "engine_order_id": "e1-3",
        "status": orders_pb2.ACK_STATUS_REJECTED,
        "reason": orders_pb2.REJECT_REASON_INVALID_FIELD,
        "field_errors": [
            common_pb2.FieldError(
                field="limit_price", rule="required_for_limit", message="needs a price"
            )
        ],
        "order_status": orders_pb2.ORDER_STATUS_REJECTED,
        "engine_id": "e1",
    }
    fields.update(overrides)
    return orders_pb2.OrderAck(**fields)


def test_order_ack_from_proto_maps_fields() -> None:
    """A REJECTED ack converts its status, reason, order status and field errors."""
    ack = OrderAck.from_proto(_ack_pb())
    assert ack.status is AckStatus.REJECTED
    assert not ack.accepted
    assert ack.reason is RejectReason.INVALID_FIELD
    assert ack.order_status is OrderStatus.REJECTED
    assert [(e.field, e.rule) for e in ack.field_errors] == [("limit_price", "required_for_limit")]


def test_order_ack_unspecified_order_status_is_none() -> None:
    """An ACCEPTED ack without an order status has order_status None and reason NONE."""
    ack = OrderAck.from_proto(
        _ack_pb(
            status=orders_pb2.ACK_STATUS_ACCEPTED,
            reason=orders_pb2.REJECT_REASON_UNSPECIFIED,
            order_status=orders_pb2.ORDER_STATUS_UNSPECIFIED,
            field_errors=[],
        )
    )
    assert ack.accepted
    assert ack.order_status is None
    assert ack.reason is RejectReason.NONE


def test_order_ack_rejects_unspecified_status() -> None:
    """An ack whose status is unspecified raises ValueError."""
    with pytest.raises(ValueError, match="unspecified"):
        OrderAck.from_proto(_ack_pb(status=orders_pb2.ACK_STATUS_UNSPECIFIED))
