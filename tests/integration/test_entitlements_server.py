"""The server enforces the entitlements file (issue 12, item 1), against a real nats-server.

The accounts and users are rendered from the entitlements (``bridge.security.server_auth``):
an orchestrator identity may trade and read only its own accounts and use only its own inbox.
A change of the file is applied by a configuration reload, without a restart: existing
connections stay up, an added identity can connect, a removed one cannot (and its connection is
closed by the server).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError

from bridge import BridgeClient, Order, OrderType, Side, TimeInForce, contract
from bridge.security import entitlements as ent
from bridge.security import entitlements_cli
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.nats_config import PID_FILE
from bridge_dev.pki import write_nkey_seed
from bridge_dev.server import LocalNatsServer, ServerHandle, client_ssl_context, connect_as
from tests.nats_leaks import refused_connections

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

_FAIL_FAST: dict[str, Any] = {
    "allow_reconnect": False,
    "max_reconnect_attempts": 0,
    "connect_timeout": 2,
}
_WAIT_S = 5


class _Watch:
    """A connection's asynchronous errors and closure, as events a test can wait for."""

    def __init__(self) -> None:
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def error_cb(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)

    async def closed_cb(self) -> None:
        self.closed.set()

    async def violation(self, subject: str) -> str:
        """The server's permissions violation for ``subject`` (fails after a bounded wait)."""
        seen: list[str] = []
        try:
            async with asyncio.timeout(_WAIT_S):
                while True:
                    text = str(await self.errors.get())
                    seen.append(text)
                    lowered = text.lower()
                    if "permissions violation" in lowered and f'"{subject.lower()}"' in lowered:
                        return text
        except TimeoutError:
            pytest.fail(f"no permissions violation for {subject!r}; errors seen: {seen}")

    def no_errors(self) -> None:
        assert self.errors.empty(), f"unexpected errors: {self.errors}"


@asynccontextmanager
async def _connected(
    handle: ServerHandle, identity: str, entitlements: ent.Entitlements | None = None
) -> AsyncIterator[tuple[Client, _Watch]]:
    watch = _Watch()
    nc = await connect_as(
        handle.url,
        handle.creds,
        identity,
        entitlements=entitlements,
        error_cb=watch.error_cb,
        closed_cb=watch.closed_cb,
        **_FAIL_FAST,
    )
    try:
        yield nc, watch
    finally:
        await nc.close()


async def _refused(
    handle: ServerHandle, identity: str, entitlements: ent.Entitlements
) -> BaseException:
    """Connecting as ``identity`` fails with the server's authorization violation."""

    async def ignore(_exc: Exception) -> None:
        """The raised exception is what the test asserts on."""

    try:
        with refused_connections():
            nc = await connect_as(
                handle.url,
                handle.creds,
                identity,
                entitlements=entitlements,
                error_cb=ignore,
                **_FAIL_FAST,
            )
    except NatsError as exc:
        refused = exc
    else:
        await nc.close()
        pytest.fail(f"{identity} connected although the server has no such user")
    assert "authorization violation" in str(refused).lower(), repr(refused)
    return refused


def _order(account: str) -> Order:
    return Order(
        client_order_id=f"ent-{uuid.uuid4().hex[:12]}",
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(1),
        time_in_force=TimeInForce.IOC,
    )


def _with(
    entitlements: ent.Entitlements, change: Callable[[list[ent.Identity]], None]
) -> ent.Entitlements:
    identities = list(entitlements.identities)
    change(identities)
    return ent.Entitlements(version=entitlements.version, identities=tuple(identities))


def _write(path: Path, entitlements: ent.Entitlements) -> Path:
    path.write_text(entitlements.to_toml(), encoding="utf-8")
    return path


async def _publish_is_stored(nc: Client, subject: str) -> None:
    ack = await nc.jetstream(timeout=_WAIT_S).publish(subject, b"entitlements test")
    assert ack.stream == contract.ORDERS_STREAM


async def _still_up(nc: Client, cid: int | None, watch: _Watch) -> None:
    """The same connection (no reconnect, same server cid) still answers a round trip."""
    assert nc.is_connected
    assert nc.client_id == cid
    assert nc.stats["reconnects"] == 0
    await nc.flush(timeout=_WAIT_S)
    assert not watch.closed.is_set()


# --- per-account permissions ------------------------------------------------------------------


async def test_desk_trades_and_reads_its_own_account(
    nats_server: ServerHandle, engine: EngineProcess
) -> None:
    """desk-a (entitled to DESK-A only) submits, queues and reads the reports of DESK-A."""
    settings = client_settings(nats_server, "desk-a", request_timeout_ms=5000)
    assert settings.inbox_prefix == contract.identity_inbox_prefix(
        "orchestrator", nats_server.creds.identity("desk-a").public_nkey
    )
    submitted, queued = _order("DESK-A"), _order("DESK-A")
    async with BridgeClient(settings) as bridge, bridge.reports("DESK-A") as reports:
        ack = await bridge.submit(submitted)
        assert ack.accepted, ack
        stored = await bridge.enqueue(queued)
        assert not stored.duplicate
        finals: set[str] = set()
        async with asyncio.timeout(30):
            while finals != {submitted.client_order_id, queued.client_order_id}:
                report = await reports.next(timeout=30)
                assert report.account == "DESK-A"
                if report.is_final:
                    finals.add(report.client_order_id)
        state = await bridge.status("DESK-A", queued.client_order_id)
        assert state.found


async def test_desk_cannot_use_another_desks_account_or_inbox(nats_server: ServerHandle) -> None:
    """Every order operation, report subscription and report consumer of DESK-B, and another
    identity's inbox, is a permissions violation for desk-a; its own still work."""
    desk_b = nats_server.creds.identity("desk-b")
    async with _connected(nats_server, "desk-a") as (nc, watch):
        for subject in (
            contract.submit("DESK-B"),
            contract.cancel("DESK-B"),
            contract.status("DESK-B"),
            contract.queue("DESK-B"),
            f"$JS.API.CONSUMER.CREATE.{contract.EXECUTIONS_STREAM}.spy."
            + contract.executions_for_account("DESK-B"),
            contract.executions("DESK-A", "forged"),  # reports are the engine's to publish
        ):
            await nc.publish(subject, b"{}")
            await watch.violation(subject)
        for subject in (
            contract.executions_for_account("DESK-B"),
            f"{desk_b.inbox_prefix}.>",
            f"{contract.inbox_prefix('orchestrator')}.>",  # the old shared orchestrator inbox
        ):
            await nc.subscribe(subject)
            await watch.violation(subject)
        # Its own account and JetStream reads are still allowed on the same connection.
        await nc.subscribe(contract.executions_for_account("DESK-A"))
        info = await nc.jetstream(timeout=_WAIT_S).stream_info(contract.EXECUTIONS_STREAM)
        assert info.config.name == contract.EXECUTIONS_STREAM
        await nc.flush(timeout=_WAIT_S)
        watch.no_errors()


# --- changes applied by a reload ---------------------------------------------------------------


async def test_identity_and_account_added_by_reload(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """A new identity (desk-c, DESK-C) and a new account for desk-a take effect on a reload of
    the same server process; connections opened before it stay up and gain the new rights."""
    handle = fresh_server.handle
    creds = handle.creds
    before = creds.entitlements()
    desk_c = ent.Identity(
        name="desk-c",
        role="orchestrator",
        nkey=creds.issue_identity("desk-c", "CN=desk-c"),
        certificate_subject="CN=desk-c",
        accounts=("DESK-C",),
    )

    def add(identities: list[ent.Identity]) -> None:
        desk_a = next(i for i in identities if i.name == "desk-a")
        identities[identities.index(desk_a)] = desk_a.model_copy(
            update={"accounts": ("DESK-A", "DESK-C")}
        )
        identities.append(desk_c)

    after = _with(before, add)
    await _refused(handle, "desk-c", after)
    async with (
        _connected(handle, "desk-a") as (desk_a, desk_a_watch),
        _connected(handle, "orchestrator") as (orchestrator, orchestrator_watch),
    ):
        cids = (desk_a.client_id, orchestrator.client_id)
        await desk_a.publish(contract.queue("DESK-C"), b"not yet")
        await desk_a_watch.violation(contract.queue("DESK-C"))

        changes = fresh_server.reload(_write(tmp_path / "entitlements.toml", after))

        assert set(changes.added) == {"desk-c"}
        assert set(changes.changed) == {"desk-a"}
        assert fresh_server.handle.pid == handle.pid  # reloaded, not restarted
        await _still_up(desk_a, cids[0], desk_a_watch)
        await _still_up(orchestrator, cids[1], orchestrator_watch)
        await _publish_is_stored(desk_a, contract.queue("DESK-C"))
        async with _connected(handle, "desk-c", after) as (desk_c_nc, desk_c_watch):
            await _publish_is_stored(desk_c_nc, contract.queue("DESK-C"))
            await desk_c_nc.publish(contract.queue("DESK-A"), b"not entitled")
            await desk_c_watch.violation(contract.queue("DESK-A"))
        await _publish_is_stored(orchestrator, contract.queue("DESK-C"))


async def test_identity_removed_by_reload(fresh_server: LocalNatsServer, tmp_path: Path) -> None:
    """A removed identity's connection is closed by the reload and it can no longer connect;
    the other identities' connections stay up."""
    handle = fresh_server.handle
    before = handle.creds.entitlements()
    after = _with(before, lambda ids: ids.remove(next(i for i in ids if i.name == "desk-b")))
    async with (
        _connected(handle, "desk-a") as (desk_a, desk_a_watch),
        _connected(handle, "desk-b") as (desk_b, desk_b_watch),
    ):
        cid = desk_a.client_id
        await _publish_is_stored(desk_b, contract.queue("DESK-B"))

        changes = fresh_server.reload(_write(tmp_path / "entitlements.toml", after))

        assert set(changes.removed) == {"desk-b"}
        assert not changes.added
        assert not changes.changed
        assert fresh_server.handle.pid == handle.pid
        with refused_connections():  # desk-b's reconnects are refused until it gives up
            async with asyncio.timeout(_WAIT_S):
                await desk_b_watch.closed.wait()
        assert not desk_b.is_connected
        await _still_up(desk_a, cid, desk_a_watch)
        await _publish_is_stored(desk_a, contract.queue("DESK-A"))
    await _refused(handle, "desk-b", before)


async def test_reload_with_an_invalid_file_keeps_the_running_configuration(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """An entitlements file that cannot be rendered is refused before the server is touched
    (the message names the file, identity and field); the server keeps serving."""
    handle = fresh_server.handle
    broken = tmp_path / "entitlements.toml"
    broken.write_text(
        handle.creds.entitlements().to_toml().replace('accounts = ["DESK-A"]', "accounts = []"),
        encoding="utf-8",
    )
    with pytest.raises(ent.EntitlementsError, match=r"identities\.desk-a\.accounts"):
        fresh_server.reload(broken)
    async with _connected(handle, "desk-a") as (nc, watch):
        await _publish_is_stored(nc, contract.queue("DESK-A"))
        watch.no_errors()


async def test_cli_apply_renders_reloads_and_reports_the_change(
    fresh_server: LocalNatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bridge-entitlements apply`` (the runbook's command) writes the server's accounts.conf,
    reloads the server through its pid file and waits for it: the removed identity is gone."""
    handle = fresh_server.handle
    assert handle.config_dir is not None
    after = _with(
        handle.creds.entitlements(),
        lambda ids: ids.remove(next(i for i in ids if i.name == "desk-b")),
    )
    args = [
        "apply",
        "--entitlements",
        str(_write(tmp_path / "entitlements.toml", after)),
        "--config-dir",
        str(handle.config_dir),
        "--pid",
        str(handle.config_dir / PID_FILE),
        "--monitor-url",
        handle.monitor_url,
    ]
    code = await asyncio.to_thread(entitlements_cli.main, args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "removed desk-b: role=orchestrator" in out
    assert f"nats-server {handle.pid} applied the reload" in out
    await _refused(handle, "desk-b", handle.creds.entitlements())
    async with _connected(handle, "desk-a") as (nc, watch):
        await _publish_is_stored(nc, contract.queue("DESK-A"))
        watch.no_errors()


# --- the sentinel's two identities -------------------------------------------------------------


async def test_sentinel_identities_have_what_they_need(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """The engine stores a refusal on ALERTS; the sentinel (BRIDGE) reads and acks it through
    its durable consumer and raises its own alert; the system identity (SYS) receives the
    authentication-failure advisory, lists connections and kicks one. No violation on the way."""
    handle = fresh_server.handle
    async with (
        _connected(handle, "engine") as (engine, engine_watch),
        _connected(handle, "sentinel") as (sentinel, sentinel_watch),
        _connected(handle, "sentinel-system") as (system, system_watch),
        _connected(handle, "desk-a") as (desk_a, desk_a_watch),
    ):
        refusal = contract.alert("engine", "bad_signature")
        stored = await engine.jetstream(timeout=_WAIT_S).publish(refusal, b"refused")
        assert stored.stream == contract.ALERTS_STREAM
        pull = await sentinel.jetstream(timeout=_WAIT_S).pull_subscribe(
            contract.ALERTS_ENGINE,
            durable=contract.SENTINEL_CONSUMER,
            stream=contract.ALERTS_STREAM,
        )
        (msg,) = await pull.fetch(1, timeout=_WAIT_S)
        assert msg.subject == refusal
        await msg.ack_sync(timeout=_WAIT_S)
        raised = contract.alert("sentinel", "forbidden_publish")
        stored = await sentinel.jetstream(timeout=_WAIT_S).publish(raised, b"alert")
        assert stored.stream == contract.ALERTS_STREAM

        advisories = await system.subscribe(contract.SYS_AUTH_ERROR)
        await system.flush(timeout=_WAIT_S)
        stranger = tmp_path / "stranger.nk"
        stranger_key = write_nkey_seed(stranger)
        await _stranger_refused(handle, stranger)
        advisory = json.loads((await advisories.next_msg(timeout=_WAIT_S)).data)
        assert stranger_key in json.dumps(advisory)

        desk_a_key = handle.creds.identity("desk-a").public_nkey
        query = json.dumps({"user": desk_a_key, "auth": True}).encode()
        connz = json.loads((await system.request(contract.SYS_CONNZ, query, timeout=_WAIT_S)).data)
        (conn,) = connz["data"]["connections"]
        assert conn["cid"] == desk_a.client_id
        server_id = connz["server"]["id"]
        kicked = await system.request(
            contract.sys_kick(server_id), json.dumps({"cid": conn["cid"]}).encode(), timeout=_WAIT_S
        )
        assert "error" not in json.loads(kicked.data), kicked.data
        async with asyncio.timeout(_WAIT_S):
            await desk_a_watch.closed.wait()
        for watch in (engine_watch, sentinel_watch, system_watch):
            watch.no_errors()


async def _stranger_refused(handle: ServerHandle, seed: Path) -> None:
    """A valid certificate with an NKey that is no identity's: refused by the server."""
    desk_a = handle.creds.identity("desk-a")

    async def ignore(_exc: Exception) -> None:
        """The raised exception is what the test asserts on."""

    nc = Client()
    try:
        await nc.connect(
            handle.url,
            tls=client_ssl_context(handle.creds.ca_file, desk_a.cert_file, desk_a.key_file),
            nkeys_seed=str(seed),
            inbox_prefix=desk_a.inbox_prefix,
            error_cb=ignore,
            **_FAIL_FAST,
        )
    except NatsError as exc:
        refused = exc
    else:
        await nc.close()
        pytest.fail("an unknown NKey connected")
    assert "authorization violation" in str(refused).lower(), repr(refused)
