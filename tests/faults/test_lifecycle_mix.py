"""The whole order lifecycle through crashes (issue 16): one seeded run mixes resting orders
(GTC, and GTD with deadlines that pass during the run), crossing orders, replaces of price and
quantity, cancels and mass cancels of one side, while the engine is killed with kill -9 twice.
Every operation a kill interrupted is re-sent with its ids once the engine is back (a replace
or a mass cancel that got through is a duplicate, or cancels nothing more).

At the end both accounts are mass-canceled, so every order is final. Then, from the durable
record: every acknowledged order has exactly one final report (keyed by its engine order id,
since a replaced order's reports carry its replaces' ids), no exec id is stored twice, no
report fills more than its order quantity, deadlines did expire orders, and the fault harness's
invariants hold (bought = sold, FIX rules per order, status agrees, nothing live outside a
book, the journal verifies). A row of the fault table.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from bridge import (
    BridgeClient,
    EngineUnavailableError,
    OrderAck,
    OutcomeUnknownError,
    Replace,
    Side,
)
from bridge.models import decimal_from_proto
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer
from tests.faults.harness import FINAL, RESULTS, FaultResult, new_account, stored_reports
from tests.faults.invariants import assert_invariants
from tests.integration.replace_helpers import limit

_T = TypeVar("_T")
OPS = 300
KILLS = 2

pytestmark = pytest.mark.integration


async def test_kill_9_during_replaces_mass_cancels_and_expiries(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    seed = int(os.environ.get("BRIDGE_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    kill_points = set(rng.sample(range(40, OPS - 40), KILLS))
    accounts = (new_account("LA"), new_account("LB"))
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

    acked: dict[str, OrderAck] = {}  # original client order id -> its submit's ack
    latest: dict[str, str] = {}  # open-ish original id -> the id the order answers to now
    account_of: dict[str, str] = {}
    counts: Counter[str] = Counter()
    killers: list[asyncio.Task[None]] = []
    try:
        async with BridgeClient(settings) as bridge:
            for i in range(OPS):
                if i in kill_points:
                    killers.append(asyncio.create_task(kill_and_restart()))
                account = rng.choice(accounts)
                price = str(Decimal("190.00") + Decimal(rng.randint(-3, 3)) / 100)
                roll = rng.random()
                mine = sorted(o for o in latest if account_of[o] == account)
                if roll < 0.45 or not mine:
                    side = Side.BUY if rng.random() < 0.5 else Side.SELL
                    order = limit(account, f"o{i}", rng.randint(1, 20), price, side)
                    if rng.random() < 0.3:  # GTD: the deadline passes during the run
                        deadline = time.time_ns() + rng.randint(100, 800) * 1_000_000
                        order = order.model_copy(update={"deadline_unix_ns": deadline})
                        counts["gtd"] += 1
                    ack = await answered(partial(bridge.submit, order))
                    acked[order.client_order_id] = ack
                    account_of[order.client_order_id] = account
                    if ack.accepted:
                        latest[order.client_order_id] = order.client_order_id
                    continue
                original = rng.choice(mine)
                if roll < 0.80:
                    change = rng.choice(("qty", "price", "both"))
                    replace = Replace(
                        account=account,
                        orig_client_order_id=latest[original],
                        client_order_id=f"r{i}",
                        quantity=None if change == "price" else Decimal(rng.randint(1, 25)),
                        limit_price=None if change == "qty" else Decimal(price),
                    )
                    ack = await answered(partial(bridge.replace, replace))
                    counts["replace_accepted" if ack.accepted else "replace_refused"] += 1
                    if ack.accepted:
                        latest[original] = replace.client_order_id
                elif roll < 0.95:
                    await answered(partial(bridge.cancel, account, latest[original]))
                    counts["cancel"] += 1
                else:
                    side = Side.BUY if rng.random() < 0.5 else Side.SELL
                    result = await answered(
                        partial(bridge.cancel_all, account, side=side, request_id=f"m{i}")
                    )
                    counts["mass_canceled"] += result.canceled
            await asyncio.gather(*killers)
            # Everything still open ends now: the run's last mass cancels.
            for account in accounts:
                result = await answered(partial(bridge.cancel_all, account))
                assert result.complete, result
                counts["final_mass_canceled"] += result.canceled
        reports = [r for a in accounts for r in await stored_reports(handle, a)]
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()

    original_of: dict[str, str] = {}  # engine order id -> the order's original client id
    finals: Counter[str] = Counter()
    overfilled = 0
    for r in reports:
        original_of.setdefault(r.engine_order_id, r.client_order_id)
        if r.order_status in FINAL:
            finals[original_of[r.engine_order_id]] += 1
        if decimal_from_proto(r.cum_qty) > decimal_from_proto(r.order_qty):
            overfilled += 1
    exec_ids = Counter(r.exec_id for r in reports)
    expired = sum(1 for r in reports if r.exec_type == orders_pb2.EXEC_TYPE_EXPIRED)
    accepted = {o for o, ack in acked.items() if ack.accepted}
    row = FaultResult(
        f"engine kill -9 x{KILLS} during {OPS} lifecycle operations (replace, mass cancel, GTD)",
        sent=len(acked),
        acked=len(accepted),
        lost=sum(1 for o in accepted if finals[o] == 0),
        duplicated=sum(1 for n in finals.values() if n > 1)
        + sum(1 for n in exec_ids.values() if n > 1),
        overfilled=overfilled,
        notes={"seed": seed, **counts, "expired": expired, "reports": len(reports)},
    )
    RESULTS.append(row)
    assert (row.lost, row.duplicated, row.overfilled) == (0, 0, 0), row
    assert expired > 0, (seed, counts)  # deadlines of 0.1-0.8 s pass during two restarts
    assert counts["replace_accepted"] > 0, (seed, counts)
    checked = await assert_invariants(handle, tmp_path)
    row.notes["invariants"] = f"ok ({checked.reports} reports)"
