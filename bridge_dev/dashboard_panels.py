"""The panels of the Grafana dashboard ``ops/grafana/bridge.json``, as data.

Each panel is a title, a description, one or more PromQL queries, a kind (timeseries, stat,
gauge), a unit and thresholds; :mod:`bridge_dev.dashboard` turns them into Grafana's JSON
model and ``scripts/gen_dashboard.py`` writes it. Edit the panels here, then run the script:
``tests/ops/test_dashboard.py`` fails while the committed JSON is stale, and
``tests/ops/test_metric_names.py`` while a query reads a metric ``schemas/metrics.toml`` lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
