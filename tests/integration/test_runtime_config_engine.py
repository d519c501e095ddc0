"""The engine's runtime configuration (issue 15, part 4 and 5): documents written to the
``bridge_config`` bucket by the operator (signed, like ``bridge config set`` does) change the
real engine's limits and trading state while it runs, without a restart; a bad document is
refused and the old configuration stays; the watch survives a server restart.

Every wait is on the engine's ``ConfigApplied`` for the exact revision written."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from bridge import (
    AckStatus,
    BridgeClient,
    BridgeSettings,
    Order,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    contract,
)
from bridge.v1 import market_data_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as
from bridge_dev.signing import dev_signer

pytestmark = pytest.mark.integration

# The KV protocol's operation header (nats-server's): a delete marker.
_KV_OPERATION = "KV-Operation"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def market(account: str, qty: str, side: Side = Side.BUY) -> Order:
    return Order(
        client_order_id=new_id("m"),
        account=account,
        symbol="AAPL",
        side=side,
        order_type=OrderType.MARKET,
        quantity=Decimal(qty),
        time_in_force=TimeInForce.IOC,
    )


def resting_bid(account: str) -> Order:
    return Order(
        client_order_id=new_id("l"),
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal("1"),
        limit_price=Decimal("1"),
        time_in_force=TimeInForce.GTC,
    )


class Operator:
    """The operator's connection: writes signed documents, reads the engine's ConfigApplied."""

    def __init__(self, nc: Client, handle: ServerHandle, sub: Subscription) -> None:
        self.nc = nc
        self.signer = dev_signer(handle.creds, "operator")
        self.sub = sub
        self.seen: list[market_data_pb2.ConfigApplied] = []

    async def write(
        self, key: str, doc: dict[str, Any] | None, *, signed: bool = True, raw: bytes | None = None
    ) -> int:
        """Put ``doc`` (None: a delete marker) under ``key``; its revision."""
        subject = contract.kv_key_subject(contract.CONFIG_KV_BUCKET, key)
        payload = raw if raw is not None else (b"" if doc is None else json.dumps(doc).encode())
        headers = {_KV_OPERATION: "DEL"} if doc is None and raw is None else {}
        if signed:
            headers.update(self.signer.headers(subject, payload))
        reply = await self.nc.request(subject, payload, timeout=5, headers=headers or None)
        ack = json.loads(reply.data)
        assert "error" not in ack, ack
        return int(ack["seq"])

    async def applied(self, key: str, revision: int, timeout: float = 10) -> Any:
        """The engine's ConfigApplied for this revision of ``key``."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.sub.next_msg(timeout=timeout)
                out = market_data_pb2.ConfigApplied()
                out.ParseFromString(msg.data)
                self.seen.append(out)
                if out.document == key and out.revision == revision:
                    return out

    async def put(self, key: str, doc: dict[str, Any] | None) -> Any:
        """Write and wait until the engine applied it (asserted)."""
        rev = await self.write(key, doc)
        out = await self.applied(key, rev)
        assert out.applied, list(out.errors)
        return out


@asynccontextmanager
async def operator(handle: ServerHandle, *, reset: bool = True) -> AsyncIterator[Operator]:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        sub = await nc.subscribe(contract.config_applied("engine"))
        await nc.flush()
        op = Operator(nc, handle, sub)
        try:
            yield op
        finally:
            # The next test starts from the file's configuration.
            for key in (contract.CONFIG_RISK_KEY, contract.CONFIG_TRADING_STATE_KEY):
                if reset:
                    await op.put(key, None)
    finally:
        await op.nc.close()


async def test_risk_limit_lowered_then_raised_without_restart(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """Lowered: the next order over it is rejected; raised: accepted again; same PID."""
    pid = engine.pid
    account = new_id("A")
    async with operator(nats_server) as op, BridgeClient(settings) as bridge:
        assert (await bridge.submit(market(account, "10"))).status is AckStatus.ACCEPTED
        samples = []
        for qty, want in (("5", AckStatus.REJECTED), ("1000", AckStatus.ACCEPTED)):
            doc = {"version": 1, "symbols": {"AAPL": {"max_order_qty": qty}}}
            started = time.perf_counter()
            rev = await op.write(contract.CONFIG_RISK_KEY, doc)
            out = await op.applied(contract.CONFIG_RISK_KEY, rev)
            samples.append((time.perf_counter() - started) * 1000)
            assert out.applied
            assert out.side == "engine"
            assert out.instance
            ack = await bridge.submit(market(account, "10"))
            assert ack.status is want, ack
            if want is AckStatus.REJECTED:
                assert ack.reason is RejectReason.RISK_LIMIT
                assert ack.field_errors[0].rule == "max_order_qty"
        print(f"config write -> ConfigApplied (ms): {[round(s, 2) for s in samples]}")
        assert max(samples) < 1000
    assert engine.pid == pid
    assert engine.running
    log = engine.log_tail(400)
    assert "config applied" in log
    assert "symbols.AAPL.max_order_qty" in log


async def test_halted_refuses_new_orders_while_cancels_work(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """HALTED: the next order is refused (TRADING_HALTED); a resting order still cancels;
    ACTIVE again: orders are taken."""
    account = new_id("A")
    async with operator(nats_server) as op, BridgeClient(settings) as bridge:
        resting = resting_bid(account)
        assert (await bridge.submit(resting)).status is AckStatus.ACCEPTED
        await op.put(
            contract.CONFIG_TRADING_STATE_KEY,
            {"version": 1, "state": "HALTED", "reason": "test kill switch"},
        )
        ack = await bridge.submit(market(account, "1"))
        assert ack.status is AckStatus.REJECTED
        assert ack.reason is RejectReason.TRADING_HALTED
        assert "test kill switch" in ack.text
        canceled = await bridge.cancel(account, resting.client_order_id)
        assert canceled.status is AckStatus.ACCEPTED, canceled
        # One symbol ACTIVE under a HALTED venue: its orders are taken.
        await op.put(
            contract.CONFIG_TRADING_STATE_KEY,
            {"version": 1, "state": "HALTED", "symbols": {"AAPL": "ACTIVE"}},
        )
        assert (await bridge.submit(market(account, "1"))).status is AckStatus.ACCEPTED


async def test_reduce_only_takes_only_what_reduces(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """REDUCE_ONLY: a buy after buying 10 is refused; a sell of at most 10 is taken."""
    account = new_id("A")
    async with operator(nats_server) as op, BridgeClient(settings) as bridge:
        assert (await bridge.submit(market(account, "10"))).status is AckStatus.ACCEPTED
        await op.put(contract.CONFIG_TRADING_STATE_KEY, {"version": 1, "state": "REDUCE_ONLY"})
        grow = await bridge.submit(market(account, "1"))
        assert grow.reason is RejectReason.REDUCE_ONLY, grow
        flip = await bridge.submit(market(account, "11", Side.SELL))
        assert flip.reason is RejectReason.REDUCE_ONLY, flip
        assert (await bridge.submit(market(account, "10", Side.SELL))).status is AckStatus.ACCEPTED


async def test_bad_document_is_refused_and_the_old_one_stays(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """An invalid revision (schema), an unknown symbol and an unsigned one are refused with
    (field, rule); the last good limit stays in force."""
    account = new_id("A")
    async with operator(nats_server) as op, BridgeClient(settings) as bridge:
        key = contract.CONFIG_RISK_KEY
        await op.put(key, {"version": 1, "symbols": {"AAPL": {"max_order_qty": "5"}}})
        cases: list[tuple[dict[str, Any], bool, tuple[str, str]]] = [
            (
                {"version": 1, "symbols": {"AAPL": {"max_order_qty": "-5"}}},
                True,
                ("symbols.AAPL.max_order_qty", "pattern"),
            ),
            (
                {"version": 1, "symbols": {"NOPE": {"max_order_qty": "50"}}},
                True,
                ("symbols.NOPE", "known_symbol"),
            ),
            ({"version": 1}, False, ("<document>", "unsigned")),
        ]
        for doc, signed, want in cases:
            rev = await op.write(key, doc, signed=signed)
            out = await op.applied(key, rev)
            assert not out.applied
            assert [(e.field, e.rule) for e in out.errors] == [want]
        rev = await op.write(key, None, raw=b"{", signed=True)
        out = await op.applied(key, rev)
        assert [(e.field, e.rule) for e in out.errors] == [("<document>", "json")]
        # The limit of 5 is still in force.
        over = await bridge.submit(market(account, "10"))
        assert over.reason is RejectReason.RISK_LIMIT, over
        assert (await bridge.submit(market(account, "5"))).status is AckStatus.ACCEPTED
    assert "config refused: the previous configuration stays in force" in engine.log_tail(400)


@pytest.mark.projections("fsync")  # the engine rides out the server restart
async def test_watch_survives_a_server_restart(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """A document written after the server restarted applies; one written before is still in
    force; a restarted engine loads the last good revision, not a refused later one."""
    handle = fresh_server.handle
    with EngineProcess(handle, log_file=tmp_path / "engine.log") as engine:
        async with operator(handle, reset=False) as op:
            await op.put(contract.CONFIG_TRADING_STATE_KEY, {"version": 1, "state": "HALTED"})
            await op.nc.close()
            fresh_server.stop()
            handle = fresh_server.start()
            op.nc = await connect_as(handle.url, handle.creds, "operator")
            op.sub = await op.nc.subscribe(contract.config_applied("engine"))
            await op.nc.flush()
            rev = await op.write(
                contract.CONFIG_RISK_KEY,
                {"version": 1, "symbols": {"AAPL": {"max_order_qty": "3"}}},
            )
            out = await op.applied(contract.CONFIG_RISK_KEY, rev, timeout=30)
            assert out.applied
            settings = client_settings(handle, request_timeout_ms=5000)
            account = new_id("A")
            async with BridgeClient(settings) as bridge:
                ack = await bridge.submit(market(account, "1"))
                assert ack.reason is RejectReason.TRADING_HALTED, ack
            # A refused revision after the good one: a restarted engine keeps HALTED.
            bad = await op.write(contract.CONFIG_TRADING_STATE_KEY, {"version": 1})
            assert not (await op.applied(contract.CONFIG_TRADING_STATE_KEY, bad)).applied
            engine.stop()
            with EngineProcess(handle, log_file=tmp_path / "engine2.log") as again:
                async with BridgeClient(settings) as bridge:
                    ack = await bridge.submit(market(account, "1"))
                    assert ack.reason is RejectReason.TRADING_HALTED, ack
                assert again.running


async def _logged(engine: EngineProcess, *needles: str, timeout: float = 10.0) -> str:
    """The engine's log line holding every needle, once its log file has it (the engine writes
    its lines in order, so a later line being there means every earlier one is)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in engine.log_tail(2000).splitlines():
            if all(n in line for n in needles):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no engine log line with {needles}:\n{engine.log_tail(40)}")
        await asyncio.sleep(0.05)  # the file follower writes what the engine logged


async def test_symbols_and_log_level_change_at_run_time(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """symbols: a symbol left out refuses new orders (UNKNOWN_SYMBOL) while its resting order
    still cancels, and is back when the document is deleted. log_levels: the engine logs at
    debug from the next order on, and stops when the level goes back; same PID throughout."""
    pid = engine.pid
    account = new_id("A")
    async with operator(nats_server) as op, BridgeClient(settings) as bridge:
        try:
            resting = resting_bid(account)
            assert (await bridge.submit(resting)).status is AckStatus.ACCEPTED
            await op.put(contract.CONFIG_SYMBOLS_KEY, {"version": 1, "enabled": ["MSFT"]})
            ack = await bridge.submit(market(account, "1"))
            assert (ack.status, ack.reason) == (AckStatus.REJECTED, RejectReason.UNKNOWN_SYMBOL)
            canceled = await bridge.cancel(account, resting.client_order_id)
            assert canceled.status is AckStatus.ACCEPTED, canceled
            await op.put(contract.CONFIG_SYMBOLS_KEY, None)
            assert (await bridge.submit(market(account, "1"))).status is AckStatus.ACCEPTED

            levels = contract.CONFIG_LOG_LEVELS_KEY
            await op.put(levels, {"version": 1, "engine": "debug"})
            loud = await bridge.submit(market(account, "1"))
            back = (await op.put(levels, {"version": 1, "engine": "info"})).revision
            quiet = await bridge.submit(market(account, "1"))
            again = await op.put(levels, {"version": 1, "engine": "info", "client": "info"})
            # Each "config applied" line is logged at info after the order before it.
            await _logged(engine, "config applied", f'"revision":{back}')
            await _logged(engine, "config applied", f'"revision":{again.revision}')
            log = engine.log_tail(2000)
            stored = "order accepted and stored"
            assert any(stored in ln and loud.engine_order_id in ln for ln in log.splitlines())
            assert not any(quiet.engine_order_id in ln and stored in ln for ln in log.splitlines())
        finally:
            await op.put(contract.CONFIG_SYMBOLS_KEY, None)
            await op.put(contract.CONFIG_LOG_LEVELS_KEY, None)
    assert engine.pid == pid
