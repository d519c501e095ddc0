"""The sentinel against a real nats-server: what the server detects ends the connection and alerts.

One server, one sentinel and one local webhook receiver for the module
(tests/integration/sentinel_harness.py). Each test commits one kind of violation the server
detects, with raw nats-py (the bridge client would close itself first), or, in the last test,
with the BridgeClient, and checks against the clock started at the offending action that the
connection is gone and the alert on ALERTS, in the sentinel's log and at the webhook within
1 s, and that nothing was executed. The engine's refusals are in
tests/integration/test_sentinel_engine.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from pathlib import Path

import nats.errors
import pytest

from bridge import (
    BridgeClient,
    ConnectionEvent,
    Order,
    OrderType,
    SecurityViolationError,
    Side,
    TimeInForce,
    contract,
)
from bridge.v1 import security_pb2 as pb
from bridge_dev.engine import client_settings
from bridge_dev.pki import issue_cert, make_ca, write_nkey_seed
from bridge_dev.sentinel import SentinelProcess
from bridge_dev.server import ServerHandle, client_ssl_context
from tests.integration.sentinel_harness import (
    LIMIT_S,
    WAIT_S,
    AlertWatch,
    Offender,
    Webhook,
    check_reported,
    count_executed,
    nats_server_fixture,  # noqa: F401
    new_order,
    refused_handshake,
    sentinel_fixture,  # noqa: F401
    watch_fixture,  # noqa: F401
    webhook_fixture,  # noqa: F401
)

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- TLS and auth


async def test_no_client_certificate(
    nats_server: ServerHandle, sentinel: SentinelProcess, watch: AlertWatch, webhook: Webhook
) -> None:
    creds = nats_server.creds
    t0 = time.monotonic()
    gone_at, exc = await refused_handshake(
        nats_server.url, client_ssl_context(creds.ca_file), creds.identity("orchestrator").seed_file
    )
    assert not isinstance(exc, nats.errors.AuthorizationError)
    alert_at, alert = await watch.wait_for(
        lambda a: a.kind == pb.SECURITY_VIOLATION_KIND_NO_CLIENT_CERTIFICATE
    )
    assert alert.connection_id > 0
    assert alert.remote_address.startswith("127.0.0.1:")
    assert "didn't provide a certificate" in alert.reason
    assert alert.action == "connection closed by server (TLS handshake refused)"
    await check_reported(
        "no client certificate", t0, gone_at, alert_at, alert, watch, webhook, sentinel
    )


async def test_foreign_ca(
    nats_server: ServerHandle,
    sentinel: SentinelProcess,
    watch: AlertWatch,
    webhook: Webhook,
    tmp_path: Path,
) -> None:
    creds = nats_server.creds
    ca, ca_key = make_ca(tmp_path, "foreign-ca")
    cert, key = issue_cert(tmp_path, "desk-a", ca, ca_key, client=True, hosts=())
    t0 = time.monotonic()
    gone_at, _ = await refused_handshake(
        nats_server.url,
        client_ssl_context(creds.ca_file, cert, key),
        creds.identity("desk-a").seed_file,
    )
    alert_at, alert = await watch.wait_for(
        lambda a: a.kind == pb.SECURITY_VIOLATION_KIND_UNTRUSTED_CERTIFICATE
    )
    assert "unknown authority" in alert.reason
    assert "CN=desk-a" in alert.reason  # what the intruder's certificate claimed
    assert alert.identity == ""  # an untrusted certificate identifies nobody
    assert alert.connection_id > 0
    await check_reported("foreign CA", t0, gone_at, alert_at, alert, watch, webhook, sentinel)


async def test_unknown_nkey(
    nats_server: ServerHandle,
    sentinel: SentinelProcess,
    watch: AlertWatch,
    webhook: Webhook,
    tmp_path: Path,
) -> None:
    creds = nats_server.creds
    stranger = write_nkey_seed(tmp_path / "stranger.nk")
    desk = creds.identity("desk-a")
    t0 = time.monotonic()
    gone_at, exc = await refused_handshake(
        nats_server.url,
        client_ssl_context(creds.ca_file, desk.cert_file, desk.key_file),
        tmp_path / "stranger.nk",
    )
    assert "Authorization Violation" in str(exc)
    alert_at, alert = await watch.wait_for(
        lambda a: a.kind == pb.SECURITY_VIOLATION_KIND_AUTHENTICATION_FAILED and a.nkey == stranger
    )
    assert alert.identity == ""
    assert "is in no identity of the entitlements" in alert.reason
    assert alert.connection_id > 0
    assert alert.server_id.startswith("N")
    assert alert.remote_address == "127.0.0.1"
    await check_reported("unknown NKey", t0, gone_at, alert_at, alert, watch, webhook, sentinel)


# --------------------------------------------------------------------------- permissions


async def test_forbidden_subject(
    nats_server: ServerHandle, sentinel: SentinelProcess, watch: AlertWatch, webhook: Webhook
) -> None:
    """An orchestrator publishing an execution report: refused, kicked, alerted."""
    offender = await Offender().connect(nats_server, "orchestrator")
    cid = offender.nc.client_id
    forged = contract.executions("ACC-1", f"forged-{uuid.uuid4().hex[:8]}")
    try:
        t0 = time.monotonic()
        await offender.nc.publish(forged, b"a forged fill")
        await offender.nc.flush()
        gone_at = await offender.wait_gone()
        alert_at, alert = await watch.wait_for(lambda a: a.subject == forged)
    finally:
        await offender.close()
    assert alert.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH
    assert alert.identity == "orchestrator"
    assert alert.nkey == nats_server.creds.identity("orchestrator").public_nkey
    assert alert.connection_id == cid
    assert alert.action == f"kicked cid {cid}"
    assert alert.server_id.startswith("N")
    assert any("permissions violation" in str(e).lower() for e in offender.errors)
    await check_reported(
        "forbidden subject", t0, gone_at, alert_at, alert, watch, webhook, sentinel
    )


async def test_forbidden_subscription(
    nats_server: ServerHandle, sentinel: SentinelProcess, watch: AlertWatch, webhook: Webhook
) -> None:
    """desk-b subscribing to DESK-A's execution reports: refused, kicked, alerted."""
    offender = await Offender().connect(nats_server, "desk-b")
    cid = offender.nc.client_id
    subject = contract.executions_for_account("DESK-A")
    try:
        t0 = time.monotonic()
        await offender.nc.subscribe(subject)
        await offender.nc.flush()
        gone_at = await offender.wait_gone()
        alert_at, alert = await watch.wait_for(lambda a: a.subject == subject)
    finally:
        await offender.close()
    assert alert.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_SUBSCRIBE
    assert (alert.identity, alert.account, alert.connection_id) == ("desk-b", "DESK-A", cid)
    assert "desk-b may not subscribe to" in alert.reason
    assert alert.action == f"kicked cid {cid}"
    await check_reported(
        "forbidden subscription", t0, gone_at, alert_at, alert, watch, webhook, sentinel
    )


async def test_wrong_account(
    nats_server: ServerHandle, sentinel: SentinelProcess, watch: AlertWatch, webhook: Webhook
) -> None:
    """desk-a sends an order to DESK-B's submit subject: refused by the server, kicked."""
    offender = await Offender().connect(nats_server, "desk-a")
    cid = offender.nc.client_id
    order_id = f"wrong-acct-{uuid.uuid4().hex[:8]}"
    subject = contract.submit("DESK-B")
    try:
        t0 = time.monotonic()
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await offender.nc.request(subject, new_order("DESK-B", order_id), timeout=LIMIT_S)
        gone_at = await offender.wait_gone()
        alert_at, alert = await watch.wait_for(lambda a: a.subject == subject)
    finally:
        await offender.close()
    assert alert.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH
    assert (alert.identity, alert.account) == ("desk-a", "DESK-B")
    assert alert.nkey == nats_server.creds.identity("desk-a").public_nkey
    assert alert.connection_id == cid
    assert "not entitled to account DESK-B (entitled: DESK-A)" in alert.reason
    executed = await count_executed(nats_server, "DESK-B", order_id)
    await check_reported(
        "wrong account", t0, gone_at, alert_at, alert, watch, webhook, sentinel, executed
    )


async def test_bridge_client_closes_itself_and_the_sentinel_alerts(
    nats_server: ServerHandle, sentinel: SentinelProcess, watch: AlertWatch, webhook: Webhook
) -> None:
    """Both halves at once: desk-a's BridgeClient sends an order for DESK-B; the server refuses
    it, the client fails it with SecurityViolationError and closes itself, and the sentinel
    alerts (the connection is closed already, or it kicks it first: they race)."""
    bridge = BridgeClient(client_settings(nats_server, "desk-a", request_timeout_ms=5000))
    closed = asyncio.Event()
    closed_at = 0.0

    def on_event(event: ConnectionEvent) -> None:
        nonlocal closed_at
        if event is ConnectionEvent.CLOSED and not closed.is_set():
            closed_at = time.monotonic()
            closed.set()

    bridge.on_connection_event(on_event)
    await bridge.connect()
    order = Order(
        client_order_id=f"both-{uuid.uuid4().hex[:8]}",
        account="DESK-B",
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(1),
        time_in_force=TimeInForce.IOC,
    )
    try:
        t0 = time.monotonic()
        with pytest.raises(SecurityViolationError) as info:
            await bridge.submit(order)
        await asyncio.wait_for(closed.wait(), WAIT_S)
        alert_at, alert = await watch.wait_for(
            lambda a: a.subject == contract.submit("DESK-B") and a.identity == "desk-a"
        )
    finally:
        await bridge.close()
    assert info.value.reason == "PERMISSIONS_VIOLATION"
    assert alert.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH
    assert alert.account == "DESK-B"
    assert alert.action.startswith(("kicked cid", "connection already closed")), alert.action
    executed = await count_executed(nats_server, "DESK-B", order.client_order_id)
    await check_reported(
        "wrong account (BridgeClient)",
        t0,
        closed_at,
        alert_at,
        alert,
        watch,
        webhook,
        sentinel,
        executed,
    )
