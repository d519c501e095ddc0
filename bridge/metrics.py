"""The client's Prometheus metrics: every ``bridge_client_*`` metric of ``schemas/metrics.toml``.

``METRICS`` is this process's ``ClientMetrics``, registered on ``prometheus_client.REGISTRY``
(what ``prometheus_client.start_http_server``, ``bridge.observability.serve`` and most
exporters serve). Every ``BridgeClient`` records into it unless given another one
(``BridgeClient(settings, metrics=ClientMetrics(my_registry))``, e.g. a test's own
``CollectorRegistry``).

Cheap on the order path: every labelled child is bound once here (``.labels(...)`` is never
called per order), every series exists from the start at 0 (rates and alerts need no "absent"
special case), latencies are ``time.perf_counter`` differences, and the two gauges that follow
the client's state (``bridge_client_connected``, ``bridge_client_queued_in_flight``) are read
at scrape time from the clients themselves instead of being updated per order.

Order to first report (``bridge_client_first_report_latency_seconds``): while a report stream
of this process is open, the send time of each order is kept by client order id (bounded: at
most ``2 * FIRST_REPORT_KEPT`` orders per path, the oldest forgotten first), and the first
report that any report stream of this process receives for it is observed once. Without an
open report stream nothing is kept.
"""

from __future__ import annotations

import time
import weakref
from typing import Final, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from bridge.errors import (
    BackpressureError,
    EngineUnavailableError,
    OutcomeUnknownError,
    PublishError,
)
from bridge.models import ExecType

ORDER_SECONDS: Final = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""``[buckets] order_seconds`` of schemas/metrics.toml: resolves the 1, 2, 5 and 10 ms
requirement thresholds and what lies around them."""

PATHS: Final = ("sync", "queued")
OUTCOMES: Final = ("accepted", "rejected", "unavailable", "timeout", "refused", "error")
OPERATIONS: Final = ("submit", "cancel", "status", "queue", "replace")
FIRST_REPORT_KEPT: Final = 10_000
"""Send times kept per path and generation for the first-report latency (see the module)."""

_OPERATION: Final = {
    "submit": "submit",
    "cancel": "cancel",
    "status": "status",
    "enqueue": "queue",
    "replace": "replace",
}
"""``bridge.retry``'s operation names -> the ``operation`` label."""


def outcome_of(error: BaseException) -> str:
    """The ``outcome`` label of an order that ended with ``error`` (schemas/metrics.toml's
    ``client_outcome``): no engine or no stream -> unavailable; no answer in time -> timeout;
    backpressure -> refused; anything else (connection, closed client, security) -> error."""
    if isinstance(error, EngineUnavailableError):
        return "unavailable"
    if isinstance(error, OutcomeUnknownError):
        return "timeout"
    if isinstance(error, BackpressureError):
        return "refused"
    if isinstance(error, PublishError) and error.transient:
        return "unavailable"  # no stream leader answered (503): JetStream's "no responders"
    return "error"


class _Connected(Protocol):
    @property
    def is_up(self) -> bool: ...


class _InFlight(Protocol):
    @property
    def in_flight(self) -> int: ...


class PathMetrics:
    """The pre-bound children of one order path (``sync`` or ``queued``)."""

    __slots__ = ("ack_latency", "first_report", "outcomes", "sent_at", "sent_before")

    def __init__(self, path: str, orders: Counter, ack: Histogram, first: Histogram) -> None:
        self.outcomes = {o: orders.labels(path=path, outcome=o) for o in OUTCOMES}
        self.ack_latency = ack.labels(path=path)
        self.first_report = first.labels(path=path)
        # Send times (perf_counter) by client order id, two generations (see the module).
        self.sent_at: dict[str, float] = {}
        self.sent_before: dict[str, float] = {}

    def sent(self, client_order_id: str, at: float) -> None:
        """An order left at ``at``: keep it for its first report."""
        sent_at = self.sent_at
        if len(sent_at) >= FIRST_REPORT_KEPT:
            self.sent_before, sent_at = sent_at, {}
            self.sent_at = sent_at
        sent_at.setdefault(client_order_id, at)  # a retry keeps the first send time

    def reported(self, client_order_id: str, now: float) -> bool:
        """The first report of an order this path sent (observed once), else False."""
        at = self.sent_at.pop(client_order_id, None)
        if at is None:
            at = self.sent_before.pop(client_order_id, None)
            if at is None:
                return False
        self.first_report.observe(now - at)
        return True

    def forget(self) -> None:
        self.sent_at.clear()
        self.sent_before.clear()


class ClientMetrics:
    """The ``bridge_client_*`` metrics on one registry, with their children bound once."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        """``registry=None`` creates the metrics without registering them anywhere."""
        self.registry = registry
        orders = Counter(
            "bridge_client_orders_total",
            "Order submissions by path and what the caller got back.",
            ["path", "outcome"],
            registry=registry,
        )
        ack = Histogram(
            "bridge_client_ack_latency_seconds",
            "Order to ack: sync = request to the engine's OrderAck; queued = publish to "
            "JetStream's publish ack.",
            ["path"],
            buckets=ORDER_SECONDS,
            registry=registry,
        )
        first = Histogram(
            "bridge_client_first_report_latency_seconds",
            "Order sent to its first execution report received by this client's report "
            "subscription.",
            ["path"],
            buckets=ORDER_SECONDS,
            registry=registry,
        )
        self.sync = PathMetrics("sync", orders, ack, first)
        self.queued = PathMetrics("queued", orders, ack, first)
        retries = Counter(
            "bridge_client_retries_total",
            "Retried attempts of order operations (the first attempt is not counted).",
            ["operation"],
            registry=registry,
        )
        self.retries = {what: retries.labels(operation=label) for what, label in _OPERATION.items()}
        in_flight = Gauge(
            "bridge_client_queued_in_flight",
            "Queued publishes awaiting JetStream's ack now (at most max_inflight).",
            registry=registry,
        )
        self.backpressure_refusals = Counter(
            "bridge_client_backpressure_refusals_total",
            "Queued publishes refused because max_inflight slots stayed full for "
            "backpressure_wait_ms.",
            registry=registry,
        )
        connected = Gauge(
            "bridge_client_connected",
            "Connected bridge clients in this process (1 per connected BridgeClient).",
            registry=registry,
        )
        self.reconnects = Counter(
            "bridge_client_reconnects_total",
            "Reconnects after a lost connection.",
            registry=registry,
        )
        self.disconnects = Counter(
            "bridge_client_disconnects_total", "Connections lost.", registry=registry
        )
        reports = Counter(
            "bridge_client_reports_total",
            "Execution reports delivered to this process.",
            ["exec_type"],
            registry=registry,
        )
        self.reports = {t: reports.labels(exec_type=t.value.lower()) for t in ExecType}
        self.security_violations = Counter(
            "bridge_client_security_violations_total",
            "Permission violations the server reported to this process (each closes the client).",
            registry=registry,
        )
        self._connections: weakref.WeakSet[_Connected] = weakref.WeakSet()
        self._pipelines: weakref.WeakSet[_InFlight] = weakref.WeakSet()
        connected.set_function(lambda: sum(1 for c in tuple(self._connections) if c.is_up))
        in_flight.set_function(lambda: sum(p.in_flight for p in tuple(self._pipelines)))
        self.report_readers = 0  # open report streams: send times are kept while > 0

    # -- what the client's rooms call -------------------------------------------------------

    def watch(self, connection: _Connected, pipeline: _InFlight) -> None:
        """Count ``connection`` in ``bridge_client_connected`` while it is up and ``pipeline``'s
        publishes in ``bridge_client_queued_in_flight`` (read at scrape time; held weakly)."""
        self._connections.add(connection)
        self._pipelines.add(pipeline)

    def report(self, exec_type: ExecType, client_order_id: str) -> None:
        """A report stream of this process received a report."""
        self.reports[exec_type].inc()
        now = time.perf_counter()
        if not self.sync.reported(client_order_id, now):
            self.queued.reported(client_order_id, now)

    def reader_opened(self) -> None:
        self.report_readers += 1

    def reader_closed(self) -> None:
        self.report_readers = max(0, self.report_readers - 1)
        if not self.report_readers:
            self.sync.forget()
            self.queued.forget()


METRICS: Final = ClientMetrics()
"""This process's client metrics, on ``prometheus_client.REGISTRY``."""
