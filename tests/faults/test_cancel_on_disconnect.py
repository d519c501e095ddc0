"""Cancel on disconnect against the real server and engine (issue 16, item 5).

* An orchestrator process with a session places resting orders and is killed with kill -9:
  one grace after its last heartbeat every one of its orders is CANCELED (reason
  SESSION_LOST); another session's orders and orders without a session are untouched.
* A reconnect shorter than the grace does not fire. Proven by events, not by a sleep: the
  client's connection is kicked (system account, as the sentinel does) and comes back after
  more than a heartbeat interval; a canary session opened after the kick and never
  heartbeated is declared lost by the engine, so the grace has elapsed since the disconnect;
  the engine counted heartbeats after the reconnect and the renewal found the session open;
  the orders still rest.
* An engine killed (kill -9) and restarted keeps a live orchestrator's orders (a canary opened
  after the restart is lost first), and the orchestrator killed afterwards loses them one
  grace later.

Every test stops every process it started and ends with the fault harness' invariants (money
conserved, report sequences, no report after a final one, status agrees, the journal holds).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge import BridgeClient, ConnectionEvent, OrderStatus
from bridge.security.sys_api import SysApi
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import REPO_ROOT, LocalNatsServer, ServerHandle, connect_as
from tests.faults.harness import new_account, wait_for_finals
from tests.faults.invariants import assert_invariants
from tests.faults.session_child import resting_order

pytestmark = pytest.mark.integration

CHILD_ORDERS = 6
SLACK_NS = 300_000_000
"""Clock and scheduling slack of the timing bounds (the engine's timer fires between commands)."""
LATE_S = 15.0
"""How much later than its deadline a cancel may come on a loaded machine, at most."""


def _child_env(handle: ServerHandle, session_id: str, grace_ms: int) -> dict[str, str]:
    settings = client_settings(
        handle,
        order_retry_max_attempts=5,
        session_id=session_id,
        session_grace_ms=grace_ms,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    for key, value in settings.model_dump(exclude_none=True).items():
        env[f"BRIDGE_{key.upper()}"] = str(value)
    return env


@dataclass(frozen=True)
class Ready:
    """What the child says once its orders rest."""

    orders: set[str]
    grace_ms: int
    heartbeat_ms: int


async def _start_child(
    handle: ServerHandle, account: str, session_id: str, grace_ms: int
) -> tuple[asyncio.subprocess.Process, Ready]:
    """The orchestrator child, once its orders rest (its READY line)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.faults.session_child",
        account,
        str(CHILD_ORDERS),
        cwd=REPO_ROOT,
        env=_child_env(handle, session_id, grace_ms),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert child.stdout is not None
    try:
        async with asyncio.timeout(60):
            async for raw in child.stdout:
                line = raw.decode()
                if line.startswith("READY "):
                    ready = json.loads(line.removeprefix("READY "))
                    return child, Ready(
                        set(ready["orders"]), int(ready["grace_ms"]), int(ready["heartbeat_ms"])
                    )
    except BaseException:
        await _kill(child)
        raise
    await _kill(child)
    raise AssertionError("the orchestrator child ended before its orders rested")


async def _kill(child: asyncio.subprocess.Process) -> None:
    """kill -9 (idempotent), and reap it."""
    if child.returncode is None:
        child.kill()
    await child.wait()


def _metric(engine: EngineProcess, name: str, **labels: str) -> float:
    """One series of the engine's /metrics (0 when absent)."""
    with urllib.request.urlopen(engine.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    family_name = name.removesuffix("_total")
    for family in text_string_to_metric_families(text):
        if family.name != family_name:
            continue
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def _until_metric_above(
    engine: EngineProcess, name: str, floor: float, timeout: float = 30, **labels: str
) -> float:
    """Scrape until the series is above ``floor`` (each turn one scrape: a bounded poll)."""
    async with asyncio.timeout(timeout):
        while True:
            value = await asyncio.to_thread(_metric, engine, name, **labels)
            if value > floor:
                return value
            await asyncio.sleep(0.1)


def _last(
    reports: list[orders_pb2.ExecutionReport], ids: set[str]
) -> dict[str, orders_pb2.ExecutionReport]:
    last: dict[str, orders_pb2.ExecutionReport] = {}
    for r in reports:
        if r.client_order_id in ids:
            last[r.client_order_id] = r
    return last


def _assert_lost(
    last: dict[str, orders_pb2.ExecutionReport], ids: set[str], session_id: str
) -> list[int]:
    """Every order of ``ids`` ended CANCELED, reason SESSION_LOST; their cancel times."""
    assert set(last) == ids, f"no report for {sorted(ids - set(last))}"
    for order_id, r in last.items():
        assert r.order_status == orders_pb2.ORDER_STATUS_CANCELED, (order_id, r)
        assert r.exec_type == orders_pb2.EXEC_TYPE_CANCELED, (order_id, r)
        assert r.reason == orders_pb2.REJECT_REASON_SESSION_LOST, (order_id, r)
        assert session_id in r.text, r.text
    return [r.transact_time_unix_ns for r in last.values()]


async def _still_resting(bridge: BridgeClient, account: str, ids: list[str]) -> None:
    for order_id in ids:
        state = await bridge.status(account, order_id)
        assert state.found, order_id
        assert state.last_report is not None, order_id
        assert state.last_report.order_status is OrderStatus.NEW, (order_id, state)


@asynccontextmanager
async def _canary(
    handle: ServerHandle, account_identity: str, account: str, grace_ms: int
) -> AsyncIterator[str]:
    """A session opened now and never heartbeated, with one resting order (its id yielded):
    the engine declares it lost one grace after the open, the earliest it can. Waiting for its
    order's cancel is waiting for one grace to pass on the engine's own clock."""
    settings = client_settings(
        handle,
        account_identity,
        session_id=f"canary-{uuid.uuid4().hex[:8]}",
        session_grace_ms=grace_ms,
    )
    async with BridgeClient(settings) as canary:
        assert canary.session is not None
        await canary.session.abandon()  # no heartbeat, ever
        order = resting_order(account, 0, "canary")
        (await canary.submit(order)).raise_for_status()
        yield order.client_order_id


async def test_killed_orchestrator_loses_every_resting_order_one_grace_later(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    account = new_account("COD")
    grace_ms = 2000
    session_id = f"kid-{uuid.uuid4().hex[:8]}"
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    child: asyncio.subprocess.Process | None = None
    try:
        other_settings = client_settings(
            handle, session_id=f"other-{uuid.uuid4().hex[:8]}", session_grace_ms=grace_ms
        )
        async with (
            BridgeClient(other_settings) as other,
            BridgeClient(client_settings(handle)) as plain,
        ):
            kept = [resting_order(account, i, "other") for i in range(3)]
            bare = [resting_order(account, i, "bare") for i in range(2)]
            for order in kept:
                (await other.submit(order)).raise_for_status()
            for order in bare:
                assert (await plain.submit(order)).accepted
            child, ready = await _start_child(handle, account, session_id, grace_ms)
            assert ready.grace_ms == grace_ms
            heartbeat_ms, ids = ready.heartbeat_ms, ready.orders
            killed_ns = time.time_ns()
            await _kill(child)
            reports = await wait_for_finals(handle, account, ids, timeout=grace_ms / 1000 + LATE_S)
            canceled_at = _assert_lost(_last(reports, ids), ids, session_id)
            # Not before one grace after its last heartbeat (at most one interval before the
            # kill), and not much later.
            earliest = killed_ns + (grace_ms - heartbeat_ms) * 1_000_000 - SLACK_NS
            assert min(canceled_at) >= earliest, (min(canceled_at) - killed_ns) / 1e6
            assert max(canceled_at) <= killed_ns + int((grace_ms / 1000 + LATE_S) * 1e9)
            # Another session's orders and orders without a session are untouched.
            await _still_resting(plain, account, [o.client_order_id for o in kept + bare])
            assert _metric(engine, "bridge_engine_sessions_ended_total", end="lost") == 1
            lost_orders = _metric(engine, "bridge_engine_session_orders_canceled_total", end="lost")
            assert lost_orders == CHILD_ORDERS
            warned = [
                json.loads(line)
                for line in engine.log_file.read_text().splitlines()
                if "session lost: no heartbeat" in line
            ]
            assert [(w["level"], w["session_id"], w["canceled"]) for w in warned] == [
                ("warning", session_id, CHILD_ORDERS)
            ]
            # An order naming the lost session is refused until it is opened again.
            late = resting_order(account, 9, "late").model_copy(update={"session_id": session_id})
            ack = await plain.submit(late)
            assert not ack.accepted
            assert [(e.field, e.rule) for e in ack.field_errors] == [("session_id", "open_session")]
    finally:
        if child is not None:
            await _kill(child)
        code = engine.stop()
    assert code == 0, engine.log_tail()
    await assert_invariants(handle, tmp_path)


async def test_a_reconnect_within_the_grace_keeps_the_orders(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    grace_ms = 3000  # heartbeats every 750 ms; the reconnect waits 1 s to 2 s
    settings = client_settings(
        handle,
        "desk-a",
        session_id=f"keep-{uuid.uuid4().hex[:8]}",
        session_grace_ms=grace_ms,
        reconnect_initial_delay_ms=1000,
        reconnect_max_delay_ms=2000,
        reconnect_jitter_ms=0,
    )
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        system = await connect_as(handle.url, handle.creds, "sentinel-system")
        try:
            async with BridgeClient(settings) as keeper:
                assert keeper.session is not None
                orders = [resting_order("DESK-A", i, "keep") for i in range(3)]
                for order in orders:
                    (await keeper.submit(order)).raise_for_status()
                reconnected = asyncio.Event()
                keeper.on_connection_event(
                    lambda e: reconnected.set() if e is ConnectionEvent.RECONNECTED else None
                )
                sys_api = SysApi(system, timeout_s=5)
                nkey = handle.creds.identity("desk-a").public_nkey
                (found,) = await sys_api.find_user(nkey)
                kicked_ns = time.time_ns()
                assert await sys_api.kick(found.server_id, found.conn.cid) is None
                async with _canary(handle, "desk-b", "DESK-B", grace_ms) as canary_order:
                    async with asyncio.timeout(30):
                        await reconnected.wait()
                    away_s = (time.time_ns() - kicked_ns) / 1e9
                    assert away_s * 1000 > grace_ms / 4, away_s  # heartbeats were missed
                    seen = await asyncio.to_thread(
                        _metric, engine, "bridge_engine_session_heartbeats_total"
                    )
                    # The engine's grace ran out for a session opened after the kick ...
                    reports = await wait_for_finals(
                        handle, "DESK-B", {canary_order}, timeout=grace_ms / 1000 + LATE_S
                    )
                    (canceled_at,) = _assert_lost(
                        _last(reports, {canary_order}), {canary_order}, "canary-"
                    )
                    assert canceled_at >= kicked_ns + grace_ms * 1_000_000 - SLACK_NS
                    # ... it saw the keeper's heartbeats after the reconnect ...
                    await _until_metric_above(
                        engine, "bridge_engine_session_heartbeats_total", seen
                    )
                    assert keeper.session.renewals == 1
                    assert keeper.session.info is not None
                    assert keeper.session.info.text == "renewed"
                    # ... and the keeper's orders still rest: no disconnect fired.
                    await _still_resting(keeper, "DESK-A", [o.client_order_id for o in orders])
                    lost = _metric(engine, "bridge_engine_sessions_ended_total", end="lost")
                    assert lost == 1  # the canary only
        finally:
            await system.close()
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    await assert_invariants(handle, tmp_path)


async def test_an_engine_restart_keeps_a_live_session_and_a_kill_then_cancels(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    account = new_account("RST")
    grace_ms = 3000
    session_id = f"kid-{uuid.uuid4().hex[:8]}"
    engine = EngineProcess(handle, log_file=tmp_path / "engine-1.log").start()
    restarted = EngineProcess(handle, log_file=tmp_path / "engine-2.log")
    child: asyncio.subprocess.Process | None = None
    try:
        child, ready = await _start_child(handle, account, session_id, grace_ms)
        heartbeat_ms, ids = ready.heartbeat_ms, ready.orders
        engine.kill()  # kill -9; the child lives on, heartbeating into the void
        await asyncio.to_thread(restarted.start)  # waits for the killed lease to expire
        async with _canary(handle, "desk-b", "DESK-B", grace_ms) as canary_order:
            reports = await wait_for_finals(
                handle, "DESK-B", {canary_order}, timeout=grace_ms / 1000 + LATE_S
            )
            _assert_lost(_last(reports, {canary_order}), {canary_order}, "canary-")
        # One grace has passed since the restart: the restarted engine saw the child's
        # heartbeats and its orders still rest.
        assert (
            await asyncio.to_thread(_metric, restarted, "bridge_engine_session_heartbeats_total")
            > 0
        )
        async with BridgeClient(client_settings(handle)) as plain:
            await _still_resting(plain, account, sorted(ids))
        killed_ns = time.time_ns()
        await _kill(child)
        reports = await wait_for_finals(handle, account, ids, timeout=grace_ms / 1000 + LATE_S)
        canceled_at = _assert_lost(_last(reports, ids), ids, session_id)
        earliest = killed_ns + (grace_ms - heartbeat_ms) * 1_000_000 - SLACK_NS
        assert min(canceled_at) >= earliest, (min(canceled_at) - killed_ns) / 1e6
    finally:
        if child is not None:
            await _kill(child)
        engine.kill()
        code = restarted.stop()
    assert code == 0, restarted.log_tail()
    await assert_invariants(handle, tmp_path)
