"""Backpressure: a full ORDERS stream, a 10x overload, and the client's in-flight bound."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from bridge import (
    BridgeClient,
    Order,
    OutcomeUnknownError,
    PartialBatchError,
    StreamFullError,
    contract,
)
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as
from tests.faults.harness import (
    FaultResult,
    assert_clean,
    new_account,
    order_flow,
    update_orders_stream,
    verify,
    wait_for_finals,
)
from tests.faults.invariants import assert_invariants

pytestmark = pytest.mark.integration


async def _stored_orders(handle: ServerHandle) -> int:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        return (await nc.jetstream().stream_info(contract.ORDERS_STREAM)).state.messages
    finally:
        await nc.close()


def _rss_kib(pid: int | str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def test_stopped_engine_fills_orders_then_refusal_is_immediate_and_all_drain(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """Engine stopped until ORDERS is full: the next order gets StreamFullError at once (not a
    timeout); after the engine restarts, every stored order is executed exactly once."""
    capacity = 300
    handle = fresh_server.handle
    await update_orders_stream(handle, max_msgs=capacity)
    account = new_account("SF")
    orders = order_flow(account, capacity + 100, seed=3)
    settings = client_settings(handle, publish_timeout_ms=5000)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log")
    acked: set[str] = set()
    refusal_s: list[float] = []
    refused: list[StreamFullError] = []
    async with BridgeClient(settings) as bridge:
        for order in orders:  # sequential: each publish is acked before the next
            started = time.monotonic()
            try:
                await bridge.enqueue(order)
            except StreamFullError as exc:
                refusal_s.append(time.monotonic() - started)
                refused.append(exc)
                continue
            acked.add(order.client_order_id)
        assert await _stored_orders(handle) == capacity
        engine.start()
        restarted_at = time.monotonic()
        try:
            reports = await wait_for_finals(handle, account, acked, timeout=120)
            drained_s = time.monotonic() - restarted_at
        finally:
            code = engine.stop()
    result = verify(
        FaultResult(
            f"engine stopped until ORDERS full ({capacity})",
            sent=len(orders),
            refused=len(refused),
            recovery_s=drained_s,
            notes={"max_refusal_s": round(max(refusal_s), 4)},
        ),
        orders,
        acked,
        reports,
    )
    assert code == 0, engine.log_tail()
    assert result.acked == capacity
    assert len(refused) == len(orders) - capacity
    assert {e.client_order_id for e in refused}.isdisjoint(acked)
    assert all(e.err_code == 10077 for e in refused)
    assert "maximum messages" in str(refused[0])
    assert max(refusal_s) < 1.0, "a full stream must refuse at once, not time out"
    assert not {r.client_order_id for r in reports} & {e.client_order_id for e in refused}
    assert_clean(result)
    checked = await assert_invariants(handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"


async def test_tenfold_overload_keeps_memory_bounded_and_loses_nothing(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """Offer orders ~10x faster than the engine executes them for a few seconds: ORDERS fills
    and refuses the excess loudly, both processes' memory stays flat, the server never has
    more than max_ack_pending messages out at the engine, and every accepted order executes.

    Orders travel in OrderBatch messages of 10 (contract 1.2): ORDERS' 300 messages hold 3,000
    orders, the backlog this test has always built (max_msgs bounds messages, not orders)."""
    duration_s = 6.0
    handle = fresh_server.handle
    await update_orders_stream(handle, max_msgs=300)
    account = new_account("OL")
    batches = itertools.count()
    settings = client_settings(
        handle, max_inflight=256, publish_timeout_ms=5000, queued_batch_max_orders=10
    )
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    assert engine.pid is not None
    engine_rss: list[int] = []
    client_rss: list[int] = []
    ack_pending: list[int] = []
    offered = 0  # stored, refused, or not sent after a refusal (not kept: memory is measured)
    stored: list[Order] = []
    acked: set[str] = set()
    refused: set[str] = set()
    try:
        async with BridgeClient(settings) as bridge:
            deadline = time.monotonic() + duration_s

            async def offer() -> None:
                # Pipelined batches, as an orchestrator sends them; the error of a refused
                # batch says which of its orders JetStream stored.
                nonlocal offered
                while time.monotonic() < deadline:
                    batch = order_flow(account, 50, seed=next(batches))
                    offered += len(batch)
                    try:
                        queued = await bridge.enqueue_batch(batch)
                    except PartialBatchError as exc:
                        if not isinstance(exc.failure, StreamFullError):
                            raise
                        queued = list(exc.queued)
                        refused.add(exc.client_order_id or "")
                    ids = {q.client_order_id for q in queued}
                    acked.update(ids)
                    stored.extend(o for o in batch if o.client_order_id in ids)

            async def sample() -> None:
                nc = await connect_as(handle.url, handle.creds, "operator")
                try:
                    while time.monotonic() < deadline:
                        engine_rss.append(_rss_kib(engine.pid or 0))
                        client_rss.append(_rss_kib("self"))
                        info = await nc.jetstream().consumer_info(
                            contract.ORDERS_STREAM, contract.ENGINE_CONSUMER
                        )
                        ack_pending.append(info.num_ack_pending)
                        await asyncio.sleep(0.25)  # sampling period
                finally:
                    await nc.close()

            started = time.monotonic()
            await asyncio.gather(sample(), *(offer() for _ in range(8)))
            offered_s = time.monotonic() - started
            reports = await wait_for_finals(handle, account, acked, timeout=180)
            executed_s = time.monotonic() - started
    finally:
        code = engine.stop()
    offered_rate = offered / offered_s
    engine_rate = len(acked) / executed_s
    result = verify(
        FaultResult(
            "10x overload for 6 s (ORDERS max 300 x 10)",
            sent=offered,
            refused=len(refused),
            notes={
                "offered_per_s": round(offered_rate),
                "engine_per_s": round(engine_rate),
                "overload": round(offered_rate / engine_rate, 1),
                "engine_rss_mib": f"{engine_rss[0] // 1024}->{max(engine_rss) // 1024}",
                "client_rss_mib": f"{client_rss[0] // 1024}->{max(client_rss) // 1024}",
                "max_ack_pending_seen": max(ack_pending),
            },
        ),
        stored,
        acked,
        reports,
    )
    assert code == 0, engine.log_tail()
    assert refused, "the overload never filled ORDERS: not an overload"
    assert offered_rate / engine_rate >= 5, result
    assert max(ack_pending) <= 1024  # the consumer's max_ack_pending
    # Bounded memory: the engine holds at most one pull batch, the client at most
    # max_inflight publishes; generous ceilings catch unbounded growth, not jitter.
    assert max(engine_rss) - engine_rss[0] < 64 * 1024, result
    assert max(client_rss) - client_rss[0] < 128 * 1024, result
    assert_clean(result)
    checked = await assert_invariants(handle, tmp_path)
    result.notes["invariants"] = f"ok ({checked.reports} reports)"


async def test_inflight_bound_gives_backpressure_error_and_sends_nothing_more(
    fresh_server: LocalNatsServer,
) -> None:
    """max_inflight=1 and a server that stops answering: the second order of a batch waits
    backpressure_wait_ms for the slot and is never sent; the batch raises the earliest order's
    failure (the first order's unknown outcome) and accounts for both orders."""
    handle = fresh_server.handle
    account = new_account("BP")
    first, second = order_flow(account, 2, seed=9)
    settings = client_settings(
        handle,
        max_inflight=1,
        backpressure_wait_ms=200,
        publish_timeout_ms=1500,
        order_retry_max_attempts=1,
    )
    async with BridgeClient(settings) as bridge:
        fresh_server.pause()
        try:
            with pytest.raises(PartialBatchError) as caught:
                await bridge.enqueue_batch([first, second])
        finally:
            fresh_server.resume()
        assert isinstance(caught.value.failure, OutcomeUnknownError)
        assert caught.value.client_order_id == first.client_order_id
        assert caught.value.unknown == (first.client_order_id,)
        assert caught.value.queued == ()
        # The second order was stopped by backpressure and never sent: JetStream stores it as
        # new (not a duplicate) when it is finally sent.
        queued = await bridge.enqueue(second)
        assert not queued.duplicate


async def test_batch_refused_by_a_full_stream_then_stopped_by_backpressure_raises_the_refusal(
    fresh_server: LocalNatsServer,
) -> None:
    """ORDERS full and one in-flight slot: the first order is refused, the second finds no slot;
    the batch raises the refusal (the earliest failure), accounting for both orders."""
    handle = fresh_server.handle
    await update_orders_stream(handle, max_msgs=1)
    account = new_account("BP")
    first, refused, stopped = order_flow(account, 3, seed=5)
    settings = client_settings(handle, max_inflight=1, backpressure_wait_ms=0)
    async with BridgeClient(settings) as bridge:
        await bridge.enqueue(first)  # fills ORDERS (no engine drains it)
        with pytest.raises(PartialBatchError) as info:
            await bridge.enqueue_batch([refused, stopped])
    assert isinstance(info.value.failure, StreamFullError)
    assert info.value.client_order_id == refused.client_order_id
    assert info.value.queued == ()
    assert info.value.unknown == ()
    assert await _stored_orders(handle) == 1
