"""Issue 9, item 5: "not found" from status() is definitive.

A status query that finds no record retires the client order id (a tombstone record, created
atomically) before it answers found=False, so a copy of the order still on its way to the
engine can never execute afterwards. That is what makes the rule for OutcomeUnknownError sound:
status() found -> that is the order; not found -> re-sending under a new id is safe.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bridge import (
    AckStatus,
    BridgeClient,
    ExecType,
    OrderState,
    OutcomeUnknownError,
    RejectReason,
    subjects,
)
from bridge.client import flush_ordered
from bridge.dev.engine import EngineProcess, client_settings
from bridge.dev.server import LocalNatsServer, connect_as
from bridge.v1 import orders_pb2
from tests.faults.harness import finals_by_order, new_account, order_flow, stored_reports

pytestmark = pytest.mark.integration


async def test_not_found_during_a_pause_means_the_queued_submit_never_executes(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """Engine paused: a submit times out, a status query sent during the pause is answered
    found=False after the resume, and the submit still queued at the engine is REJECTED
    instead of executing; a re-send under the same id is REJECTED, under a new id it executes."""
    handle = fresh_server.handle
    account = new_account("TB")
    order, fresh = order_flow(account, 2, seed=41)
    retry = order.model_copy(update={"client_order_id": fresh.client_order_id})
    settings = client_settings(handle, request_timeout_ms=300, retry_max_attempts=1)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    assert engine.pid is not None
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    try:
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            os.kill(engine.pid, signal.SIGSTOP)
            try:
                with pytest.raises(OutcomeUnknownError):
                    await bridge.submit(order)  # delivered to the paused engine, unanswered
                request = orders_pb2.OrderStatusRequest(
                    account=account, client_order_id=order.client_order_id
                )
                inbox = nc.new_inbox()
                answers = await nc.subscribe(inbox, max_msgs=1)
                await nc.publish(subjects.STATUS, request.SerializeToString(), reply=inbox)
                await flush_ordered(nc)  # the query has reached the server, during the pause
            finally:
                os.kill(engine.pid, signal.SIGCONT)
            answer = await answers.next_msg(timeout=30)
            reply = orders_pb2.OrderStatusReply.FromString(answer.data)
            state = OrderState.from_proto(account, order.client_order_id, reply)
            # The queued submit hits the tombstone: exactly one REJECTED report, no execution.
            report = await stream.next(timeout=10)
            again = await bridge.status(account, order.client_order_id, timeout=5)
            resent = await bridge.submit(order, timeout=5)
            placed = await bridge.submit(retry, timeout=5)
            final = await stream.next(timeout=10)
            while final.client_order_id != retry.client_order_id or not final.is_final:
                final = await stream.next(timeout=10)
    finally:
        await nc.close()
        code = engine.stop()
    assert code == 0, engine.log_tail()
    assert state.found is False
    assert reply.reason == orders_pb2.REJECT_REASON_UNKNOWN_ORDER
    assert (report.client_order_id, report.exec_type) == (order.client_order_id, ExecType.REJECTED)
    assert report.reason is RejectReason.UNKNOWN_ORDER
    assert again.found is False
    assert (resent.status, resent.reason) == (AckStatus.REJECTED, RejectReason.UNKNOWN_ORDER)
    assert resent.duplicate
    assert "re-send under a new id" in resent.text
    assert placed.status is AckStatus.ACCEPTED
    durable = await stored_reports(handle, account)
    assert orders_pb2.EXEC_TYPE_NEW in [
        r.exec_type for r in durable if r.client_order_id == retry.client_order_id
    ]
    mine = [r for r in durable if r.client_order_id == order.client_order_id]
    assert [r.exec_type for r in mine] == [orders_pb2.EXEC_TYPE_REJECTED], mine
    assert finals_by_order(durable) == {order.client_order_id: 1, retry.client_order_id: 1}
    assert len({r.exec_id for r in durable}) == len(durable)
