"""The client's side of issue 12 against the real nats-server and engine: signed orders reach
the engine from the identity's own inbox, and a permissions violation on the client's connection
closes the client within a second (``SecurityViolationError`` on what was pending,
``SECURITY_VIOLATION`` emitted, the server sees the connection gone)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from bridge import (
    BridgeClient,
    BridgeSettings,
    ConnectionEvent,
    ConnectionState,
    Order,
    OrderType,
    SecurityViolationError,
    Side,
    TimeInForce,
    contract,
)
from bridge.security.signing import Signer
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def market(account: str) -> Order:
    return Order(
        client_order_id=f"sec-{uuid.uuid4().hex[:12]}",
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(1),
        time_in_force=TimeInForce.IOC,
    )


class Lines(logging.Handler):
    """Every line the bridge logs, formatted (to search it for secrets)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.text.append(f"{record.getMessage()} {vars(record)!r}")


@pytest.fixture
def bridge_lines() -> Iterator[Lines]:
    logger = logging.getLogger("bridge")
    lines, level = Lines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(lines)
    logger.setLevel(level)


async def _connz(server: ServerHandle, cid: int) -> list[dict[str, Any]]:
    url = f"{server.monitor_url}/connz?cid={cid}"

    def fetch() -> list[dict[str, Any]]:
        with urllib.request.urlopen(url, timeout=5) as resp:
            conns: list[dict[str, Any]] = json.load(resp).get("connections") or []
            return conns

    return await asyncio.to_thread(fetch)


def _seed(settings: BridgeSettings) -> str:
    assert settings.nkey_seed_file is not None
    return settings.nkey_seed_file.read_text(encoding="ascii").strip()


async def test_signed_orders_from_the_identitys_inbox_are_served(
    engine: EngineProcess, settings: BridgeSettings, bridge_lines: Lines
) -> None:
    """The default inbox is the identity's own (derived from its key), the server lets it
    receive its replies, the engine answers signed orders; nothing logged shows the seed."""
    seed = _seed(settings)
    public_key = Signer(seed.encode()).public_key
    account = f"S{uuid.uuid4().hex[:8]}"
    async with BridgeClient(settings) as bridge, bridge.reports(account) as reports:
        assert bridge.signer == public_key
        ack = await bridge.submit(market(account))
        assert ack.accepted, ack
        queued = await bridge.enqueue(market(account))
        assert queued.stream == contract.ORDERS_STREAM
        state = await bridge.status(account, ack.client_order_id)
        assert state.found
        finals: dict[str, str] = {}
        while len(finals) < 2:  # bounded by the reads' timeout
            report = await reports.next(timeout=10)
            if report.is_final:
                finals[report.client_order_id] = report.signer
    # The engine records who signed each order in its reports.
    assert set(finals.values()) == {public_key}
    logged = "\n".join(bridge_lines.text)
    assert "bridge.connected" in logged
    assert seed not in logged
    assert seed[3:30] not in logged


async def test_a_permissions_violation_closes_the_client_within_a_second(
    nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """A request to a subject the orchestrator may not publish to (an engine-to-engine
    subject) is dropped by the server, which sends -ERR: the pending request fails with
    SecurityViolationError at once, the client closes its connection (the server no longer
    lists it) and emits SECURITY_VIOLATION then CLOSED, and every later call fails too."""
    events: list[tuple[ConnectionEvent, float]] = []
    bridge = BridgeClient(settings)
    bridge.on_connection_event(lambda e: events.append((e, time.monotonic())))
    await bridge.connect()
    transport = bridge._conn.transport  # the client's own connection, as the violation needs
    cid = transport._conn().client_id  # type: ignore[attr-defined]
    assert cid is not None
    assert await _connz(nats_server, cid)
    forbidden = contract.engine_cancel("someone-else")
    account = f"V{uuid.uuid4().hex[:8]}"
    try:
        async with bridge.reports(account) as stream:
            reading = asyncio.create_task(stream.next(timeout=30))
            started = time.monotonic()
            pending = asyncio.create_task(
                transport.request(forbidden, b"forged", timeout=30, headers={})
            )
            with pytest.raises(SecurityViolationError) as info:
                await asyncio.wait_for(pending, 1)
            failed_after = time.monotonic() - started
            with pytest.raises(SecurityViolationError):
                await asyncio.wait_for(reading, 1)
    finally:
        await bridge.close()  # returns once the violation has closed and told the listeners
    err = info.value
    assert err.reason == "PERMISSIONS_VIOLATION"
    assert err.subject == forbidden.lower()  # as the server names it (nats-py lower-cases)
    assert failed_after < 1.0
    kinds = [e for e, _ in events]
    assert kinds == [
        ConnectionEvent.CONNECTED,
        ConnectionEvent.SECURITY_VIOLATION,
        ConnectionEvent.CLOSED,
    ]
    assert events[1][1] - started < 1.0
    assert events[2][1] - started < 1.0  # closed, within a second of the violation
    assert bridge.connection_state is ConnectionState.CLOSED
    assert bridge.security_violation is not None
    with pytest.raises(SecurityViolationError):
        await bridge.submit(market(account))
    # The server's view: the connection is gone (closed by the client, not reconnecting).
    for _ in range(50):
        if not await _connz(nats_server, cid):
            break
        await asyncio.sleep(0.02)
    assert await _connz(nats_server, cid) == []


async def test_an_unsigned_order_is_refused_and_ends_the_client(
    engine: EngineProcess, settings: BridgeSettings
) -> None:
    """The engine refuses an unsigned submit (UNSIGNED): the caller gets the refusal as a
    SecurityViolationError carrying the ack, the client closes itself, the order does not
    exist (a signed client's status query finds nothing)."""
    unsigned = settings.model_copy(update={"sign_orders": False})
    account = f"U{uuid.uuid4().hex[:8]}"
    order = market(account)
    events: list[ConnectionEvent] = []
    bridge = BridgeClient(unsigned)
    bridge.on_connection_event(events.append)
    await bridge.connect()
    try:
        with pytest.raises(SecurityViolationError) as info:
            await bridge.submit(order)
    finally:
        await bridge.close()
    err = info.value
    assert err.reason == "UNSIGNED"
    assert err.ack is not None
    assert not err.ack.accepted
    assert err.text
    assert (err.subject, err.account) == (contract.submit(account), account)
    assert events[-2:] == [ConnectionEvent.SECURITY_VIOLATION, ConnectionEvent.CLOSED]
    assert bridge.connection_state is ConnectionState.CLOSED
    async with BridgeClient(settings) as signed_client:
        state = await signed_client.status(account, order.client_order_id)
    assert not state.found
