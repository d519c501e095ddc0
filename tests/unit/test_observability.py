"""Readiness (``BridgeClient.readiness``) and the one-line HTTP server
(``bridge.observability.serve``) through the in-memory transport: engines are fakes answering
the NATS service ping. Against a real server and engine: tests/integration/test_client_metrics.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bridge import BridgeClient, Readiness, contract
from bridge._readiness import instance_id
from bridge.metrics import ClientMetrics
from bridge.observability import serve
from tests.unit.fake_transport import FakeTransport
from tests.unit.test_client import settings

PING = contract.service_ping(contract.SERVICE_NAME)


def ping_answer(engine_id: str, name: str = contract.SERVICE_NAME) -> bytes:
    return json.dumps(
        {
            "type": "io.nats.micro.v1.ping_response",
            "name": name,
            "id": engine_id,
            "version": "0.1.0",
            "metadata": {},
        }
    ).encode()


async def fake_engines(fake: FakeTransport, *answers: bytes) -> None:
    """Service instances answering every ping on ``fake`` with ``answers``."""

    async def answer(msg: Msg) -> None:
        for data in answers:
            await fake.publish(msg.reply, data)

    await fake.subscribe(PING, cb=answer)


@pytest.fixture
async def client() -> AsyncIterator[tuple[FakeTransport, BridgeClient]]:
    fake = FakeTransport()
    bridge = BridgeClient(settings(), transport=fake, metrics=ClientMetrics(CollectorRegistry()))
    await bridge.connect()
    yield fake, bridge
    await bridge.close()


def test_instance_ids_come_from_the_engines_ping_answers_only() -> None:
    assert instance_id(ping_answer("E1")) == "E1"
    assert instance_id(ping_answer("E1", name="other-service")) is None
    assert instance_id(b"not json") is None
    assert instance_id(b"[1]") is None
    assert instance_id(json.dumps({"name": contract.SERVICE_NAME}).encode()) is None


async def test_not_ready_without_engines(client: tuple[FakeTransport, BridgeClient]) -> None:
    fake, bridge = client
    readiness = await bridge.readiness(timeout=0.05)
    assert readiness == Readiness(connected=True, engines=0)
    assert not readiness.ready
    [ping] = [s for s in fake.sent if s.subject == PING]
    assert ping.reply  # answered to an inbox of this client


async def test_ready_counts_distinct_engines(client: tuple[FakeTransport, BridgeClient]) -> None:
    fake, bridge = client
    await fake_engines(fake, ping_answer("E2"), ping_answer("E1"), ping_answer("E1"), b"junk")
    readiness = await bridge.readiness(timeout=0.05)
    assert readiness.ready
    assert (readiness.engines, readiness.engine_ids) == (2, ("E1", "E2"))
    assert readiness.as_dict() == {
        "ready": True,
        "connected": True,
        "engines": 2,
        "engine_ids": ["E1", "E2"],
    }


async def test_not_connected_is_not_ready_and_sends_nothing(
    client: tuple[FakeTransport, BridgeClient],
) -> None:
    fake, bridge = client
    await fake_engines(fake, ping_answer("E1"))
    await fake.drop_connection()
    assert await bridge.readiness(timeout=0.05) == Readiness(connected=False, engines=0)
    await bridge.close()
    assert not (await bridge.readiness(timeout=0.05)).ready
    assert not [s for s in fake.sent if s.subject == PING]


async def test_serve_answers_healthz_readyz_and_metrics(
    client: tuple[FakeTransport, BridgeClient],
) -> None:
    fake, bridge = client
    registry = bridge.metrics.registry
    assert registry is not None
    server = await serve(bridge, port=0, registry=registry, readiness_timeout=0.05)
    assert server.port > 0
    async with server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{server.url}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["connected"] is True
        await fake_engines(fake, ping_answer("E1"))
        async with http.get(f"{server.url}/readyz") as r:
            assert r.status == 200
            assert await r.json() == {
                "ready": True,
                "connected": True,
                "engines": 1,
                "engine_ids": ["E1"],
            }
        async with http.get(f"{server.url}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert (
            samples["bridge_client_orders_total", (("outcome", "accepted"), ("path", "sync"))] == 0
        )
        assert samples["bridge_client_connected", ()] == 1
    with pytest.raises(aiohttp.ClientConnectionError):  # closed: nothing listens any more
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz"):
            pass
