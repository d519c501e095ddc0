"""The client side of contract versions (``bridge._versions``), through the in-memory transport:
every request and queued order declares ``Bridge-Schema-Version``; "no responders" to a request
of a later contract than the engines' is ``UnsupportedOperationError`` (not retried), and stays
``EngineUnavailableError`` when no engine is up or the one up speaks the request's contract.
Against a real server and the 1.0 engine: tests/integration/test_compat_n1.py."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from google.protobuf.message import Message

from bridge import (
    BridgeClient,
    EngineUnavailableError,
    Order,
    OrderType,
    Side,
    UnsupportedOperationError,
    contract,
)
from bridge import _versions as versions
from bridge.retry import is_transient
from bridge.v1 import lifecycle_pb2, orders_pb2, session_pb2
from tests.unit.fake_transport import FakeTransport
from tests.unit.test_client import accepted, open_client

REPO = Path(__file__).resolve().parents[2]
RELEASED_PROTOS = REPO / "schemas" / "released" / "v1.0" / "bridge" / "v1"
PING = contract.service_ping(contract.SERVICE_NAME)


def ping_answer(engine_id: str, contract_version: str | None) -> bytes:
    """An engine's service ping answer (a 1.0 engine has no ``contract_version``)."""
    metadata = {"engine_id": engine_id}
    if contract_version is not None:
        metadata[versions.ENGINE_CONTRACT_KEY] = contract_version
    return json.dumps(
        {
            "type": "io.nats.micro.v1.ping_response",
            "name": contract.SERVICE_NAME,
            "id": uuid.uuid4().hex,
            "version": "0.1.0",
            "metadata": metadata,
        }
    ).encode()


@pytest.fixture
def fake() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
async def client(fake: FakeTransport) -> AsyncIterator[BridgeClient]:
    bridge = await open_client(fake, order_retry_max_attempts=3)
    yield bridge
    await bridge.close()


def order() -> Order:
    return Order(
        client_order_id="o-1",
        account="ACC1",
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        limit_price=Decimal("189.99"),
        quantity=Decimal("100"),
    )


async def raw_request(bridge: BridgeClient, what: str, subject: str, msg: Message) -> bytes:
    """A request on the client's one request path (``Requests._request``, under its retries),
    as the 1.1 operations' methods make it."""
    from bridge.retry import with_retries

    requests = bridge._requests
    return await with_retries(
        bridge.settings,
        what,
        lambda: requests._request(
            what,
            subject,
            "ACC1",
            msg,
            lambda data: data,
            client_order_id="r-1",
            correlation_id="c-1",
            traceparent=f"00-{'1' * 32}-{'2' * 16}-01",
            timeout=1.0,
        ),
        lambda: None,
    )


# -- what the client declares --------------------------------------------------------------


async def test_every_request_declares_the_contract_version(
    fake: FakeTransport, client: BridgeClient
) -> None:
    fake.respond(contract.submit("ACC1"), accepted)
    fake.respond(contract.cancel("ACC1"), accepted)
    fake.respond(
        contract.status("ACC1"), lambda _d, _h: orders_pb2.OrderStatusReply().SerializeToString()
    )
    await client.submit(order())
    await client.cancel("ACC1", "o-1")
    await client.status("ACC1", "o-1")
    await client.enqueue(order())
    sent = [
        *fake.requests(contract.submit("ACC1")),
        *fake.requests(contract.cancel("ACC1")),
        *fake.requests(contract.status("ACC1")),
        *fake.publishes(),
    ]
    assert len(sent) == 4
    for s in sent:
        assert s.headers[contract.HEADER_SCHEMA_VERSION] == contract.CONTRACT_VERSION, s.subject
    assert versions.parse(contract.CONTRACT_VERSION) == (1, 2)


def test_versions_parse_as_the_engine_does() -> None:
    assert versions.parse("1.0") == (1, 0)
    assert versions.parse("1.17") == (1, 17)
    for bad in (
        "",
        "1",
        "1.",
        ".1",
        "1.1.0",
        "v1.1",
        " 1.1",
        "1.x",
        "1.\u0661",
    ):  # an Arabic-Indic one: not ASCII
        assert versions.parse(bad) is None, bad


# -- "no responders" -------------------------------------------------------------------------


def replace_request() -> lifecycle_pb2.ReplaceRequest:
    return lifecycle_pb2.ReplaceRequest(
        account="ACC1", orig_client_order_id="o-1", client_order_id="o-1-r1"
    )


async def test_a_1_1_request_to_1_0_engines_is_unsupported_and_not_retried(
    fake: FakeTransport, client: BridgeClient
) -> None:
    fake.respond(PING, lambda _d, _h: ping_answer("engine-1", None))
    subject = contract.replace("ACC1")
    with pytest.raises(UnsupportedOperationError) as raised:
        await raw_request(client, "replace", subject, replace_request())
    err = raised.value
    assert (err.operation, err.min_contract, err.engine_contract) == ("replace", "1.1", "1.0")
    assert err.engine_ids == ("engine-1",)
    assert (err.client_order_id, err.correlation_id) == ("r-1", "c-1")
    assert "needs contract 1.1" in str(err)
    assert subject in str(err)
    assert not is_transient(err)
    assert len(fake.requests(subject)) == 1  # not retried
    assert len(fake.requests(PING)) == 1
    assert client.engine_available is True  # an engine is up: it just does not serve this


@pytest.mark.parametrize(
    ("what", "subject", "msg"),
    [
        ("mass_cancel", contract.mass_cancel("ACC1"), lifecycle_pb2.MassCancelRequest()),
        ("session_open", contract.session_open("s-1"), session_pb2.SessionOpen(session_id="s-1")),
        ("session_close", contract.session_close("s-1"), session_pb2.SessionClose()),
    ],
)
async def test_every_1_1_request_is_told_apart(
    fake: FakeTransport, client: BridgeClient, what: str, subject: str, msg: Message
) -> None:
    fake.respond(PING, lambda _d, _h: ping_answer("engine-1", "1.0"))
    with pytest.raises(UnsupportedOperationError) as raised:
        await raw_request(client, what, subject, msg)
    assert raised.value.operation == what


async def test_without_an_engine_it_stays_unavailable(
    fake: FakeTransport, client: BridgeClient
) -> None:
    """No engine answers the ping either: unavailable, retried as before."""
    subject = contract.replace("ACC1")
    with pytest.raises(EngineUnavailableError):
        await raw_request(client, "replace", subject, replace_request())
    assert len(fake.requests(subject)) == 3
    assert client.engine_available is False


async def test_an_engine_of_the_requests_contract_is_only_unavailable(
    fake: FakeTransport, client: BridgeClient
) -> None:
    """An engine that speaks 1.1 answers the ping but no endpoint took the request: it is
    stopping or starting (its endpoints unsubscribed): unavailable, retried."""
    fake.respond(PING, lambda _d, _h: ping_answer("engine-1", "1.1"))
    with pytest.raises(EngineUnavailableError):
        await raw_request(client, "replace", contract.replace("ACC1"), replace_request())


async def test_a_1_0_request_never_pings(fake: FakeTransport, client: BridgeClient) -> None:
    fake.respond(PING, lambda _d, _h: ping_answer("engine-1", None))
    with pytest.raises(EngineUnavailableError):
        await client.submit(order())
    assert fake.requests(PING) == []


def test_ping_answers_are_read_defensively() -> None:
    assert versions.engine_contract(ping_answer("e-1", None)) == ("e-1", "1.0")
    assert versions.engine_contract(ping_answer("e-1", "1.1")) == ("e-1", "1.1")
    assert versions.engine_contract(b"not json") is None
    assert versions.engine_contract(b'{"name": "other"}') is None
    assert versions.engine_contract(b'{"name": "bridge-engine", "id": "x"}') == ("x", "1.0")


# -- which requests came later than 1.0 ------------------------------------------------------


def test_introduced_names_every_request_1_0_did_not_have() -> None:
    """The request messages of the contract's subjects (``X -> Y`` in contract.toml) that the
    frozen 1.0 protos do not define are exactly INTRODUCED's, each at a version up to ours."""
    contract_toml = (REPO / "schemas" / "bridge" / "v1" / "contract.toml").read_text("utf-8")
    requests = set(re.findall(r'doc = "([A-Za-z]+) -> [A-Za-z]+', contract_toml))
    released = set()
    for proto in RELEASED_PROTOS.glob("*.proto"):
        released |= set(re.findall(r"^message (\w+)", proto.read_text("utf-8"), re.M))
    assert {"CancelRequest", "OrderStatusRequest"} <= requests & released
    later = {f"bridge.v1.{name}" for name in requests - released}
    assert later == set(versions.INTRODUCED)
    ours = versions.parse(contract.CONTRACT_VERSION)
    for name, since in versions.INTRODUCED.items():
        parsed = versions.parse(since)
        assert parsed is not None
        assert ours is not None
        assert (1, 0) < parsed <= ours, name
