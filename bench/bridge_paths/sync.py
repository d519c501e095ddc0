"""Synchronous path: ``submit`` -> ack and -> first fill one order at a time on an idle engine,
``submit`` back to back (where the CPU cost per order is taken), and the pure-Python work
``submit`` adds per order."""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

from bench.bridge_paths.common import (
    REPLY_TIMEOUT,
    SYNC_ACCOUNT,
    Engine,
    make_orders,
    server_pid,
    settings_for,
)
from bench.measure import Result, closed_loop, new_histogram, record_ns
from bench.procs import BenchError
from bench.profile import Budget
from bridge import AckStatus, BridgeClient, ExecType
from bridge.client import new_correlation_id
from bridge.models import OrderAck
from bridge.v1 import orders_pb2
from bridge_dev.server import ServerHandle


async def sync_isolated(
    handle: ServerHandle, engine: Engine, budget: Budget, run: str, loop: str
) -> list[Result]:
    """submit -> ack and -> first fill (TRADE report), one order at a time. After each order's
    final report a ``status()`` request (answered only once the engine has finished the
    previous order's order store update) makes every order start on an idle engine, like the
    baselines' servers. Reports are subscribed first."""
    orders = make_orders(f"{run}{loop[0]}i", budget.warmup + budget.count)
    ack_h, fill_h = new_histogram(), new_histogram()
    measured = 0
    async with (
        BridgeClient(settings_for(handle)) as bridge,
        bridge.reports(SYNC_ACCOUNT) as reports,
    ):
        deadline = float("inf")
        for i, order in enumerate(orders):
            if i == budget.warmup:
                deadline = time.perf_counter() + budget.seconds
            elif time.perf_counter() > deadline:
                break
            t0 = time.perf_counter_ns()
            ack = await bridge.submit(order)
            t_ack = time.perf_counter_ns()
            if ack.status is not AckStatus.ACCEPTED:
                raise BenchError(f"order {order.client_order_id} not accepted: {ack!r}")
            t_fill: int | None = None
            while True:
                report = await reports.next(timeout=REPLY_TIMEOUT)
                if report.client_order_id != order.client_order_id:
                    continue
                if report.exec_type is ExecType.TRADE and t_fill is None:
                    t_fill = time.perf_counter_ns()
                if report.is_final:
                    break
            if t_fill is None:
                raise BenchError(f"order {order.client_order_id} final without a fill")
            await bridge.status(SYNC_ACCOUNT, order.client_order_id)
            if i >= budget.warmup:
                record_ns(ack_h, t_ack - t0)
                record_ns(fill_h, t_fill - t0)
                measured += 1
    common = {"group": "bridge", "kind": "latency", "loop": loop, "count": measured}
    return [
        Result(
            id=f"bridge.sync.ack.{loop}",
            label="sync: submit -> ack",
            histogram=ack_h,
            notes="idle engine; durable (KV, fsync)",
            **common,  # type: ignore[arg-type]
        ),
        Result(
            id=f"bridge.sync.fill.{loop}",
            label="sync: submit -> first fill report",
            histogram=fill_h,
            notes="idle engine; via reports()",
            **common,  # type: ignore[arg-type]
        ),
    ]


async def sync_back_to_back(
    handle: ServerHandle, engine: Engine, budget: Budget, run: str, loop: str
) -> Result:
    """submit -> ack with the next order sent as soon as the ack arrives (no report
    subscription): the engine may still be publishing/storing the previous order.
    Python, engine and nats-server CPU per order are measured over this loop."""
    orders = make_orders(f"{run}{loop[0]}b", budget.warmup + budget.count)
    async with BridgeClient(settings_for(handle)) as bridge:

        async def one(i: int) -> None:
            ack = await bridge.submit(orders[i])
            if ack.status is not AckStatus.ACCEPTED:
                raise BenchError(f"order {orders[i].client_order_id} not accepted: {ack!r}")

        timed = await closed_loop(one, budget, {"peer": engine.pid, "nats": server_pid(handle)})
    return Result.latency(
        timed,
        id=f"bridge.sync.ack_b2b.{loop}",
        label="sync: submit -> ack, back to back",
        group="bridge",
        loop=loop,
        notes="queues behind the previous order",
        extra=client_codec_us(run),
    )


def client_codec_us(run: str, n: int = 2000) -> dict[str, float]:
    """Pure-Python work ``submit`` adds per order (no I/O), mean microseconds: building the
    Order model, Order -> NewOrder bytes, a correlation id, OrderAck bytes -> model."""
    orders = make_orders(f"{run}c", n)
    ack = orders_pb2.OrderAck(
        client_order_id=orders[0].client_order_id,
        account=SYNC_ACCOUNT,
        engine_order_id="engine-1-1784000000000000000",
        status=orders_pb2.ACK_STATUS_ACCEPTED,
        order_status=orders_pb2.ORDER_STATUS_PENDING_NEW,
        ack_time_unix_ns=time.time_ns(),
        engine_id="engine-1",
    ).SerializeToString()

    def decode() -> OrderAck:
        msg = orders_pb2.OrderAck()
        msg.ParseFromString(ack)
        return OrderAck.from_proto(msg)

    def mean_us(fn: Callable[[], object]) -> float:
        return timeit.timeit(fn, number=n) * 1e6 / n

    return {
        "order_model_build_us": round(mean_us(lambda: make_orders(f"{run}m", 1)), 2),
        "to_proto_serialize_us": round(
            mean_us(lambda: orders[0].to_proto().SerializeToString()), 2
        ),
        "correlation_id_us": round(mean_us(new_correlation_id), 2),
        "ack_decode_us": round(mean_us(decode), 2),
    }
