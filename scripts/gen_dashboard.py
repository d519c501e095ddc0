"""Generate the Grafana dashboard ``ops/grafana/bridge.json``.

The dashboard is data: the panels below, each a title, a PromQL query or a few, a unit and
thresholds. This script turns them into Grafana's dashboard JSON model (schemaVersion 39,
Grafana 10 and later), so a change to a panel is a short diff here instead of hundreds of lines
of JSON. The JSON is committed (import it in Grafana: Dashboards -> New -> Import);
``tests/ops/test_dashboard.py`` fails when it is stale and checks every metric it uses against
``schemas/metrics.toml``. Usage: ``python scripts/gen_dashboard.py [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "ops" / "grafana" / "bridge.json"

# Template variables: which Prometheus, which engines, which orchestrator processes.
ENGINE = 'job="bridge-engine", instance=~"$engine"'
CLIENT = 'job="bridge-orchestrator", instance=~"$orchestrator"'
RATE = "$__rate_interval"
# The requirement thresholds (README, Benchmarks): ack < 5 ms, transmit and confirm < 10 ms.
LATENCY_STEPS = [(None, "green"), (0.005, "orange"), (0.01, "red")]
FULLNESS_STEPS = [(None, "green"), (0.8, "orange"), (0.95, "red")]


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and the legend of its series."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel: what it shows, how (timeseries, stat or gauge) and where (width, height)."""

    title: str
    description: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    steps: list[tuple[float | None, str]] = field(default_factory=list)
    mappings: list[dict[str, Any]] = field(default_factory=list)
    stack: bool = False


@dataclass(frozen=True)
class Row:
    """A titled row of panels."""

    title: str
    panels: tuple[Panel, ...]


def _rate(metric: str, where: str, by: str = "") -> str:
    """Per-second rate of a counter over Grafana's rate interval, summed by ``by``."""
    grouping = f"by ({by}) " if by else ""
    return f"sum {grouping}(rate({metric}{{{where}}}[{RATE}]))"


def _quantiles(metric: str, by: str, where: str) -> tuple[Query, ...]:
    """p50 and p99 of a histogram, one series per ``by`` label value."""
    return tuple(
        Query(
            f"histogram_quantile({q}, {_rate(metric + '_bucket', where, 'le, ' + by)})",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.99)
    )


_UP_DOWN = [
    {
        "type": "value",
        "options": {
            "0": {"text": "NO", "color": "red", "index": 0},
            "1": {"text": "YES", "color": "green", "index": 1},
        },
    }
]
_RED_UNLESS_ONE = [(None, "red"), (1.0, "green")]

ROWS = (
    Row(
        "Health",
        (
            Panel(
                "Engine scraped (up)",
                "1 when Prometheus reaches the engine's /metrics. Alert BridgeEngineDown.",
                (Query('up{job="bridge-engine", instance=~"$engine"}', "{{instance}}"),),
                kind="stat",
                width=6,
                height=4,
                steps=_RED_UNLESS_ONE,
                mappings=_UP_DOWN,
            ),
            Panel(
                "Engine ready (/readyz)",
                "Connected, consumer bound, recovery finished, intake subscribed. "
                "Alert BridgeEngineNotReady.",
                (Query(f"bridge_engine_ready{{{ENGINE}}}", "{{instance}}"),),
                kind="stat",
                width=6,
                height=4,
                steps=_RED_UNLESS_ONE,
                mappings=_UP_DOWN,
            ),
            Panel(
                "Engine connected to NATS",
                "The engine's NATS connection.",
                (Query(f"bridge_engine_connected{{{ENGINE}}}", "{{instance}}"),),
                kind="stat",
                width=6,
                height=4,
                steps=_RED_UNLESS_ONE,
                mappings=_UP_DOWN,
            ),
            Panel(
                "Bridge clients connected",
                "Connected BridgeClients per orchestrator process.",
                (
                    Query(
                        f"sum by (instance) (bridge_client_connected{{{CLIENT}}})", "{{instance}}"
                    ),
                ),
                kind="stat",
                width=6,
                height=4,
                steps=_RED_UNLESS_ONE,
            ),
            Panel(
                "Reconnects and lost connections",
                "Per 5 minutes. Alert BridgeReconnectStorm (more than 3 in 10 minutes).",
                (
                    Query(
                        f"increase(bridge_engine_reconnects_total{{{ENGINE}}}[5m])",
                        "engine reconnects {{instance}}",
                    ),
                    Query(
                        "sum by (instance) "
                        f"(increase(bridge_client_reconnects_total{{{CLIENT}}}[5m]))",
                        "client reconnects {{instance}}",
                    ),
                    Query(
                        "sum by (instance) "
                        f"(increase(bridge_client_disconnects_total{{{CLIENT}}}[5m]))",
                        "client disconnects {{instance}}",
                    ),
                ),
                width=12,
            ),
            Panel(
                "Start-up recovery",
                "How long the last recovery took and how many live orders it restored.",
                (
                    Query(f"bridge_engine_recovery_seconds{{{ENGINE}}}", "seconds {{instance}}"),
                    Query(f"bridge_engine_recovered_orders{{{ENGINE}}}", "orders {{instance}}"),
                ),
                kind="stat",
                width=12,
            ),
        ),
    ),
    Row(
        "Orders",
        (
            Panel(
                "Client orders by outcome",
                "What callers got back, per second: accepted, rejected, unavailable, timeout, "
                "refused (backpressure), error.",
                (
                    Query(
                        _rate("bridge_client_orders_total", CLIENT, "path, outcome"),
                        "{{path}} {{outcome}}",
                    ),
                ),
                unit="ops",
                stack=True,
            ),
            Panel(
                "Engine orders by outcome",
                "Orders the engine decoded, per second: accepted, rejected, duplicate (a retry "
                "answered from the journal).",
                (
                    Query(
                        _rate("bridge_engine_orders_total", ENGINE, "path, outcome"),
                        "{{path}} {{outcome}}",
                    ),
                ),
                unit="ops",
                stack=True,
            ),
            Panel(
                "Rejects by reason",
                "Per second. Alert BridgeRejectRateSpike (more than 10% of orders and 0.2/s).",
                (
                    Query(
                        f"sum by (reason) (rate(bridge_engine_rejects_total{{{ENGINE}}}[{RATE}]))",
                        "{{reason}}",
                    ),
                ),
                unit="ops",
                stack=True,
            ),
            Panel(
                "Execution reports",
                "Published by the engine and delivered to orchestrators, per second.",
                (
                    Query(
                        _rate("bridge_engine_reports_total", ENGINE, "exec_type"),
                        "engine {{exec_type}}",
                    ),
                    Query(
                        _rate("bridge_client_reports_total", CLIENT, "exec_type"),
                        "client {{exec_type}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Retries, backpressure, security",
                "Retried order operations, queued publishes refused by backpressure (alert "
                "BridgeClientBackpressure), permission violations, per second.",
                (
                    Query(
                        "sum by (operation) "
                        f"(rate(bridge_client_retries_total{{{CLIENT}}}[{RATE}]))",
                        "retries {{operation}}",
                    ),
                    Query(
                        f"sum(rate(bridge_client_backpressure_refusals_total{{{CLIENT}}}[{RATE}]))",
                        "backpressure refusals",
                    ),
                    Query(
                        f"sum(rate(bridge_client_security_violations_total{{{CLIENT}}}[{RATE}]))",
                        "security violations",
                    ),
                ),
                unit="ops",
                width=24,
            ),
        ),
    ),
    Row(
        "Latency",
        (
            Panel(
                "Order -> ack (client)",
                "Sync: request to the engine's OrderAck; queued: publish to JetStream's ack. "
                "Lines at 5 and 10 ms. Alert BridgeSyncAckP99High (sync p99 > 5 ms).",
                _quantiles("bridge_client_ack_latency_seconds", "path", CLIENT),
                unit="s",
                steps=LATENCY_STEPS,
            ),
            Panel(
                "Order -> first execution report (client)",
                "Order sent to its first report received. Lines at 5 and 10 ms.",
                _quantiles("bridge_client_first_report_latency_seconds", "path", CLIENT),
                unit="s",
                steps=LATENCY_STEPS,
            ),
            Panel(
                "Sync acks within 5 ms",
                "Share of synchronous acks the client got within 5 ms (a bucket boundary).",
                (
                    Query(
                        "sum(rate(bridge_client_ack_latency_seconds_bucket"
                        f'{{{CLIENT}, path="sync", le="0.005"}}[{RATE}])) / '
                        "sum(rate(bridge_client_ack_latency_seconds_count"
                        f'{{{CLIENT}, path="sync"}}[{RATE}]))',
                        "within 5 ms",
                    ),
                ),
                kind="stat",
                unit="percentunit",
                width=6,
                steps=[(None, "red"), (0.95, "orange"), (0.99, "green")],
            ),
            Panel(
                "Engine stage latency",
                "p50 and p99 of each stage of one order: decode, validate, journal (durable "
                "write), match, publish (reports), ack.",
                _quantiles("bridge_engine_stage_seconds", "stage", ENGINE),
                unit="s",
                width=18,
            ),
        ),
    ),
    Row(
        "Queue and streams",
        (
            Panel(
                "ORDERS consumer lag",
                "Not yet delivered (pending) and delivered but not acked (ack pending), and "
                "redeliveries per second. Alert BridgeConsumerLagGrowing.",
                (
                    Query(
                        f"max(bridge_engine_consumer_pending_messages{{{ENGINE}}})",
                        "pending",
                    ),
                    Query(
                        f"max(bridge_engine_consumer_ack_pending_messages{{{ENGINE}}})",
                        "ack pending",
                    ),
                    Query(
                        f"sum(rate(bridge_engine_redeliveries_total{{{ENGINE}}}[{RATE}]))",
                        "redeliveries/s",
                    ),
                ),
            ),
            Panel(
                "ORDERS fullness",
                "Stored messages and bytes as a share of the stream's limits. Alert "
                "BridgeOrdersStreamNearFull (80%).",
                (
                    Query(
                        f'max(bridge_engine_stream_messages{{{ENGINE}, stream="ORDERS"}} / '
                        f'(bridge_engine_stream_max_messages{{{ENGINE}, stream="ORDERS"}} > 0))',
                        "messages",
                    ),
                    Query(
                        f'max(bridge_engine_stream_bytes{{{ENGINE}, stream="ORDERS"}} / '
                        f'(bridge_engine_stream_max_bytes{{{ENGINE}, stream="ORDERS"}} > 0))',
                        "bytes",
                    ),
                ),
                kind="gauge",
                unit="percentunit",
                width=6,
                steps=FULLNESS_STEPS,
            ),
            Panel(
                "Queued publishes in flight",
                "Awaiting JetStream's ack in each orchestrator process (at most max_inflight).",
                (
                    Query(
                        f"sum by (instance) (bridge_client_queued_in_flight{{{CLIENT}}})",
                        "{{instance}}",
                    ),
                ),
                width=6,
            ),
            Panel(
                "Stream messages",
                "Messages stored in ORDERS and EXECUTIONS.",
                (
                    Query(
                        f"max by (stream) (bridge_engine_stream_messages{{{ENGINE}}})",
                        "{{stream}}",
                    ),
                ),
                width=24,
            ),
        ),
    ),
    Row(
        "Book",
        (
            Panel(
                "Book depth",
                "Resting orders per symbol and side.",
                (
                    Query(
                        f"sum by (symbol, side) (bridge_engine_book_depth{{{ENGINE}}})",
                        "{{symbol}} {{side}}",
                    ),
                ),
                width=24,
            ),
        ),
    ),
    Row(
        "Process",
        (
            Panel(
                "CPU",
                "CPU seconds per second (1 = one core) of each engine and orchestrator process.",
                (
                    Query(
                        f"rate(process_cpu_seconds_total{{{ENGINE}}}[{RATE}])",
                        "engine {{instance}}",
                    ),
                    Query(
                        f"rate(process_cpu_seconds_total{{{CLIENT}}}[{RATE}])",
                        "orchestrator {{instance}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Resident memory",
                "RSS of each engine and orchestrator process.",
                (
                    Query(f"process_resident_memory_bytes{{{ENGINE}}}", "engine {{instance}}"),
                    Query(
                        f"process_resident_memory_bytes{{{CLIENT}}}",
                        "orchestrator {{instance}}",
                    ),
                ),
                unit="bytes",
                width=8,
            ),
            Panel(
                "Open file descriptors",
                "Of each engine process.",
                (Query(f"process_open_fds{{{ENGINE}}}", "engine {{instance}}"),),
                width=8,
            ),
        ),
    ),
)

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _thresholds(steps: list[tuple[float | None, str]]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.steps:
        defaults["thresholds"] = _thresholds(panel.steps)
    if panel.mappings:
        defaults["mappings"] = panel.mappings
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 10 if panel.stack else 0,
            "showPoints": "never",
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if panel.steps else "off"},
        }
    options: dict[str, Any] = {}
    if panel.kind == "timeseries":
        options = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background" if panel.kind == "stat" else "value",
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": _DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "datasource": _DATASOURCE,
                "refId": chr(ord("A") + i),
                "expr": query.expr,
                "legendFormat": query.legend or "__auto",
                "range": True,
            }
            for i, query in enumerate(panel.queries)
        ],
    }


def _variable(name: str, label: str, metric: str) -> dict[str, Any]:
    query = f"label_values({metric}, instance)"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": _DATASOURCE,
        "query": {"query": query, "refId": f"{name}-instances"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    """The dashboard's JSON model."""
    panels: list[dict[str, Any]] = []
    panel_id, y = 1, 0
    for row in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y = panel_id + 1, y + 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel(panel, panel_id, x, y))
            panel_id, x = panel_id + 1, x + panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": "nats-execution-bridge",
        "title": "NATS execution bridge",
        "description": "Orders, latency against the 5/10 ms budgets, queue, streams, book and "
        "processes of the bridge's engines and orchestrators (generated by "
        "scripts/gen_dashboard.py; metrics: schemas/metrics.toml).",
        "tags": ["bridge", "nats", "trading"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "utc",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                _variable("engine", "Engine", "bridge_engine_ready"),
                _variable("orchestrator", "Orchestrator", "bridge_client_connected"),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    """The dashboard as committed: JSON, two-space indent, a final newline."""
    return json.dumps(dashboard(), indent=2) + "\n"


def panel_titles() -> list[tuple[str, str]]:
    """(row, panel title) of every panel, in order (for the README and the closing note)."""
    return [(row.title, panel.title) for row in ROWS for panel in row.panels]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(), "utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
