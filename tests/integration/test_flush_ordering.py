"""nats-py's flush() can return before earlier commands reach the server; flush_ordered cannot."""

from __future__ import annotations

import asyncio

import pytest

from bridge.client import flush_ordered
from bridge_dev.server import ServerHandle, connect_as

pytestmark = pytest.mark.integration

ROUNDS = 200


async def test_subscription_is_live_for_other_connections_after_flush_ordered(
    nats_server: ServerHandle,
) -> None:
    """A message published on connection B right after A's flush_ordered always reaches A."""
    lost = []
    for i in range(ROUNDS):
        subscriber = await connect_as(nats_server.url, nats_server.creds, "operator")
        publisher = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
        try:
            got = asyncio.Event()

            async def on_msg(_msg: object, got: asyncio.Event = got) -> None:
                got.set()

            await subscriber.subscribe(f"bridge.v1.orders.queue.FLUSH{i}", cb=on_msg)
            await flush_ordered(subscriber)
            await publisher.publish(f"bridge.v1.orders.queue.FLUSH{i}", b"x")
            await flush_ordered(publisher)
            try:
                await asyncio.wait_for(got.wait(), timeout=5)
            except TimeoutError:
                lost.append(i)
        finally:
            await publisher.close()
            await subscriber.close()
    assert lost == [], f"{len(lost)} of {ROUNDS} first messages never arrived: {lost}"
