"""The orchestrator process killed (SIGKILL) mid-batch and restarted: with its outbox
it re-sends everything it got no outcome for, and no order is created or executed twice."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from bridge import OrderOutbox, contract
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import REPO_ROOT, LocalNatsServer, ServerHandle, connect_as
from tests.faults.harness import (
    FaultResult,
    assert_clean,
    new_account,
    verify,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants

pytestmark = pytest.mark.integration

ORDERS = 1000
KILL_AFTER = 400  # acked orders seen before the kill


def _child_env(handle: ServerHandle) -> dict[str, str]:
    # Order batches (contract 1.2) of 10: each call of 50 orders is 5 ORDERS messages, so a
    # call can be stored in part when the child dies.
    settings = client_settings(handle, order_retry_max_attempts=5, queued_batch_max_orders=10)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    for key, value in settings.model_dump(exclude_none=True).items():
        env[f"BRIDGE_{key.upper()}"] = str(value)
    return env


def _child(outbox: Path, account: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.faults.orchestrator_child",
        str(outbox),
        account,
        str(ORDERS),
        *extra,
    ]


async def _orders_last_seq(handle: ServerHandle) -> int:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        return int((await nc.jetstream().stream_info(contract.ORDERS_STREAM)).state.last_seq)
    finally:
        await nc.close()


async def _stored_more_than(handle: ServerHandle, count: int) -> None:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        async with asyncio.timeout(30):
            while True:  # each turn is a round trip to the server: a bounded poll
                info = await js.stream_info(contract.ORDERS_STREAM)
                if info.state.last_seq > count:
                    return
    finally:
        await nc.close()


async def test_orchestrator_killed_mid_batch_resubmits_without_duplicates(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    account = new_account("CR")
    outbox_path = tmp_path / "orders.db"
    env = _child_env(handle)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        first = await asyncio.create_subprocess_exec(
            *_child(outbox_path, account, "--stepped"),
            cwd=REPO_ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert first.stdin is not None
            assert first.stdout is not None
            async with asyncio.timeout(120):
                while True:  # one batch per line sent: the child cannot run ahead
                    first.stdin.write(b"go\n")
                    line = (await first.stdout.readline()).decode()
                    if line.startswith("acked") and int(line.split()[1]) >= KILL_AFTER:
                        break
            # Mid-batch: once JetStream has stored part of the next batch, whose outcome the
            # child has not recorded yet (it records a batch's acks when the batch completes).
            stored = await _orders_last_seq(handle)
            first.stdin.write(b"go\n")
            await _stored_more_than(handle, stored)
            first.kill()
            killed_at = time.monotonic()
        finally:
            if first.returncode is None:
                first.kill()
            await first.wait()
        with OrderOutbox(outbox_path) as outbox:
            pending_after_crash = len(outbox.pending())
        second = await asyncio.create_subprocess_exec(
            *_child(outbox_path, account, "--resume"),
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(120):
            out, _ = await second.communicate()
        assert second.returncode == 0
        (line,) = [ln for ln in out.decode().splitlines() if ln.startswith("SUMMARY ")]
        summary = json.loads(line.removeprefix("SUMMARY "))
        with OrderOutbox(outbox_path) as outbox:
            entries = outbox.entries()
        orders = [order for order, _, _ in entries]
        outcomes = [outcome for _, _, outcome in entries]
        acked = {o.client_order_id for o in orders}
        reports = await wait_for_finals(handle, account, acked, timeout=120)
        recovered_s = time.monotonic() - killed_at
    finally:
        code = engine.stop()
    result = verify(
        FaultResult(
            "orchestrator kill -9 mid-batch + resubmit",
            sent=ORDERS,
            recovery_s=recovered_s,
            notes={
                "pending_after_crash": pending_after_crash,
                "resubmitted": summary["resubmitted"],
                "jetstream_duplicates": summary["jetstream_duplicates"],
            },
        ),
        orders,
        acked,
        reports,
    )
    assert code == 0, engine.log_tail()
    assert len(orders) == ORDERS
    assert pending_after_crash >= ORDERS - KILL_AFTER - 50  # the kill left work behind
    assert summary["resubmitted"] == pending_after_crash
    assert all(outcome == "queued" for outcome in outcomes)
    assert_clean(result)
    checked = await assert_invariants(handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"
