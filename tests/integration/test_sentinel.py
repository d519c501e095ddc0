"""The sentinel against a real nats-server: each violation ends the connection and alerts.

One server, one sentinel and one local webhook receiver for the module. Each test commits one
kind of violation with raw nats-py (the bridge client would close itself first) and checks,
against the clock started at the offending action:

* the offending connection is gone within 1 s (the client's disconnected callback, or the
  server refusing the TLS or authentication handshake);
* the alert is on the ALERTS stream within 1 s, with the details (kind, identity and NKey,
  subject or account, connection id), is in the sentinel's log as one ERROR line, and reached
  the webhook in Alertmanager's format;
* nothing was executed (no execution report, no order record).

The engine's refusals (bad signature, replay) are raised by the real engine: desk-a sends a
forged signature, or replays a signed operation, and the sentinel must kick desk-a's connection
and alert with the refusal's id. The sentinel's side of it is also checked alone, with the
engine's ``SecurityAlert`` published on ALERTS as the engine identity (no engine running).
What each test measured is printed at the end of the run (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import queue
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

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
from bridge.security import alerts
from bridge.security.signing import Signer
from bridge.v1 import common_pb2, orders_pb2
from bridge.v1 import security_pb2 as pb
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.pki import DevCredentials, issue_cert, make_ca, write_nkey_seed
from bridge_dev.provision import provision
from bridge_dev.sentinel import LogLine, SentinelProcess
from bridge_dev.server import LocalNatsServer, ServerHandle, client_ssl_context, connect_as

pytestmark = pytest.mark.integration

LIMIT_S = 1.0
"""The issue's bound: connection gone and alert received within a second."""
WAIT_S = 10.0
"""How long a test waits for an event before failing (the bound is checked separately)."""


@dataclass
class Measured:
    kind: str
    refused: bool
    closed_after_ms: float | None
    alert_after_ms: float | None
    webhook_after_ms: float | None
    executed: int


RESULTS: list[Measured] = []
"""One row per violation kind, printed by tests/conftest.py at the end of the run."""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def nats_server(
    dev_creds: DevCredentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """A local server (the sentinel follows its log file, so never a container)."""
    log_file = tmp_path_factory.mktemp("sentinel-nats") / "nats-server.log"
    with LocalNatsServer(dev_creds, name="bridge-sentinel-test", log_file=log_file) as server:

        async def provision_as_operator() -> None:
            nc = await connect_as(server.handle.url, dev_creds, "operator")
            try:
                await provision(nc)
            finally:
                await nc.close()

        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, provision_as_operator()).result(timeout=30)
        yield server.handle


class Webhook:
    """A local Alertmanager webhook receiver: every alert POSTed, with its arrival time."""

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0)
        self.received: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.bodies: list[dict[str, Any]] = []

    def handle(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        self.bodies.append(body)
        for alert in body.get("alerts", []):
            self.received.put((time.monotonic(), {**alert, "_body": body}))
        return Response("ok")

    @property
    def url(self) -> str:
        return self.server.url_for("/alerts")

    def wait_for(self, alert_id: str, timeout: float = WAIT_S) -> tuple[float, dict[str, Any]]:
        """The webhook alert of ``alert_id`` and when it arrived (blocking)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"webhook: no alert {alert_id} within {timeout}s")
            try:
                at, alert = self.received.get(timeout=remaining)
            except queue.Empty:
                continue
            if alert["labels"].get("alert_id") == alert_id:
                return at, alert


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.server.expect_request("/alerts", method="POST").respond_with_handler(hook.handle)
    hook.server.start()
    try:
        yield hook
    finally:
        hook.server.clear()
        hook.server.stop()


@pytest.fixture(scope="module")
def sentinel(
    nats_server: ServerHandle, webhook: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SentinelProcess]:
    log_file = tmp_path_factory.mktemp("sentinel") / "sentinel.log"
    proc = SentinelProcess(nats_server, log_file=log_file, webhook_url=webhook.url).start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, f"sentinel exited with {code}; log tail:\n{proc.log_tail()}"


class AlertWatch:
    """The sentinel's alerts as published to ALERTS, with their arrival times."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.received: asyncio.Queue[tuple[float, pb.SecurityAlert]] = asyncio.Queue()

    async def on_msg(self, msg: Msg) -> None:
        alert = pb.SecurityAlert()
        alert.ParseFromString(msg.data)
        self.received.put_nowait((time.monotonic(), alert))

    async def wait_for(
        self, match: Callable[[pb.SecurityAlert], bool], timeout: float = WAIT_S
    ) -> tuple[float, pb.SecurityAlert]:
        """The first alert (from now on) that ``match``es, and when it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching alert on ALERTS within {timeout}s")
            try:
                at, alert = await asyncio.wait_for(self.received.get(), remaining)
            except TimeoutError:
                continue
            if match(alert):
                return at, alert

    async def stored(self, alert: pb.SecurityAlert) -> pb.SecurityAlert:
        """The alert as the ALERTS stream holds it (the last on its subject)."""
        js = self.nc.jetstream()
        msg = await js.get_last_msg(contract.ALERTS_STREAM, alerts.subject_of(alert))
        stored = pb.SecurityAlert()
        stored.ParseFromString(msg.data or b"")
        return stored


@pytest.fixture
async def watch(nats_server: ServerHandle, sentinel: SentinelProcess) -> AsyncIterator[AlertWatch]:
    """The operator watching the sentinel's alerts (subscribed before the test acts)."""
    nc = await connect_as(nats_server.url, nats_server.creds, "operator")
    watcher = AlertWatch(nc)
    await nc.subscribe(contract.alerts_from(alerts.SENTINEL), cb=watcher.on_msg)
    await nc.flush()
    try:
        yield watcher
    finally:
        await nc.close()


# --------------------------------------------------------------------------- helpers


@dataclass
class Offender:
    """A raw nats-py connection that records when the server dropped it."""

    nc: Client = field(default_factory=Client)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    gone_at: float = 0.0
    errors: list[Exception] = field(default_factory=list)

    async def connect(self, handle: ServerHandle, identity: str) -> Offender:
        async def disconnected() -> None:
            if not self.gone.is_set():
                self.gone_at = time.monotonic()
                self.gone.set()

        async def error(exc: Exception) -> None:
            self.errors.append(exc)

        self.nc = await connect_as(
            handle.url,
            handle.creds,
            identity,
            name=f"offender-{identity}",
            allow_reconnect=False,
            disconnected_cb=disconnected,
            error_cb=error,
        )
        return self

    async def wait_gone(self) -> float:
        await asyncio.wait_for(self.gone.wait(), WAIT_S)
        return self.gone_at

    async def close(self) -> None:
        await self.nc.close()


async def _refused_handshake(
    url: str, tls: ssl.SSLContext, seed: Path
) -> tuple[float, BaseException]:
    """Connect once (no retry); when and how the server refused it."""
    nc = Client()
    try:
        await nc.connect(
            servers=[url],
            tls=tls,
            nkeys_seed=str(seed),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=int(WAIT_S),
            name="intruder",
        )
    except Exception as exc:
        return time.monotonic(), exc
    finally:
        await nc.close()
    raise AssertionError("the server accepted a connection it must refuse")


async def _executed(handle: ServerHandle, account: str, client_order_id: str) -> int:
    """Execution reports and order records of one order (must be 0)."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    found = 0
    try:
        js = nc.jetstream()
        subject = contract.executions(account, client_order_id)
        try:
            await js.get_last_msg(contract.EXECUTIONS_STREAM, subject)
            found += 1
        except NotFoundError:
            pass
        kv = await js.key_value(contract.ORDERS_KV_BUCKET)
        try:
            await kv.get(contract.order_key(account, client_order_id))
            found += 1
        except nats.js.errors.KeyNotFoundError:
            pass
    finally:
        await nc.close()
    return found


def _new_order(account: str, client_order_id: str) -> bytes:
    order = orders_pb2.NewOrder(
        client_order_id=client_order_id,
        account=account,
        symbol="AAPL",
        side=orders_pb2.SIDE_BUY,
        order_type=orders_pb2.ORDER_TYPE_LIMIT,
        quantity=common_pb2.Decimal(units=1),
        limit_price=common_pb2.Decimal(units=1),
    )
    return order.SerializeToString()


async def _check_reported(
    kind: str,
    t0: float,
    gone_at: float,
    alert_at: float,
    alert: pb.SecurityAlert,
    watch: AlertWatch,
    webhook: Webhook,
    sentinel: SentinelProcess,
    executed: int = 0,
) -> None:
    """The common checks: bounds, the stored alert, the ERROR line, the webhook; records it."""
    stored = await watch.stored(alert)
    assert stored.alert_id == alert.alert_id, "the alert is not the last on its ALERTS subject"
    line: LogLine | None = await asyncio.to_thread(
        sentinel.wait_for_line, lambda ln: ln.get("alert_id") == alert.alert_id, WAIT_S
    )
    assert line is not None, f"no log line for {alert.alert_id}"
    assert line["level"] == "error"
    assert line["kind"] == alerts.kind_token(alert.kind)
    hook_at, hook = await asyncio.to_thread(webhook.wait_for, alert.alert_id)
    assert hook["labels"]["alertname"] == "BridgeSecurityViolation"
    assert hook["labels"]["kind"] == alerts.kind_token(alert.kind)
    assert hook["labels"]["severity"] == "critical"
    assert hook["status"] == "firing"
    assert hook["startsAt"].endswith("Z")
    assert hook["_body"]["version"] == "4"
    RESULTS.append(
        Measured(
            kind=kind,
            refused=True,
            closed_after_ms=(gone_at - t0) * 1000,
            alert_after_ms=(alert_at - t0) * 1000,
            webhook_after_ms=(hook_at - t0) * 1000,
            executed=executed,
        )
    )
    assert gone_at - t0 < LIMIT_S, f"connection gone after {gone_at - t0:.3f}s"
    assert alert_at - t0 < LIMIT_S, f"alert after {alert_at - t0:.3f}s"
    assert executed == 0


# --------------------------------------------------------------------------- TLS and auth


async def test_no_client_certificate(
    nats_server: ServerHandle, sentinel: SentinelProcess, watch: AlertWatch, webhook: Webhook
) -> None:
    creds = nats_server.creds
    t0 = time.monotonic()
    gone_at, exc = await _refused_handshake(
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
    await _check_reported(
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
    gone_at, _ = await _refused_handshake(
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
    await _check_reported("foreign CA", t0, gone_at, alert_at, alert, watch, webhook, sentinel)


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
    gone_at, exc = await _refused_handshake(
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
    await _check_reported("unknown NKey", t0, gone_at, alert_at, alert, watch, webhook, sentinel)


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
    await _check_reported(
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
    await _check_reported(
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
            await offender.nc.request(subject, _new_order("DESK-B", order_id), timeout=LIMIT_S)
        gone_at = await offender.wait_gone()
        alert_at, alert = await watch.wait_for(lambda a: a.subject == subject)
    finally:
        await offender.close()
    assert alert.kind == pb.SECURITY_VIOLATION_KIND_FORBIDDEN_PUBLISH
    assert (alert.identity, alert.account) == ("desk-a", "DESK-B")
    assert alert.nkey == nats_server.creds.identity("desk-a").public_nkey
    assert alert.connection_id == cid
    assert "not entitled to account DESK-B (entitled: DESK-A)" in alert.reason
    executed = await _executed(nats_server, "DESK-B", order_id)
    await _check_reported(
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
    executed = await _executed(nats_server, "DESK-B", order.client_order_id)
    await _check_reported(
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


# --------------------------------------------------------------------------- engine refusals


async def _engine_refusal(
    nats_server: ServerHandle,
    sentinel: SentinelProcess,
    watch: AlertWatch,
    webhook: Webhook,
    kind: pb.SecurityViolationKind.ValueType,
    label: str,
) -> None:
    """The engine's refusal as the engine publishes it; the signer (desk-b) is connected."""
    offender = await Offender().connect(nats_server, "desk-b")
    cid = offender.nc.client_id
    signer = nats_server.creds.identity("desk-b").public_nkey
    order_id = f"refused-{uuid.uuid4().hex[:8]}"
    refusal = alerts.new_alert(
        kind,
        source=alerts.ENGINE,
        identity="desk-b",
        nkey=signer,
        subject=contract.submit("DESK-B"),
        account="DESK-B",
        reason=f"{label}: refused by the engine",
        action="refused",
        engine_id="engine-1",
        client_order_id=order_id,
        correlation_id=uuid.uuid4().hex,
    )
    engine = await connect_as(nats_server.url, nats_server.creds, "engine")
    try:
        t0 = time.monotonic()
        await engine.jetstream().publish(alerts.subject_of(refusal), refusal.SerializeToString())
        gone_at = await offender.wait_gone()
        alert_at, alert = await watch.wait_for(lambda a: a.caused_by == refusal.alert_id)
    finally:
        await engine.close()
        await offender.close()
    assert alert.kind == kind
    assert (alert.identity, alert.nkey, alert.account) == ("desk-b", signer, "DESK-B")
    assert alert.connection_id == cid
    assert alert.action == f"kicked cid {cid}"
    assert (alert.engine_id, alert.client_order_id) == ("engine-1", order_id)
    assert alert.reason.startswith("engine engine-1 refused: ")
    executed = await _executed(nats_server, "DESK-B", order_id)
    await _check_reported(
        f"{label} (engine alert injected)",
        t0,
        gone_at,
        alert_at,
        alert,
        watch,
        webhook,
        sentinel,
        executed,
    )


async def test_bad_signature_refusal_kicks_the_signer(
    nats_server: ServerHandle, sentinel: SentinelProcess, watch: AlertWatch, webhook: Webhook
) -> None:
    await _engine_refusal(
        nats_server,
        sentinel,
        watch,
        webhook,
        pb.SECURITY_VIOLATION_KIND_BAD_SIGNATURE,
        "bad signature",
    )


async def test_replay_refusal_kicks_the_signer(
    nats_server: ServerHandle, sentinel: SentinelProcess, watch: AlertWatch, webhook: Webhook
) -> None:
    await _engine_refusal(
        nats_server, sentinel, watch, webhook, pb.SECURITY_VIOLATION_KIND_REPLAYED, "replay"
    )


# --------------------------------------------------------------------------- the real engine


async def _real_refusal(
    nats_server: ServerHandle,
    sentinel: SentinelProcess,
    watch: AlertWatch,
    webhook: Webhook,
    *,
    label: str,
    kind: pb.SecurityViolationKind.ValueType,
    reason: orders_pb2.RejectReason.ValueType,
    subject: str,
    payload: bytes,
    order_id: str,
    forge: Callable[[dict[str, str]], dict[str, str]],
    replay: bool,
) -> None:
    """desk-a sends one order operation the engine must refuse (a forged signature, or a
    replay of a signed one it already sent): the engine answers REJECTED with the reason and
    alerts; the sentinel kicks desk-a and alerts with the engine's alert id."""
    offender = await Offender().connect(nats_server, "desk-a")
    cid = offender.nc.client_id
    signer = Signer(nats_server.creds.identity("desk-a").seed_file.read_bytes().strip())
    headers = signer.headers(subject, payload)
    try:
        if replay:
            first = await offender.nc.request(subject, payload, headers=headers, timeout=WAIT_S)
            assert orders_pb2.OrderAck.FromString(first.data).reason != reason
        t0 = time.monotonic()
        answer = await offender.nc.request(subject, payload, headers=forge(headers), timeout=WAIT_S)
        gone_at = await offender.wait_gone()
        alert_at, alert = await watch.wait_for(
            lambda a: a.kind == kind and a.nkey == signer.public_key
        )
    finally:
        await offender.close()
    ack = orders_pb2.OrderAck.FromString(answer.data)
    assert ack.status == orders_pb2.ACK_STATUS_REJECTED
    assert ack.reason == reason, ack.text
    assert alert.caused_by, "the sentinel's alert names the engine's"
    assert (alert.identity, alert.account, alert.connection_id) == ("desk-a", "DESK-A", cid)
    assert alert.action == f"kicked cid {cid}"
    assert alert.engine_id
    executed = await _executed(nats_server, "DESK-A", order_id)
    await _check_reported(
        f"{label} (real engine)", t0, gone_at, alert_at, alert, watch, webhook, sentinel, executed
    )


async def test_bad_signature_real_engine(
    nats_server: ServerHandle,
    engine: EngineProcess,
    sentinel: SentinelProcess,
    watch: AlertWatch,
    webhook: Webhook,
) -> None:
    order_id = f"badsig-{uuid.uuid4().hex[:8]}"

    def tamper(headers: dict[str, str]) -> dict[str, str]:
        signature = headers[contract.HEADER_SIGNATURE]
        flipped = "A" if signature[0] != "A" else "B"
        return {**headers, contract.HEADER_SIGNATURE: flipped + signature[1:]}

    await _real_refusal(
        nats_server,
        sentinel,
        watch,
        webhook,
        label="bad signature",
        kind=pb.SECURITY_VIOLATION_KIND_BAD_SIGNATURE,
        reason=orders_pb2.REJECT_REASON_BAD_SIGNATURE,
        subject=contract.submit("DESK-A"),
        payload=_new_order("DESK-A", order_id),
        order_id=order_id,
        forge=tamper,
        replay=False,
    )


async def test_replay_real_engine(
    nats_server: ServerHandle,
    engine: EngineProcess,
    sentinel: SentinelProcess,
    watch: AlertWatch,
    webhook: Webhook,
) -> None:
    """A signed cancel of an order that does not exist (nothing to execute), sent twice."""
    order_id = f"replay-{uuid.uuid4().hex[:8]}"
    cancel = orders_pb2.CancelRequest(account="DESK-A", client_order_id=order_id)
    await _real_refusal(
        nats_server,
        sentinel,
        watch,
        webhook,
        label="replay",
        kind=pb.SECURITY_VIOLATION_KIND_REPLAYED,
        reason=orders_pb2.REJECT_REASON_REPLAYED,
        subject=contract.cancel("DESK-A"),
        payload=cancel.SerializeToString(),
        order_id=order_id,
        forge=lambda headers: headers,
        replay=True,
    )


# --------------------------------------------------------------------------- hygiene


async def test_sentinel_logs_no_secret(
    nats_server: ServerHandle, sentinel: SentinelProcess
) -> None:
    """Its log holds public keys at most: no seed of any identity, no private key."""
    text = sentinel.log_file.read_text("utf-8")
    creds = nats_server.creds
    for name in ("sentinel", "sentinel-system", "orchestrator", "desk-a", "desk-b"):
        identity = creds.identity(name)
        seed = identity.seed_file.read_text("ascii").strip()
        assert seed not in text, f"{name}'s seed is in the sentinel's log"
        assert "PRIVATE KEY" not in text
