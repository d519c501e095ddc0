"""Queued orders in OrderBatch messages (contract 1.2) end to end: the Python client -> a real
nats-server (mTLS + NKeys) -> the real engine binary.

Each order of a batch is executed exactly once with its own reports on its own subject; a
batch re-sent inside JetStream's duplicate window is dropped by the server, the same orders in
other messages are answered by the engine as duplicates and never execute twice; concurrent
``enqueue`` calls share a message; the engine terminates a batch that does not decode and
refuses an order of another account alone; an operator finds one order's reports with the
documented commands. How many messages travelled is read from the ORDERS stream (its last
sequence), never inferred from timing. Partial failures: test_queued_batch_partial.py; N-1:
test_queued_batch_compat.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge import BridgeClient, BridgeSettings, Order, OrderType, Side, TimeInForce, contract
from bridge._batch import batch_msg_id, frame
from bridge.cli import cli
from bridge.models import decimal_from_proto
from bridge.v1 import common_pb2, orders_pb2
from bridge_dev import natscli
from bridge_dev.engine import EngineProcess, client_settings, write_client_config
from bridge_dev.server import ServerHandle, connect_as
from bridge_dev.signing import dev_signer, signed
from tests.faults.harness import FINAL, stored_reports, wait_for_ack_floor
from tests.integration.authz_helpers import wait_for_log
from tests.integration.test_order_path import collect_until_final

pytestmark = pytest.mark.integration


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def crossing(account: str, groups: int) -> list[Order]:
    """``groups`` x (a resting sell of 6 at 190.00, then two IOC buys of 3 at 190.00): inside
    AAPL's seeded spread, so the account trades with itself only, every order ends final."""

    def limit(side: Side, qty: int, tif: TimeInForce) -> Order:
        return Order(
            client_order_id=new_id("s" if side is Side.SELL else "b"),
            account=account,
            symbol="AAPL",
            side=side,
            order_type=OrderType.LIMIT,
            limit_price=Decimal("190.00"),
            quantity=Decimal(qty),
            time_in_force=tif,
        )

    return [
        o
        for _ in range(groups)
        for o in (
            limit(Side.SELL, 6, TimeInForce.GTC),
            limit(Side.BUY, 3, TimeInForce.IOC),
            limit(Side.BUY, 3, TimeInForce.IOC),
        )
    ]


async def orders_last_seq(handle: ServerHandle) -> int:
    """The ORDERS stream's last sequence: how many messages it ever stored."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        return int((await nc.jetstream().stream_info(contract.ORDERS_STREAM)).state.last_seq)
    finally:
        await nc.close()


def check_exactly_once(
    reports: list[orders_pb2.ExecutionReport], orders: list[Order]
) -> dict[str, list[orders_pb2.ExecutionReport]]:
    """Every order: one final report, report seqs 1..n, never over-filled; exec ids unique;
    the account's buys and sells match (it trades with itself only)."""
    by_order: dict[str, list[orders_pb2.ExecutionReport]] = defaultdict(list)
    for r in reports:
        by_order[r.client_order_id].append(r)
    assert set(by_order) == {o.client_order_id for o in orders}
    assert max(Counter(r.exec_id for r in reports).values()) == 1, "an exec id twice"
    for o in orders:
        rs = by_order[o.client_order_id]
        assert [r.seq for r in rs] == list(range(1, len(rs) + 1)), o.client_order_id
        assert sum(1 for r in rs if r.order_status in FINAL) == 1, o.client_order_id
        assert decimal_from_proto(rs[-1].cum_qty) <= o.quantity
    traded: dict[int, Decimal] = defaultdict(Decimal)
    for r in reports:
        if r.exec_type == orders_pb2.EXEC_TYPE_TRADE:
            traded[r.side] += decimal_from_proto(r.last_qty)
    assert traded[orders_pb2.SIDE_BUY] == traded[orders_pb2.SIDE_SELL] > 0
    return by_order


async def test_each_order_of_a_batch_executes_exactly_once_with_its_reports(
    engine: EngineProcess, nats_server: ServerHandle
) -> None:
    """300 orders, 100 per message: 3 ORDERS messages; every order NEW then TRADE(s) to a final
    report on its own subject, exactly once; money is conserved."""
    account = new_id("B")
    orders = crossing(account, 100)
    settings = client_settings(nats_server, queued_batch_max_orders=100)
    before = await orders_last_seq(nats_server)
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        stored = await bridge.enqueue_batch(orders)
        live = await collect_until_final(stream, {o.client_order_id for o in orders})
    assert await orders_last_seq(nats_server) - before == 3
    assert len({q.seq for q in stored}) == 3
    assert [q.batch_index for q in stored] == [*range(100), *range(100), *range(100)]
    assert not any(q.duplicate for q in stored)
    await wait_for_ack_floor(nats_server)
    by_order = check_exactly_once(await stored_reports(nats_server, account), orders)
    trade, new = orders_pb2.EXEC_TYPE_TRADE, orders_pb2.EXEC_TYPE_NEW
    for sell, buy1, buy2 in zip(orders[::3], orders[1::3], orders[2::3], strict=True):
        assert [r.exec_type for r in by_order[sell.client_order_id]] == [new, trade, trade]
        assert [r.exec_type for r in by_order[buy1.client_order_id]] == [new, trade]
        assert [r.exec_type for r in by_order[buy2.client_order_id]] == [new, trade]
    # The live reader saw the same reports, each order's in order.
    assert {c: [r.seq for r in rs] for c, rs in live.items()} == {
        c: [r.seq for r in rs] for c, rs in by_order.items()
    }


async def test_a_batch_resent_inside_the_duplicate_window_is_dropped_by_the_server(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    account = new_id("W")
    orders = crossing(account, 10)
    before = await orders_last_seq(nats_server)
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        first = await bridge.enqueue_batch(orders)
        again = await bridge.enqueue_batch(orders)
        await collect_until_final(stream, {o.client_order_id for o in orders})
    assert await orders_last_seq(nats_server) - before == 1  # one message stored, not two
    assert all(q.duplicate for q in again)
    assert [(q.seq, q.batch_index) for q in again] == [(q.seq, q.batch_index) for q in first]
    await wait_for_ack_floor(nats_server)
    check_exactly_once(await stored_reports(nats_server, account), orders)


async def test_the_same_orders_in_other_messages_are_duplicates_and_never_execute_twice(
    engine: EngineProcess, nats_server: ServerHandle
) -> None:
    """Outside the duplicate window, as when the same orders are packed differently: each copy
    is stored (another message id) and the engine answers each order as its duplicate (its
    order store's create fails): no second execution, no second report."""
    account = new_id("R")
    orders = crossing(account, 20)
    by_10 = client_settings(nats_server, queued_batch_max_orders=10)
    by_7 = client_settings(nats_server, queued_batch_max_orders=7)
    alone = client_settings(nats_server, queued_batch_max_orders=0)
    before = await orders_last_seq(nats_server)
    async with BridgeClient(by_10) as bridge, bridge.reports(account) as stream:
        await bridge.enqueue_batch(orders)
        await collect_until_final(stream, {o.client_order_id for o in orders})
    async with BridgeClient(by_7) as regrouped, BridgeClient(alone) as single:
        again = await regrouped.enqueue_batch(orders)
        singles = await single.enqueue_batch(orders[:10])
        assert not any(q.duplicate for q in [*again, *singles])  # stored: other message ids
        # A fresh order after the copies proves the engine processed them (delivery order).
        marker = crossing(account, 1)
        await single.enqueue_batch(marker)
    assert await orders_last_seq(nats_server) - before == 6 + 9 + 10 + 3
    await wait_for_ack_floor(nats_server)
    check_exactly_once(await stored_reports(nats_server, account), orders + marker)


async def test_concurrent_enqueue_calls_share_one_message(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """50 enqueue() calls started together: one ORDERS message; each call its own outcome."""
    account = new_id("L")
    orders = crossing(account, 10)
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        warm_up = Order(
            client_order_id=new_id("m"),
            account=account,
            symbol="AAPL",
            side=Side.BUY,
            order_type=OrderType.MARKET,
            quantity=Decimal(1),
            time_in_force=TimeInForce.IOC,
        )
        await bridge.enqueue(warm_up)  # asks the engines' versions, once
        before = await orders_last_seq(nats_server)
        queued = await asyncio.gather(*(bridge.enqueue(o) for o in orders[:30]))
        after = await orders_last_seq(nats_server)
        await collect_until_final(stream, {o.client_order_id for o in orders[:30]})
    assert after - before == 1
    assert [q.client_order_id for q in queued] == [o.client_order_id for o in orders[:30]]
    assert [q.batch_index for q in queued] == list(range(30))
    assert len({q.seq for q in queued}) == 1


async def test_a_batch_that_does_not_decode_is_terminated_and_logged(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """A signed message on the batch subject that is no OrderBatch: terminated unexecuted,
    logged at ERROR with its subject and message id; the engine goes on serving batches."""
    account = new_id("U")
    signer = dev_signer(nats_server.creds)
    subject = contract.queue_batch(account)
    good = orders_pb2.NewOrder(client_order_id=new_id("x"), account=account).SerializeToString()
    garbage = frame(good) + b"\x0a\x05\x01"  # a second order, truncated
    msg_id = new_id("garbage")
    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
    try:
        headers = {contract.HEADER_MSG_ID: msg_id}
        ack = await nc.jetstream().publish(
            subject, garbage, headers=signed(signer, subject, garbage, headers)
        )
        assert ack.seq > 0
    finally:
        await nc.close()
    line = await wait_for_log(
        engine, "undecodable order batch terminated: none of its orders was taken in"
    )
    assert line["level"].upper() == "ERROR"
    text = json.dumps(line)
    for said in (msg_id, subject, "truncated"):
        assert said in text, line
    await wait_for_ack_floor(nats_server)  # terminated: nothing pending, nothing redelivered
    assert await stored_reports(nats_server, account) == []
    orders = crossing(account, 2)
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        await bridge.enqueue_batch(orders)
        await collect_until_final(stream, {o.client_order_id for o in orders})


async def test_an_order_of_another_account_in_a_batch_is_refused_alone(
    engine: EngineProcess, nats_server: ServerHandle
) -> None:
    """The signature covers the batch; each order's account is checked against the subject's:
    the stranger is REJECTED (ACCOUNT_MISMATCH) under the subject's account, the others run."""
    account, other = new_id("A"), new_id("O")
    orders = crossing(account, 2)
    stranger = orders_pb2.NewOrder(
        client_order_id=new_id("x"),
        account=other,
        symbol="AAPL",
        side=orders_pb2.SIDE_BUY,
        order_type=orders_pb2.ORDER_TYPE_MARKET,
        quantity=common_pb2.Decimal(units=1, scale=0),
        time_in_force=orders_pb2.TIME_IN_FORCE_IOC,
    )
    encoded = [o.to_proto().SerializeToString() for o in orders[:3]]
    encoded.append(stranger.SerializeToString())
    encoded += [o.to_proto().SerializeToString() for o in orders[3:]]
    payload = b"".join(frame(e) for e in encoded)
    ids = [o.client_order_id for o in orders]
    subject = contract.queue_batch(account)
    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
    try:
        headers = {contract.HEADER_MSG_ID: batch_msg_id(account, ids)}
        signer = dev_signer(nats_server.creds)
        await nc.jetstream().publish(
            subject, payload, headers=signed(signer, subject, payload, headers)
        )
    finally:
        await nc.close()
    await wait_for_ack_floor(nats_server)
    reports = await stored_reports(nats_server, account)
    refused = [r for r in reports if r.client_order_id == stranger.client_order_id]
    assert [(r.exec_type, r.reason) for r in refused] == [
        (orders_pb2.EXEC_TYPE_REJECTED, orders_pb2.REJECT_REASON_ACCOUNT_MISMATCH)
    ]
    check_exactly_once([r for r in reports if r not in refused], orders)
    assert await stored_reports(nats_server, other) == []


async def test_an_operator_finds_one_orders_reports_with_the_documented_commands(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings, tmp_path: Path
) -> None:
    """docs-17/batch.md: `bridge tail ACCOUNT --order ID --last N` and `nats stream get
    EXECUTIONS --last-for bridge.v1.exec.ACCOUNT.ID`, for an order that travelled in a batch."""
    account = new_id("F")
    orders = crossing(account, 5)
    sell = orders[0]
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        await bridge.enqueue_batch(orders)
        await collect_until_final(stream, {o.client_order_id for o in orders})
    operator = write_client_config(client_settings(nats_server, role="operator"), tmp_path / "op")
    args = ["tail", account, "--order", sell.client_order_id, "--last", "10", "--count", "3"]
    args += ["--timeout", "30", "--config", str(operator)]
    # The CLI runs its own event loop: in a thread of its own.
    tail = await asyncio.to_thread(CliRunner().invoke, cli, args, catch_exceptions=False)
    assert tail.exit_code == 0, tail.output
    lines = tail.output.splitlines()
    assert len(lines) == 3, lines
    assert all(sell.client_order_id in line for line in lines)
    assert ["NEW" in lines[0], "TRADE" in lines[1], "TRADE" in lines[2]] == [True] * 3, lines
    if not natscli.NATS_CLI.exists():
        pytest.skip("natscli missing: run ./dev setup (.dev/bin/nats)")
    last_for = contract.executions(account, sell.client_order_id)
    argv = natscli.command(
        nats_server,
        "operator",
        "stream",
        "get",
        contract.EXECUTIONS_STREAM,
        "--last-for",
        last_for,
        "--json",
    )
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    got = json.loads(out)
    assert got["subject"] == last_for
    report = orders_pb2.ExecutionReport.FromString(base64.b64decode(got["data"]))
    assert report.client_order_id == sell.client_order_id
    assert report.order_status == orders_pb2.ORDER_STATUS_FILLED
