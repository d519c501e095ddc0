"""The demo's observability tour: what an operator sees of the run that just happened.

* the engine's ``/readyz`` (connected, consumer bound, recovery finished, intake subscribed);
* its ``/metrics``: orders by path and outcome, and the mean time per engine stage;
* this process's client metrics (``bridge.metrics`` on prometheus-client's default registry):
  the acks the demo received, by path and outcome;
* an orchestrator's readiness (``BridgeClient.readiness()``: connected, engines answering the
  NATS service ping) served as ``/readyz`` by the one-line ``bridge.observability.serve``;
* ``nats micro stats bridge-engine``: the engine's endpoints and their request counts, through
  the pinned natscli that ``./dev setup`` builds, as the operator identity.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from rich.console import Console
from rich.table import Table

from bridge import BridgeClient, contract
from bridge.observability import serve
from bridge_dev import natscli
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import ServerHandle

NATS_CLI = natscli.NATS_CLI


def _get(url: str) -> tuple[int, str]:
    """One GET: status and body (a 503 is an answer, not an error)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _samples(text: str) -> list[Sample]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def _value(samples: Iterable[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def _micro_stats(handle: ServerHandle) -> list[tuple[str, int, int, float]]:
    """(endpoint, requests, errors, average µs) of every engine instance, through natscli."""
    with tempfile.TemporaryDirectory() as home:
        done = subprocess.run(
            natscli.command(handle, "operator", "micro", "stats", contract.SERVICE_NAME, "--json"),
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "HOME": home, "XDG_CONFIG_HOME": home},
            check=True,
        )
    return [
        (
            e["name"],
            e["num_requests"],
            e["num_errors"],
            e["processing_time"] / e["num_requests"] / 1000 if e["num_requests"] else 0.0,
        )
        for instance in json.loads(done.stdout)
        for e in instance["endpoints"]
    ]


async def observability_tour(handle: ServerHandle, engine: EngineProcess, console: Console) -> bool:
    """Prints the tour; True when the engine and an orchestrator both report ready and the
    engine's counters saw the demo's orders."""
    console.rule("[bold]Observability: health, metrics, service API")
    code, body = _get(engine.readyz_url)
    console.print(f"engine {engine.readyz_url}: {code} {body}")
    _, text = _get(engine.metrics_url)
    engine_samples = _samples(text)
    client_samples = [s for m in REGISTRY.collect() for s in m.samples]

    table = Table(
        title="orders by path and outcome: the engine's verdict (/metrics) and what this "
        "process's client got back (a queued order is accepted once JetStream stores it)"
    )
    for col in ("path", "outcome", "engine", "client"):
        table.add_column(col, justify="left" if col in ("path", "outcome") else "right")
    for path in ("sync", "queued"):
        for outcome in ("accepted", "rejected", "duplicate", "refused", "error"):
            e = _value(engine_samples, "bridge_engine_orders_total", path=path, outcome=outcome)
            c = _value(client_samples, "bridge_client_orders_total", path=path, outcome=outcome)
            if e or c:
                table.add_row(path, outcome, f"{e:.0f}", f"{c:.0f}")
    console.print(table)

    stages = Table(title="engine time per stage (bridge_engine_stage_seconds)")
    for col in ("stage", "count", "mean µs"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for stage in ("decode", "validate", "journal", "match", "publish", "ack"):
        n = _value(engine_samples, "bridge_engine_stage_seconds_count", stage=stage)
        total = _value(engine_samples, "bridge_engine_stage_seconds_sum", stage=stage)
        stages.add_row(stage, f"{n:.0f}", f"{total / n * 1e6:.0f}" if n else "-")
    console.print(stages)

    async with (
        BridgeClient(client_settings(handle)) as bridge,
        await serve(bridge, port=0) as server,
    ):
        # The server runs on this event loop: ask it from a thread, as a prober would.
        orchestrator_code, orchestrator_body = await asyncio.to_thread(_get, f"{server.url}/readyz")
    served = f"{orchestrator_code} {orchestrator_body}"
    console.print(f"orchestrator /readyz (bridge.observability.serve): {served}")

    if NATS_CLI.exists():
        micro = Table(title=f"nats micro stats {contract.SERVICE_NAME} (operator)")
        for col in ("endpoint", "requests", "errors", "average µs"):
            micro.add_column(col, justify="left" if col == "endpoint" else "right")
        for name, requests, errors, average_us in _micro_stats(handle):
            micro.add_row(name, str(requests), str(errors), f"{average_us:.0f}")
        console.print(micro)
    else:
        console.print("[yellow]natscli missing (./dev setup builds .dev/bin/nats)[/yellow]")

    saw_orders = _value(engine_samples, "bridge_engine_orders_total") > 0
    return code == 200 and orchestrator_code == 200 and saw_orders
