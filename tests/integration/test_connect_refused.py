"""A first connect that no server answers ends in ``ConnectionFailedError`` at
``connect_deadline_ms``, naming why, with the default ``max_reconnect_attempts = -1``.

nats-py's initial server selection retries a refused server forever when reconnects are
unlimited; the transport bounds it so the client's deadline holds (found by ``bridge health``
hanging on a stopped server).
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from bridge.client import BridgeClient
from bridge.errors import ConnectionFailedError
from bridge_dev.engine import client_settings
from bridge_dev.server import ServerHandle

pytestmark = pytest.mark.integration


async def test_refused_first_connect_fails_at_the_deadline_naming_the_refusal(
    nats_server: ServerHandle,
) -> None:
    # A port bound but not listening: every connect to it is refused, and nothing else can
    # take it while the socket is held.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        settings = client_settings(nats_server).model_copy(
            update={"nats_url": f"tls://127.0.0.1:{port}", "connect_deadline_ms": 1500}
        )
        assert settings.max_reconnect_attempts == -1  # the default: never give up later
        client = BridgeClient(settings)
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError) as failed:
            # the bound that turns a hang into a failure; the deadline ends it far sooner
            await asyncio.wait_for(client.connect(), timeout=60)
        elapsed = time.monotonic() - started
    assert "ConnectionRefusedError" in str(failed.value), str(failed.value)
    assert f"127.0.0.1:{port}" in str(failed.value)
    assert elapsed >= 1.5, f"gave up after {elapsed:.2f} s, before connect_deadline_ms"
