"""The engine's HTTP endpoints against a real server and the real engine binary: /healthz
answers while the process runs, /readyz follows the connection (503 while the server is down,
200 again after it is back), /metrics exports the registry's engine metrics and its counters
move when orders go through (sync accepted and rejected, queued); ``--check-ready`` is the
container healthcheck's probe."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import AckStatus, BridgeClient, Order, OrderType, RejectReason, Side, TimeInForce
from bridge_dev.engine import EngineProcess, client_settings, engine_binary, http_status
from bridge_dev.server import LocalNatsServer

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""(sample name, sorted labels) -> value."""

POLL_S = 0.05
# One sample line of the text exposition format: name{labels} value (the engine writes no
# timestamps, and label values here hold no escaped quotes).
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


def scrape(engine: EngineProcess) -> Samples:
    with urllib.request.urlopen(engine.metrics_url, timeout=5) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, number = match.groups()
        key = tuple(sorted(LABEL.findall(labels or "")))
        samples[(name, key)] = float(number)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def readyz(engine: EngineProcess) -> tuple[int, dict[str, bool]]:
    try:
        with urllib.request.urlopen(engine.readyz_url, timeout=5) as answer:
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(what: str, check: object, timeout: float = 30.0) -> None:
    """Poll ``check()`` (a bounded wait for an observable state, e.g. /readyz's answer)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)


def order(account: str, symbol: str = "AAPL") -> Order:
    return Order(
        client_order_id=f"h-{uuid.uuid4().hex[:12]}",
        account=account,
        symbol=symbol,
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(5),
        time_in_force=TimeInForce.IOC,
    )


def check_ready(url: str) -> int:
    done = subprocess.run(
        [str(engine_binary()), "--check-ready", url], capture_output=True, timeout=30, check=False
    )
    return done.returncode


@pytest.mark.projections("fsync")  # the engine rides out the server restart
async def test_health_readiness_and_metrics_follow_the_engine(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    server = fresh_server
    engine = EngineProcess(
        server.handle,
        log_file=tmp_path / "engine.log",
        env={"BRIDGE_METRICS_REFRESH_MS": "100"},
    ).start()
    try:
        # Ready: every condition, and the gauges agree.
        code, body = readyz(engine)
        assert code == 200, body
        assert body == {
            "ready": True,
            "connected": True,
            "consumer_bound": True,
            "recovery_finished": True,
            "intake_subscribed": True,
        }
        assert http_status(f"{engine.http_url}/healthz") == 200
        assert check_ready(engine.readyz_url) == 0
        before = scrape(engine)
        assert value(before, "bridge_engine_ready") == 1
        assert value(before, "bridge_engine_connected") == 1
        assert value(before, "process_resident_memory_bytes") > 0
        assert value(before, "bridge_engine_book_depth", symbol="AAPL", side="sell") > 0

        # Orders through both paths move the counters.
        account = f"H{uuid.uuid4().hex[:8]}"
        settings = client_settings(server.handle, request_timeout_ms=5000)
        queued = [order(account) for _ in range(3)]
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            accepted = await bridge.submit(order(account))
            assert accepted.status is AckStatus.ACCEPTED, accepted
            rejected = await bridge.submit(order(account, symbol="NOPE"))
            assert rejected.reason is RejectReason.UNKNOWN_SYMBOL, rejected
            await bridge.enqueue_batch(queued)
            want = {o.client_order_id for o in queued} | {accepted.client_order_id}
            async with asyncio.timeout(30):
                async for report in stream:
                    if report.is_final:
                        want.discard(report.client_order_id)
                    if not want:
                        break
        # A queued order is acked to JetStream after its reports are published: wait for the
        # engine to record those acks (the event), then read every counter once.
        wait_for(
            "queued orders acked",
            lambda: (
                value(scrape(engine), "bridge_engine_stage_seconds_count", stage="ack")
                - value(before, "bridge_engine_stage_seconds_count", stage="ack")
                >= 5
            ),
        )
        after = scrape(engine)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("bridge_engine_orders_total", path="sync", outcome="accepted") == 1
        assert moved("bridge_engine_orders_total", path="sync", outcome="rejected") == 1
        assert moved("bridge_engine_orders_total", path="queued", outcome="accepted") == 3
        assert moved("bridge_engine_rejects_total", reason="unknown_symbol") == 1
        assert moved("bridge_engine_reports_total", exec_type="new") == 4
        assert moved("bridge_engine_reports_total", exec_type="rejected") == 1
        assert moved("bridge_engine_reports_total", exec_type="trade") >= 4
        for stage in ("decode", "validate", "dedupe", "match", "publish", "ack"):
            assert moved("bridge_engine_stage_seconds_count", stage=stage) >= 4, stage
        # One journal write per commit group, which may hold several orders.
        assert moved("bridge_engine_stage_seconds_count", stage="journal") >= 1
        # The JetStream figures are refreshed every 100 ms.
        wait_for(
            "stream figures",
            lambda: (
                value(scrape(engine), "bridge_engine_stream_messages", stream="EXECUTIONS")
                >= value(after, "bridge_engine_reports_total", exec_type="new")
            ),
        )
        assert value(scrape(engine), "bridge_engine_stream_max_messages", stream="ORDERS") != 0

        # The server goes away: alive, not ready; it comes back: ready again, one reconnect.
        server.stop()
        wait_for("/readyz 503", lambda: readyz(engine)[0] == 503)
        code, body = readyz(engine)
        assert body["connected"] is False, body
        assert body["recovery_finished"] is True, body
        assert http_status(f"{engine.http_url}/healthz") == 200
        assert check_ready(engine.readyz_url) == 1
        assert value(scrape(engine), "bridge_engine_ready") == 0
        server.start()
        engine.wait_ready(timeout=30)
        again = scrape(engine)
        assert value(again, "bridge_engine_connected") == 1
        assert value(again, "bridge_engine_reconnects_total") >= 1
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    # The log names the bound address before anything connects.
    lines = [json.loads(line) for line in (tmp_path / "engine.log").read_text().splitlines()]
    messages = [line.get("message") for line in lines]
    assert messages.index("http listening") < messages.index("nats connection event")
    assert messages.index("http listening") < messages.index("engine ready")
    assert http_status(f"{engine.http_url}/healthz") is None
