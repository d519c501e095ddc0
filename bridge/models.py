"""Orchestrator-facing models (pydantic) and their conversion to and from bridge.v1 protobuf.

Models are immutable once created and validated on construction: bad input raises
``InvalidOrderError`` naming every bad field, before anything is sent. Money and quantities are
``decimal.Decimal`` (at most 8 decimal places, the engine's fixed point); floats are refused.
No NATS imports here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Self, TypeVar

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bridge.contract import (
    ACCOUNT_PATTERN,
    CLIENT_ORDER_ID_PATTERN,
    MAX_ACCOUNT_BYTES,
    MAX_CLIENT_ORDER_ID_BYTES,
    MAX_SYMBOL_BYTES,
    MAX_TAG_KEY_BYTES,
    MAX_TAG_VALUE_BYTES,
    MAX_TAGS,
    SESSION_ID_PATTERN,
    SYMBOL_PATTERN,
)
from bridge.errors import FieldIssue, InvalidOrderError, OrderRejectedError
from bridge.v1 import common_pb2, orders_pb2

MAX_SCALE = 8
_INT64_MAX = 2**63 - 1

# Size limits and id rules of a NewOrder come from the contract (schemas/bridge/v1/contract.toml,
# generated into bridge.contract; the engine enforces the same generated constants). Checked here
# so that such an order is refused before it is sent. Byte limits count UTF-8 bytes. An Order
# within every field limit encodes in at most about 3.5 KB (tests/unit/test_order_limits.py),
# so it always fits MAX_NEW_ORDER_BYTES.
MAX_VALUE = Decimal(_INT64_MAX).scaleb(-MAX_SCALE)
"""Largest quantity or price the engine's 64-bit fixed point (1e-8) can hold."""
ID_PATTERN = CLIENT_ORDER_ID_PATTERN
_E = TypeVar("_E", bound=StrEnum)


def _no_float(value: object) -> object:
    if isinstance(value, float):
        raise ValueError("floats are not accepted for money or quantities; pass a Decimal or str")
    return value


ExactDecimal = Annotated[Decimal, BeforeValidator(_no_float)]


def _freeze(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


def _tag_sizes(value: Mapping[str, str]) -> Mapping[str, str]:
    """Tag keys, then values, within their byte limits (the engine reports both rules)."""
    long_keys = sorted(k for k in value if len(k.encode()) > MAX_TAG_KEY_BYTES)
    if long_keys:
        raise PydanticCustomError(
            "key_max_bytes",
            "{count} tag key(s) longer than {limit} bytes, e.g. {example}",
            {
                "count": len(long_keys),
                "limit": MAX_TAG_KEY_BYTES,
                "example": repr(long_keys[0][:40]),
            },
        )
    long_values = sorted(k for k, v in value.items() if len(v.encode()) > MAX_TAG_VALUE_BYTES)
    if long_values:
        raise PydanticCustomError(
            "value_max_bytes",
            "{count} tag value(s) longer than {limit} bytes, e.g. the value of {example}",
            {
                "count": len(long_values),
                "limit": MAX_TAG_VALUE_BYTES,
                "example": repr(long_values[0][:40]),
            },
        )
    return value


Tags = Annotated[
    Mapping[str, str],
    AfterValidator(_freeze),  # a frozen model must not have a mutable dict inside
    PlainSerializer(dict, return_type=dict[str, str]),
]
OrderTags = Annotated[Tags, AfterValidator(_tag_sizes)]
"""The tags of an order being built: within the contract's limits (count: the field's max)."""


def decimal_to_proto(value: Decimal) -> common_pb2.Decimal:
    """Exact conversion to ``{units, scale}``; ``Decimal('101.25')`` -> ``{10125, 2}``.

    Trailing zeros are dropped first, so ``1.000000000`` travels as ``{1, 0}``.
    """
    if value.is_finite() and value != 0:
        value = value.normalize()
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"{value} is not a finite decimal")
    scale = max(0, -exponent)
    units = int(value.scaleb(scale))
    if abs(units) > _INT64_MAX:
        raise ValueError(f"{value} does not fit in 64-bit fixed point")
    return common_pb2.Decimal(units=units, scale=scale)


_FIXED: dict[Decimal, tuple[int, int]] = {}
_FIXED_MAX = 4096


def _fixed(value: Decimal) -> tuple[int, int]:
    """``decimal_to_proto(value)``'s (units, scale), cached for non-zero values (equal non-zero
    decimals have one normalized form; a zero keeps its scale, so it is not cached)."""
    found = _FIXED.get(value)
    if found is not None:
        return found
    d = decimal_to_proto(value)
    fixed = (d.units, d.scale)
    if value:
        if len(_FIXED) >= _FIXED_MAX:
            _FIXED.clear()
        _FIXED[value] = fixed
    return fixed


def decimal_from_proto(value: common_pb2.Decimal) -> Decimal:
    """Exact conversion from ``{units, scale}``."""
    return Decimal(value.units).scaleb(-value.scale)


def _issues_from(exc: pydantic.ValidationError) -> list[FieldIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        ctx = err.get("ctx") or {}
        field = str(ctx.get("field") or ".".join(str(p) for p in err["loc"]) or "<order>")
        message = err["msg"].removeprefix("Value error, ")
        issues.append(FieldIssue(field=field, rule=err["type"], message=message))
    return issues


class _Model(BaseModel):
    """Immutable, strict about unknown fields, raising ``InvalidOrderError`` on bad input."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    if not TYPE_CHECKING:  # keep pydantic's typed signature for mypy; wrap the error at runtime

        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except pydantic.ValidationError as exc:
                raise InvalidOrderError(_issues_from(exc), model=type(self).__name__) from exc


class Side(StrEnum):
    """Buy or sell."""

    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    """MARKET takes liquidity at any price; LIMIT never trades worse than its price."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"


class TimeInForce(StrEnum):
    """How long an order may work.

    DAY and GTC rest until canceled (the simulator has no session end); IOC cancels the unfilled
    rest at once; FOK fills completely or not at all.
    """

    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


_SIDE_PB: dict[Side, orders_pb2.Side.ValueType] = {
    Side.BUY: orders_pb2.SIDE_BUY,
    Side.SELL: orders_pb2.SIDE_SELL,
}
_TYPE_PB: dict[OrderType, orders_pb2.OrderType.ValueType] = {
    OrderType.MARKET: orders_pb2.ORDER_TYPE_MARKET,
    OrderType.LIMIT: orders_pb2.ORDER_TYPE_LIMIT,
}
_TIF_PB: dict[TimeInForce, orders_pb2.TimeInForce.ValueType] = {
    TimeInForce.DAY: orders_pb2.TIME_IN_FORCE_DAY,
    TimeInForce.GTC: orders_pb2.TIME_IN_FORCE_GTC,
    TimeInForce.IOC: orders_pb2.TIME_IN_FORCE_IOC,
    TimeInForce.FOK: orders_pb2.TIME_IN_FORCE_FOK,
}


class AckStatus(StrEnum):
    """The engine's answer to a request: ACCEPTED (durably recorded) or REJECTED."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class OrderStatus(StrEnum):
    """FIX OrdStatus of an order; PENDING_NEW is recorded but not yet executed."""

    PENDING_NEW = "PENDING_NEW"
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    PENDING_REPLACE = "PENDING_REPLACE"
    """A replace is being applied (only in the PENDING_REPLACE report its REPLACED follows)."""

    @property
    def is_final(self) -> bool:
        """True when no further execution can happen to the order."""
        return self in _FINAL_STATUSES


_FINAL_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


class ExecType(StrEnum):
    """FIX ExecType: what an execution report reports."""

    NEW = "NEW"
    TRADE = "TRADE"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    PENDING_REPLACE = "PENDING_REPLACE"
    REPLACED = "REPLACED"


class RejectReason(StrEnum):
    """Why a request was refused; NONE when it was not."""

    NONE = "NONE"
    MALFORMED = "MALFORMED"
    INVALID_FIELD = "INVALID_FIELD"
    UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
    RISK_LIMIT = "RISK_LIMIT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    TOO_LATE = "TOO_LATE"
    ENGINE_UNAVAILABLE = "ENGINE_UNAVAILABLE"
    RECOVERY_INVALID = "RECOVERY_INVALID"
    UNSIGNED = "UNSIGNED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    SIGNATURE_EXPIRED = "SIGNATURE_EXPIRED"
    REPLAYED = "REPLAYED"
    ACCOUNT_MISMATCH = "ACCOUNT_MISMATCH"
    NOT_ENTITLED = "NOT_ENTITLED"
    TRADING_HALTED = "TRADING_HALTED"
    REDUCE_ONLY = "REDUCE_ONLY"
    SESSION_END = "SESSION_END"
    """EXPIRED: a DAY order at the venue's session end (contract 1.1)."""
    MASS_CANCELED = "MASS_CANCELED"
    SESSION_LOST = "SESSION_LOST"
    """CANCELED: the order's session was lost (cancel on disconnect) or closed with
    cancel_orders (contract 1.1, ``bridge.session``)."""
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"

    @property
    def is_security(self) -> bool:
        """A security refusal: the client that receives it closes its connection
        (``SecurityViolationError``)."""
        return self in SECURITY_REASONS


SECURITY_REASONS = frozenset(
    {
        RejectReason.UNSIGNED,
        RejectReason.BAD_SIGNATURE,
        RejectReason.SIGNATURE_EXPIRED,
        RejectReason.REPLAYED,
        RejectReason.ACCOUNT_MISMATCH,
        RejectReason.NOT_ENTITLED,
    }
)
"""The reasons the engine refuses an order operation for: not a bad order, a security violation."""


def _enum_from_proto(cls: type[_E], prefix: str, value: int, enum: Any) -> _E:
    name = str(enum.Name(value)).removeprefix(f"{prefix}_")
    return cls(name)


def _reason_from_proto(value: int) -> RejectReason:
    if value == orders_pb2.REJECT_REASON_UNSPECIFIED:
        return RejectReason.NONE
    return _enum_from_proto(RejectReason, "REJECT_REASON", value, orders_pb2.RejectReason)


# The patterns are ASCII, so a length in characters is a length in bytes.
Identifier = Annotated[
    str, Field(min_length=1, max_length=MAX_CLIENT_ORDER_ID_BYTES, pattern=ID_PATTERN)
]
# An account starting with "_" is reserved for the venue's own orders (the engine's `_house`).
Account = Annotated[str, Field(min_length=1, max_length=MAX_ACCOUNT_BYTES, pattern=ACCOUNT_PATTERN)]
Symbol = Annotated[str, Field(min_length=1, max_length=MAX_SYMBOL_BYTES, pattern=SYMBOL_PATTERN)]
# An order's session: empty (none) or a session id (``bridge.session``).
SessionRef = Annotated[str, Field(pattern=f"^$|{SESSION_ID_PATTERN}")]


class Order(_Model):
    """A new order (FIX NewOrderSingle) as the orchestrator builds it."""

    client_order_id: Identifier
    account: Account
    symbol: Symbol
    side: Side
    order_type: OrderType
    quantity: Annotated[ExactDecimal, Field(gt=0, le=MAX_VALUE, decimal_places=MAX_SCALE)]
    limit_price: Annotated[
        ExactDecimal | None, Field(gt=0, le=MAX_VALUE, decimal_places=MAX_SCALE)
    ] = None
    time_in_force: TimeInForce = TimeInForce.DAY
    created_at_unix_ns: int = Field(default_factory=time.time_ns, ge=0)
    deadline_unix_ns: int | None = Field(
        default=None, ge=0, description="The engine must not act on the order after this."
    )
    tags: OrderTags = Field(default_factory=dict, max_length=MAX_TAGS)
    session_id: SessionRef = Field(
        default="",
        description="The orchestrator session the order belongs to (canceled when it is lost); "
        "a client with a session stamps it on orders that name none.",
    )

    @model_validator(mode="after")
    def _price_matches_type(self) -> Self:
        if self.order_type is OrderType.LIMIT and self.limit_price is None:
            raise _field_error("limit_price", "required_for_limit", "a LIMIT order needs a price")
        if self.order_type is OrderType.MARKET and self.limit_price is not None:
            raise _field_error(
                "limit_price", "forbidden_for_market", "a MARKET order must not carry a price"
            )
        return self

    def to_proto(self) -> orders_pb2.NewOrder:
        # The queued path's CPU per order is mostly this: the decimals' fixed-point forms come
        # from a small cache (prices and quantities repeat) and are set in place, not built as
        # messages and copied (measured: about a third of the time of the plain conversion).
        msg = orders_pb2.NewOrder(
            client_order_id=self.client_order_id,
            account=self.account,
            symbol=self.symbol,
            side=_SIDE_PB[self.side],
            order_type=_TYPE_PB[self.order_type],
            time_in_force=_TIF_PB[self.time_in_force],
            created_at_unix_ns=self.created_at_unix_ns,
            deadline_unix_ns=self.deadline_unix_ns or 0,
            session_id=self.session_id,
        )
        if self.tags:
            msg.tags.update(self.tags)
        quantity = msg.quantity
        quantity.units, quantity.scale = _fixed(self.quantity)
        if self.limit_price is not None:
            price = msg.limit_price
            price.units, price.scale = _fixed(self.limit_price)
        return msg

    @classmethod
    def from_proto(cls, msg: orders_pb2.NewOrder) -> Order:
        return cls(
            client_order_id=msg.client_order_id,
            account=msg.account,
            symbol=msg.symbol,
            side=_enum_from_proto(Side, "SIDE", msg.side, orders_pb2.Side),
            order_type=_enum_from_proto(
                OrderType, "ORDER_TYPE", msg.order_type, orders_pb2.OrderType
            ),
            quantity=decimal_from_proto(msg.quantity),
            limit_price=decimal_from_proto(msg.limit_price)
            if msg.HasField("limit_price")
            else None,
            time_in_force=_enum_from_proto(
                TimeInForce, "TIME_IN_FORCE", msg.time_in_force, orders_pb2.TimeInForce
            ),
            created_at_unix_ns=msg.created_at_unix_ns,
            deadline_unix_ns=msg.deadline_unix_ns or None,
            tags=dict(msg.tags),
            session_id=msg.session_id,
        )


def _field_error(field: str, rule: str, message: str) -> PydanticCustomError:
    # A model-level check reports the field it concerns through the error context.
    return PydanticCustomError(rule, "{message}", {"message": message, "field": field})


class FieldError(_Model):
    """A field the engine refused: dotted path, rule, explanation."""

    field: str
    rule: str
    message: str


class OrderAck(_Model):
    """The engine's synchronous answer. ACCEPTED means the order is durably recorded."""

    client_order_id: str
    account: str
    engine_order_id: str
    status: AckStatus
    reason: RejectReason
    field_errors: tuple[FieldError, ...]
    order_status: OrderStatus | None
    duplicate: bool
    ack_time_unix_ns: int
    engine_id: str
    text: str
    orig_client_order_id: str = ""
    """A replace's ack: the id the order had before it ("" for other acks)."""

    @property
    def accepted(self) -> bool:
        return self.status is AckStatus.ACCEPTED

    def raise_for_status(self, correlation_id: str | None = None) -> Self:
        """Returns the ack if ACCEPTED, else raises ``OrderRejectedError`` with the reason."""
        if self.accepted:
            return self
        raise OrderRejectedError(
            f"order rejected: {self.reason.value}: {self.text or 'no detail'}",
            reason=self.reason.value,
            errors=[FieldIssue(e.field, e.rule, e.message) for e in self.field_errors],
            client_order_id=self.client_order_id,
            correlation_id=correlation_id,
        )

    @classmethod
    def from_proto(cls, msg: orders_pb2.OrderAck) -> OrderAck:
        if msg.status == orders_pb2.ACK_STATUS_UNSPECIFIED:
            raise ValueError("OrderAck.status is unspecified")
        return cls.model_construct(
            client_order_id=msg.client_order_id,
            account=msg.account,
            engine_order_id=msg.engine_order_id,
            status=_enum_from_proto(AckStatus, "ACK_STATUS", msg.status, orders_pb2.AckStatus),
            reason=_reason_from_proto(msg.reason),
            field_errors=tuple(
                FieldError.model_construct(field=e.field, rule=e.rule, message=e.message)
                for e in msg.field_errors
            ),
            order_status=_status_from_proto(msg.order_status),
            duplicate=msg.duplicate,
            ack_time_unix_ns=msg.ack_time_unix_ns,
            engine_id=msg.engine_id,
            text=msg.text,
            orig_client_order_id=msg.orig_client_order_id,
        )


def _status_from_proto(value: int) -> OrderStatus | None:
    if value == orders_pb2.ORDER_STATUS_UNSPECIFIED:
        return None
    return _enum_from_proto(OrderStatus, "ORDER_STATUS", value, orders_pb2.OrderStatus)


class ExecutionReport(_Model):
    """One execution report (FIX 35=8). ``exec_id`` is unique per execution event."""

    exec_id: str
    engine_order_id: str
    client_order_id: str
    account: str
    symbol: str
    side: Side | None
    exec_type: ExecType
    order_status: OrderStatus
    order_qty: Decimal
    last_qty: Decimal
    last_px: Decimal
    cum_qty: Decimal
    leaves_qty: Decimal
    avg_px: Decimal
    transact_time_unix_ns: int
    reason: RejectReason
    field_errors: tuple[FieldError, ...]
    text: str
    seq: int
    engine_id: str
    tags: Tags
    signer: str = ""
    """Public NKey of the identity that signed the order ("" for the engine's own orders)."""
    orig_client_order_id: str = ""
    """After a replace: the id the order had before it (FIX OrigClOrdID); ``client_order_id``
    is then the replace's. Reports stay on the order's original id's subject."""
    price: Decimal | None = None
    """The order's limit price as it stands (None for a market order, or an older engine)."""

    @property
    def is_final(self) -> bool:
        return self.order_status.is_final

    @classmethod
    def from_proto(cls, msg: orders_pb2.ExecutionReport) -> ExecutionReport:
        status = _status_from_proto(msg.order_status)
        if status is None or msg.exec_type == orders_pb2.EXEC_TYPE_UNSPECIFIED:
            raise ValueError("ExecutionReport without exec_type or order_status")
        return cls.model_construct(
            exec_id=msg.exec_id,
            engine_order_id=msg.engine_order_id,
            client_order_id=msg.client_order_id,
            account=msg.account,
            symbol=msg.symbol,
            side=(
                None
                if msg.side == orders_pb2.SIDE_UNSPECIFIED
                else _enum_from_proto(Side, "SIDE", msg.side, orders_pb2.Side)
            ),
            exec_type=_enum_from_proto(ExecType, "EXEC_TYPE", msg.exec_type, orders_pb2.ExecType),
            order_status=status,
            order_qty=decimal_from_proto(msg.order_qty),
            last_qty=decimal_from_proto(msg.last_qty),
            last_px=decimal_from_proto(msg.last_px),
            cum_qty=decimal_from_proto(msg.cum_qty),
            leaves_qty=decimal_from_proto(msg.leaves_qty),
            avg_px=decimal_from_proto(msg.avg_px),
            transact_time_unix_ns=msg.transact_time_unix_ns,
            reason=_reason_from_proto(msg.reason),
            field_errors=tuple(
                FieldError.model_construct(field=e.field, rule=e.rule, message=e.message)
                for e in msg.field_errors
            ),
            text=msg.text,
            seq=msg.seq,
            engine_id=msg.engine_id,
            tags=MappingProxyType(dict(msg.tags)),
            signer=msg.signer,
            orig_client_order_id=msg.orig_client_order_id,
            price=decimal_from_proto(msg.price) if msg.HasField("price") else None,
        )


class OrderState(_Model):
    """Answer to a status query: ``found`` and, when found, the order's latest report."""

    account: str
    client_order_id: str
    found: bool
    last_report: ExecutionReport | None

    @classmethod
    def from_proto(
        cls, account: str, client_order_id: str, msg: orders_pb2.OrderStatusReply
    ) -> OrderState:
        return cls.model_construct(
            account=account,
            client_order_id=client_order_id,
            found=msg.found,
            last_report=(
                ExecutionReport.from_proto(msg.last_report) if msg.HasField("last_report") else None
            ),
        )


class QueuedOrder(_Model):
    """JetStream's acknowledgement of a queued order: stored in ``stream`` at ``seq``.

    ``duplicate`` is true when JetStream recognised the ``Nats-Msg-Id`` (the client order id;
    of a batch, derived from its account and its orders' ids) within its duplicate window and
    did not store the message again. ``batch_index``: the order travelled in an
    ``OrderBatch`` (contract 1.2) stored at ``seq`` with other orders, at this position; None
    when it travelled alone.
    """

    client_order_id: str
    stream: str
    seq: int
    duplicate: bool
    batch_index: int | None = None
