"""One trace per order: the client's and the engine's log lines about an order join.

Both sides log at debug (the client through ``configure_logging`` as JSON lines into a file,
the engine with ``BRIDGE_LOG=debug``); synchronous orders (filled, resting then canceled, one
rejected), a queued batch under a caller's correlation id and a single queued order go through
the real server and engine binary. Then both logs are joined by ``correlation_id``: every order
has lines on both sides, every line about an order carries ``correlation_id``, ``trace_id``,
``client_order_id`` and ``account``, and one correlation id has one trace id on both sides (the
id the client sent in ``traceparent``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from bridge import (
    AckStatus,
    BridgeClient,
    ExecType,
    Order,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from bridge.logs import configure_logging
from bridge.tracecontext import is_trace_id
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import ServerHandle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

IDS = ("correlation_id", "trace_id", "client_order_id", "account")
Line = dict[str, Any]


def new_order(account: str, kind: str, **kw: Any) -> Order:
    fields: dict[str, Any] = {
        "client_order_id": f"{kind}-{uuid.uuid4().hex[:10]}",
        "account": account,
        "symbol": "AAPL",
        "side": Side.BUY,
        "order_type": OrderType.MARKET,
        "quantity": Decimal("5"),
        "time_in_force": TimeInForce.IOC,
    }
    return Order(**{**fields, **kw})


def resting(account: str) -> Order:
    return new_order(
        account,
        "rest",
        order_type=OrderType.LIMIT,
        limit_price=Decimal("1.00"),  # far below AAPL's seeded bid: rests until canceled
        time_in_force=TimeInForce.DAY,
    )


@pytest.fixture
def client_log(tmp_path: Path) -> Iterator[Path]:
    """The bridge's own JSON logging (``configure_logging``) at DEBUG, into a file; structlog
    and the root logger restored afterwards."""
    path = tmp_path / "client.log"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("DEBUG", json=True)
    [installed] = [h for h in root.handlers if h not in handlers]
    assert isinstance(installed, logging.StreamHandler)
    stream = path.open("w")
    installed.setStream(stream)
    try:
        yield path
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        stream.close()


def json_lines(path: Path) -> list[Line]:
    lines = []
    for text in path.read_text().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


async def test_one_trace_per_order_joins_the_client_and_engine_logs(
    nats_server: ServerHandle, tmp_path: Path, client_log: Path
) -> None:
    account = f"TRC-{uuid.uuid4().hex[:6]}"
    engine = EngineProcess(
        nats_server, log_file=tmp_path / "engine.log", env={"BRIDGE_LOG": "debug"}
    ).start()
    try:
        async with (
            BridgeClient(client_settings(nats_server)) as bridge,
            bridge.reports(account) as reports,
        ):
            filled = new_order(account, "sync")
            rest = resting(account)
            rejected = new_order(account, "bad", symbol="NOPE")
            batch = [new_order(account, "q"), new_order(account, "q")]
            single = new_order(account, "q1")
            assert (await bridge.submit(filled)).accepted
            assert (await bridge.submit(rest)).accepted
            ack = await bridge.submit(rejected)
            assert (ack.status, ack.reason) == (AckStatus.REJECTED, RejectReason.UNKNOWN_SYMBOL)
            await bridge.enqueue_batch(batch, correlation_id=f"batch-{uuid.uuid4().hex[:8]}")
            await bridge.enqueue(single)
            assert (await bridge.status(account, rest.client_order_id)).found
            assert (await bridge.cancel(account, rest.client_order_id)).accepted
            orders = [filled, rest, rejected, *batch, single]
            # Every order reported (the queued ones executed), the resting one canceled.
            waiting = {o.client_order_id for o in orders}
            canceled = False
            while waiting or not canceled:
                report = await reports.next(timeout=30)
                waiting.discard(report.client_order_id)
                canceled = canceled or report.exec_type is ExecType.CANCELED
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()

    ours = {o.client_order_id for o in orders}
    sides = {"client": json_lines(client_log), "engine": json_lines(engine.log_file)}
    about: dict[str, list[Line]] = {
        side: [line for line in lines if line.get("client_order_id") in ours]
        for side, lines in sides.items()
    }
    # The same field names on both sides, on every line about one of the orders.
    for side, lines in about.items():
        assert lines, f"no {side} line names an order"
        for line in lines:
            missing = [k for k in IDS if not line.get(k)]
            assert not missing, f"{side} line without {missing}: {line}"
            assert line["account"] == account, line
            assert is_trace_id(line["trace_id"]), line

    # Joined by correlation id: one trace id per correlation id, the same on both sides.
    traces: dict[str, set[tuple[str, str]]] = defaultdict(set)
    orders_by_side: dict[str, set[str]] = defaultdict(set)
    for side, lines in about.items():
        for line in lines:
            traces[line["correlation_id"]].add((side, line["trace_id"]))
            orders_by_side[side].add(line["client_order_id"])
    for correlation_id, seen in traces.items():
        assert {side for side, _ in seen} == {"client", "engine"}, (correlation_id, seen)
        assert len({trace for _, trace in seen}) == 1, (correlation_id, seen)
    assert orders_by_side["client"] == ours
    assert orders_by_side["engine"] == ours

    # Every order: lines on both sides under the correlation id of its submission.
    for order in orders:
        sides_of_order = {
            side
            for side, lines in about.items()
            for line in lines
            if line["client_order_id"] == order.client_order_id
        }
        assert sides_of_order == {"client", "engine"}, order.client_order_id
    # The batch is one trace, its correlation id the caller's; a default correlation id is
    # the trace id.
    batch_traces = {
        (line["correlation_id"], line["trace_id"])
        for lines in about.values()
        for line in lines
        if line["client_order_id"] in {o.client_order_id for o in batch}
    }
    assert len(batch_traces) == 1
    ((batch_correlation, batch_trace),) = batch_traces
    assert batch_correlation.startswith("batch-")
    assert batch_trace != batch_correlation
    sync_lines = [
        line for line in about["engine"] if line["client_order_id"] == filled.client_order_id
    ]
    assert all(line["correlation_id"] == line["trace_id"] for line in sync_lines)

    # For the closing note: the joined lines of one order (the filled sync order), verbatim.
    joined = [
        f"{side}: {text}"
        for side, path in (("client", client_log), ("engine", engine.log_file))
        for text in path.read_text().splitlines()
        if text.startswith("{")
        and json.loads(text).get("client_order_id") == filled.client_order_id
    ]
    assert len(joined) == len(
        [
            line
            for lines in about.values()
            for line in lines
            if line["client_order_id"] == filled.client_order_id
        ]
    )
    (tmp_path / "joined.log").write_text("\n".join(joined) + "\n")
    print("\n".join(joined))
