"""A full ORDERS stream refuses new orders loudly and keeps the ones it accepted."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import BridgeClient, BridgeSettings, Order, OrderType, Side, StreamFullError, subjects
from bridge.dev.engine import EngineProcess
from bridge.dev.server import ServerHandle, connect_as
from tests.integration.test_order_path import collect_until_final

pytestmark = pytest.mark.integration

CAPACITY = 5


def order(account: str, i: int) -> Order:
    return Order(
        client_order_id=f"bp{i}-{uuid.uuid4().hex[:8]}",
        account=account,
        symbol="AAPL",
        side=Side.BUY if i % 2 else Side.SELL,
        order_type=OrderType.MARKET,
        quantity=Decimal(3),
    )


async def test_full_stream_raises_stream_full_and_drains_after_engine_starts(
    nats_server: ServerHandle, settings: BridgeSettings, tmp_path: Path
) -> None:
    """With no engine, order CAPACITY+1 gets StreamFullError; the stored ones all execute later."""
    nc = await connect_as(nats_server.url, nats_server.creds, "operator")
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.ORDERS_STREAM)
        info.config.max_msgs = CAPACITY
        await js.update_stream(info.config)
    finally:
        await nc.close()

    account = f"BP{uuid.uuid4().hex[:6]}"
    accepted = [order(account, i) for i in range(CAPACITY)]
    refused = order(account, CAPACITY)
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        stored = await bridge.enqueue_batch(accepted)
        assert [q.seq for q in stored] == sorted(q.seq for q in stored)
        with pytest.raises(StreamFullError) as info_exc:
            await bridge.enqueue(refused)
        assert info_exc.value.client_order_id == refused.client_order_id
        assert info_exc.value.err_code == 10077
        assert "maximum messages" in str(info_exc.value)

        with EngineProcess(nats_server, log_file=tmp_path / "engine.log"):
            finals = await collect_until_final(stream, {o.client_order_id for o in accepted})
    assert set(finals) == {o.client_order_id for o in accepted}
    assert refused.client_order_id not in finals
