"""The queued path in OrderBatch messages (``bridge._batch_send``, ``bridge._linger``,
``bridge._engine_contracts``) against the fake transport: when batches are used (N-1), what a
batch message carries, what each order's outcome is, exact partial failures, retries and the
linger. Against the real server and engine: tests/integration/test_queued_batches.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bridge import BridgeClient, PartialBatchError, StreamFullError, contract
from bridge._batch import batch_msg_id
from bridge._engine_contracts import Engines
from bridge.models import Order
from bridge.security.signing import verify
from bridge.v1 import orders_pb2
from tests.unit.fake_transport import FakeTransport, Sent
from tests.unit.test_client import open_client, order

PING = contract.service_ping(contract.SERVICE_NAME)


def ping_answer(engine_id: str, version: str | None) -> bytes:
    metadata = {"engine_id": engine_id}
    if version is not None:
        metadata["contract_version"] = version
    return json.dumps(
        {
            "type": "io.nats.micro.v1.ping_response",
            "name": contract.SERVICE_NAME,
            "id": f"id-{engine_id}",
            "version": "0.1.0",
            "metadata": metadata,
        }
    ).encode()


async def engines(fake: FakeTransport, *versions: str | None) -> None:
    """Engines answering the service ping, one per version (None: a 1.0 engine, no key)."""

    async def answer(msg: Any) -> None:
        for i, version in enumerate(versions):
            await fake.publish(msg.reply, ping_answer(f"e{i}", version))

    await fake.subscribe(PING, cb=answer)


def orders(n: int, account: str = "ACC1", prefix: str = "o") -> list[Order]:
    return [order(f"{prefix}-{i}").model_copy(update={"account": account}) for i in range(n)]


def batches(fake: FakeTransport) -> list[Sent]:
    return [s for s in fake.publishes() if s.subject.startswith(contract.queue_batch(""))]


async def published_batches(fake: FakeTransport, n: int) -> None:
    """Wait until ``n`` batch messages were published (woken by each publish)."""
    while len(batches(fake)) < n:
        fake.published.clear()
        await fake.published.wait()


def ids_in(sent: Sent) -> list[str]:
    return [o.client_order_id for o in orders_pb2.OrderBatch.FromString(sent.data).orders]


async def batching_client(fake: FakeTransport, **kw: Any) -> BridgeClient:
    await engines(fake, contract.CONTRACT_VERSION, "1.2")
    return await open_client(fake, **kw)


async def test_a_batch_travels_in_order_batch_messages_signed_with_a_derived_msg_id() -> None:
    fake = FakeTransport()
    bridge = await batching_client(fake, queued_batch_max_orders=100)
    sent_orders = orders(250)
    queued = await bridge.enqueue_batch(sent_orders)
    published = fake.publishes()
    assert [p.subject for p in published] == [contract.queue_batch("ACC1")] * 3
    assert [len(ids_in(p)) for p in published] == [100, 100, 50]
    assert [i for p in published for i in ids_in(p)] == [o.client_order_id for o in sent_orders]
    for p in published:
        assert p.headers[contract.HEADER_MSG_ID] == batch_msg_id("ACC1", ids_in(p))
        assert p.headers[contract.HEADER_SCHEMA] == "bridge.v1.OrderBatch"
        assert p.headers[contract.HEADER_SCHEMA_VERSION] == contract.CONTRACT_VERSION
        assert verify(p.subject, p.data, p.headers)  # one signature over the whole batch
    # Each order: its own id, its batch's stream sequence, its place in the batch.
    assert [q.client_order_id for q in queued] == [o.client_order_id for o in sent_orders]
    assert [q.seq for q in queued] == [1] * 100 + [2] * 100 + [3] * 50
    assert [q.batch_index for q in queued] == [*range(100), *range(100), *range(50)]
    assert not any(q.duplicate for q in queued)
    await bridge.close()


async def test_a_resent_batch_is_a_duplicate_and_another_grouping_is_not() -> None:
    fake = FakeTransport()
    bridge = await batching_client(fake, queued_batch_max_orders=10)
    batch = orders(10)
    first = await bridge.enqueue_batch(batch)
    again = await bridge.enqueue_batch(batch)
    assert all(q.duplicate for q in again)
    assert {q.seq for q in again} == {first[0].seq}
    regrouped = await bridge.enqueue_batch(batch[:5])  # another message id: stored again
    assert not any(q.duplicate for q in regrouped)
    ids = [p.headers[contract.HEADER_MSG_ID] for p in fake.publishes()]
    assert ids[0] == ids[1] != ids[2]
    await bridge.close()


async def test_orders_of_several_accounts_go_in_one_batch_per_account() -> None:
    fake = FakeTransport()
    bridge = await batching_client(fake)
    pairs = zip(orders(3, "ACC1"), orders(3, "ACC2", "p"), strict=True)
    mixed = [o for pair in pairs for o in pair]
    queued = await bridge.enqueue_batch(mixed)
    assert [(p.subject, ids_in(p)) for p in fake.publishes()] == [
        (contract.queue_batch("ACC1"), ["o-0", "o-1", "o-2"]),
        (contract.queue_batch("ACC2"), ["p-0", "p-1", "p-2"]),
    ]
    assert [q.client_order_id for q in queued] == [o.client_order_id for o in mixed]
    await bridge.close()


async def test_a_partial_failure_names_exactly_the_stored_and_the_unstored_orders() -> None:
    """ORDERS takes one more message: the first batch is stored, the second and third are
    refused (stream full; pipelined, all three went out before the refusal came back): every
    order is named once, by what its batch's ack said."""
    fake = FakeTransport()
    fake.orders.max_msgs = 1
    bridge = await batching_client(fake, queued_batch_max_orders=4)
    batch = orders(10)
    with pytest.raises(PartialBatchError) as caught:
        await bridge.enqueue_batch(batch)
    err = caught.value
    ids = [o.client_order_id for o in batch]
    assert err.stored == tuple(ids[:4])
    assert err.not_stored == tuple(ids[4:])
    assert err.unknown == ()
    assert isinstance(err.failure, StreamFullError)
    assert err.failure.client_order_id == ids[4]  # the earliest unstored order, by its own id
    assert [type(o).__name__ for o in err.outcomes[4:]] == ["StreamFullError"] * 6
    assert [o.client_order_id for o in err.outcomes[4:] if o is not None] == ids[4:]
    await bridge.close()


async def test_an_unconfirmed_batch_is_unknown_for_each_of_its_orders() -> None:
    fake = FakeTransport()
    bridge = await batching_client(fake, queued_batch_max_orders=3, publish_timeout_ms=50)
    fake.script.extend(["ok", "drop"])
    with pytest.raises(PartialBatchError) as caught:
        await bridge.enqueue_batch(orders(6))
    err = caught.value
    assert err.stored == ("o-0", "o-1", "o-2")
    assert err.unknown == ("o-3", "o-4", "o-5")
    assert err.not_stored == ()
    await bridge.close()


async def test_a_transiently_failed_batch_is_retried_whole_with_the_same_id() -> None:
    fake = FakeTransport()
    bridge = await batching_client(fake, order_retry_max_attempts=3)
    fake.script.extend(["503", "ok"])
    queued = await bridge.enqueue_batch(orders(5))
    first, retry = fake.publishes()
    assert first.data == retry.data
    assert first.headers[contract.HEADER_MSG_ID] == retry.headers[contract.HEADER_MSG_ID]
    assert first.headers[contract.HEADER_SIGNATURE] != retry.headers[contract.HEADER_SIGNATURE]
    assert [q.batch_index for q in queued] == [0, 1, 2, 3, 4]
    await bridge.close()


@pytest.mark.parametrize(
    "versions",
    [("1.1",), (None,), ("1.2", "1.1"), ("1.2", None), ()],
    ids=["1.1", "1.0", "1.2+1.1", "1.2+1.0", "none"],
)
async def test_without_every_engine_at_1_2_each_order_travels_alone(
    versions: tuple[str | None, ...],
) -> None:
    """N-1: an engine of 1.0 or 1.1 would take a batch for a malformed order."""
    fake = FakeTransport()
    await engines(fake, *versions)
    bridge = await open_client(fake)
    queued = await bridge.enqueue_batch(orders(3))
    published = fake.publishes()
    assert [p.subject for p in published] == [contract.queue("ACC1")] * 3
    assert [p.headers[contract.HEADER_MSG_ID] for p in published] == ["o-0", "o-1", "o-2"]
    assert [q.batch_index for q in queued] == [None, None, None]
    await bridge.close()


async def test_the_engines_contracts_are_asked_once_and_cached() -> None:
    fake = FakeTransport()
    bridge = await batching_client(fake)
    await bridge.enqueue_batch(orders(2))
    await bridge.enqueue_batch(orders(2, prefix="p"))
    await bridge.enqueue(order("q-1"))
    assert len([s for s in fake.sent if s.subject == PING]) == 1
    known = bridge._pipeline.engines.known
    assert known == Engines((("e0", contract.CONTRACT_VERSION), ("e1", "1.2")))
    await bridge.close()


async def test_zero_max_orders_turns_batches_off() -> None:
    fake = FakeTransport()
    bridge = await batching_client(fake, queued_batch_max_orders=0)
    await bridge.enqueue_batch(orders(2))
    assert [p.subject for p in fake.publishes()] == [contract.queue("ACC1")] * 2
    assert not [s for s in fake.sent if s.subject == PING]  # not even asked
    await bridge.close()


async def test_concurrent_enqueue_calls_share_one_message_each_with_its_own_outcome() -> None:
    fake = FakeTransport()
    bridge = await batching_client(fake)
    calls = [bridge.enqueue(o, correlation_id=f"c-{i}") for i, o in enumerate(orders(20))]
    queued = await asyncio.gather(*calls)
    [message] = batches(fake)
    assert ids_in(message) == [f"o-{i}" for i in range(20)]
    assert message.headers[contract.HEADER_CORRELATION_ID] == "c-0"  # the first call's
    assert [q.client_order_id for q in queued] == [f"o-{i}" for i in range(20)]
    assert [q.batch_index for q in queued] == list(range(20))
    await bridge.close()


async def test_under_load_orders_wait_for_the_message_in_flight() -> None:
    """While a shared message awaits its ack, the calls that arrive wait (at most the linger)
    and then go together: here the ack is held, so they wait for the linger."""
    fake = FakeTransport()
    bridge = await batching_client(fake, enqueue_linger_ms=50)
    fake.script.append("hold")
    first = asyncio.ensure_future(bridge.enqueue(order("first")))
    await published_batches(fake, 1)  # the first call's message went out; its ack is held
    later = [asyncio.ensure_future(bridge.enqueue(o)) for o in orders(5)]
    await asyncio.wait_for(asyncio.gather(*later), timeout=5)  # the linger ended, not the ack
    fake.release_held()
    await first
    assert [ids_in(m) for m in batches(fake)] == [["first"], [f"o-{i}" for i in range(5)]]
    await bridge.close()


async def test_the_linger_is_capped_by_max_orders() -> None:
    fake = FakeTransport()
    bridge = await batching_client(fake, queued_batch_max_orders=8)
    await asyncio.gather(*(bridge.enqueue(o) for o in orders(20)))
    assert [len(ids_in(m)) for m in batches(fake)] == [8, 8, 4]
    await bridge.close()


async def test_zero_linger_sends_each_call_alone() -> None:
    fake = FakeTransport()
    bridge = await batching_client(fake, enqueue_linger_ms=0)
    await asyncio.gather(*(bridge.enqueue(o) for o in orders(3)))
    assert [ids_in(m) for m in batches(fake)] == [["o-0"], ["o-1"], ["o-2"]]
    await bridge.close()


async def test_a_refused_shared_message_fails_each_call_with_its_own_error() -> None:
    fake = FakeTransport()
    fake.orders.max_msgs = 0
    bridge = await batching_client(fake)
    results = await asyncio.gather(*(bridge.enqueue(o) for o in orders(3)), return_exceptions=True)
    assert [type(r) for r in results] == [StreamFullError] * 3
    assert [r.client_order_id for r in results if isinstance(r, StreamFullError)] == [
        "o-0",
        "o-1",
        "o-2",
    ]
    await bridge.close()


async def test_close_sends_what_lingers() -> None:
    """An order lingering behind a message in flight goes out when the client closes, and the
    close waits for its outcome."""
    fake = FakeTransport()
    bridge = await batching_client(fake, enqueue_linger_ms=1000)
    fake.script.append("hold")
    first = asyncio.ensure_future(bridge.enqueue(order("first")))
    await published_batches(fake, 1)
    waiting = asyncio.ensure_future(bridge.enqueue(order("waiting")))
    closing = asyncio.ensure_future(bridge.close())
    await published_batches(fake, 2)  # sent by close(): not the linger (1 s), not the ack
    assert [ids_in(m) for m in batches(fake)] == [["first"], ["waiting"]]
    assert not closing.done()
    fake.release_held()
    assert (await waiting).client_order_id == "waiting"
    assert (await first).client_order_id == "first"
    await closing


async def test_two_instances_under_one_engine_id_both_count() -> None:
    """Discovery counts service instances, not engine ids: a misconfigured pair sharing an
    engine id, one of them 1.1, still keeps batches off."""
    fake = FakeTransport()

    async def answer(msg: Any) -> None:
        for instance, version in (("i-1", "1.2"), ("i-2", "1.1")):
            data = json.loads(ping_answer("same", version))
            data["id"] = instance
            await fake.publish(msg.reply, json.dumps(data).encode())

    await fake.subscribe(PING, cb=answer)
    bridge = await open_client(fake)
    await bridge.enqueue_batch(orders(2))
    assert [p.subject for p in fake.publishes()] == [contract.queue("ACC1")] * 2
    assert bridge._pipeline.engines.known == Engines((("same", "1.1"), ("same", "1.2")))
    await bridge.close()
