"""What every scenario of the bridge's paths shares: the bench orders, client settings, the
operator's JetStream access and the restartable engine of the bridge phase."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

from nats.js.manager import JetStreamManager

from bench.procs import BenchError, cpu_seconds, peak_rss_bytes
from bridge import Order, OrderType, Side, TimeInForce, contract
from bridge.config import BridgeSettings
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import ServerHandle, connect_as

SYMBOL = "BENCH"
SYNC_ACCOUNT = "BENCH"
DRAIN_ACCOUNT = "DRAIN"
REPLY_TIMEOUT = 5.0
"""Longest wait for any single answer or report before the run is declared broken."""
ENQUEUE_CHUNK = 500
"""Orders per ``enqueue_batch`` call in the throughput measurement."""


def make_orders(prefix: str, n: int, account: str = SYNC_ACCOUNT) -> list[Order]:
    """``n`` 1-share market IOC orders, alternating buy and sell, ids of equal length."""
    return [
        Order(
            client_order_id=f"{prefix}-{i:07d}",
            account=account,
            symbol=SYMBOL,
            side=Side.BUY if i % 2 == 0 else Side.SELL,
            order_type=OrderType.MARKET,
            quantity=Decimal(1),
            time_in_force=TimeInForce.IOC,
        )
        for i in range(n)
    ]


def order_payload(run: str) -> bytes:
    """The serialized NewOrder the baselines send: same size as the bridge's sync orders."""
    return make_orders(f"{run}px", 1)[0].to_proto().SerializeToString()


def settings_for(handle: ServerHandle, *, sign_orders: bool = True) -> BridgeSettings:
    return client_settings(
        handle, request_timeout_ms=int(REPLY_TIMEOUT * 1000), sign_orders=sign_orders
    )


@asynccontextmanager
async def operator(handle: ServerHandle) -> AsyncIterator[JetStreamManager]:
    """JetStream management as the operator role (the only role allowed to purge)."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        yield nc.jsm()
    finally:
        await nc.close()


async def purge_orders(handle: ServerHandle) -> None:
    async with operator(handle) as jsm:
        await jsm.purge_stream(contract.ORDERS_STREAM)


class Engine:
    """The engine process of the bridge phase; restartable (with other ``BRIDGE_*`` knobs),
    tracking its peak RSS."""

    def __init__(self, handle: ServerHandle, config: Path, log_file: Path) -> None:
        self.handle = handle
        self.config = config
        self.log_file = log_file
        self.env: Mapping[str, str] = {}
        """Extra ``BRIDGE_*`` variables of the running engine (e.g. signatures not required)."""
        self.proc: EngineProcess | None = None
        self.peak_rss = 0
        self.restarts = 0

    @property
    def pid(self) -> int:
        if self.proc is None or self.proc.pid is None:
            raise BenchError("engine not running")
        return self.proc.pid

    def start(self) -> tuple[int, float]:
        """Start and wait for 'engine ready'; returns (perf_counter_ns, engine CPU s) then."""
        self.proc = EngineProcess(
            self.handle, config_file=self.config, log_file=self.log_file, env=self.env
        )
        self.proc.start()
        return time.perf_counter_ns(), cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.pid is not None:
            self.peak_rss = max(self.peak_rss, peak_rss_bytes(proc.pid))
        code = proc.stop()
        if code != 0:
            raise BenchError(f"engine exited with {code}; log tail:\n{proc.log_tail()}")

    def restart_with(self, env: Mapping[str, str]) -> None:
        """Run with ``env`` from now on: restarted (ORDERS purged) if it differs."""
        if dict(env) == dict(self.env) and self.proc is not None:
            return
        self.env = dict(env)
        self.restart_empty()

    def restart_empty(self) -> None:
        """Stop (it finishes its current commit group; a backlog being discarded is killed if
        that outlasts the stop's timeout), purge ORDERS, start again."""
        if self.proc is not None and self.proc.pid is not None:
            self.peak_rss = max(self.peak_rss, peak_rss_bytes(self.proc.pid))
        proc, self.proc = self.proc, None
        if proc is not None and proc.stop() not in (0, -9):
            raise BenchError(f"engine exited badly while discarding a backlog:\n{proc.log_tail()}")
        asyncio.run(purge_orders(self.handle))
        self.start()
        self.restarts += 1


def server_pid(handle: ServerHandle) -> int:
    return handle.pid
