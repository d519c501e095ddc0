"""Unit tests of the NewOrder size limits on the Python side (issue 9, item 2).

The contract declares each limit once (schemas/bridge/v1/contract.toml, generated into
``bridge.contract``) and orders.proto documents it next to its field (``[limit NAME = N]``);
``bridge.models`` must refuse an order over a limit with ``InvalidOrderError`` naming the field,
and never build an order whose encoding exceeds the whole-message limit. Pure: no NATS, no engine.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge import contract, models
from bridge.errors import InvalidOrderError
from bridge.models import Order, OrderType, Side, TimeInForce

ORDERS_PROTO = Path(__file__).parents[2] / "schemas" / "bridge" / "v1" / "orders.proto"


def _order(**overrides: Any) -> Order:
    fields: dict[str, Any] = {
        "client_order_id": "ord-1",
        "account": "acct-1",
        "symbol": "ACME",
        "side": Side.BUY,
        "order_type": OrderType.LIMIT,
        "quantity": Decimal("1"),
        "limit_price": Decimal("101.25"),
        "time_in_force": TimeInForce.GTC,
    }
    fields.update(overrides)
    return Order(**fields)


def _refusal(**overrides: Any) -> set[tuple[str, str]]:
    with pytest.raises(InvalidOrderError) as info:
        _order(**overrides)
    return {(e.field, e.rule) for e in info.value.errors}


def test_limits_documented_in_the_proto_are_the_contracts() -> None:
    """Every limit orders.proto documents has the value of the generated contract constant."""
    stated = {
        name: int(value)
        for name, value in re.findall(r"\[limit (\w+) = (\d+)\]", ORDERS_PROTO.read_text())
    }
    assert set(stated) == {
        "MAX_NEW_ORDER_BYTES",
        "MAX_CLIENT_ORDER_ID_BYTES",
        "MAX_ACCOUNT_BYTES",
        "MAX_SYMBOL_BYTES",
        "MAX_TAGS",
        "MAX_TAG_KEY_BYTES",
        "MAX_TAG_VALUE_BYTES",
        "MAX_CORRELATION_ID_BYTES",
        "MAX_BATCH_ORDERS",
        "MAX_BATCH_BYTES",
    }
    assert {name: getattr(contract, name) for name in stated} == stated


def test_tag_key_and_value_sizes_are_limited_in_utf8_bytes() -> None:
    """A tag key over 32 bytes or a value over 64 bytes (UTF-8) is refused on the tags field."""
    _order(tags={"k" * 32: "v" * 64, "ké": "é" * 32})  # at the limits: fine
    assert _refusal(tags={"k" * 33: "v"}) == {("tags", "key_max_bytes")}
    assert _refusal(tags={"k": "é" * 33}) == {("tags", "value_max_bytes")}
    with pytest.raises(InvalidOrderError) as info:
        _order(tags={"k": "v" * 10_000})
    message = str(info.value)
    assert "64 bytes" in message
    assert len(message) < 300, "the error quotes a bounded part of the input"


def test_ids_and_symbol_are_limited() -> None:
    """client_order_id, account and symbol over their limits are refused naming the field."""
    assert _refusal(client_order_id="c" * 65) == {("client_order_id", "string_too_long")}
    assert _refusal(account="a" * 33) == {("account", "string_too_long")}
    assert _refusal(symbol="S" * 33) == {("symbol", "string_too_long")}


def test_largest_valid_order_fits_the_message_limit() -> None:
    """An order at every field limit encodes within MAX_NEW_ORDER_BYTES, so the engine's
    whole-message check never refuses an order this model accepts."""
    order = _order(
        client_order_id="c" * contract.MAX_CLIENT_ORDER_ID_BYTES,
        account="a" * contract.MAX_ACCOUNT_BYTES,
        symbol="S" * contract.MAX_SYMBOL_BYTES,
        quantity=models.MAX_VALUE,
        limit_price=models.MAX_VALUE,
        created_at_unix_ns=2**63 - 1,
        deadline_unix_ns=2**63 - 1,
        tags={
            f"{i:0{contract.MAX_TAG_KEY_BYTES}d}": "é" * (contract.MAX_TAG_VALUE_BYTES // 2)
            for i in range(contract.MAX_TAGS)
        },
    )
    size = order.to_proto().ByteSize()
    assert 3000 < size <= contract.MAX_NEW_ORDER_BYTES
