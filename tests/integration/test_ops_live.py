"""The dashboard's queries and the alert rules against a real Prometheus scraping a real engine
and a real orchestrator (issue 13: "every metric name the dashboard and rules use is actually
exported by the running client and engine").

A Prometheus server (Debian's, unpacked by ``./dev setup``) scrapes the engine's ``/metrics``
(job ``bridge-engine``) and an orchestrator's ``bridge.observability.serve`` (job
``bridge-orchestrator``) every second and evaluates ``ops/prometheus/alerts.yml``. After sync
and queued orders went through:

* every query of every panel of ``ops/grafana/bridge.json`` returns series (the names, label
  names and label values it selects exist in live data, e.g. ``le="0.005"``,
  ``stream="ORDERS"``);
* every alert rule evaluates without error, and none fires on this healthy deployment;
* once the engine stops, ``BridgeEngineDown`` becomes pending (its ``for`` is 1 minute).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from bridge import BridgeClient
from bridge.observability import serve
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.metrics_registry import dashboard_exprs
from bridge_dev.prometheus import PrometheusProcess, prometheus_binary
from bridge_dev.server import ServerHandle
from tests.integration.metrics_helpers import send_orders, until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(prometheus_binary() is None, reason="no prometheus: run ./dev setup"),
]

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops" / "grafana" / "bridge.json"
ALERTS = REPO / "ops" / "prometheus" / "alerts.yml"
# Grafana's variables as the dashboard's defaults resolve them (All = ".*"); a rate window of
# 30 scrapes at this test's 1 s scrape interval.
VARIABLES = {"$__rate_interval": "30s", "$engine": ".*", "$orchestrator": ".*"}


def grafana_resolved(expr: str) -> str:
    return re.sub(r"\$\w+", lambda m: VARIABLES.get(m.group(0), m.group(0)), expr)


def prometheus_config(engine: str, orchestrator: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "bridge-engine", "static_configs": [{"targets": [engine]}]},
            {"job_name": "bridge-orchestrator", "static_configs": [{"targets": [orchestrator]}]},
        ],
    }


async def api(http: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with http.get(url, params=params) as response:
        body = await response.json()
    assert body["status"] == "success", body
    return body["data"]


async def test_dashboard_queries_return_series_and_rules_evaluate(
    nats_server: ServerHandle, tmp_path: Path
) -> None:
    exprs = [grafana_resolved(e) for e in dashboard_exprs(json.loads(DASHBOARD.read_text()))]
    account = f"OL{uuid.uuid4().hex[:8]}"
    engine = EngineProcess(
        nats_server,
        log_file=tmp_path / "engine.log",
        env={"BRIDGE_METRICS_REFRESH_MS": "200"},
    ).start()
    try:
        async with (
            BridgeClient(client_settings(nats_server)) as bridge,
            await serve(bridge, port=0) as orchestrator,
            aiohttp.ClientSession() as http,
        ):
            prometheus = PrometheusProcess(
                prometheus_config(
                    urlsplit(engine.metrics_url).netloc, urlsplit(orchestrator.url).netloc
                ),
                tmp_path / "prometheus",
            )
            await asyncio.to_thread(prometheus.start)
            try:
                query = f"{prometheus.url}/api/v1/query"

                async def both_targets_up() -> bool:
                    result = (await api(http, query, query="up == 1"))["result"]
                    return {r["metric"]["job"] for r in result} == {
                        "bridge-engine",
                        "bridge-orchestrator",
                    }

                await until(both_targets_up, "both targets scraped", timeout=60)
                await send_orders(bridge, account)

                empty: list[str] = []

                async def every_query_has_series() -> bool:
                    empty[:] = [e for e in exprs if not (await api(http, query, query=e))["result"]]
                    return not empty

                try:
                    await until(every_query_has_series, "every dashboard query answered")
                except AssertionError:
                    pytest.fail(f"dashboard queries without series: {empty}")

                rules: list[dict[str, Any]] = []

                async def every_rule_evaluated() -> bool:
                    groups = (await api(http, f"{prometheus.url}/api/v1/rules"))["groups"]
                    rules[:] = [rule for group in groups for rule in group["rules"]]
                    return bool(rules) and all(
                        not r["lastEvaluation"].startswith("0001") for r in rules
                    )

                await until(every_rule_evaluated, "every rule evaluated once")
                assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
                # None fires. A rule may be pending: two sync acks make a p99 of their slower
                # one (5 ms is easy to pass on a loaded machine), and one reject in three orders
                # over a few seconds of samples is a "spike"; their `for:` keeps them pending.
                assert [r["name"] for r in rules if r["state"] == "firing"] == []

                # the engine stops: its scrapes fail and BridgeEngineDown starts its 1 minute
                assert engine.stop() == 0, engine.log_tail()

                async def engine_down_pending() -> bool:
                    await every_rule_evaluated()
                    states: dict[str, str] = {r["name"]: r["state"] for r in rules}
                    return states["BridgeEngineDown"] == "pending"

                await until(engine_down_pending, "BridgeEngineDown pending")
            finally:
                prometheus.stop()
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
