"""Order batches (contract 1.2) and the engines and deployments before them, against a real
nats-server:

* N-1: the released 1.0 engine (``engine_1_0``) does not read OrderBatch; the current client
  asks the engines' contracts (service ping) and sends it one message per order, for
  ``enqueue_batch`` and concurrent ``enqueue`` calls alike; every order executes once.
* Upgrade: a deployment provisioned before 1.2 (ORDERS capturing only the single-order
  subjects, the engine consumer filtering them only) is brought to 1.2's definitions by
  ``provision`` (both updated in place, nothing lost), after which batches flow.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js.api import ConsumerConfig

from bridge import BridgeClient, BridgeSettings, contract
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.pki import DevCredentials
from bridge_dev.provision import provision
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as
from tests.conftest import provisioned_server
from tests.faults.harness import stored_reports, wait_for_ack_floor
from tests.integration.test_order_path import collect_until_final
from tests.integration.test_queued_batches import check_exactly_once, crossing, orders_last_seq

pytestmark = pytest.mark.integration


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def nats_server(
    dev_creds: DevCredentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """Provisioned like a deployment upgraded from 1.1, where a 1.0 engine runs: projections
    persisted per message, EXECUTIONS allowing its atomic report batches."""
    yield from provisioned_server(dev_creds, tmp_path_factory, projections="fsync")


async def test_a_1_0_engine_gets_one_message_per_order(
    engine_1_0: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    account = new_id("N1")
    orders = crossing(account, 10)
    before = await orders_last_seq(nats_server)
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        stored = await bridge.enqueue_batch(orders[:15])
        stored += await asyncio.gather(*(bridge.enqueue(o) for o in orders[15:]))
        await collect_until_final(stream, {o.client_order_id for o in orders})
        engines = bridge._pipeline.engines.known
    assert engines is not None
    assert [v for _, v in engines.engines] == ["1.0"]  # a 1.0 engine does not say: 1.0
    assert await orders_last_seq(nats_server) - before == 30
    assert [q.batch_index for q in stored] == [None] * 30
    await wait_for_ack_floor(nats_server)
    check_exactly_once(await stored_reports(nats_server, account), orders)


async def test_provision_brings_a_1_1_deployment_to_batches(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        # As provisioned by 1.1: ORDERS on the single-order subjects, one filter.
        consumer = (await js.consumer_info(contract.ORDERS_STREAM, contract.ENGINE_CONSUMER)).config
        await js.delete_consumer(contract.ORDERS_STREAM, contract.ENGINE_CONSUMER)
        stream = (await js.stream_info(contract.ORDERS_STREAM)).config
        await js.update_stream(stream.evolve(subjects=[contract.QUEUE_ALL]))
        old = ConsumerConfig.from_response(
            {**consumer.as_dict(), "filter_subject": contract.QUEUE_ALL, "filter_subjects": None}
        )
        await js.add_consumer(contract.ORDERS_STREAM, old)
        lines = await provision(nc)
        assert any(line.startswith("stream ORDERS: updated") for line in lines), lines
        assert any(line.startswith("consumer ORDERS/engine: updated") for line in lines), lines
        stream = (await js.stream_info(contract.ORDERS_STREAM)).config
        assert stream.subjects == [
            contract.QUEUE_ALL,
            contract.QUEUE_BATCH_ALL,
            contract.QUEUE_PARTITION_ALL,
        ]
        consumer = (await js.consumer_info(contract.ORDERS_STREAM, contract.ENGINE_CONSUMER)).config
        assert consumer.filter_subjects == [contract.QUEUE_ALL, contract.QUEUE_BATCH_ALL]
        assert all(line.endswith("up to date") for line in await provision(nc, dry_run=True))
    finally:
        await nc.close()
    account = new_id("UP")
    orders = crossing(account, 4)
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    try:
        async with BridgeClient(client_settings(handle)) as bridge, bridge.reports(account) as s:
            stored = await bridge.enqueue_batch(orders)
            await collect_until_final(s, {o.client_order_id for o in orders})
        assert len({q.seq for q in stored}) == 1  # one batch message
        await wait_for_ack_floor(handle)
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    check_exactly_once(await stored_reports(handle, account), orders)
