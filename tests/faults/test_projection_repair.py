"""The projections (EXECUTIONS, the order store) repaired from the journal (issue 17: "replays
after restart"; engine-rs/src/repair.rs).

* **The server dies while the engine projects**: kill -9 of nats-server under queued and
  synchronous load, restarted on the same store. EXECUTIONS and the order store are persisted
  asynchronously (no fsync per message): the server can lose their unflushed tail, while the
  journal (fsynced) keeps every entry. The engine repairs the projections from its journal
  after the reconnect, before it serves the next command: every acked order has its final
  report, each report is stored once. FAILS in most runs until the engine bug it found is
  fixed (docs-17/faults.md, "Open: a server crash under load"): writes sent after the
  reconnect (retried, or queued in the client while it reconnected) land behind the lost tail,
  the walk stops at their entry, and what was lost below it stays lost (the report chain shows
  the gap; a lost order record is a lost dedupe point, so a re-sent order executes twice).
* **Replays after restart**: a queued pull journaled, never projected (failpoint
  ``after_journal``); the first restart dies in the middle of its repair (``mid_publish``: half
  the entry's reports published); the second restart publishes the other half; the third finds
  nothing to do. No exec id is stored twice, and the book is the same after each restart.
"""

from __future__ import annotations

import asyncio
import signal
import time
from functools import partial
from pathlib import Path

import pytest

from bridge import BridgeClient
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer
from tests.faults.harness import (
    FaultResult,
    Publisher,
    assert_clean,
    new_account,
    order_flow,
    stored_entries,
    stored_reports,
    verify,
    wait_for_ack_floor,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants
from tests.faults.journal_harness import (
    LONG_PULL,
    RECONNECT_REPAIR,
    REPAIRED,
    SyncPublisher,
    assert_book_is_the_record,
    exec_id_counts,
    journal,
    log_records,
    queue_while_paused,
    run_until_exit,
    set_ack_wait,
    stored_twice,
)

pytestmark = pytest.mark.integration


def _acked_since(flow: Publisher, at: float) -> bool:
    return flow.ack_times[-1] > at


QUEUED = 1500
SYNC = 600
PULL = 200


async def test_server_killed_while_the_engine_projects_loses_no_acked_order(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    queued_account, sync_account = new_account("PQ"), new_account("PS")
    queued = order_flow(queued_account, QUEUED, seed=31)
    sync = order_flow(sync_account, SYNC, seed=32)
    settings = client_settings(handle, request_timeout_ms=2000, publish_timeout_ms=2000)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with BridgeClient(settings) as bridge:
            q, s = Publisher(bridge, queued), SyncPublisher(bridge, sync, workers=4)
            flows = [asyncio.create_task(q.run()), asyncio.create_task(s.run())]
            # Both paths in flight: the engine is journaling and projecting both.
            await q.wait_until(lambda: q.acked_count() >= QUEUED // 5, 60, "queued acks")
            await s.wait_until(lambda: s.acked_count() >= SYNC // 10, 60, "sync acks")
            in_flight = (QUEUED - q.acked_count(), SYNC - s.acked_count())
            fresh_server.kill()
            killed_at = time.monotonic()
            await asyncio.to_thread(fresh_server.start)
            restarted_at = time.monotonic()
            for flow in (q, s):
                await flow.wait_until(partial(_acked_since, flow, restarted_at), 60, "an ack")
            await asyncio.gather(*flows)
            first_ack_after = min(t for t in q.ack_times + s.ack_times if t > restarted_at)
            reports = await wait_for_finals(handle, queued_account, q.acked, timeout=30)
            reports += await wait_for_finals(handle, sync_account, s.acked, timeout=30)
            await wait_for_ack_floor(handle)
            try:
                await assert_book_is_the_record(handle)
                book_error = None
            except AssertionError as exc:  # reported after the counts, which say more
                book_error = exc
    finally:
        code = engine.stop()
    repaired = log_records(engine.log_file, REPAIRED)
    result = verify(
        FaultResult(
            "nats-server kill -9 while projecting (queued + sync)",
            sent=QUEUED + SYNC,
            recovery_s=first_ack_after - killed_at,
            notes={
                "in_flight_at_kill": in_flight,
                "server_down_s": round(restarted_at - killed_at, 3),
                "repaired_entries": sum(int(str(r["entries"])) for r in repaired),
                "repaired_reports": sum(int(str(r["reports"])) for r in repaired),
                "client_retries": dict(q.errors + s.errors),
            },
        ),
        [*queued, *sync],
        q.acked | s.acked,
        reports,
    )
    assert code == 0, engine.log_tail()
    assert result.acked == QUEUED + SYNC
    assert_clean(result)
    assert book_error is None, book_error
    # The engine checked its projections against its journal after the reconnect.
    assert log_records(engine.log_file, RECONNECT_REPAIR), engine.log_tail(80)
    assert stored_twice(await exec_id_counts(handle)) == []
    checked = await assert_invariants(handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"


async def test_replaying_the_journal_after_restarts_stores_nothing_twice(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    await set_ack_wait(handle, 2.0)
    account = new_account("RP")
    orders = order_flow(account, PULL, seed=33)
    ids = {o.client_order_id for o in orders}
    settings = client_settings(handle, request_timeout_ms=10_000)
    with EngineProcess(handle, log_file=tmp_path / "seed.log"):
        pass  # the seed is placed: the failpoints below stop the pull and the repair
    before = len(await journal(handle))
    env = {"BRIDGE_FAILPOINT": "after_journal", "BRIDGE_PULL_BATCH": str(PULL), **LONG_PULL}
    journaled = EngineProcess(handle, log_file=tmp_path / "journaled.log", env=env).start()
    try:
        async with BridgeClient(settings) as bridge:
            assert len(await queue_while_paused(journaled, bridge, orders)) == PULL
        assert await asyncio.to_thread(journaled.wait, 60) == -signal.SIGABRT
    finally:
        journaled.kill()
    (entry,) = (await journal(handle))[before:]
    assert entry.reports >= 2, entry  # an execution at least: mid_publish stops halfway
    assert await stored_reports(handle, account) == []
    stored_before = len(await stored_entries(handle, None))
    # The first replay dies halfway through publishing the entry's reports.
    replay = EngineProcess(
        handle, log_file=tmp_path / "replay.log", env={"BRIDGE_FAILPOINT": "mid_publish"}
    )
    assert await asyncio.to_thread(run_until_exit, replay) == -signal.SIGABRT
    assert log_records(replay.log_file, "failpoint reached"), replay.log_tail()
    replayed = len(await stored_entries(handle, None)) - stored_before
    assert 0 < replayed < entry.reports, (replayed, entry)
    second = tmp_path / "second.log"
    with EngineProcess(handle, log_file=second):
        reports = await wait_for_finals(handle, account, ids, timeout=60)
        await wait_for_ack_floor(handle)
        book = await assert_book_is_the_record(handle)
        counts = await exec_id_counts(handle)
    repaired = log_records(second, REPAIRED)
    assert [(r["entries"], r["reports"]) for r in repaired] == [(1, entry.reports - replayed)]
    third = tmp_path / "third.log"
    with EngineProcess(handle, log_file=third):
        assert await assert_book_is_the_record(handle) == book
    assert log_records(third, REPAIRED) == [], "the third start found something to repair"
    assert await exec_id_counts(handle) == counts
    assert stored_twice(counts) == []
    result = verify(
        FaultResult(
            f"replays: journaled pull of {PULL}, repair interrupted, twice restarted",
            sent=PULL,
            notes={
                "journaled_orders": entry.records,
                "replayed_then_crashed": replayed,
                "repaired": repaired[0]["reports"],
            },
        ),
        orders,
        ids,
        reports,
    )
    assert_clean(result)
    checked = await assert_invariants(handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"
