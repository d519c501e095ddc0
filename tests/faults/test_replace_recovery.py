"""Replaces through crashes (issue 16): kill -9 keeps every amended order in its book with its
terms and its priority, and a crash between a replace's writes neither loses it nor applies it
twice.

A replace writes twice (engine-rs/src/commands/replace.rs): its own record under its id (the
deduplication point), then its journal entry (its reports, the order's record and its own
settled record: one commit group), which is then projected (reports to EXECUTIONS, records to
the order store). The failpoint ``replace_after_alias`` aborts the engine between the two: the
restarted engine's recovery finds the replace taken in and applies it; ``replace_after_publish``
aborts it once the entry is stored, before its projection: the restarted engine's repair
projects the entry and recovery finds nothing left to do. Either way the replace is applied
exactly once, and a re-sent copy is answered as a duplicate. Every test ends with the fault
harness's invariants.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from bridge import (
    AckStatus,
    BridgeClient,
    EngineUnavailableError,
    OrderAck,
    OrderStatus,
    OutcomeUnknownError,
    Replace,
    Side,
)
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer
from tests.faults.harness import new_account, stored_reports
from tests.faults.invariants import assert_invariants
from tests.integration.replace_helpers import REPLACED, Desk, dec, limit, of_order

_T = TypeVar("_T")
OPS = 240
KILLS = 2

pytestmark = pytest.mark.integration


async def test_kill_9_keeps_amended_orders_with_their_priority(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """b1..b4 at 190.00; b1 increased (priority lost), b3 reduced (kept), b4 moved away and
    back (lost): b2, b3, b1, b4. After kill -9 the restarted engine fills them in that order,
    with their amended quantities."""
    handle = fresh_server.handle
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with BridgeClient(client_settings(handle, request_timeout_ms=10_000)) as bridge:
            d = Desk(bridge, handle)
            for name in ("b1", "b2", "b3", "b4"):
                await d.buy(name, 10)
            for replace in (
                d.replace("b1", "r1", qty=12),
                d.replace("b3", "r3", qty=5),
                d.replace("b4", "r4", price="189.50"),
                d.replace("r4", "r4b", price="190.00"),
            ):
                assert (await bridge.replace(replace)).accepted
            engine.kill()
            engine.start()
            state = await bridge.status(d.account, "b3")
            assert state.last_report is not None
            last = state.last_report
            assert (last.client_order_id, last.order_qty) == ("r3", Decimal(5))
            assert await d.sweep(37) == ["b2", "b3", "b1", "b4"]
            await d.close()
    finally:
        assert engine.stop() == 0, engine.log_tail()
    await assert_invariants(handle, tmp_path)


@pytest.mark.parametrize(
    ("failpoint", "found"),
    [("replace_after_alias", ["Unapplied"]), ("replace_after_publish", [])],
    ids=["replace_after_alias", "replace_after_publish"],
)
async def test_a_crash_inside_a_replace_finishes_it_once(
    fresh_server: LocalNatsServer, tmp_path: Path, failpoint: str, found: list[str]
) -> None:
    """The engine aborts after the replace's record (nothing applied yet) or after its journal
    entry (nothing of it projected): unanswered, the client gets OutcomeUnknownError. The
    restarted engine's recovery applies the first; its repair projects the second from the
    journal (recovery then finds no replace pending); the re-sent replace is a duplicate;
    exactly one REPLACED report; the order has its amended terms and lost its priority to
    b2."""
    handle = fresh_server.handle
    settings = client_settings(handle, request_timeout_ms=3_000, order_retry_max_attempts=1)
    crashing = EngineProcess(
        handle, log_file=tmp_path / "crash.log", env={"BRIDGE_FAILPOINT": failpoint}
    ).start()
    async with BridgeClient(settings) as bridge:
        d = Desk(bridge, handle)
        b1 = await d.buy("b1", 10)
        await d.buy("b2", 10)
        replace = d.replace("b1", "r1", qty=14)
        with pytest.raises(OutcomeUnknownError):
            await bridge.replace(replace)
        assert await asyncio.to_thread(crashing.wait, 30) == -signal.SIGABRT
        assert "failpoint reached" in crashing.log_tail(5)
        with EngineProcess(handle, log_file=tmp_path / "restart.log"):
            again = await bridge.replace(replace)
            assert again.duplicate
            assert again.status is AckStatus.ACCEPTED, again
            assert again.order_status is OrderStatus.NEW
            state = await bridge.status(d.account, "r1")
            assert state.last_report is not None
            last = state.last_report
            assert (last.client_order_id, last.order_qty) == ("r1", Decimal(14))
            reports = of_order(await d.reports(), b1)
            assert sum(r.exec_type == REPLACED for r in reports) == 1
            assert dec(reports[-1].order_qty) == 14
            assert await d.sweep(16) == ["b2", "b1"]
            state = await bridge.status(d.account, "b1")
            assert state.last_report is not None
            assert state.last_report.leaves_qty == 8
            await d.close()
    # Recovery found the replace in the state the failpoint left it in (none: the repair had
    # projected it from the journal already).
    lines = [json.loads(line) for line in (tmp_path / "restart.log").read_text().splitlines()]
    taken = [x for x in lines if x.get("message") == "replace taken in before the restart"]
    assert [x["state"] for x in taken] == found
    repaired = [x for x in lines if x.get("message") == "projections repaired from the journal"]
    assert len(repaired) == (0 if found else 1), repaired
    assert all(r.exec_type != orders_pb2.EXEC_TYPE_REJECTED for r in await d.reports())
    await assert_invariants(handle, tmp_path)


@pytest.mark.soak  # the normal suite's lifecycle mix (test_lifecycle_mix.py) covers it
async def test_kill_9_during_a_random_mix_of_orders_replaces_and_cancels(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """Resting orders (some crossing), replaces of price and quantity up and down (some
    crossing, some ending their order), cancels; the engine is killed twice mid-run. Every
    operation interrupted by a kill is re-sent with its ids once the engine is back: a replace
    that got through is answered as a duplicate. Each accepted replace has exactly one
    REPLACED report, a refused one none; then the fault harness's invariants (bought = sold,
    per-order FIX rules, status agreeing, every live order in a book)."""
    handle = fresh_server.handle
    seed = int(os.environ.get("BRIDGE_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    kill_points = set(rng.sample(range(30, OPS - 30), KILLS))
    account = new_account("MX")
    settings = client_settings(handle, request_timeout_ms=5_000, order_retry_max_attempts=1)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    up = asyncio.Event()
    up.set()

    async def kill_and_restart() -> None:
        up.clear()
        engine.kill()
        await asyncio.to_thread(engine.start)
        up.set()

    async def answered(op: Callable[[], Awaitable[_T]]) -> _T:
        """``op`` until the engine answers it (re-sent with the same ids after a kill)."""
        while True:
            try:
                return await op()
            except (EngineUnavailableError, OutcomeUnknownError):
                await up.wait()

    latest: dict[str, str] = {}  # original id -> the id the order answers to now
    replaces: dict[str, OrderAck] = {}
    killers: list[asyncio.Task[None]] = []
    try:
        async with BridgeClient(settings) as bridge:
            for i in range(OPS):
                if i in kill_points:
                    killers.append(asyncio.create_task(kill_and_restart()))
                price = str(Decimal("190.00") + Decimal(rng.randint(-3, 3)) / 100)
                roll = rng.random()
                if roll < 0.35 or not latest:
                    side = Side.BUY if rng.random() < 0.5 else Side.SELL
                    order = limit(account, f"o{i}", rng.randint(1, 20), price, side)
                    await answered(partial(bridge.submit, order))
                    latest[order.client_order_id] = order.client_order_id
                    continue
                original = rng.choice(sorted(latest))
                if roll < 0.85:
                    change = rng.choice(("qty", "price", "both"))
                    replace = Replace(
                        account=account,
                        orig_client_order_id=latest[original],
                        client_order_id=f"r{i}",
                        quantity=None if change == "price" else Decimal(rng.randint(1, 25)),
                        limit_price=None if change == "qty" else Decimal(price),
                    )
                    ack = await answered(partial(bridge.replace, replace))
                    replaces[replace.client_order_id] = ack
                    if ack.accepted:
                        latest[original] = replace.client_order_id
                else:
                    await answered(partial(bridge.cancel, account, latest[original]))
            await asyncio.gather(*killers)
            reports = await stored_reports(handle, account)
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    replaced = Counter(r.client_order_id for r in reports if r.exec_type == REPLACED)
    accepted = {rid for rid, ack in replaces.items() if ack.accepted}
    assert accepted, "no replace was accepted"
    assert all(replaced[rid] == 1 for rid in accepted), (seed, replaced)
    assert not set(replaced) - accepted, (seed, set(replaced) - accepted)
    checked = await assert_invariants(handle, tmp_path)
    assert checked.reports >= len(reports)
