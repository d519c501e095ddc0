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
from nats.aio.client import Client as NatsConnection

from bridge import (
    AckStatus,
    BridgeClient,
    OrderState,
    OutcomeUnknownError,
    RejectReason,
    contract,
)
from bridge.client import flush_ordered
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer, connect_as
from bridge_dev.signing import dev_signer, signed
from tests.faults.harness import finals_by_order, new_account, order_flow, wait_for_finals

pytestmark = pytest.mark.integration


async def _round(
    bridge: BridgeClient, nc: NatsConnection, engine: EngineProcess, account: str, seed: int
) -> bool:
    """One pause: a submit times out, a status query is sent during the pause and answered
    after the resume. Returns whether it answered "not found" (then the submit still queued at
    the engine must be REJECTED, never executed); "found" is the order, executed once."""
    order, fresh = order_flow(account, 2, seed=seed)
    retry = order.model_copy(update={"client_order_id": fresh.client_order_id})
    assert engine.pid is not None
    async with bridge.reports(account) as stream:
        os.kill(engine.pid, signal.SIGSTOP)
        try:
            with pytest.raises(OutcomeUnknownError):
                await bridge.submit(order)  # delivered to the paused engine, unanswered
            request = orders_pb2.OrderStatusRequest(
                account=account, client_order_id=order.client_order_id
            )
            inbox = nc.new_inbox()
            answers = await nc.subscribe(inbox, max_msgs=1)
            payload = request.SerializeToString()
            subject = contract.status(account)
            headers = signed(dev_signer(engine.handle.creds), subject, payload)
            await nc.publish(subject, payload, reply=inbox, headers=headers)
            await flush_ordered(nc)  # the query has reached the server, during the pause
        finally:
            os.kill(engine.pid, signal.SIGCONT)
        answer = await answers.next_msg(timeout=30)
        reply = orders_pb2.OrderStatusReply.FromString(answer.data)
        state = OrderState.from_proto(account, order.client_order_id, reply)
        again = await bridge.status(account, order.client_order_id, timeout=5)
        resent = await bridge.submit(order, timeout=5)
        placed = await bridge.submit(retry, timeout=5)
        final = await stream.next(timeout=10)
        while final.client_order_id != retry.client_order_id or not final.is_final:
            final = await stream.next(timeout=10)
    durable = await wait_for_finals(engine.handle, account, {retry.client_order_id}, 30)
    mine = [r for r in durable if r.client_order_id == order.client_order_id]
    assert placed.status is AckStatus.ACCEPTED
    assert resent.duplicate
    if state.found:
        # The submit was taken before the query: the order, executed exactly once.
        assert again.found
        assert finals_by_order(durable)[order.client_order_id] == 1
        return False
    assert reply.reason == orders_pb2.REJECT_REASON_UNKNOWN_ORDER
    assert again.found is False
    assert (resent.status, resent.reason) == (AckStatus.REJECTED, RejectReason.UNKNOWN_ORDER)
    assert "re-send under a new id" in resent.text
    # The queued submit hit the tombstone: exactly one REJECTED report, no execution.
    assert [r.exec_type for r in mine] == [orders_pb2.EXEC_TYPE_REJECTED], mine
    assert mine[0].reason == orders_pb2.REJECT_REASON_UNKNOWN_ORDER
    assert finals_by_order(durable) == {order.client_order_id: 1, retry.client_order_id: 1}
    assert len({r.exec_id for r in durable}) == len(durable)
    return True


async def test_not_found_during_a_pause_means_the_queued_submit_never_executes(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """Engine paused: a submit times out and a status query is sent during the pause. Which of
    the two the resumed engine takes first is a race; whenever the answer is "not found" the
    submit is REJECTED and never executes (a re-send under the same id too, under a new id it
    executes). Repeated (at most 6 rounds) until "not found" was answered at least once."""
    handle = fresh_server.handle
    settings = client_settings(handle, request_timeout_ms=300, order_retry_max_attempts=1)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    not_found = 0
    try:
        async with BridgeClient(settings) as bridge:
            for seed in range(41, 47):
                not_found += await _round(bridge, nc, engine, new_account("TB"), seed)
                if not_found:
                    break
    finally:
        await nc.close()
        code = engine.stop()
    assert code == 0, engine.log_tail()
    assert not_found, "no round answered 'not found'"
