"""W3C ``traceparent`` on every order operation (``bridge.tracecontext``): the format rules,
how the trace id and the correlation id are tied, and that every attempt and every order of a
batch carries the operation's trace (through the in-memory transport). Against a real engine,
with both logs joined: tests/integration/test_trace_join.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import nats.errors
import pytest
import structlog

from bridge import BridgeClient, contract, tracecontext
from bridge.tracecontext import TraceParent, parse, trace_id_for, trace_id_of
from bridge.v1 import orders_pb2
from tests.unit.fake_transport import FakeTransport
from tests.unit.test_client import accepted, failing, open_client, order

EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_the_specs_example_parses() -> None:
    assert parse(EXAMPLE) == TraceParent(TRACE, "00f067aa0ba902b7", "01")
    parsed = parse(EXAMPLE)
    assert parsed is not None
    assert parsed.sampled
    assert parsed.header() == EXAMPLE


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "",
        EXAMPLE[:-1],
        EXAMPLE + "-",  # version 00 is exactly 55 characters
        EXAMPLE.upper(),
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{TRACE}-{'0' * 16}-01",
        "ff" + EXAMPLE[2:],
        "0g" + EXAMPLE[2:],
        EXAMPLE.replace("-", "_", 1),
        EXAMPLE[:-2] + "zz",
        "01" + EXAMPLE[2:] + "x",  # a higher version: the 56th character must be a dash
    ],
)
def test_invalid_values_restart_the_trace(bad: str | None) -> None:
    assert parse(bad) is None


def test_a_higher_version_is_read_by_its_first_55_characters() -> None:
    later = parse("01" + EXAMPLE[2:] + "-what-comes-next")
    assert later is not None
    assert later.trace_id == TRACE
    assert later.header() == EXAMPLE


def test_ids_drawn_are_valid_and_fresh() -> None:
    ids = {tracecontext.new_trace_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(tracecontext.is_trace_id(i) for i in ids)
    header = tracecontext.traceparent(TRACE)
    parsed = parse(header)
    assert parsed is not None
    assert parsed.trace_id == TRACE
    assert parsed.sampled
    assert parse(tracecontext.traceparent(TRACE)) != parsed  # a fresh parent id each time


def test_a_correlation_id_that_is_a_trace_id_is_the_trace_id() -> None:
    assert trace_id_for(TRACE) == TRACE
    other = trace_id_for("corr-1")
    assert tracecontext.is_trace_id(other)
    assert other != trace_id_for("corr-1")
    assert trace_id_of(EXAMPLE, "corr-1") == TRACE
    assert trace_id_of("garbage", TRACE) == TRACE
    assert trace_id_of(None, "corr-1") == ""


# -- on the wire and in the log context ---------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.entries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert isinstance(record.msg, dict)
        self.entries.append(record.msg)


@pytest.fixture
def captured() -> Iterator[Collect]:
    logger = logging.getLogger("bridge")
    collect, level = Collect(), logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    yield collect
    logger.removeHandler(collect)
    logger.setLevel(level)


def _trace_of(headers: dict[str, str]) -> str:
    parsed = parse(headers[contract.HEADER_TRACEPARENT])
    assert parsed is not None, headers
    return parsed.trace_id


async def test_without_a_correlation_id_it_is_the_trace_id(captured: Collect) -> None:
    fake = FakeTransport()
    bridge: BridgeClient = await open_client(fake, order_retry_max_attempts=3)
    fake.respond(
        contract.submit("ACC1"),
        failing(nats.errors.NoRespondersError(), nats.errors.TimeoutError()),
    )
    await bridge.submit(order())
    sent = fake.requests(contract.submit("ACC1"))
    assert len(sent) == 3
    headers = {s.headers[contract.HEADER_TRACEPARENT] for s in sent}
    assert len(headers) == 1, "every attempt: the same trace and parent"
    correlation = sent[0].headers[contract.HEADER_CORRELATION_ID]
    assert _trace_of(sent[0].headers) == correlation
    for event in ("bridge.submit", "bridge.retrying", "bridge.ack"):
        [line] = [e for e in captured.entries if e["event"] == event][:1]
        assert (line["correlation_id"], line["trace_id"]) == (correlation, correlation)
        assert (line["client_order_id"], line["account"]) == ("o-1", "ACC1")
    assert structlog.contextvars.get_contextvars() == {}
    await bridge.close()


async def test_a_given_correlation_id_stays_the_join_key(captured: Collect) -> None:
    fake = FakeTransport()
    bridge = await open_client(fake)
    fake.respond(contract.submit("ACC1"), accepted)
    await bridge.submit(order(), correlation_id="corr-1")
    await bridge.submit(order("o-2"), correlation_id=TRACE)
    first, second = fake.requests(contract.submit("ACC1"))
    assert first.headers[contract.HEADER_CORRELATION_ID] == "corr-1"
    trace = _trace_of(first.headers)
    assert tracecontext.is_trace_id(trace)
    assert trace != "corr-1"
    assert _trace_of(second.headers) == TRACE
    acks = [e for e in captured.entries if e["event"] == "bridge.ack"]
    assert [(a["correlation_id"], a["trace_id"]) for a in acks] == [
        ("corr-1", trace),
        (TRACE, TRACE),
    ]
    await bridge.close()


async def test_cancel_and_status_carry_their_own_trace() -> None:
    fake = FakeTransport()
    bridge = await open_client(fake)
    ack = orders_ack()
    fake.respond(contract.cancel("ACC1"), lambda _d, _h: ack)
    fake.respond(contract.status("ACC1"), lambda _d, _h: status_reply())
    await bridge.cancel("ACC1", "o-1")
    await bridge.status("ACC1", "o-1")
    [cancel] = fake.requests(contract.cancel("ACC1"))
    [status] = fake.requests(contract.status("ACC1"))
    for sent in (cancel, status):
        assert _trace_of(sent.headers) == sent.headers[contract.HEADER_CORRELATION_ID]
    assert _trace_of(cancel.headers) != _trace_of(status.headers)
    await bridge.close()


async def test_every_order_of_a_batch_carries_the_batch_trace(captured: Collect) -> None:
    fake = FakeTransport()
    bridge = await open_client(fake)
    await bridge.enqueue_batch([order("o-1"), order("o-2")], correlation_id="corr-b")
    await bridge.enqueue(order("o-3"))
    batch = [s for s in fake.publishes() if s.subject.startswith(contract.queue(""))]
    assert [s.headers[contract.HEADER_MSG_ID] for s in batch] == ["o-1", "o-2", "o-3"]
    assert (
        batch[0].headers[contract.HEADER_TRACEPARENT]
        == batch[1].headers[contract.HEADER_TRACEPARENT]
    )
    trace = _trace_of(batch[0].headers)
    single = _trace_of(batch[2].headers)
    assert single == batch[2].headers[contract.HEADER_CORRELATION_ID] != trace
    queued = [e for e in captured.entries if e["event"] == "bridge.queued"]
    assert [(q["client_order_id"], q["correlation_id"], q["trace_id"]) for q in queued] == [
        ("o-1", "corr-b", trace),
        ("o-2", "corr-b", trace),
        ("o-3", single, single),
    ]
    assert all(q["account"] == "ACC1" for q in queued)
    await bridge.close()


def orders_ack() -> bytes:
    return orders_pb2.OrderAck(
        client_order_id="o-1", account="ACC1", status=orders_pb2.ACK_STATUS_ACCEPTED
    ).SerializeToString()


def status_reply() -> bytes:
    return orders_pb2.OrderStatusReply(found=False).SerializeToString()
