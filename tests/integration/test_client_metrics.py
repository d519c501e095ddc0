"""The client's metrics and readiness against a real nats-server and the real engine, read the
way Prometheus and an orchestrator's prober read them: over HTTP from
``bridge.observability.serve``.

* counters and histograms move for sync accepted and rejected orders, queued orders, a
  backpressure refusal, first reports and a reconnect (the server killed and restarted);
* ``/readyz`` answers 503 until an engine answers the service ping, then 200, and 503 again
  while the connection is down.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bridge import (
    BackpressureError,
    BridgeClient,
    BridgeSettings,
    ConnectionEvent,
    PartialBatchError,
)
from bridge.metrics import ClientMetrics
from bridge.observability import ObservabilityServer, serve
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer, ServerHandle
from tests.integration.metrics_helpers import first_report_of, market, until

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
READINESS_TIMEOUT_S = 0.3


async def scrape(http: aiohttp.ClientSession, server: ObservabilityServer) -> Samples:
    async with http.get(f"{server.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def orders(samples: Samples, path: str, outcome: str) -> float:
    return samples["bridge_client_orders_total", (("outcome", outcome), ("path", path))]


def count(samples: Samples, name: str, path: str) -> float:
    return samples[f"{name}_count", (("path", path),)]


async def readyz(
    http: aiohttp.ClientSession, server: ObservabilityServer
) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{server.url}/readyz") as response:
        return response.status, await response.json()


def connection_events(client: BridgeClient) -> tuple[asyncio.Event, asyncio.Event]:
    """Events set when ``client`` is disconnected and when it is reconnected."""
    down, up = asyncio.Event(), asyncio.Event()

    def on_event(event: ConnectionEvent) -> None:
        if event is ConnectionEvent.DISCONNECTED:
            down.set()
        elif event is ConnectionEvent.RECONNECTED:
            up.set()

    client.on_connection_event(on_event)
    return down, up


async def test_readyz_is_503_until_an_engine_answers_then_200(
    nats_server: ServerHandle, tmp_path: Path
) -> None:
    settings = client_settings(nats_server)
    async with (
        BridgeClient(settings, metrics=ClientMetrics(CollectorRegistry())) as bridge,
        await serve(bridge, port=0, readiness_timeout=READINESS_TIMEOUT_S) as server,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 200
        status, body = await readyz(http, server)
        assert (status, body["connected"], body["engines"]) == (503, True, 0)
        engine = EngineProcess(nats_server, log_file=tmp_path / "engine.log").start()
        try:

            async def ready() -> bool:
                return (await readyz(http, server))[0] == 200

            await until(ready, "/readyz 200 with an engine running")
            status, body = await readyz(http, server)
            assert (status, body["ready"], body["engines"]) == (200, True, 1)
            assert len(body["engine_ids"]) == 1
        finally:
            code = engine.stop()
        assert code == 0, engine.log_tail()

        async def not_ready() -> bool:
            return (await readyz(http, server))[0] == 503

        await until(not_ready, "/readyz 503 once the engine stopped")


@pytest.mark.projections("fsync")  # the engine rides out the server restart
async def test_counters_and_histograms_move_with_orders_and_a_reconnect(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    account = f"CM{uuid.uuid4().hex[:8]}"
    registry = CollectorRegistry()
    metrics = ClientMetrics(registry)
    settings: BridgeSettings = client_settings(handle, request_timeout_ms=5000)
    # One in-flight slot, no wait, one order per message (else the two orders of the batch
    # below would share one message, and one slot).
    narrow = settings.model_copy(
        update={"max_inflight": 1, "backpressure_wait_ms": 0, "queued_batch_max_orders": 1}
    )
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with (
            BridgeClient(settings, metrics=metrics) as bridge,
            BridgeClient(narrow, metrics=metrics) as narrow_bridge,
            await serve(bridge, port=0, registry=registry) as srv,
            aiohttp.ClientSession() as http,
            bridge.reports(account) as stream,
        ):
            before = await scrape(http, srv)
            assert before["bridge_client_connected", ()] == 2

            # sync: accepted (then its first report), rejected (unknown symbol)
            accepted = market(account)
            assert (await bridge.submit(accepted)).accepted
            await first_report_of(stream, accepted.client_order_id)
            assert not (await bridge.submit(market(account, symbol="NOPE"))).accepted

            # queued: accepted (then its first report)
            queued = market(account)
            await bridge.enqueue(queued)
            await first_report_of(stream, queued.client_order_id)

            # backpressure: one slot, no wait: the second order of the batch is refused
            with pytest.raises(PartialBatchError) as partial:
                await narrow_bridge.enqueue_batch([market(account), market(account)])
            assert isinstance(partial.value.failure, BackpressureError)

            after = await scrape(http, srv)
            assert orders(after, "sync", "accepted") == 1
            assert orders(after, "sync", "rejected") == 1
            assert orders(after, "queued", "accepted") == 2
            assert orders(after, "queued", "refused") == 1
            assert count(after, "bridge_client_ack_latency_seconds", "sync") == 2
            assert count(after, "bridge_client_ack_latency_seconds", "queued") == 2
            # (the rejected order's report, if the engine sends one, may be a first report too)
            assert count(after, "bridge_client_first_report_latency_seconds", "sync") >= 1
            assert count(after, "bridge_client_first_report_latency_seconds", "queued") == 1
            assert after["bridge_client_reports_total", (("exec_type", "new"),)] >= 2
            assert after["bridge_client_backpressure_refusals_total", ()] == 1
            assert after["bridge_client_queued_in_flight", ()] == 0
            ack_sum = after["bridge_client_ack_latency_seconds_sum", (("path", "sync"),)]
            assert 0 < ack_sum < 10

            # a reconnect of both clients: the server killed and restarted
            watched = [connection_events(c) for c in (bridge, narrow_bridge)]
            disconnected = [down for down, _ in watched]
            reconnected = [up for _, up in watched]
            fresh_server.kill()
            async with asyncio.timeout(30):
                await asyncio.gather(*(e.wait() for e in disconnected))
            status, body = await readyz(http, srv)
            assert (status, body["connected"]) == (503, False)
            assert (await scrape(http, srv))["bridge_client_connected", ()] == 0
            await asyncio.to_thread(fresh_server.start)
            async with asyncio.timeout(60):
                await asyncio.gather(*(e.wait() for e in reconnected))
            samples = await scrape(http, srv)
            assert samples["bridge_client_disconnects_total", ()] == 2
            assert samples["bridge_client_reconnects_total", ()] == 2
            assert samples["bridge_client_connected", ()] == 2
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
