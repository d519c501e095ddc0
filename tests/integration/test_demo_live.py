"""The demo's market-data panel and kill-switch tour (examples/demo_live.py) against a real
server and engine: the live book equals fresh snapshots while and after orders trade, and the
AAPL halt takes effect (TRADING_HALTED, a cancel and MSFT still work) and is lifted again."""

from __future__ import annotations

import io
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from bridge import BridgeClient, BridgeSettings, Order, OrderType, Side, TimeInForce, contract
from bridge.runtime_config import store
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle, connect_as
from tests.integration.test_order_path import new_id

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from demo_live import LiveBook, config_change_tour

pytestmark = pytest.mark.integration


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


def _text(console: Console) -> str:
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


async def test_live_book_equals_fresh_snapshots(
    nats_server: ServerHandle, engine: EngineProcess, settings: BridgeSettings
) -> None:
    console = _console()
    async with (
        BridgeClient(settings) as bridge,
        LiveBook(bridge, "AAPL", console, Progress(console=console)) as book,
    ):
        for i in range(30):
            order = Order(
                client_order_id=new_id("live"),
                account="DEMO",
                symbol="AAPL",
                side=Side.BUY if i % 2 else Side.SELL,
                order_type=OrderType.MARKET,
                quantity=Decimal(5),
                time_in_force=TimeInForce.IOC,
            )
            assert (await bridge.submit(order)).accepted
        assert await book.check("after the orders")
    assert book.matched
    assert len(book.verdicts) == 2
    assert book.applied >= 30
    assert book.gaps == 0
    assert book.last_trade is not None
    assert _text(console).count("EQUALS a fresh snapshot") == 2


async def test_config_change_tour_halts_and_resumes(
    nats_server: ServerHandle, engine: EngineProcess
) -> None:
    console = _console()
    assert await config_change_tour(nats_server, console), _text(console)
    out = _text(console)
    assert "REJECTED (TRADING_HALTED" in out
    assert "NOT as expected" not in out
    nc = await connect_as(nats_server.url, nats_server.creds, "operator")
    try:
        final = await store.get(nc, contract.CONFIG_TRADING_STATE_KEY)
    finally:
        await nc.close()
    assert final is not None
    assert final.document is not None
    assert final.document["state"] == "ACTIVE"
    assert "symbols" not in final.document
