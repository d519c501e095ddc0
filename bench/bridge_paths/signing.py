"""What signing every order operation costs, signing on vs off, measured in the same run.

'on' is the default client (``sign_orders=True``: each submit is signed with the identity's NKey
and the engine, by default, verifies it before anything else); 'off' is a client with
``sign_orders=False`` against an engine started with ``BRIDGE_REQUIRE_SIGNATURES=false``. The
legs run in ABBA order (off, on, on, off), each on a freshly started engine, so that drift
weighs on both sides alike. Each leg measures, with orders of the same size:

* submit -> ack, one order at a time on an idle engine (a ``status()`` request after each order,
  not measured, waits until the engine has finished it): the ack latency;
* submit -> ack back to back: Python, engine and nats-server CPU per order.

``signing_rows`` merges each side's legs into one row per measurement; the report shows the
on/off ratios of ack p50, ack p99 and Python CPU per order (``bench.report.signing_costs``).
"""

from __future__ import annotations

import time

from bench.bridge_paths.common import (
    SYNC_ACCOUNT,
    Engine,
    make_orders,
    server_pid,
    settings_for,
)
from bench.measure import Result, Timed, closed_loop, merge_latency, new_histogram, record_ns
from bench.procs import BenchError, CpuMeter
from bench.profile import Budget
from bridge import AckStatus, BridgeClient, Order
from bridge_dev.server import ServerHandle

SIGNING_OFF_ENGINE_ENV = {"BRIDGE_REQUIRE_SIGNATURES": "false"}
"""The engine of an 'off' leg: it does not require signatures."""
LEGS = (False, True, True, False)
"""ABBA: signing off, on, on, off."""


def engine_env(signed: bool) -> dict[str, str]:
    return {} if signed else dict(SIGNING_OFF_ENGINE_ENV)


def _side(signed: bool) -> str:
    return "on" if signed else "off"


async def _accepted(bridge: BridgeClient, order: Order) -> None:
    ack = await bridge.submit(order)
    if ack.status is not AckStatus.ACCEPTED:
        raise BenchError(f"order {order.client_order_id} not accepted: {ack!r}")


async def signing_leg(
    handle: ServerHandle, engine: Engine, budget: Budget, run: str, leg: int, signed: bool
) -> list[Result]:
    """One leg: the idle-engine ack row and the back-to-back row, signing ``signed``."""
    side = _side(signed)
    tag = f"{run}s{leg}"
    idle = make_orders(f"{tag}i", budget.warmup + budget.count)
    hist, measured = new_histogram(), 0
    async with BridgeClient(settings_for(handle, sign_orders=signed)) as bridge:
        with CpuMeter({}) as idle_meter:
            deadline = float("inf")
            for i, order in enumerate(idle):
                if i == budget.warmup:
                    deadline = time.perf_counter() + budget.seconds
                elif time.perf_counter() > deadline:
                    break
                t0 = time.perf_counter_ns()
                await _accepted(bridge, order)
                elapsed = time.perf_counter_ns() - t0
                await bridge.status(SYNC_ACCOUNT, order.client_order_id)  # engine idle again
                if i >= budget.warmup:
                    record_ns(hist, elapsed)
                    measured += 1
        b2b = make_orders(f"{tag}b", budget.warmup + budget.count)

        async def one(i: int) -> None:
            await _accepted(bridge, b2b[i])

        timed = await closed_loop(one, budget, {"peer": engine.pid, "nats": server_pid(handle)})
    ack = Result.latency(
        Timed(hist, measured, idle_meter),
        id=f"bridge.signing.{side}.ack",
        label=f"signing {side}: submit -> ack",
        group="bridge",
        costs=False,
    )
    back_to_back = Result.latency(
        timed,
        id=f"bridge.signing.{side}.ack_b2b",
        label=f"signing {side}: submit -> ack, back to back",
        group="bridge",
    )
    return [ack, back_to_back]


def signing_rows(legs: list[tuple[bool, list[Result]]]) -> list[Result]:
    """Each side's legs merged: one idle-engine ack row and one back-to-back row per side."""
    rows: list[Result] = []
    for signed in (True, False):
        side = _side(signed)
        runs = [results for s, results in legs if s is signed]
        if not runs:
            continue
        engine = "engine verifies" if signed else "engine: require_signatures=false"
        rows.append(
            merge_latency(
                [r[0] for r in runs],
                id=f"bridge.signing.{side}.ack",
                label=f"signing {side}: submit -> ack",
                notes=f"idle engine; {engine}; {len(runs)} legs (ABBA)",
            )
        )
        rows.append(
            merge_latency(
                [r[1] for r in runs],
                id=f"bridge.signing.{side}.ack_b2b",
                label=f"signing {side}: submit -> ack, back to back",
                notes=f"CPU per order; {engine}; {len(runs)} legs (ABBA)",
            )
        )
    return rows
