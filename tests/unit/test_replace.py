"""``Replace`` (the model) and ``BridgeClient.replace`` through the in-memory transport: field
errors before anything is sent, the request on the wire, retries with the same replace id, the
ack's and the reports' replace fields. Against a real server and engine:
tests/integration/test_replace.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import nats.errors
import pytest

from bridge import (
    BridgeClient,
    ExecType,
    ExecutionReport,
    InvalidOrderError,
    OrderAck,
    OrderStatus,
    Replace,
    contract,
)
from bridge.models import decimal_to_proto
from bridge.v1 import lifecycle_pb2, orders_pb2
from tests.unit.fake_transport import FakeTransport
from tests.unit.test_client import open_client


def replace(**kw: Any) -> Replace:
    base: dict[str, Any] = {
        "account": "ACC1",
        "orig_client_order_id": "o-1",
        "client_order_id": "r-1",
        "limit_price": Decimal("190.05"),
    }
    return Replace(**{**base, **kw})


def issues(exc: InvalidOrderError) -> set[tuple[str, str]]:
    return {(i.field, i.rule) for i in exc.errors}


def test_a_replace_names_every_bad_field() -> None:
    with pytest.raises(InvalidOrderError) as info:
        replace(
            account="bad account",
            orig_client_order_id="o.1",
            client_order_id="",
            quantity=Decimal(0),
            limit_price=Decimal("1.123456789"),
        )
    fields = {f for f, _ in issues(info.value)}
    assert fields == {
        "account",
        "orig_client_order_id",
        "client_order_id",
        "quantity",
        "limit_price",
    }


@pytest.mark.parametrize(
    ("kw", "field", "rule"),
    [
        ({"limit_price": None}, "quantity", "amends_something"),
        ({"client_order_id": "o-1"}, "client_order_id", "unique"),
        ({"quantity": -1}, "quantity", "greater_than"),
        ({"limit_price": 190.05}, "limit_price", "value_error"),
    ],
)
def test_a_replace_refuses(kw: dict[str, Any], field: str, rule: str) -> None:
    """Nothing to amend, its own order's id, a non-positive quantity, a float price."""
    with pytest.raises(InvalidOrderError) as info:
        replace(**kw)
    assert (field, rule) in issues(info.value)


def test_a_replace_on_the_wire() -> None:
    """Absent terms stay absent (unchanged), present ones are exact decimals."""
    msg = replace(quantity=Decimal("12.5")).to_proto()
    assert msg.account == "ACC1"
    assert (msg.orig_client_order_id, msg.client_order_id) == ("o-1", "r-1")
    assert msg.quantity == decimal_to_proto(Decimal("12.5"))
    assert msg.limit_price == decimal_to_proto(Decimal("190.05"))
    only_price = replace().to_proto()
    assert not only_price.HasField("quantity")


def ack_for(data: bytes, _headers: dict[str, str]) -> bytes:
    """The engine's answer to a replace: ACCEPTED, with its ids."""
    req = lifecycle_pb2.ReplaceRequest()
    req.ParseFromString(data)
    return orders_pb2.OrderAck(
        client_order_id=req.client_order_id,
        account=req.account,
        engine_order_id="e-1",
        status=orders_pb2.ACK_STATUS_ACCEPTED,
        order_status=orders_pb2.ORDER_STATUS_NEW,
        orig_client_order_id=req.orig_client_order_id,
    ).SerializeToString()


@pytest.fixture
def fake() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
async def client(fake: FakeTransport) -> AsyncIterator[BridgeClient]:
    bridge = await open_client(fake, order_retry_max_attempts=3)
    yield bridge
    await bridge.close()


async def test_replace_sends_the_request_and_returns_the_ack(
    fake: FakeTransport, client: BridgeClient
) -> None:
    fake.respond(contract.replace("ACC1"), ack_for)
    ack = await client.replace(replace(), correlation_id="corr-r")
    assert ack.accepted
    assert (ack.client_order_id, ack.orig_client_order_id) == ("r-1", "o-1")
    assert ack.order_status is OrderStatus.NEW
    [sent] = fake.requests(contract.replace("ACC1"))
    assert sent.headers[contract.HEADER_SCHEMA] == "bridge.v1.ReplaceRequest"
    assert sent.headers[contract.HEADER_CORRELATION_ID] == "corr-r"
    req = lifecycle_pb2.ReplaceRequest()
    req.ParseFromString(sent.data)
    assert req.client_order_id == "r-1"


async def test_replace_retries_with_the_same_replace_id(
    fake: FakeTransport, client: BridgeClient
) -> None:
    """A timeout is retried with the same replace (the engine answers a re-sent one as a
    duplicate, never applying it twice)."""
    attempts: list[bytes] = []

    def respond(data: bytes, headers: dict[str, str]) -> bytes:
        attempts.append(data)
        if len(attempts) == 1:
            raise nats.errors.TimeoutError()
        return ack_for(data, headers)

    fake.respond(contract.replace("ACC1"), respond)
    ack = await client.replace(replace())
    assert ack.accepted
    assert len(attempts) == 2
    assert len(set(attempts)) == 1
    assert client.metrics.retries["replace"]._value.get() >= 1


async def test_an_invalid_account_is_refused_before_sending(
    fake: FakeTransport, client: BridgeClient
) -> None:
    request = Replace.model_construct(
        account="a.b", orig_client_order_id="o-1", client_order_id="r-1", quantity=Decimal(1)
    )
    with pytest.raises(InvalidOrderError):
        await client.replace(request)
    assert fake.sent == []


def test_an_ack_and_reports_carry_the_replace_fields() -> None:
    ack = OrderAck.from_proto(
        orders_pb2.OrderAck(
            client_order_id="r-1",
            status=orders_pb2.ACK_STATUS_REJECTED,
            reason=orders_pb2.REJECT_REASON_TOO_LATE,
            orig_client_order_id="o-1",
        )
    )
    assert ack.orig_client_order_id == "o-1"
    for exec_type, status, want in [
        (
            orders_pb2.EXEC_TYPE_PENDING_REPLACE,
            orders_pb2.ORDER_STATUS_PENDING_REPLACE,
            (ExecType.PENDING_REPLACE, OrderStatus.PENDING_REPLACE),
        ),
        (
            orders_pb2.EXEC_TYPE_REPLACED,
            orders_pb2.ORDER_STATUS_FILLED,
            (ExecType.REPLACED, OrderStatus.FILLED),
        ),
    ]:
        report = ExecutionReport.from_proto(
            orders_pb2.ExecutionReport(
                exec_id="e-1-3",
                client_order_id="r-1",
                orig_client_order_id="o-1",
                exec_type=exec_type,
                order_status=status,
                price=decimal_to_proto(Decimal("190.05")),
            )
        )
        assert (report.exec_type, report.order_status) == want
        assert report.orig_client_order_id == "o-1"
        assert report.price == Decimal("190.05")
    assert not OrderStatus.PENDING_REPLACE.is_final
    old = ExecutionReport.from_proto(
        orders_pb2.ExecutionReport(
            exec_type=orders_pb2.EXEC_TYPE_NEW, order_status=orders_pb2.ORDER_STATUS_NEW
        )
    )
    assert (old.orig_client_order_id, old.price) == ("", None)
