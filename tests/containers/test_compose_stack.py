"""Smoke test of docker-compose.yml: the stack as ``./dev stack up`` brings it up (every step of
:func:`bridge_dev.stack.up`), with what can be built here -- nats-server, the engine and
Prometheus (Grafana's image cannot be pulled) -- as a compose project of its own on free ports,
beside anything else running. An order goes through it with the Python client; Prometheus must
scrape the engine (target up, ``bridge_engine_orders_total`` counting the order). The project is
torn down, containers and volumes, whatever happens. Skipped, with the reason, only when no
Docker engine or no compose answers.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import BridgeClient
from bridge_dev import stack as dev_stack
from bridge_dev.engine import client_settings
from bridge_dev.pki import DevCredentials
from bridge_dev.server import ServerHandle
from tests.integration.metrics_helpers import first_report_of, market, until

pytestmark = pytest.mark.integration


def _no_docker() -> str | None:
    """Why the stack cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker client"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer `docker info`"
    if info.returncode != 0:
        return "no Docker engine answers `docker info` (./dev test starts one when it can)"
    try:
        dev_stack.compose_command()
    except dev_stack.StackError as exc:
        return str(exc)
    return None


def _free_ports(count: int) -> list[int]:
    """Ports free now: the sockets stay open until all are chosen, so they differ."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def stack(dev_creds: DevCredentials, tmp_path: Path) -> Iterator[dev_stack.Stack]:
    reason = _no_docker()
    if reason:
        pytest.skip(reason)
    nats, nats_http, engine_http, prometheus, grafana = _free_ports(5)
    running = dev_stack.Stack(
        project=f"bridge-smoke-{uuid.uuid4().hex[:8]}",
        creds_root=dev_creds.root,
        state_dir=tmp_path / "stack",
        nats_port=nats,
        nats_http_port=nats_http,
        engine_http_port=engine_http,
        prometheus_port=prometheus,
        grafana_port=grafana,
        scrape_interval="1s",
        health_interval="1s",
    )
    try:
        dev_stack.up(running, ["nats", "engine", "prometheus"], say=lambda _line: None)
        yield running
    finally:
        dev_stack.down(running, volumes=True)
        project = f"label=com.docker.compose.project={running.project}"
        leftover = subprocess.run(
            ["docker", "ps", "-aq", "--filter", project],
            capture_output=True,
            text=True,
            check=False,
        )
        assert leftover.stdout.strip() == "", "containers left behind"


def _query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def test_order_through_the_compose_stack_is_scraped(
    stack: dev_stack.Stack, dev_creds: DevCredentials
) -> None:
    handle = ServerHandle(
        url=stack.nats_url,
        monitor_url=f"http://127.0.0.1:{stack.nats_http_port}",
        store_dir=stack.state_dir / "nats-store",
        creds=dev_creds,
        pid=0,  # in a container
    )
    account = f"SM{uuid.uuid4().hex[:8]}"
    settings = client_settings(handle, request_timeout_ms=10000)
    async with BridgeClient(settings) as bridge, bridge.reports(account) as reports:
        order = market(account)
        assert (await bridge.submit(order)).accepted
        await first_report_of(reports, order.client_order_id)

    async def engine_scraped() -> bool:
        up = _query(stack.prometheus_url, 'up{job="bridge-engine"} == 1')
        return len(up) == 1

    await until(engine_scraped, "Prometheus scrapes the engine", timeout=60)

    async def order_counted() -> bool:
        result = _query(stack.prometheus_url, 'sum(bridge_engine_orders_total{outcome="accepted"})')
        return bool(result) and float(result[0]["value"][1]) >= 1

    await until(order_counted, "bridge_engine_orders_total counts the order", timeout=60)
