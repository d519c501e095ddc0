"""The client's Prometheus metrics (``bridge.metrics``): exactly the registry's client metrics
(schemas/metrics.toml), and each one moved by what it counts, through the in-memory transport.
The same against a real server and engine: tests/integration/test_client_metrics.py."""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from prometheus_client import CollectorRegistry

from bridge import (
    BackpressureError,
    BridgeClient,
    BridgeError,
    EngineUnavailableError,
    ExecType,
    OutcomeUnknownError,
    PartialBatchError,
    PublishError,
    SecurityViolationError,
    StreamFullError,
    contract,
)
from bridge.errors import ConnectionFailedError
from bridge.metrics import FIRST_REPORT_KEPT, ORDER_SECONDS, ClientMetrics, outcome_of
from bridge.v1 import orders_pb2
from tests.unit.fake_transport import FakeTransport
from tests.unit.test_client import accepted, failing, order, settings

REGISTRY_TOML = Path(__file__).parents[2] / "schemas" / "metrics.toml"
SUBMIT = contract.submit("ACC1")


def schema() -> dict[str, Any]:
    return tomllib.loads(REGISTRY_TOML.read_text("utf-8"))


@pytest.fixture
def metrics() -> ClientMetrics:
    return ClientMetrics(CollectorRegistry())


def value(m: ClientMetrics, name: str, **labels: str) -> float:
    assert m.registry is not None
    found = m.registry.get_sample_value(name, labels)
    assert found is not None, f"{name}{labels} is not exported"
    return found


def orders(m: ClientMetrics, path: str, outcome: str) -> float:
    return value(m, "bridge_client_orders_total", path=path, outcome=outcome)


def acks(m: ClientMetrics, path: str) -> float:
    return value(m, "bridge_client_ack_latency_seconds_count", path=path)


async def open_client(fake: FakeTransport, m: ClientMetrics, **kw: Any) -> BridgeClient:
    client = BridgeClient(settings(**kw), transport=fake, metrics=m)
    await client.connect()
    return client


def rejected(data: bytes, _headers: dict[str, str]) -> bytes:
    new = orders_pb2.NewOrder()
    new.ParseFromString(data)
    ack = orders_pb2.OrderAck(
        client_order_id=new.client_order_id,
        account=new.account,
        status=orders_pb2.ACK_STATUS_REJECTED,
        reason=orders_pb2.REJECT_REASON_UNKNOWN_SYMBOL,
    )
    return ack.SerializeToString()


# -- the registry ----------------------------------------------------------------------------


def test_exactly_the_registrys_client_metrics_with_their_types_and_labels(
    metrics: ClientMetrics,
) -> None:
    reg = schema()
    want = {n: m for n, m in reg["metrics"].items() if m["side"] == "client"}
    assert metrics.registry is not None
    got = {f.name: f for f in metrics.registry.collect()}
    # prometheus-client names a counter family without its "_total".
    names = {n + "_total" if f.type == "counter" else n for n, f in got.items()}
    assert names == set(want)
    for name, family in got.items():
        spec = want[name + "_total" if family.type == "counter" else name]
        assert family.type == spec["type"], name
        assert family.documentation == spec["help"], name
        sample_labels = {k for s in family.samples for k in s.labels if k != "le"}
        assert sample_labels == set(spec["labels"]), name


def test_histogram_buckets_are_the_registrys() -> None:
    assert list(ORDER_SECONDS) == schema()["buckets"]["order_seconds"]


def test_every_labelled_series_exists_from_the_start_at_zero(metrics: ClientMetrics) -> None:
    """Pre-bound children: every label value of the registry is exported before any order."""
    labels = schema()["labels"]
    for path in labels["path"]:
        for outcome in labels["client_outcome"]:
            assert orders(metrics, path, outcome) == 0
        assert acks(metrics, path) == 0
        assert value(metrics, "bridge_client_first_report_latency_seconds_count", path=path) == 0
    for operation in labels["operation"]:
        assert value(metrics, "bridge_client_retries_total", operation=operation) == 0
    for exec_type in ExecType:
        assert value(metrics, "bridge_client_reports_total", exec_type=exec_type.lower()) == 0


def test_outcome_labels_of_errors() -> None:
    assert outcome_of(EngineUnavailableError("x")) == "unavailable"
    assert outcome_of(OutcomeUnknownError("x")) == "timeout"
    assert outcome_of(BackpressureError("x")) == "refused"
    assert outcome_of(PublishError("x", transient=True)) == "unavailable"
    assert outcome_of(StreamFullError("x")) == "error"
    assert outcome_of(ConnectionFailedError("x")) == "error"
    assert outcome_of(SecurityViolationError("x", reason="R")) == "error"


# -- the order paths ---------------------------------------------------------------------------


async def test_sync_accepted_rejected_and_unavailable_are_counted_and_acks_timed(
    metrics: ClientMetrics,
) -> None:
    fake = FakeTransport()
    bridge = await open_client(fake, metrics)
    with pytest.raises(EngineUnavailableError):  # nobody answers yet
        await bridge.submit(order("o-0"))
    fake.respond(SUBMIT, accepted)
    await bridge.submit(order("o-1"))
    await bridge.submit(order("o-2"))
    fake.respond(SUBMIT, rejected)
    assert not (await bridge.submit(order("o-3"))).accepted
    assert orders(metrics, "sync", "accepted") == 2
    assert orders(metrics, "sync", "rejected") == 1
    assert orders(metrics, "sync", "unavailable") == 1
    assert acks(metrics, "sync") == 3  # the answered ones
    assert value(metrics, "bridge_client_ack_latency_seconds_sum", path="sync") > 0
    await bridge.close()


async def test_sync_timeout_and_its_retries(metrics: ClientMetrics) -> None:
    fake = FakeTransport()
    bridge = await open_client(fake, metrics, order_retry_max_attempts=3)
    fake.respond(SUBMIT, failing(*[nats.errors.TimeoutError()] * 3))
    with pytest.raises(OutcomeUnknownError):
        await bridge.submit(order())
    assert orders(metrics, "sync", "timeout") == 1
    assert value(metrics, "bridge_client_retries_total", operation="submit") == 2
    fake.respond(contract.cancel("ACC1"), failing(nats.errors.TimeoutError()))
    with contextlib.suppress(BridgeError):  # the fake's answer to a cancel does not matter
        await bridge.cancel("ACC1", "o-1")
    assert value(metrics, "bridge_client_retries_total", operation="cancel") == 1
    await bridge.close()


async def test_queued_accepted_in_flight_and_backpressure_refusal(metrics: ClientMetrics) -> None:
    fake = FakeTransport()
    bridge = await open_client(fake, metrics, max_inflight=1, backpressure_wait_ms=20)
    await bridge.enqueue_batch([order("o-1")])
    assert orders(metrics, "queued", "accepted") == 1
    assert acks(metrics, "queued") == 1
    fake.script.append("hold")
    fake.published.clear()
    first = asyncio.create_task(bridge.enqueue(order("o-2")))
    await fake.published.wait()
    assert value(metrics, "bridge_client_queued_in_flight") == 1  # read at scrape time
    with pytest.raises(BackpressureError):
        await bridge.enqueue(order("o-3"))
    assert value(metrics, "bridge_client_backpressure_refusals_total") == 1
    assert orders(metrics, "queued", "refused") == 1
    fake.release_held()
    await first
    assert value(metrics, "bridge_client_queued_in_flight") == 0
    assert orders(metrics, "queued", "accepted") == 2
    assert acks(metrics, "queued") == 2
    await bridge.close()


async def test_queued_refusals_and_unanswered_orders_by_outcome(metrics: ClientMetrics) -> None:
    fake = FakeTransport()
    bridge = await open_client(fake, metrics, publish_timeout_ms=50)
    fake.orders.max_msgs = 1
    with pytest.raises(PartialBatchError):  # pipelined: o-2 and o-3 refused, the stream is full
        await bridge.enqueue_batch([order("o-1"), order("o-2"), order("o-3")])
    assert orders(metrics, "queued", "accepted") == 1
    assert orders(metrics, "queued", "error") == 2
    fake.script.append("drop")
    with pytest.raises(OutcomeUnknownError):
        await bridge.enqueue(order("o-4"))
    assert orders(metrics, "queued", "timeout") == 1
    transport = FakeTransport()
    transport.script.extend(["503", "ok"])  # no stream leader, then stored: one retry
    retrying = await open_client(transport, metrics, order_retry_max_attempts=2)
    await retrying.enqueue(order("o-5"))
    assert value(metrics, "bridge_client_retries_total", operation="queue") == 1
    assert orders(metrics, "queued", "accepted") == 2
    for client in (bridge, retrying):
        await client.close()


# -- the connection ----------------------------------------------------------------------------


async def test_connection_state_disconnects_reconnects_and_violations(
    metrics: ClientMetrics,
) -> None:
    fake = FakeTransport()
    assert value(metrics, "bridge_client_connected") == 0
    bridge = await open_client(fake, metrics)
    other = await open_client(FakeTransport(), metrics)
    assert value(metrics, "bridge_client_connected") == 2
    await fake.drop_connection()
    assert value(metrics, "bridge_client_connected") == 1
    assert value(metrics, "bridge_client_disconnects_total") == 1
    await fake.restore_connection()
    assert value(metrics, "bridge_client_connected") == 2
    assert value(metrics, "bridge_client_reconnects_total") == 1
    await fake.server_error(f'Permissions Violation for Publish to "{SUBMIT}"')
    assert value(metrics, "bridge_client_security_violations_total") == 1
    assert value(metrics, "bridge_client_connected") == 1
    await other.close()
    assert value(metrics, "bridge_client_connected") == 0
    await bridge.close()


# -- first reports -----------------------------------------------------------------------------


def test_first_report_latency_is_observed_once_per_order_sent(metrics: ClientMetrics) -> None:
    metrics.reader_opened()
    metrics.sync.sent("o-1", 0.0)
    metrics.queued.sent("o-2", 0.0)
    metrics.report(ExecType.NEW, "o-1")
    metrics.report(ExecType.TRADE, "o-1")  # not the first
    metrics.report(ExecType.NEW, "o-2")
    metrics.report(ExecType.NEW, "not-sent-here")
    for path in ("sync", "queued"):
        assert value(metrics, "bridge_client_first_report_latency_seconds_count", path=path) == 1
    assert value(metrics, "bridge_client_reports_total", exec_type="new") == 3
    assert value(metrics, "bridge_client_reports_total", exec_type="trade") == 1


def test_send_times_are_bounded_and_dropped_without_readers(metrics: ClientMetrics) -> None:
    metrics.reader_opened()
    path = metrics.sync
    for i in range(3 * FIRST_REPORT_KEPT):
        path.sent(f"o-{i}", 0.0)
    assert len(path.sent_at) + len(path.sent_before) <= 2 * FIRST_REPORT_KEPT
    assert path.reported(f"o-{3 * FIRST_REPORT_KEPT - 1}", 1.0)  # the newest are kept
    metrics.reader_closed()
    assert not path.sent_at
    assert not path.sent_before
