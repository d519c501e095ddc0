"""The 3-node cluster (nats/cluster.conf, R3 streams): the ORDERS stream leader killed with
kill -9, and separately frozen with SIGSTOP for longer than the JetStream election timeout.

Clients and the engine are given every node's URL and ping every second, so a frozen node is
given up within ~3 s. No acknowledged order may be lost or executed twice; the longest gap
between two publish acks after the fault is measured and reported.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from bridge import BridgeClient
from bridge_dev.cluster import LocalNatsCluster
from bridge_dev.engine import EngineProcess, client_settings
from tests.faults.harness import (
    FaultResult,
    Publisher,
    assert_clean,
    new_account,
    order_flow,
    verify,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants

pytestmark = pytest.mark.integration

ORDERS = 1000
# nats-server's Raft election timeout is randomised between 4 and 9 s.
PAUSE_S = float(os.environ.get("BRIDGE_FAULT_PAUSE_S", "10"))
FAST_PINGS = {"BRIDGE_PING_INTERVAL_MS": "1000"}


async def _run_with_fault(
    cluster: LocalNatsCluster, tmp_path: Path, fault: str, pause: bool
) -> FaultResult:
    handle = cluster.handle
    account = new_account("CL")
    orders = order_flow(account, ORDERS, seed=11)
    # Retries sized to ride out a leader election (up to ~9 s), as runbooks/cluster.md advises.
    settings = client_settings(
        handle,
        ping_interval_ms=1000,
        request_timeout_ms=2000,
        publish_timeout_ms=2000,
        order_retry_max_attempts=20,
        order_retry_deadline_ms=15000,
    )
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log", env=FAST_PINGS).start()
    try:
        async with BridgeClient(settings) as bridge:
            publisher = Publisher(bridge, orders)
            publishing = asyncio.create_task(publisher.run())
            await publisher.wait_until(
                lambda: publisher.acked_count() >= ORDERS // 3, 120, "a third acked"
            )
            leader = cluster.stream_leader("ORDERS")
            connected_to = bridge.connected_server
            acked_before = publisher.acked_count()
            fault_at = time.monotonic()
            if pause:
                cluster.pause(leader)
                await asyncio.sleep(PAUSE_S)  # the fault's duration, not a synchronisation
                cluster.resume(leader)
            else:
                cluster.kill(leader)
            await publisher.wait_until(
                lambda: publisher.acked_count() > acked_before + 50, 120, "publishing resumed"
            )
            new_leader = cluster.stream_leader("ORDERS")
            await publishing
            if not pause:
                await asyncio.to_thread(cluster.nodes[leader].start)
            reports = await wait_for_finals(handle, account, publisher.acked, timeout=180)
    finally:
        code = engine.stop()
    result = verify(
        FaultResult(
            fault,
            sent=ORDERS,
            # Recovery = the longest time without any publish ack after the fault.
            recovery_s=publisher.max_gap(fault_at),
            notes={
                "leader": f"n{leader}->n{new_leader}",
                "client_on": connected_to,
                "node_ports": [u.rsplit(":", 1)[1] for u in cluster.urls],
                "client_retries": dict(publisher.errors),
            },
        ),
        orders,
        publisher.acked,
        reports,
    )
    assert code == 0, engine.log_tail()
    assert result.acked == ORDERS
    return result


async def test_stream_leader_killed_mid_run(cluster: LocalNatsCluster, tmp_path: Path) -> None:
    result = await _run_with_fault(cluster, tmp_path, "cluster: ORDERS leader kill -9", False)
    assert_clean(result)
    checked = await assert_invariants(cluster.handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"


async def test_stream_leader_frozen_beyond_election_timeout(
    cluster: LocalNatsCluster, tmp_path: Path
) -> None:
    result = await _run_with_fault(
        cluster, tmp_path, f"cluster: ORDERS leader SIGSTOP {PAUSE_S:.0f}s", True
    )
    assert_clean(result)
    checked = await assert_invariants(cluster.handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"
