"""Every metric the dashboard and the alert rules read is one the registry lists (issue 13).

``schemas/metrics.toml`` is what the engine and the client export
(tests/integration/test_metrics_exported.py checks that side); here, its consumers: the
Grafana dashboard and the Prometheus rules may only use its names (a histogram's ``_bucket``,
``_sum`` and ``_count`` series count as the histogram) or what Prometheus makes itself (``up``,
``scrape_*``). The PromQL is parsed, not grepped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge_dev.metrics_registry import (
    Registry,
    dashboard_exprs,
    load,
    promql_metric_names,
    registry_name,
    rule_exprs,
)

OPS = Path(__file__).resolve().parents[2] / "ops"
DASHBOARD = OPS / "grafana" / "bridge.json"
ALERTS = OPS / "prometheus" / "alerts.yml"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text("utf-8"))
    return data


def _rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ALERTS.read_text("utf-8"))
    return data


def _unknown(exprs: list[str], registry: Registry) -> dict[str, list[str]]:
    unknown: dict[str, list[str]] = {}
    for expr in exprs:
        for name in sorted(promql_metric_names(expr)):
            try:
                registry_name(name, registry)
            except KeyError:
                unknown.setdefault(name, []).append(expr)
    return unknown


def test_dashboard_uses_only_registry_metrics() -> None:
    exprs = dashboard_exprs(_dashboard())
    assert len(exprs) > 20
    assert _unknown(exprs, load()) == {}


def test_alert_rules_use_only_registry_metrics() -> None:
    exprs = rule_exprs(_rules())
    assert len(exprs) >= 6
    assert _unknown(exprs, load()) == {}


def test_the_check_sees_a_metric_outside_the_registry() -> None:
    """The check itself: a name not in the registry is reported, Prometheus's own are not."""
    registry = load()
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(bridge_client_ack_latency_seconds_bucket"
        '{path="sync"}[$__rate_interval]))) > on() bridge_engine_made_up_total or up == 0'
        " or scrape_duration_seconds > 1"
    )
    assert _unknown([expr], registry) == {"bridge_engine_made_up_total": [expr]}


@pytest.mark.parametrize("series", ["bridge_engine_ready_bucket", "bridge_client_orders"])
def test_histogram_suffixes_only_belong_to_histograms(series: str) -> None:
    with pytest.raises(KeyError):
        registry_name(series, load())


def test_dashboard_and_rules_cover_the_issue() -> None:
    """The panels and alerts issue 13 asks for read the metrics they are about."""
    dashboard = set().union(*(promql_metric_names(e) for e in dashboard_exprs(_dashboard())))
    for needed in (
        "bridge_client_orders_total",
        "bridge_client_ack_latency_seconds_bucket",
        "bridge_client_first_report_latency_seconds_bucket",
        "bridge_engine_stage_seconds_bucket",
        "bridge_engine_consumer_pending_messages",
        "bridge_engine_consumer_ack_pending_messages",
        "bridge_engine_stream_max_messages",
        "bridge_engine_rejects_total",
        "bridge_engine_reconnects_total",
        "bridge_client_reconnects_total",
        "bridge_engine_book_depth",
        "bridge_engine_ready",
        "bridge_engine_connected",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert needed in dashboard, needed
    alerts = {rule["alert"] for group in _rules()["groups"] for rule in group["rules"]}
    assert {
        "BridgeEngineDown",
        "BridgeEngineNotReady",
        "BridgeConsumerLagGrowing",
        "BridgeSyncAckP99High",
        "BridgeOrdersStreamNearFull",
        "BridgeReconnectStorm",
        "BridgeRejectRateSpike",
    } <= alerts
