"""Security tests against a real nats-server: mTLS, TLS 1.3 floor, NKeys, role permissions."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError

from bridge import contract
from bridge.client import flush_ordered
from bridge_dev.pki import DevCredentials, issue_cert, make_ca, write_nkey_seed
from bridge_dev.server import ServerHandle, client_ssl_context, connect_as
from tests.nats_leaks import refused_connections

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

_FAIL_FAST: dict[str, Any] = {
    "allow_reconnect": False,
    "max_reconnect_attempts": 0,
    "connect_timeout": 2,
}


async def _ignore_error(_exc: Exception) -> None:
    """Swallow client-side error callbacks (the raised exception is what we assert on)."""


async def _connect_must_fail(url: str, **options: Any) -> BaseException:
    """Connect expecting failure; return the exception (fails the test if it connects)."""
    try:
        nc = Client()
        with refused_connections():
            await nc.connect(url, error_cb=_ignore_error, **_FAIL_FAST, **options)
    except (OSError, NatsError) as exc:  # ssl.SSLError is an OSError
        return exc
    await nc.close()
    pytest.fail("connection unexpectedly succeeded")


async def _connz(server: ServerHandle, cid: int | None) -> dict[str, Any]:
    url = f"{server.monitor_url}/connz?cid={cid}&auth=true"

    def fetch() -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
            return data

    return await asyncio.to_thread(fetch)


async def _assert_server_logged(server: ServerHandle, text: str) -> None:
    """The local server's log records ``text`` (it may be written just after the client sees
    the failure, so poll briefly). Skipped when the log is not accessible (container)."""
    if server.log_file is None:
        return
    log_file = server.log_file
    for _ in range(100):
        if text in log_file.read_text(encoding="utf-8", errors="replace"):
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"server log {log_file} does not contain {text!r}")


def _assert_tls_client_cert_rejected(exc: BaseException, reason: str) -> None:
    """In TLS 1.3 the server checks the client certificate after the client considers the
    handshake done, so the client sees either the server's alert or, when the server's
    close overtakes it (the client's CONNECT arrives at a closed socket -> RST), a reset.
    Either way it is a transport-level failure, never a NATS-level (auth) error."""
    if isinstance(exc, ssl.SSLError):
        assert exc.reason == reason, repr(exc)
    else:
        assert isinstance(exc, ConnectionResetError | BrokenPipeError), repr(exc)


def _orchestrator_nkey_opts(creds: DevCredentials) -> dict[str, object]:
    role = creds.role("orchestrator")
    return {"nkeys_seed": str(role.seed_file), "inbox_prefix": role.inbox_prefix}


async def test_orchestrator_connects_and_round_trips(nats_server: ServerHandle) -> None:
    """The orchestrator (cert + NKey) connects over TLS 1.3 and gets JetStream replies."""
    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator", **_FAIL_FAST)
    try:
        info = json.loads((await nc.request("$JS.API.INFO", b"", timeout=5)).data)
        assert info["type"] == "io.nats.jetstream.api.v1.account_info_response"
        assert "error" not in info
        orders = json.loads((await nc.request("$JS.API.STREAM.INFO.ORDERS", b"", timeout=5)).data)
        assert orders["config"]["retention"] == "workqueue"
        assert orders["config"]["subjects"] == [
            contract.QUEUE_ALL,
            contract.QUEUE_BATCH_ALL,
            contract.QUEUE_PARTITION_ALL,
        ]
        # The server's view of this connection: TLS 1.3, authenticated as the orchestrator.
        conn = (await _connz(nats_server, nc.client_id))["connections"][0]
        assert conn["tls_version"] == "1.3"
        assert conn["authorized_user"] == nats_server.creds.role("orchestrator").public_nkey
    finally:
        await nc.close()


async def test_client_without_certificate_is_rejected(nats_server: ServerHandle) -> None:
    """A client presenting no certificate fails the TLS handshake (certificate required)."""
    creds = nats_server.creds
    exc = await _connect_must_fail(
        nats_server.url, tls=client_ssl_context(creds.ca_file), **_orchestrator_nkey_opts(creds)
    )
    _assert_tls_client_cert_rejected(exc, "TLSV13_ALERT_CERTIFICATE_REQUIRED")
    await _assert_server_logged(
        nats_server, "TLS handshake error: tls: client didn't provide a certificate"
    )


async def test_certificate_from_foreign_ca_is_rejected(
    nats_server: ServerHandle, tmp_path: Path
) -> None:
    """A client certificate signed by another CA fails the TLS handshake (unknown CA)."""
    creds = nats_server.creds
    ca_cert, ca_key = make_ca(tmp_path, "foreign-ca")
    cert, key = issue_cert(tmp_path, "orchestrator", ca_cert, ca_key, client=True, hosts=())
    exc = await _connect_must_fail(
        nats_server.url,
        tls=client_ssl_context(creds.ca_file, cert, key),
        **_orchestrator_nkey_opts(creds),
    )
    _assert_tls_client_cert_rejected(exc, "TLSV1_ALERT_UNKNOWN_CA")
    await _assert_server_logged(nats_server, "certificate signed by unknown authority")


async def test_unknown_nkey_is_rejected(nats_server: ServerHandle, tmp_path: Path) -> None:
    """A valid client certificate with an unregistered NKey gets an authorization violation."""
    creds = nats_server.creds
    role = creds.role("orchestrator")
    seed = tmp_path / "stranger.nk"
    public_key = write_nkey_seed(seed)
    assert public_key not in {creds.role(r).public_nkey for r in ("orchestrator", "engine")}
    exc = await _connect_must_fail(
        nats_server.url,
        tls=client_ssl_context(creds.ca_file, role.cert_file, role.key_file),
        nkeys_seed=str(seed),
        inbox_prefix=role.inbox_prefix,
    )
    assert isinstance(exc, NatsError), repr(exc)
    assert not isinstance(exc, ssl.SSLError)
    assert "authorization violation" in str(exc).lower(), repr(exc)
    await _assert_server_logged(nats_server, f'authentication error - Nkey "{public_key}"')


async def test_orchestrator_cannot_publish_execution_reports(nats_server: ServerHandle) -> None:
    """The orchestrator's exec publish is dropped with a permissions violation; queue passes."""
    creds = nats_server.creds
    errors: list[Exception] = []

    async def record_error(exc: Exception) -> None:
        errors.append(exc)

    observer = await connect_as(nats_server.url, creds, "operator", **_FAIL_FAST)
    orchestrator = await connect_as(
        nats_server.url, creds, "orchestrator", error_cb=record_error, **_FAIL_FAST
    )
    try:
        exec_sub = await observer.subscribe("bridge.v1.exec.>")
        queue_sub = await observer.subscribe("bridge.v1.orders.queue.>")
        await flush_ordered(observer)  # subscriptions registered before anything is published

        await orchestrator.publish("bridge.v1.exec.ACC.X", b"forged fill")
        await orchestrator.publish("bridge.v1.orders.queue.ACC", b"order")
        await flush_ordered(orchestrator)

        allowed = await queue_sub.next_msg(timeout=5)
        assert allowed.subject == "bridge.v1.orders.queue.ACC"
        assert allowed.data == b"order"
        # The server delivers one publisher's messages in order and the client parser
        # enqueues each before reading the next: a forwarded exec message would already be
        # pending here.
        assert exec_sub.pending_msgs == 0
        violations = [e for e in errors if "permissions violation" in str(e).lower()]
        assert violations, f"no permissions violation reported: {errors!r}"
        assert "bridge.v1.exec.acc.x" in str(violations[0]).lower()
        # The server by itself only refuses the message: ending the connection is the
        # sentinel's job (tests/integration/test_sentinel.py) and, for a BridgeClient, the
        # client's own (test_client_security.py).
        assert orchestrator.is_connected
    finally:
        await orchestrator.close()
        await observer.close()


async def test_tls_below_1_3_is_refused(nats_server: ServerHandle) -> None:
    """A client limited to TLS 1.2 (valid cert and NKey otherwise) is refused."""
    creds = nats_server.creds
    role = creds.role("orchestrator")
    ctx = client_ssl_context(
        creds.ca_file,
        role.cert_file,
        role.key_file,
        minimum_version=ssl.TLSVersion.TLSv1_2,
        maximum_version=ssl.TLSVersion.TLSv1_2,
    )
    exc = await _connect_must_fail(nats_server.url, tls=ctx, **_orchestrator_nkey_opts(creds))
    # Version negotiation fails inside the handshake proper, so this one is deterministic.
    assert isinstance(exc, ssl.SSLError), repr(exc)
    assert exc.reason == "TLSV1_ALERT_PROTOCOL_VERSION", repr(exc)
    await _assert_server_logged(nats_server, "client offered only unsupported versions")
