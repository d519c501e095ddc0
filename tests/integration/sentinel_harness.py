"""What the sentinel tests share: a server, the sentinel, a webhook receiver and the checks.

The violation tests (tests/integration/test_sentinel.py for what the server detects,
tests/integration/test_sentinel_engine.py for the engine's refusals) import the fixtures
``nats_server``, ``webhook``, ``sentinel`` and ``watch`` from here by name (as
``<name>_fixture``, so that the tests' parameters do not shadow the imports); each test module
gets its own module-scoped server, sentinel and webhook receiver. Every violation is checked
the same way (:func:`check_reported`), against the clock started at the offending action:

* the offending connection is gone within 1 s (the client's disconnected callback, or the
  server refusing the TLS or authentication handshake);
* the alert is on the ALERTS stream within 1 s, with the details (kind, identity and NKey,
  subject or account, connection id), is in the sentinel's log as one ERROR line, and reached
  the webhook in Alertmanager's format;
* nothing was executed (no execution report, no order record).

What each test measured is appended to :data:`RESULTS` and printed at the end of the run
(tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from bridge import contract
from bridge.security import alerts
from bridge.security.signing import Signer
from bridge.v1 import common_pb2, orders_pb2
from bridge.v1 import security_pb2 as pb
from bridge_dev.pki import DevCredentials
from bridge_dev.provision import provision
from bridge_dev.sentinel import LogLine, SentinelProcess
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as
from tests.nats_leaks import refused_connections

LIMIT_S = 1.0
"""The issue's bound: connection gone and alert received within a second."""
WAIT_S = 10.0
"""How long a test waits for an event before failing (the bound is checked separately)."""

# The webhook receiver (pytest-httpserver, on werkzeug) logs every request at INFO from its own
# thread, at times after pytest has closed the stream it captured ("I/O operation on closed
# file" in the run's output): warnings only.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


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


@pytest.fixture(scope="module", name="nats_server")
def nats_server_fixture(
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


@pytest.fixture(scope="module", name="webhook")
def webhook_fixture() -> Iterator[Webhook]:
    hook = Webhook()
    hook.server.expect_request("/alerts", method="POST").respond_with_handler(hook.handle)
    hook.server.start()
    try:
        yield hook
    finally:
        hook.server.clear()
        hook.server.stop()


@pytest.fixture(scope="module", name="sentinel")
def sentinel_fixture(
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


@pytest.fixture(name="watch")
async def watch_fixture(
    nats_server: ServerHandle, sentinel: SentinelProcess
) -> AsyncIterator[AlertWatch]:
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


async def refused_handshake(
    url: str, tls: ssl.SSLContext, seed: Path
) -> tuple[float, BaseException]:
    """Connect once (no retry); when and how the server refused it."""
    nc = Client()
    refused: tuple[float, BaseException] | None = None
    with refused_connections():
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
            refused = (time.monotonic(), exc)
        finally:
            await nc.close()
    if refused is None:
        raise AssertionError("the server accepted a connection it must refuse")
    return refused


async def count_executed(handle: ServerHandle, account: str, client_order_id: str) -> int:
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


def new_order(account: str, client_order_id: str) -> bytes:
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


async def check_reported(
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


# --------------------------------------------------------------------------- engine refusals


async def engine_refusal(
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
    executed = await count_executed(nats_server, "DESK-B", order_id)
    await check_reported(
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


async def real_refusal(
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
    executed = await count_executed(nats_server, "DESK-A", order_id)
    await check_reported(
        f"{label} (real engine)", t0, gone_at, alert_at, alert, watch, webhook, sentinel, executed
    )
