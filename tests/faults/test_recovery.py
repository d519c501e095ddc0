"""Resolving the unknown: a timed-out order is settled by a status query; a retry after
JetStream's duplicate window is still deduplicated by the engine; a vanished consumer is
re-created by the engine; the connection state is observable."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from bridge import (
    BridgeClient,
    ConnectionEvent,
    ConnectionState,
    EngineUnavailableError,
    OutcomeUnknownError,
    contract,
)
from bridge.v1 import orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer, connect_as
from tests.faults.harness import (
    FINAL,
    finals_by_order,
    new_account,
    order_flow,
    stored_reports,
    update_orders_stream,
    wait_for_ack_floor,
    wait_for_finals,
)

pytestmark = pytest.mark.integration


async def test_timed_out_order_is_resolved_by_a_status_query(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """The engine freezes (SIGSTOP) while a submit is in flight: after its bounded retries the
    caller gets OutcomeUnknownError with both ids; once the engine runs again, status() says
    what happened and stays true: found -> the order executed exactly once despite the
    re-sends; not found (the query overtook the queued submits) -> it never executes."""
    handle = fresh_server.handle
    account = new_account("OU")
    (order,) = order_flow(account, 1, seed=21)
    settings = client_settings(handle, request_timeout_ms=300, order_retry_max_attempts=3)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    assert engine.pid is not None
    try:
        async with BridgeClient(settings) as bridge:
            os.kill(engine.pid, signal.SIGSTOP)
            try:
                with pytest.raises(OutcomeUnknownError) as caught:
                    await bridge.submit(order, correlation_id="corr-ou-1")
            finally:
                os.kill(engine.pid, signal.SIGCONT)
            assert caught.value.client_order_id == order.client_order_id
            assert caught.value.correlation_id == "corr-ou-1"
            state = await bridge.status(account, order.client_order_id, timeout=5)
            reports = await wait_for_finals(handle, account, {order.client_order_id}, 30)
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    assert finals_by_order(reports)[order.client_order_id] == 1
    assert len({r.exec_id for r in reports}) == len(reports)
    executed = any(r.exec_type == orders_pb2.EXEC_TYPE_NEW for r in reports)
    assert executed is state.found, (state, [r.exec_type for r in reports])


async def test_resend_after_the_duplicate_window_is_not_executed_again(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """JetStream forgets a Nats-Msg-Id after its window and stores the re-sent order again;
    the engine's order store recognises the client order id and does not execute it twice."""
    handle = fresh_server.handle
    await update_orders_stream(handle, duplicate_window=0.2)  # seconds
    account = new_account("DW")
    (order,) = order_flow(account, 1, seed=22)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with BridgeClient(client_settings(handle)) as bridge:
            first = await bridge.enqueue(order)
            await wait_for_finals(handle, account, {order.client_order_id}, 30)
            again = await bridge.enqueue(order)
            for _ in range(50):  # bounded: until JetStream no longer calls it a duplicate
                if not again.duplicate:
                    break
                await asyncio.sleep(0.1)  # the window itself must pass: this is the fault
                again = await bridge.enqueue(order)
            await wait_for_ack_floor(handle)  # the engine has taken the second copy
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    assert not first.duplicate
    assert not again.duplicate, "the duplicate window never passed"
    assert again.seq > first.seq  # JetStream stored the order a second time
    reports = await stored_reports(handle, account)
    assert finals_by_order(reports)[order.client_order_id] == 1
    assert sum(r.order_status in FINAL for r in reports) == 1
    assert "duplicate client order id" in engine.log_tail(200)


async def test_deleted_consumer_is_recreated_and_queued_orders_flow_again(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """The engine's durable consumer disappears under it (deleted by an operator, or lost
    with its leader): its pull stalls or fails, the engine re-creates the consumer from the
    committed definition, and orders queued afterwards execute."""
    handle = fresh_server.handle
    account = new_account("CD")
    before, after = order_flow(account, 2, seed=23)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with BridgeClient(client_settings(handle)) as bridge:
            await bridge.enqueue(before)
            await wait_for_finals(handle, account, {before.client_order_id}, 30)
            nc = await connect_as(handle.url, handle.creds, "operator")
            try:
                js = nc.jetstream()
                assert await js.delete_consumer(contract.ORDERS_STREAM, contract.ENGINE_CONSUMER)
            finally:
                await nc.close()
            await bridge.enqueue(after)
            reports = await wait_for_finals(handle, account, {after.client_order_id}, 60)
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    assert finals_by_order(reports)[after.client_order_id] == 1
    log = engine.log_tail(400)
    assert "re-creating it from its committed definition" in log


async def test_connection_events_and_engine_availability_are_reported(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """A listener sees CONNECTED, ENGINE_UNAVAILABLE (a submit found no engine), then
    ENGINE_AVAILABLE once an engine answers; connection_state follows."""
    handle = fresh_server.handle
    account = new_account("CE")
    first, second = order_flow(account, 2, seed=24)
    events: list[ConnectionEvent] = []
    bridge = BridgeClient(client_settings(handle, order_retry_max_attempts=1))
    remove = bridge.on_connection_event(events.append)

    def state() -> ConnectionState:
        return bridge.connection_state

    assert state() is ConnectionState.DISCONNECTED
    async with bridge:
        assert state() is ConnectionState.CONNECTED
        assert bridge.connected_server == handle.url.removeprefix("tls://")
        with pytest.raises(EngineUnavailableError):
            await bridge.submit(first)
        assert bridge.engine_available is False
        with EngineProcess(handle, log_file=tmp_path / "engine.log"):
            ack = await bridge.submit(second)
        assert ack.accepted
        assert bridge.engine_available is True
        remove()
    assert state() is ConnectionState.CLOSED
    assert events == [
        ConnectionEvent.CONNECTED,
        ConnectionEvent.ENGINE_UNAVAILABLE,
        ConnectionEvent.ENGINE_AVAILABLE,
    ]
