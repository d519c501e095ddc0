"""Engine leases (engine-rs/src/lease.rs) against a real nats-server and the real engine binary.

Engines share the submit queue group and the ORDERS consumer but keep separate books, so a second
engine must refuse to start while another one serves; a clean stop releases the lease at once; a
killed engine's lease expires after the TTL (the bucket's max_age), and only then can a restart
or a standby take over. Expiry is observed as the server's MaxAge marker on the bucket (the
bucket keeps limit markers), never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from bridge import BridgeClient, Order, OrderType, Side, TimeInForce, contract
from bridge_dev.engine import (
    EngineError,
    EngineProcess,
    client_settings,
    lease_ttl,
    lease_wait_limit,
)
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as

pytestmark = pytest.mark.integration

# The symbols of engine-rs/config/dev.toml, which every EngineProcess here runs with.
DEV_KEYS = {
    contract.LEASE_INTAKE_KEY,
    *(contract.lease_symbol_key(s) for s in ("AAPL", "MSFT", "BTC-USD")),
}


def aapl_only_config(tmp_path: Path) -> Path:
    """An engine configuration with the single symbol AAPL (which dev.toml also serves)."""
    path = tmp_path / "aapl-only.toml"
    path.write_text(
        'max_order_notional = "2500000"\n'
        "[symbols.AAPL]\n"
        'max_order_qty = "5000"\n'
        'reference_price = "190.00"\n'
        'seed = [{ side = "sell", price = "190.01", qty = "200", orders = 3 }]\n',
        encoding="utf-8",
    )
    return path


async def submit_one(handle: ServerHandle) -> str:
    """Submit a market order for 1 AAPL; the engine id that accepted it."""
    order = Order(
        client_order_id=f"lease-{uuid.uuid4().hex[:12]}",
        account="LEASE",
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(1),
        time_in_force=TimeInForce.IOC,
    )
    async with BridgeClient(client_settings(handle, request_timeout_ms=5000)) as bridge:
        ack = await bridge.submit(order)
    assert ack.accepted, ack
    return ack.engine_id


@asynccontextmanager
async def leases(handle: ServerHandle) -> AsyncIterator[KeyValue]:
    """The bridge_leases bucket, read as the operator."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        yield await nc.jetstream().key_value(contract.LEASES_KV_BUCKET)
    finally:
        await nc.close()


@asynccontextmanager
async def watching(kv: KeyValue, keys: str) -> AsyncIterator[KeyValue.KeyWatcher]:
    """A watch of ``keys`` (current values, then every change, expiry markers included)."""
    watcher = await kv.watch(keys)
    try:
        yield watcher
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]  # unannotated in nats-py


async def holder(kv: KeyValue, key: str) -> dict[str, object]:
    """The lease value (engine_id, instance, host, pid, taken_unix_ms) of ``key``."""
    entry = await kv.get(key)
    assert entry.value is not None
    value = json.loads(entry.value)
    assert isinstance(value, dict)
    return value


async def test_second_engine_with_an_overlapping_symbol_refuses_to_start(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """A second engine (other id, a symbol the first serves) exits non-zero at once naming the
    first engine, which keeps serving."""
    handle = fresh_server.handle
    first = EngineProcess(handle, engine_id="engine-A", log_file=tmp_path / "a.log").start()
    second = EngineProcess(
        handle,
        engine_id="engine-B",
        config_file=aapl_only_config(tmp_path),
        log_file=tmp_path / "b.log",
    )
    try:
        started = time.monotonic()
        with pytest.raises(EngineError, match="exited before it was ready"):
            await asyncio.to_thread(second.start)
        refused_after = time.monotonic() - started
        code = second.wait(10)
        log = second.log_file.read_text(errors="replace")
        assert code != 0, log
        assert "engine ready" not in log
        async with leases(handle) as kv:
            aapl = await holder(kv, "symbol.AAPL")
        assert aapl["engine_id"] == "engine-A"
        assert (
            "symbol AAPL and the intake (submit queue group and ORDERS consumer) are served by "
            f"engine engine-A (instance {aapl['instance']}, host {aapl['host']}, "
        ) in log, log
        assert "one engine per symbol and one engine per intake today" in log
        assert refused_after < lease_ttl(), f"refusal took {refused_after:.1f}s: it waited"
        assert await submit_one(handle) == "engine-A"
    finally:
        second.kill()  # only matters if it did start
        code = first.stop()
    assert code == 0, first.log_tail()


async def test_clean_stop_releases_so_another_engine_starts_at_once(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """SIGTERM deletes the leases: another engine id starts right after, without waiting."""
    handle = fresh_server.handle
    first = EngineProcess(handle, engine_id="engine-A", log_file=tmp_path / "a.log").start()
    assert first.stop() == 0, first.log_tail()
    async with leases(handle) as kv:
        for key in DEV_KEYS:
            with pytest.raises(KeyNotFoundError) as gone:
                await kv.get(key)
            assert gone.value.op == "DEL", key  # released (deleted), not expired
    started = time.monotonic()
    second = EngineProcess(handle, engine_id="engine-B", log_file=tmp_path / "b.log").start()
    try:
        ready_after = time.monotonic() - started
        assert ready_after < lease_ttl(), f"took {ready_after:.1f}s"
        assert "waiting for them to expire" not in second.log_tail(100)
        assert await submit_one(handle) == "engine-B"
    finally:
        code = second.stop()
    assert code == 0, second.log_tail()


async def test_restart_after_kill_waits_for_the_lease_to_expire_then_serves(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """kill -9, then a restart with the same engine id: it takes over only after the killed
    instance's lease expired (MaxAge marker seen first), then serves."""
    handle = fresh_server.handle
    first = EngineProcess(handle, engine_id="engine-A", log_file=tmp_path / "a.log").start()
    async with leases(handle) as kv:
        killed_instance = (await holder(kv, contract.LEASE_INTAKE_KEY))["instance"]
        async with watching(kv, contract.LEASE_INTAKE_KEY) as watcher:
            first.kill()
            restarted = EngineProcess(
                handle, engine_id="engine-A", log_file=tmp_path / "restart.log"
            )
            starting = asyncio.create_task(asyncio.to_thread(restarted.start))
            ops: list[str] = []
            async with asyncio.timeout(lease_wait_limit() + 30):
                async for entry in watcher:
                    if entry is None:
                        continue  # end of the initial values
                    if entry.operation is not None:
                        ops.append(entry.operation)  # DEL / PURGE (the expiry marker)
                    elif entry.value is not None:
                        instance = json.loads(entry.value)["instance"]
                        if instance != killed_instance:
                            ops.append("PUT by the restarted instance")
                            break
                await starting
    try:
        assert ops == ["PURGE", "PUT by the restarted instance"], ops
        log = restarted.log_tail(100)
        assert "waiting for them to expire" in log
        assert "taking over" in log
        assert await submit_one(handle) == "engine-A"
    finally:
        code = restarted.stop()
    assert code == 0, restarted.log_tail()


async def test_standby_with_another_id_takes_over_once_the_killed_lease_expired(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """kill -9 of engine-A; once every key it held has expired (watched), a standby engine-B
    starts and serves."""
    handle = fresh_server.handle
    first = EngineProcess(handle, engine_id="engine-A", log_file=tmp_path / "a.log").start()
    async with leases(handle) as kv, watching(kv, ">") as watcher:
        first.kill()
        assert await _until_expired(watcher) == DEV_KEYS
    standby = EngineProcess(handle, engine_id="engine-B", log_file=tmp_path / "b.log").start()
    try:
        assert await submit_one(handle) == "engine-B"
    finally:
        code = standby.stop()
    assert code == 0, standby.log_tail()


async def _until_expired(watcher: KeyValue.KeyWatcher) -> set[str]:
    """Read the watch's current keys, then until each of them has an expiry marker; the keys."""
    held: set[str] = set()
    async for entry in watcher:  # the current values, up to the end-of-initial marker
        if entry is None:
            break
        held.add(entry.key)
    expired: set[str] = set()
    async with asyncio.timeout(lease_wait_limit() + 30):
        async for entry in watcher:
            if entry is not None and entry.operation == "PURGE":
                expired.add(entry.key)
                if expired >= held:
                    break
    return held


async def test_paused_engine_retakes_its_expired_lease_and_keeps_serving(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """SIGSTOP past the TTL: the lease expires; on SIGCONT nobody else holds it, so the engine's
    renewal takes it again and the engine serves on."""
    handle = fresh_server.handle
    engine = EngineProcess(handle, engine_id="engine-A", log_file=tmp_path / "a.log").start()
    assert engine.pid is not None
    try:
        async with leases(handle) as kv:
            instance = (await holder(kv, contract.LEASE_INTAKE_KEY))["instance"]
            async with watching(kv, ">") as watcher:
                os.kill(engine.pid, signal.SIGSTOP)
                try:
                    assert await _until_expired(watcher) == DEV_KEYS
                finally:
                    os.kill(engine.pid, signal.SIGCONT)
                retaken: set[str] = set()
                async with asyncio.timeout(30):
                    async for entry in watcher:
                        if entry is not None and entry.operation is None and entry.value:
                            assert json.loads(entry.value)["instance"] == instance
                            retaken.add(entry.key)
                            if retaken == DEV_KEYS:
                                break
        assert "lease had expired" in engine.log_tail(100)
        assert await submit_one(handle) == "engine-A"
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()


async def test_paused_engine_whose_lease_was_taken_stops_when_it_resumes(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """SIGSTOP past the TTL, another engine takes over; on SIGCONT the paused engine finds its
    lease lost and exits non-zero naming the new holder, which serves on."""
    handle = fresh_server.handle
    paused = EngineProcess(handle, engine_id="engine-A", log_file=tmp_path / "a.log").start()
    assert paused.pid is not None
    successor: EngineProcess | None = None
    try:
        async with leases(handle) as kv, watching(kv, ">") as watcher:
            os.kill(paused.pid, signal.SIGSTOP)
            try:
                assert await _until_expired(watcher) == DEV_KEYS
                successor = EngineProcess(
                    handle, engine_id="engine-B", log_file=tmp_path / "b.log"
                ).start()
            finally:
                os.kill(paused.pid, signal.SIGCONT)
        code = await asyncio.to_thread(paused.wait, lease_ttl() + 30)
        log = paused.log_file.read_text(errors="replace")
        assert code != 0, log
        assert "lease lost: " in log
        assert "is now held by engine engine-B" in log, log
        assert await submit_one(handle) == "engine-B"
    finally:
        paused.kill()
        if successor is not None:
            assert successor.stop() == 0, successor.log_tail()
