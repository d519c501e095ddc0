"""Unit tests of the client-side pieces of market data that need no server: the reference
price model and the routing of nats-py's slow-consumer errors to the feed that owns them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import nats.errors
import pytest

from bridge import BridgeSettings, InvalidOrderError, ReferencePrice
from bridge._connection import Connection
from bridge.metrics import ClientMetrics
from tests.unit.fake_transport import FakeTransport


@pytest.mark.parametrize(
    ("symbol", "price", "field", "rule"),
    [
        ("AAPL", 101.5, "price", "decimal_type"),
        ("AAPL", Decimal("-1"), "price", "greater_than"),
        ("AAPL", Decimal("0"), "price", "greater_than"),
        ("AAPL", Decimal("1.123456789"), "price", "decimal_max_places"),
        ("AAPL", Decimal("NaN"), "price", "decimal_type"),
        ("AA PL", Decimal("1"), "symbol", "string_pattern_mismatch"),
    ],
)
def test_reference_price_is_checked_when_built(
    symbol: str, price: Any, field: str, rule: str
) -> None:
    with pytest.raises(InvalidOrderError) as caught:
        ReferencePrice(symbol, price)
    assert [(e.field, e.rule) for e in caught.value.errors] == [(field, rule)]


def test_reference_price_encodes_exactly() -> None:
    msg = ReferencePrice("AAPL", Decimal("101.250")).to_proto()
    assert (msg.symbol, msg.price.units, msg.price.scale) == ("AAPL", 10125, 2)


async def test_slow_consumer_errors_go_to_the_subscription_owner() -> None:
    """A callback that owns the subject takes the error (no generic ERROR line); one that does
    not leaves it to the usual logging; a removed callback is not called."""
    from prometheus_client import CollectorRegistry

    conn = Connection(
        BridgeSettings(sign_orders=False), FakeTransport(), ClientMetrics(CollectorRegistry())
    )
    seen: list[str] = []

    def owner(subject: str) -> bool:
        seen.append(subject)
        return subject == "mine"

    remove = conn.on_slow_consumer(owner)
    error = nats.errors.SlowConsumerError(subject="mine", reply="", sid=1, sub=None)  # type: ignore[arg-type]
    await conn.on_error(error)
    other = nats.errors.SlowConsumerError(subject="other", reply="", sid=2, sub=None)  # type: ignore[arg-type]
    await conn.on_error(other)
    remove()
    await conn.on_error(error)
    assert seen == ["mine", "other"]
