"""What a running engine and a running client export is exactly ``schemas/metrics.toml`` (issue 13).

Read the way Prometheus reads it: the engine's ``/metrics`` (the real binary against a real
nats-server) and an orchestrator's ``/metrics`` served by ``bridge.observability.serve`` from
the default ``prometheus_client.REGISTRY``, each after sync (accepted and rejected) and queued
orders went through, so that every labelled family has series.

For each side: the ``bridge_*`` families are exactly the registry's names for that side, each
with the registry's type and label names, and every bounded label value is one the registry
declares. The engine's ``process_*`` families are exactly the registry's too. The client's
process and runtime families (prometheus-client's default collectors: ``process_*``,
``python_*``, in whatever process imports it) and prometheus-client's ``<counter or
histogram>_created`` timestamps are not the registry's business and are ignored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge import BridgeClient
from bridge.observability import serve
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.metrics_registry import Metric, Registry, load
from bridge_dev.server import ServerHandle
from tests.integration.metrics_helpers import send_orders, until

pytestmark = pytest.mark.integration

# Enum-valued labels of the registry: the bridge.v1 enum's names, prefix dropped, lowercase.
ENUMS = {
    "RejectReason": ("REJECT_REASON_", orders_pb2.RejectReason.keys()),
    "ExecType": ("EXEC_TYPE_", orders_pb2.ExecType.keys()),
}
# The families each side answers for, all of them in the registry: the engine's process
# metrics are its library's collector registered by the engine; the client's process and
# python_* families are prometheus-client's defaults in whatever process imports it.
OWN_PREFIXES = {"client": ("bridge_",), "engine": ("bridge_", "process_")}


@dataclass
class Family:
    """One exported metric family: its type, its label names and the label values seen."""

    type: str
    label_names: set[tuple[str, ...]] = field(default_factory=set)
    values: dict[str, set[str]] = field(default_factory=dict)


def exported(text: str) -> dict[str, Family]:
    """The families of a Prometheus text exposition, under their exposed names."""
    families: dict[str, Family] = {}
    for metric in text_string_to_metric_families(text):
        if metric.type == "gauge" and metric.name.endswith("_created"):
            continue  # prometheus-client's creation timestamps of counters and histograms
        # prometheus-client's parser drops a counter's `_total` from the family name
        name = f"{metric.name}_total" if metric.type == "counter" else metric.name
        family = families.setdefault(name, Family(metric.type))
        for sample in metric.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            family.label_names.add(tuple(sorted(labels)))
            for key, value in labels.items():
                family.values.setdefault(key, set()).add(value)
    return families


def allowed_values(registry: Registry, metric: Metric, label: str) -> set[str] | None:
    """The values the registry declares for a label of a metric (None: not bounded here)."""
    declared = registry.label_values.get(f"{metric.side}_{label}", registry.label_values.get(label))
    if isinstance(declared, list):
        return set(declared)
    if isinstance(declared, str) and declared in ENUMS:
        prefix, names = ENUMS[declared]
        return {n.removeprefix(prefix).lower() for n in names}  # "unspecified": the fallback
    return None  # e.g. `symbol`: the engine's configured symbols


def mismatches(families: dict[str, Family], registry: Registry, side: str) -> list[str]:
    """Every way the exported families differ from the registry's metrics of ``side``."""
    wanted = registry.side(side)
    prefix = f"bridge_{side}_"
    problems: list[str] = []
    ours = {n for n in families if n.startswith(OWN_PREFIXES[side])}
    extra = ours - set(wanted)
    missing = {n for n in wanted if n not in families}
    problems += [f"exported but not in the registry: {n}" for n in sorted(extra)]
    problems += [f"in the registry but not exported: {n}" for n in sorted(missing)]
    problems += [
        f"{n}: not named {prefix}*"
        for n in sorted(ours)
        if n.startswith("bridge_") and not n.startswith(prefix)
    ]
    for name, metric in sorted(wanted.items()):
        family = families.get(name)
        if family is None:
            continue
        if family.type != metric.type:
            problems.append(f"{name}: type {family.type}, registry {metric.type}")
        if not family.label_names:
            problems.append(f"{name}: no series (labels unchecked)")
        for names in family.label_names:
            if names != tuple(sorted(metric.labels)):
                problems.append(f"{name}: labels {names}, registry {metric.labels}")
        for label, seen in family.values.items():
            allowed = allowed_values(registry, metric, label)
            if allowed is not None and not seen <= allowed:
                problems.append(f"{name}: {label} values {sorted(seen - allowed)} undeclared")
    return problems


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, Family]:
    async with http.get(url) as response:
        assert response.status == 200, url
        return exported(await response.text())


def test_the_comparison_sees_every_kind_of_difference() -> None:
    """The check itself, on a hand-written exposition that breaks each rule once."""
    registry = load()
    text = """# TYPE bridge_client_orders_total gauge
bridge_client_orders_total{path="sync",outcome="maybe"} 1
# TYPE bridge_client_retries_total counter
bridge_client_retries_total{operation="submit",extra="x"} 1
# TYPE bridge_client_made_up_total counter
bridge_client_made_up_total 1
# TYPE process_threads gauge
process_threads 3
"""
    problems = mismatches(exported(text), registry, "client")
    assert "exported but not in the registry: bridge_client_made_up_total" in problems
    assert "in the registry but not exported: bridge_client_connected" in problems
    assert "bridge_client_orders_total: type gauge, registry counter" in problems
    assert "bridge_client_orders_total: outcome values ['maybe'] undeclared" in problems
    assert any(p.startswith("bridge_client_retries_total: labels") for p in problems)
    assert not any("process_threads" in p for p in problems)  # the client's library's
    engine = mismatches(
        exported("# TYPE process_made_up gauge\nprocess_made_up 1\n"), registry, "engine"
    )
    assert "exported but not in the registry: process_made_up" in engine


async def test_client_exports_exactly_the_registrys_client_metrics(
    nats_server: ServerHandle, engine: EngineProcess
) -> None:
    registry = load()
    account = f"MX{uuid.uuid4().hex[:8]}"
    async with (
        BridgeClient(client_settings(nats_server)) as bridge,  # the default registry
        await serve(bridge, port=0) as server,
        aiohttp.ClientSession() as http,
    ):
        await send_orders(bridge, account)
        families = await scrape(http, f"{server.url}/metrics")
    assert mismatches(families, registry, "client") == []


async def test_engine_exports_exactly_the_registrys_engine_metrics(
    nats_server: ServerHandle, tmp_path: Path
) -> None:
    registry = load()
    wanted = registry.side("engine")
    account = f"MX{uuid.uuid4().hex[:8]}"
    engine = EngineProcess(
        nats_server,
        log_file=tmp_path / "engine.log",
        env={"BRIDGE_METRICS_REFRESH_MS": "100"},  # stream and consumer gauges soon
    ).start()
    try:
        url = engine.metrics_url
        async with (
            BridgeClient(client_settings(nats_server)) as bridge,
            aiohttp.ClientSession() as http,
        ):
            await send_orders(bridge, account)
            families: dict[str, Family] = {}

            async def every_family_has_series() -> bool:
                nonlocal families
                families = await scrape(http, url)
                return all(families.get(n, Family("")).label_names for n in wanted)

            await until(every_family_has_series, "every engine metric with a series")
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    assert mismatches(families, registry, "engine") == []
