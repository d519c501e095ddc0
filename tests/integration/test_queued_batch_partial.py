"""A partially stored ``enqueue_batch`` in OrderBatch messages, against a real nats-server and
engine: the ``PartialBatchError`` names exactly the orders stored (their message's publish ack
came back) and those not stored, and the engine executes exactly the stored ones, each once.

Each test runs its own server (``fresh_server``): they change ORDERS' limits.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bridge import BridgeClient, PartialBatchError, PublishError, StreamFullError
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer, ServerHandle
from tests.faults.harness import stored_reports, update_orders_stream, wait_for_ack_floor
from tests.integration.test_order_path import collect_until_final
from tests.integration.test_queued_batches import check_exactly_once, crossing, orders_last_seq

pytestmark = pytest.mark.integration


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def executed(handle: ServerHandle, account: str) -> set[str]:
    """The client order ids EXECUTIONS holds reports of, for ``account``."""
    return {r.client_order_id for r in await stored_reports(handle, account)}


async def test_a_full_orders_stream_stores_some_batches_and_the_error_names_each_order(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """The engine is stopped and ORDERS takes two more messages (max_msgs, discard new): of
    four batches, the first two are stored, the other two refused; once an engine drains
    ORDERS, exactly the stored orders execute, once each."""
    handle = fresh_server.handle
    account = new_id("FULL")
    warm_up, orders = crossing(account, 1), crossing(account, 8)  # 3 + 24 orders
    settings = client_settings(handle, queued_batch_max_orders=6)
    engine = EngineProcess(handle, log_file=tmp_path / "engine-1.log").start()
    try:
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            # The engines speak 1.2: asked once, then batches (the answer is kept meanwhile).
            await bridge.enqueue_batch(warm_up)
            await collect_until_final(stream, {o.client_order_id for o in warm_up})
            await wait_for_ack_floor(handle)
            assert engine.stop() == 0
            await update_orders_stream(handle, max_msgs=2)
            with pytest.raises(PartialBatchError) as caught:
                await bridge.enqueue_batch(orders)
            err = caught.value
            ids = [o.client_order_id for o in orders]
            assert err.stored == tuple(ids[:12])
            assert err.not_stored == tuple(ids[12:])
            assert err.unknown == ()
            assert isinstance(err.failure, StreamFullError)
            assert err.failure.client_order_id == ids[12]
            assert {q.seq for q in err.queued} == {2, 3}  # the warm-up was message 1
            assert [type(o) for o in err.outcomes[12:]] == [StreamFullError] * 12

            engine = EngineProcess(handle, log_file=tmp_path / "engine-2.log").start()
            stored = [o for o in orders if o.client_order_id in err.stored]
            await collect_until_final(stream, {o.client_order_id for o in stored})
            await wait_for_ack_floor(handle)
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    reports = await stored_reports(handle, account)
    check_exactly_once(reports, warm_up + stored)  # nothing of the refused orders
    assert not (await executed(handle, account)) & set(err.not_stored)


async def test_a_batch_over_the_streams_message_size_is_refused_alone(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """ORDERS' max_msg_size below one account's batch: that batch is refused (a PublishError
    naming each of its orders), the other account's batch is stored and executes."""
    handle = fresh_server.handle
    small, big = new_id("SMALL"), new_id("BIG")
    few, many = crossing(small, 1), crossing(big, 40)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        await update_orders_stream(handle, max_msg_size=4096)
        before = await orders_last_seq(handle)
        async with BridgeClient(client_settings(handle)) as bridge:
            with pytest.raises(PartialBatchError) as caught:
                await bridge.enqueue_batch([*many[:60], *few, *many[60:]])
            err = caught.value
            assert set(err.stored) == {o.client_order_id for o in few}
            assert set(err.not_stored) == {o.client_order_id for o in many}
            assert len(err.stored) + len(err.not_stored) == len(few) + len(many)
            assert isinstance(err.failure, PublishError)
            assert not isinstance(err.failure, StreamFullError)
            assert "size" in str(err.failure).lower(), err.failure
            assert await orders_last_seq(handle) - before == 1
            await wait_for_ack_floor(handle)
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    check_exactly_once(await stored_reports(handle, small), few)
    assert await executed(handle, big) == set()
