"""A queued pull half-processed when the engine dies (issue 17, "a batch half-processed").

The orders of one pull are one commit group: created in the order store (``kv.create``, the
per-order dedupe), executed, written as ONE journal entry, then projected (reports to
EXECUTIONS, records to the order store) and only then acked to ORDERS. The engine is aborted
at two points of that:

* ``after_store``: every order of the pull created PENDING_NEW, nothing journaled: recovery
  executes each of them (acknowledged by JetStream, never executed) and the redelivered
  messages are answered as duplicates of their records;
* ``after_journal``: the entry is stored, nothing projected: the restarted engine's repair
  publishes every report of the entry and writes every record; recovery finds nothing pending
  and the redeliveries are duplicates.

Either way each order executes once, each report is stored once, the book the restarted engine
serves is the book EXECUTIONS implies, and the fault invariants hold.

The 200 orders are queued while the engine is paused with its pull pending, so its first commit
group takes every order delivered by the time it looks: from a few to all 200, depending on how
fast the client library hands them over (journal_harness.queue_while_paused); the restarted
engine processes the rest. Groups of many orders for certain are the mass cancel's
(test_mass_cancel_crash.py: 1,200 records) and the large sweep's (test_journal_large_group.py).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bridge import BridgeClient
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer
from tests.faults.harness import (
    FaultResult,
    assert_clean,
    new_account,
    order_flow,
    stored_reports,
    verify,
    wait_for_ack_floor,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants
from tests.faults.journal_harness import (
    LONG_PULL,
    REPAIRED,
    assert_book_is_the_record,
    exec_id_counts,
    journal,
    log_records,
    queue_while_paused,
    set_ack_wait,
    stored_twice,
)

pytestmark = pytest.mark.integration

ORDERS = 200
ACK_WAIT_S = 2.0
"""The consumer's ack_wait during the test: the crashed engine's unacked orders come back
after it (answered as duplicates), within the test."""


@pytest.mark.parametrize("failpoint", ["after_store", "after_journal"])
async def test_a_queued_pull_half_processed_executes_each_order_once(
    fresh_server: LocalNatsServer, tmp_path: Path, failpoint: str
) -> None:
    handle = fresh_server.handle
    await set_ack_wait(handle, ACK_WAIT_S)
    account = new_account("QP")
    orders = order_flow(account, ORDERS, seed=17)
    ids = {o.client_order_id for o in orders}
    settings = client_settings(handle, request_timeout_ms=10_000)
    # The seed is placed by a clean engine first, so that the failpoint stops the pull, not
    # the seeding.
    with EngineProcess(handle, log_file=tmp_path / "seed.log"):
        pass
    entries_before = len(await journal(handle))
    crashing = EngineProcess(
        handle,
        log_file=tmp_path / "crash.log",
        env={"BRIDGE_FAILPOINT": failpoint, "BRIDGE_PULL_BATCH": str(ORDERS), **LONG_PULL},
    ).start()
    try:
        async with BridgeClient(settings) as bridge:
            queued = await queue_while_paused(crashing, bridge, orders)
        assert await asyncio.to_thread(crashing.wait, 60) == -signal.SIGABRT
    finally:
        crashing.kill()
    assert len(queued) == ORDERS
    assert log_records(crashing.log_file, "failpoint reached"), crashing.log_tail()
    written = (await journal(handle))[entries_before:]
    assert await stored_reports(handle, account) == []  # nothing of the pull is visible
    if failpoint == "after_store":
        assert written == [], written  # nothing journaled
    else:
        # One entry holds the outcome of every order the pull had delivered (their records
        # and reports, and the makers'; how many orders depends on the delivery).
        assert len(written) == 1, written
        assert written[0].reports >= 2, written
    restart_log = tmp_path / "restart.log"
    with EngineProcess(handle, log_file=restart_log) as engine:
        reports = await wait_for_finals(handle, account, ids, timeout=60)
        # The unacked messages come back after ack_wait and are answered as duplicates.
        await wait_for_ack_floor(handle, timeout=60)
        await assert_book_is_the_record(handle)
        recovered = engine.recovered
    reports = await stored_reports(handle, account)
    result = verify(
        FaultResult(
            f"engine abort {failpoint}: queued pull of {ORDERS}",
            sent=ORDERS,
            acked=len(queued),
            notes={"group_records": [e.records for e in written], "recovered": recovered},
        ),
        orders,
        ids,
        reports,
    )
    assert_clean(result)
    repaired = log_records(restart_log, REPAIRED)
    if failpoint == "after_journal":
        # The restart's repair projected the entry: every report of the pull, once.
        assert [(r["entries"], r["reports"]) for r in repaired] == [(1, written[0].reports)]
        result.notes["repaired_reports"] = written[0].reports
    else:
        assert repaired == [], repaired  # nothing was journaled: recovery executed the pull
        assert recovered is not None
        assert recovered >= 1, recovered
    assert stored_twice(await exec_id_counts(handle)) == []
    checked = await assert_invariants(handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"
