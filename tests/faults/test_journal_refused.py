"""A journal write that cannot be made, and a journal someone else writes (issue 17: "an fsync
error, which must stop the process, never be retried as if nothing happened").

* **Refused for good**: the operator shrinks JOURNAL to the entries it holds with ``discard:
  new``, so the server's store refuses the next entry (JetStream 10077, "stream store failed",
  the answer a failed disk write gets too). The engine stops at once (exit non-zero, the error
  names its journal); the order whose entry was refused is never acked and nothing of it is
  published. Once the limit is restored, the restarted engine executes that order once
  (created, never answered: recovery executes it) and a re-send of it is its duplicate.
* **Fenced**: another client with the engine's credentials appends to the engine's journal
  subject; the engine's next entry fails its condition (Nats-Expected-Last-Subject-Sequence),
  the engine stops with the "fenced" error and publishes nothing of that command. The intruder's
  entry is either a valid entry (then the restarted engine continues after it) or bytes that
  are no journal entry at all (then the engine refuses to start on it, naming the journal and
  the sequence, until an entry written after it by the engine identity links back to the
  engine's own last entry: runbooks/journal.md).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from nats.js.api import DiscardPolicy

from bridge import BridgeClient, BridgeError, Order, OrderType, Side, TimeInForce, contract
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as
from tests.faults.harness import (
    FaultResult,
    assert_clean,
    new_account,
    stored_reports,
    verify,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants
from tests.faults.journal_harness import (
    assert_book_is_the_record,
    encode_entry,
    exec_id_counts,
    journal,
    log_records,
    run_until_exit,
    stored_twice,
    update_journal_stream,
)

pytestmark = pytest.mark.integration

SUBJECT = contract.journal("engine-1")
APPEND = "journal append"
"""The engine's name of the operation in its retry lines."""


def taker(account: str, order_id: str) -> Order:
    """BUY 50 @ 190.01 IOC: trades with the seeded asks (reports on both sides)."""
    return Order(
        client_order_id=order_id,
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        limit_price=Decimal("190.01"),
        quantity=Decimal(50),
        time_in_force=TimeInForce.IOC,
    )


async def _submit_all(bridge: BridgeClient, orders: list[Order]) -> None:
    for order in orders:
        ack = await bridge.submit(order)
        assert ack.accepted, ack
        assert not ack.duplicate, ack


async def _append_as_engine_identity(handle: ServerHandle, payload: bytes) -> int:
    """Appends ``payload`` to engine-1's journal as another client with the engine's
    credentials; its stream sequence."""
    nc = await connect_as(handle.url, handle.creds, "engine")
    try:
        ack = await nc.jetstream().publish(SUBJECT, payload, stream=contract.JOURNAL_STREAM)
        return ack.seq
    finally:
        await nc.close()


async def test_a_refused_journal_write_stops_the_engine_and_acks_nothing(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    account = new_account("JR")
    before = [taker(account, f"before{i}") for i in range(3)]
    refused, after = taker(account, "refused"), taker(account, "after")
    settings = client_settings(handle, request_timeout_ms=3000, order_retry_max_attempts=2)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with BridgeClient(settings) as bridge:
            await _submit_all(bridge, before)
            # The operator's fault: no room for one more entry, and new writes are refused.
            held_last = (await journal(handle))[-1].seq
            held = await update_journal_stream(handle, discard=DiscardPolicy.NEW)
            await update_journal_stream(handle, max_msgs=held)
            with pytest.raises(BridgeError) as caught:
                await bridge.submit(refused)
        code = await asyncio.to_thread(engine.wait, 30)
    finally:
        engine.kill()
    assert code not in (0, None), engine.log_tail()
    log = engine.log_file.read_text()
    said = f"journal ({SUBJECT}): entry after stream sequence {held_last} not stored: "
    assert said in log, engine.log_tail()
    assert "maximum messages exceeded (code 503, error code 10077)" in log, engine.log_tail()
    # Refused for good: never retried as if nothing had happened.
    retried = [r for r in log_records(engine.log_file, "retrying") if r.get("operation") == APPEND]
    assert retried == [], retried
    reports = await stored_reports(handle, account)
    assert not [r for r in reports if r.client_order_id == refused.client_order_id], reports
    assert len(await journal(handle)) == held
    # The operator restores the limit; the engine comes back and nothing is lost or doubled.
    await update_journal_stream(handle, max_msgs=-1, discard=DiscardPolicy.OLD)
    with EngineProcess(handle, log_file=tmp_path / "restart.log") as restarted:
        async with BridgeClient(settings) as bridge:
            again = await bridge.submit(refused)
            assert again.accepted, again
            assert again.duplicate, again
            await _submit_all(bridge, [after])
        ids = {o.client_order_id for o in [*before, refused, after]}
        reports = await wait_for_finals(handle, account, ids, timeout=30)
        await assert_book_is_the_record(handle)
    result = verify(
        FaultResult(
            "journal write refused (store full, discard new)",
            sent=len(ids),
            notes={"first_error": type(caught.value).__name__, "recovered": restarted.recovered},
        ),
        [*before, refused, after],
        ids,
        reports,
    )
    assert_clean(result)
    assert stored_twice(await exec_id_counts(handle)) == []
    await assert_invariants(handle, tmp_path)


@pytest.mark.parametrize("intruder", ["entry", "garbage"])
async def test_a_second_writer_of_the_journal_fences_the_engine(
    fresh_server: LocalNatsServer, tmp_path: Path, intruder: str
) -> None:
    handle = fresh_server.handle
    account = new_account("FN")
    before, fenced = taker(account, "before"), taker(account, "fenced")
    settings = client_settings(handle, request_timeout_ms=3000, order_retry_max_attempts=2)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with BridgeClient(settings) as bridge:
            await _submit_all(bridge, [before])
            own_last = (await journal(handle))[-1].seq
            payload = encode_entry("intruder", own_last) if intruder == "entry" else b"\xff\x01"
            intruder_seq = await _append_as_engine_identity(handle, payload)
            with pytest.raises(BridgeError):
                await bridge.submit(fenced)
        code = await asyncio.to_thread(engine.wait, 30)
    finally:
        engine.kill()
    assert code not in (0, None), engine.log_tail()
    log = engine.log_file.read_text()
    assert (
        f"journal ({SUBJECT}): fenced: the last entry is at stream sequence {intruder_seq}, "
        f"not {own_last} (ours)"
    ) in log, engine.log_tail()
    reports = await stored_reports(handle, account)
    assert not [r for r in reports if r.client_order_id == fenced.client_order_id], reports
    if intruder == "garbage":
        # Not a journal entry: the engine will not start on it ...
        refusing = EngineProcess(handle, log_file=tmp_path / "refused.log")
        assert await asyncio.to_thread(run_until_exit, refusing) not in (0, None)
        said = f"journal ({SUBJECT}): reading stream sequence {intruder_seq}: failed to decode"
        assert said in refusing.log_file.read_text(), refusing.log_tail()
        # ... until the engine identity writes an entry after it that links back to the
        # engine's own last entry (the chain repair follows skips the foreign bytes).
        await _append_as_engine_identity(handle, encode_entry("engine-1", own_last))
    with EngineProcess(handle, log_file=tmp_path / "restart.log") as restarted:
        # The fenced order was created, never answered: recovery executes it, once.
        assert restarted.recovered == 1
        async with BridgeClient(settings) as bridge:
            again = await bridge.submit(fenced)
            assert again.accepted, again
            assert again.duplicate, again
        ids = {before.client_order_id, fenced.client_order_id}
        reports = await wait_for_finals(handle, account, ids, timeout=30)
        await assert_book_is_the_record(handle)
    result = verify(
        FaultResult(f"journal fenced by another writer ({intruder})", sent=2),
        [before, fenced],
        ids,
        reports,
    )
    assert_clean(result)
    assert stored_twice(await exec_id_counts(handle)) == []
    await assert_invariants(handle, tmp_path)
