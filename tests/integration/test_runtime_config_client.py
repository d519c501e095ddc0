"""The client's runtime configuration against a real nats-server (and the real engine where
orders go through): routing changes move the next orders to the other pattern, a bad document
is refused and the old configuration keeps working, client limits and the log level change at
run time, and the watch survives a server restart. Every wait is on a ConfigApplied message."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg

from bridge import (
    AckStatus,
    BridgeClient,
    BridgeSettings,
    Order,
    OrderAck,
    OrderType,
    QueuedOrder,
    Side,
    TimeInForce,
    contract,
)
from bridge.runtime_config import documents, store
from bridge.security.signing import Signer
from bridge.v1 import market_data_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as
from bridge_dev.signing import dev_signer
from tests.integration.test_order_path import new_id

pytestmark = pytest.mark.integration


class Operator:
    """The operator's connection: writes signed documents, collects ConfigApplied answers."""

    def __init__(self, nc: NatsConnection, signer: Signer) -> None:
        self.nc, self.signer = nc, signer
        self.applied: asyncio.Queue[market_data_pb2.ConfigApplied] = asyncio.Queue()

    async def start(self) -> None:
        async def on_applied(msg: Msg) -> None:
            answer = market_data_pb2.ConfigApplied()
            answer.ParseFromString(msg.data)
            await self.applied.put(answer)

        await self.nc.subscribe(contract.config_applied("client"), cb=on_applied)
        await self.nc.flush()

    async def put(
        self, key: str, document: dict[str, Any] | bytes, signer: Signer | None = None
    ) -> market_data_pb2.ConfigApplied:
        """Write one revision and wait for the client's ConfigApplied of it."""
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        revision = await store.put(self.nc, key, body, signer or self.signer)
        return await self.answer(key, revision)

    async def delete(self, key: str) -> market_data_pb2.ConfigApplied:
        return await self.answer(key, await store.delete(self.nc, key))

    async def answer(self, key: str, revision: int) -> market_data_pb2.ConfigApplied:
        async with asyncio.timeout(10):
            while True:
                answer = await self.applied.get()
                if answer.document == key and answer.revision == revision:
                    return answer


@pytest.fixture
async def operator(nats_server: ServerHandle) -> AsyncIterator[Operator]:
    nc = await connect_as(nats_server.url, nats_server.creds, "operator")
    try:
        op = Operator(nc, dev_signer(nats_server.creds, "operator"))
        await op.start()
        yield op
        for key in documents.CLIENT_KEYS:  # the next test starts without documents
            await store.delete(nc, key)
    finally:
        await nc.close()


def limit(account: str, side: Side = Side.BUY) -> Order:
    return Order(
        client_order_id=new_id("l"),
        account=account,
        symbol="AAPL",
        side=side,
        order_type=OrderType.LIMIT,
        quantity=Decimal("1"),
        limit_price=Decimal("1.00"),  # far from the house book: rests
        time_in_force=TimeInForce.GTC,
    )


def market(account: str) -> Order:
    return Order(
        client_order_id=new_id("m"),
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal("1"),
        time_in_force=TimeInForce.IOC,
    )


async def test_routing_change_moves_the_next_orders_to_the_other_pattern(
    engine: EngineProcess, settings: BridgeSettings, operator: Operator
) -> None:
    account = "ACC1"
    async with BridgeClient(settings) as bridge:
        # No routing document: every order sync.
        assert isinstance(await bridge.send(limit(account)), OrderAck)
        applied = await operator.put("routing", {"version": 1, "default": "queued"})
        assert applied.applied, applied
        assert applied.instance == settings.client_name
        assert isinstance(await bridge.send(limit(account)), QueuedOrder)

        rule = {"pattern": "sync", "order_type": "MARKET"}
        applied = await operator.put(
            "routing", {"version": 1, "default": "queued", "rules": [rule]}
        )
        assert applied.applied
        assert bridge.routing.revision == applied.revision
        ack = await bridge.send(market(account))
        assert isinstance(ack, OrderAck)
        assert ack.status is AckStatus.ACCEPTED
        assert isinstance(await bridge.send(limit(account)), QueuedOrder)

        # Deleted: back to the default (sync).
        assert (await operator.delete("routing")).applied
        assert isinstance(await bridge.send(limit(account)), OrderAck)


async def test_bad_documents_are_refused_and_the_old_configuration_keeps_working(
    settings: BridgeSettings, operator: Operator, nats_server: ServerHandle
) -> None:
    async with BridgeClient(settings) as bridge:
        good = {"version": 1, "request_timeout_ms": 1234, "max_inflight": 3}
        applied = await operator.put("client", good)
        assert applied.applied
        assert bridge.settings.request_timeout_ms == 1234
        assert bridge.settings.max_inflight == 3
        assert bridge._pipeline._inflight.capacity == 3

        # Schema refusal: field and rule; the previous settings stay.
        refused = await operator.put("client", {"version": 1, "max_inflight": 0})
        assert not refused.applied
        assert [(e.field, e.rule) for e in refused.errors] == [("max_inflight", "minimum")]
        assert bridge.settings.max_inflight == 3
        # Not JSON.
        refused = await operator.put("client", b"{")
        assert [(e.field, e.rule) for e in refused.errors] == [("<document>", "json")]
        # Valid for the schema, not for the client's settings (deadline must be > 0).
        refused = await operator.put("client", {"version": 1, "order_retry_deadline_ms": 0})
        assert [(e.field, e.rule) for e in refused.errors] == [
            ("order_retry_deadline_ms", "settings")
        ]
        # A signature that does not verify (another body signed) is refused.
        forged = dev_signer(nats_server.creds, "operator")
        body = json.dumps({"version": 1, "max_inflight": 99}).encode()
        headers = forged.headers(store.subject("client"), b"something else")
        revision = int(
            (
                await operator.nc.jetstream().publish(
                    store.subject("client"), body, stream=store.STREAM, headers=headers
                )
            ).seq
        )
        refused = await operator.answer("client", revision)
        assert [(e.field, e.rule) for e in refused.errors] == [("<document>", "signature")]
        assert bridge.settings.max_inflight == 3
        assert bridge.runtime_config is not None
        assert bridge.runtime_config.documents["client"] == good
        # The old configuration keeps working: a batch through 3 in-flight slots, all stored.
        queued = await bridge.enqueue_batch([limit("ACC1") for _ in range(10)])
        assert len(queued) == 10
        assert bridge._pipeline._inflight.taken == 0

        # Unsigned documents are accepted (only the operator may write the bucket).
        revision = await store.put(operator.nc, "client", json.dumps(good).encode(), None)
        assert (await operator.answer("client", revision)).applied

        # Log level of the client's loggers, at run time; deleted -> the application's level.
        bridge_logger = logging.getLogger("bridge")
        before = bridge_logger.level
        assert (await operator.put("log_levels", {"version": 1, "client": "debug"})).applied
        assert bridge_logger.level == logging.DEBUG
        assert (await operator.put("log_levels", {"version": 1, "engine": "info"})).applied
        assert bridge_logger.level == before
        assert (await operator.delete("client")).applied
        assert bridge.settings == settings


async def test_a_closed_client_gives_the_log_level_back(
    settings: BridgeSettings, operator: Operator
) -> None:
    """The bridge.* loggers are the process's: a level a client's watch set is undone when
    that client closes, even though the document is still in force (a later client of the
    same process, or the application itself, starts from the application's level)."""
    bridge_logger = logging.getLogger("bridge")
    before = bridge_logger.level
    try:
        async with BridgeClient(settings):
            assert (await operator.put("log_levels", {"version": 1, "client": "error"})).applied
            assert bridge_logger.level == logging.ERROR
        assert bridge_logger.level == before
    finally:
        await store.delete(operator.nc, "log_levels")  # no client left to answer


async def test_a_client_starts_with_the_documents_in_force(
    settings: BridgeSettings, operator: Operator
) -> None:
    body = json.dumps({"version": 1, "default": "queued"}).encode()
    revision = await store.put(operator.nc, "routing", body, operator.signer)  # no client runs
    async with BridgeClient(settings) as bridge:  # connect() returns with it applied
        assert bridge.routing.default == "queued"
        assert bridge.routing.revision == revision


@pytest.mark.projections("fsync")  # the engine rides out the server restart
async def test_the_watch_survives_a_server_restart(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    handle = fresh_server.handle
    settings = client_settings(handle, request_timeout_ms=2000)
    async with BridgeClient(settings) as bridge:
        nc = await connect_as(handle.url, handle.creds, "operator")
        op = Operator(nc, dev_signer(handle.creds, "operator"))
        await op.start()
        assert (await op.put("routing", {"version": 1, "default": "queued"})).applied
        await nc.close()

        fresh_server.kill()
        await asyncio.to_thread(fresh_server.start)

        nc = await connect_as(handle.url, handle.creds, "operator")
        try:
            op = Operator(nc, dev_signer(handle.creds, "operator"))
            await op.start()
            applied = await op.put("routing", {"version": 1, "default": "sync"})
            assert applied.applied
            assert bridge.routing.default == "sync"
            assert bridge.routing.revision == applied.revision
        finally:
            await nc.close()


async def test_a_change_applies_within_a_second(
    settings: BridgeSettings, operator: Operator
) -> None:
    """Write -> the client's ConfigApplied received by the writer, 20 routing revisions."""
    samples: list[float] = []
    async with BridgeClient(settings) as bridge:
        for i in range(20):
            default = "queued" if i % 2 else "sync"
            started = time.perf_counter()
            applied = await operator.put("routing", {"version": 1, "default": default})
            samples.append((time.perf_counter() - started) * 1000)
            assert applied.applied
            assert bridge.routing.default == default
    samples.sort()
    print(f"\nconfig write -> client applied (ms): p50={samples[10]:.2f} max={samples[-1]:.2f}")
    assert samples[-1] < 1000
