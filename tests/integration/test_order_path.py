"""The order path end to end: Python bridge -> real nats-server (mTLS + NKeys) -> real engine."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from bridge import (
    AckStatus,
    BridgeClient,
    BridgeSettings,
    EngineUnavailableError,
    ExecType,
    ExecutionReport,
    Order,
    OrderStatus,
    OrderType,
    RejectReason,
    ReportStream,
    Side,
    TimeInForce,
    contract,
)
from bridge.transport import service_error
from bridge.v1 import common_pb2, orders_pb2
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle, connect_as
from bridge_dev.signing import dev_signer, signed
from tests.faults.harness import stored_entries, stored_reports, wait_for_ack_floor

pytestmark = pytest.mark.integration


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def market(account: str, qty: str = "10", side: Side = Side.BUY, symbol: str = "AAPL") -> Order:
    return Order(
        client_order_id=new_id("m"),
        account=account,
        symbol=symbol,
        side=side,
        order_type=OrderType.MARKET,
        quantity=Decimal(qty),
        time_in_force=TimeInForce.IOC,
    )


async def collect_until_final(
    stream: ReportStream, want: set[str], timeout: float = 60
) -> dict[str, list[ExecutionReport]]:
    """Read an open report stream until every order in ``want`` has a final report."""
    got: dict[str, list[ExecutionReport]] = defaultdict(list)
    pending = set(want)
    async with asyncio.timeout(timeout):
        async for report in stream:
            got[report.client_order_id].append(report)
            if report.is_final:
                pending.discard(report.client_order_id)
            if not pending:
                break
    return got


async def test_sync_market_order_is_acked_then_filled(
    engine: EngineProcess, settings: BridgeSettings
) -> None:
    """A synchronous market order gets an ACCEPTED ack, then NEW and TRADE reports to FILLED."""
    account = new_id("A")
    order = market(account, qty="250")
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        ack = await bridge.submit(order)
        assert ack.status is AckStatus.ACCEPTED, ack
        assert ack.client_order_id == order.client_order_id
        assert ack.order_status is OrderStatus.PENDING_NEW
        assert not ack.duplicate
        reports = [await stream.next(timeout=10)]
        while not reports[-1].is_final:
            reports.append(await stream.next(timeout=10))
    assert next(r.exec_type for r in reports) is ExecType.NEW
    assert all(r.exec_type is ExecType.TRADE for r in reports[1:])
    final = reports[-1]
    assert final.order_status is OrderStatus.FILLED
    assert final.cum_qty == Decimal(250)
    assert final.leaves_qty == 0
    assert sum(r.last_qty for r in reports) == Decimal(250)
    notional = sum(r.last_qty * r.last_px for r in reports)
    assert final.avg_px == (notional / final.cum_qty).quantize(Decimal("0.00000001"))
    assert [r.seq for r in reports] == list(range(1, len(reports) + 1))
    assert all(r.engine_order_id == ack.engine_order_id for r in reports)


async def test_thousand_queued_orders_each_get_exactly_one_final_report(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """1,000 queued orders: every one reaches exactly one final report; none lost or doubled."""
    account = new_id("Q")
    orders = []
    for i in range(1000):
        side = Side.BUY if i % 2 else Side.SELL
        if i % 3 == 0:
            price = Decimal("190.02") if side is Side.BUY else Decimal("189.98")
            orders.append(
                Order(
                    client_order_id=f"q{i}-{uuid.uuid4().hex[:6]}",
                    account=account,
                    symbol="AAPL",
                    side=side,
                    order_type=OrderType.LIMIT,
                    limit_price=price,
                    quantity=Decimal(7),
                    time_in_force=TimeInForce.IOC,
                )
            )
        else:
            orders.append(market(account, qty=str(1 + i % 40), side=side))
    want = {o.client_order_id for o in orders}
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        stored = await bridge.enqueue_batch(orders)
        live = await collect_until_final(stream, want)
    assert len(stored) == 1000
    assert not any(s.duplicate for s in stored)
    # In OrderBatch messages (contract 1.2): each order at its own place of a stored message.
    assert len({(s.seq, s.batch_index) for s in stored}) == 1000
    assert len({s.seq for s in stored}) == -(-1000 // settings.queued_batch_max_orders)
    assert set(live) == want, f"missing: {len(want - set(live))}"

    # Durable before acknowledged: once the engine has acked every ORDERS message, one read of
    # EXECUTIONS holds every final report, each at or below the sequence it had at that moment.
    acked_at = await wait_for_ack_floor(nats_server)
    entries = await stored_entries(nats_server, account)
    durable = [r for _, r in entries]
    finals = Counter(r.client_order_id for r in durable if _is_final(r.order_status))
    exec_ids = Counter(r.exec_id for r in durable)
    assert set(finals) == want, f"not stored when acked: {sorted(want - set(finals))[:5]}"
    assert all(seq <= acked_at for seq, r in entries if _is_final(r.order_status))
    # What the live reader saw was read from EXECUTIONS: its finals were stored already.
    assert {c for c, rs in live.items() if any(r.is_final for r in rs)} <= set(finals)
    assert max(finals.values()) == 1, "an order has two final reports"
    assert max(exec_ids.values()) == 1, "an exec id was published twice"
    qty = {o.client_order_id: o.quantity for o in orders}
    for r in durable:
        cum = Decimal(r.cum_qty.units).scaleb(-r.cum_qty.scale)
        assert cum <= qty[r.client_order_id]


async def test_queued_orders_trading_with_each_other_in_one_pull(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """Queued orders arrive together (the engine stores, executes and reports a pull's
    messages as one batch): a resting sell taken by two buys behind it ends FILLED in the
    order store and in EXECUTIONS, with one report per fill on each side and nothing doubled."""
    account = new_id("X")
    price = Decimal("190.00")  # inside AAPL's seeded spread (189.99 / 190.01)

    def limit(side: Side, qty: int, tif: TimeInForce) -> Order:
        return Order(
            client_order_id=new_id("s" if side is Side.SELL else "b"),
            account=account,
            symbol="AAPL",
            side=side,
            order_type=OrderType.LIMIT,
            limit_price=price,
            quantity=Decimal(qty),
            time_in_force=tif,
        )

    groups = [
        (
            limit(Side.SELL, 6, TimeInForce.GTC),
            limit(Side.BUY, 3, TimeInForce.IOC),
            limit(Side.BUY, 3, TimeInForce.IOC),
        )
        for _ in range(30)
    ]
    orders = [o for g in groups for o in g]
    want = {o.client_order_id for o in orders}
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        await bridge.enqueue_batch(orders)
        live = await collect_until_final(stream, want)
        states = [await bridge.status(account, sell.client_order_id) for sell, _, _ in groups]
    assert set(live) == want
    for state in states:
        assert state.last_report is not None
        assert state.last_report.order_status is OrderStatus.FILLED, state
        assert state.last_report.cum_qty == Decimal(6)
    durable = await stored_reports(nats_server, account)
    assert len({r.exec_id for r in durable}) == len(durable), "an exec id was stored twice"
    by_order: dict[str, list[int]] = defaultdict(list)
    for r in durable:
        by_order[r.client_order_id].append(r.exec_type)
    trade = orders_pb2.EXEC_TYPE_TRADE
    new = orders_pb2.EXEC_TYPE_NEW
    for sell, buy1, buy2 in groups:
        assert by_order[sell.client_order_id] == [new, trade, trade]
        assert by_order[buy1.client_order_id] == [new, trade]
        assert by_order[buy2.client_order_id] == [new, trade]


def _is_final(status: int) -> bool:
    return status in (
        orders_pb2.ORDER_STATUS_FILLED,
        orders_pb2.ORDER_STATUS_CANCELED,
        orders_pb2.ORDER_STATUS_REJECTED,
        orders_pb2.ORDER_STATUS_EXPIRED,
    )


async def test_duplicate_submission_is_not_executed_twice(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """Re-sending a client order id (sync and queued) returns the original outcome, no new fill."""
    account = new_id("D")
    order = market(account, qty="30")
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        first = await bridge.submit(order)
        again = await bridge.submit(order)
        queued_again = await bridge.enqueue(order)
        # A fresh order after the duplicates proves the engine processed them (FIFO per path).
        marker = market(account, qty="1")
        await bridge.enqueue(marker)
        await collect_until_final(stream, {marker.client_order_id})
        state = await bridge.status(account, order.client_order_id)
    assert first.status is AckStatus.ACCEPTED
    assert not first.duplicate
    assert again.duplicate
    assert again.engine_order_id == first.engine_order_id
    assert again.status is AckStatus.ACCEPTED
    assert not queued_again.duplicate  # JetStream stored it: the engine must deduplicate
    durable = await stored_reports(nats_server, account)
    trades = [r for r in durable if r.client_order_id == order.client_order_id]
    assert sum(1 for r in trades if r.exec_type == orders_pb2.EXEC_TYPE_TRADE) >= 1
    assert sum(1 for r in trades if _is_final(r.order_status)) == 1
    assert state.found
    assert state.last_report is not None
    assert state.last_report.cum_qty == Decimal(30)


async def test_malformed_and_invalid_orders_are_rejected_with_field_detail(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """Garbage bytes are a service error (400); invalid orders are REJECTED with field paths;
    the engine keeps serving."""
    account = new_id("M")
    signer = dev_signer(nats_server.creds)
    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")

    async def request(subject: str, payload: bytes) -> Msg:
        headers = signed(signer, subject, payload)
        return await nc.request(subject, payload, timeout=5, headers=headers)

    try:
        # Undecodable: the service API's error answer (no payload, code 400), which the
        # engine's service statistics count as an endpoint error.
        for subject in (contract.submit("ACC1"), contract.cancel("ACC1"), contract.status("ACC1")):
            reply = await request(subject, b"\xff\xff\xff not protobuf")
            assert reply.data == b""
            error = service_error(reply.headers)
            assert error is not None, reply.headers
            assert error.code == 400
            assert error.status.startswith("not a bridge.v1."), error.status

        bad = orders_pb2.NewOrder(
            client_order_id=new_id("bad"),
            account=account,
            symbol="AAPL",
            order_type=orders_pb2.ORDER_TYPE_LIMIT,
            quantity=common_pb2.Decimal(units=0, scale=0),
            time_in_force=orders_pb2.TIME_IN_FORCE_GTC,
        )
        reply = await request(contract.submit(account), bad.SerializeToString())
        ack = orders_pb2.OrderAck.FromString(reply.data)
        assert ack.status == orders_pb2.ACK_STATUS_REJECTED
        assert ack.reason == orders_pb2.REJECT_REASON_INVALID_FIELD
        assert {(e.field, e.rule) for e in ack.field_errors} == {
            ("side", "required"),
            ("quantity", "positive"),
            ("limit_price", "required_for_limit"),
        }
        assert all(e.message for e in ack.field_errors)

        # Status and cancel requests naming no order are answered, and do not stop the engine.
        reply = await request(contract.status("ACC1"), b"")
        status_reply = orders_pb2.OrderStatusReply.FromString(reply.data)
        assert not status_reply.found
        assert status_reply.reason == orders_pb2.REJECT_REASON_INVALID_FIELD
        reply = await request(contract.cancel("ACC1"), b"")
        cancel_ack = orders_pb2.OrderAck.FromString(reply.data)
        assert cancel_ack.status == orders_pb2.ACK_STATUS_REJECTED
        assert cancel_ack.reason == orders_pb2.REJECT_REASON_INVALID_FIELD

        # A malformed queued message is attributed through its subject and Nats-Msg-Id.
        js = nc.jetstream()
        garbage_id = new_id("garbage")
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            # Garbage without a Nats-Msg-Id cannot be attributed: acked and dropped, not fatal.
            queue = contract.queue(account)
            await js.publish(queue, b"\xff\xff", headers=signed(signer, queue, b"\xff\xff"))
            garbage = b"\x08\x96\x01\xff"
            headers = {contract.HEADER_MSG_ID: garbage_id}
            await js.publish(queue, garbage, headers=signed(signer, queue, garbage, headers))
            report = await stream.next(timeout=10)
            assert report.client_order_id == garbage_id
            assert report.exec_type is ExecType.REJECTED
            assert report.reason is RejectReason.MALFORMED
            assert report.field_errors[0].field == "<message>"

            unknown = market(account, symbol="NOPE")
            ack2 = await bridge.submit(unknown)
            assert ack2.status is AckStatus.REJECTED
            assert ack2.reason is RejectReason.UNKNOWN_SYMBOL
            assert ack2.field_errors[0].field == "symbol"
            risky = market(account, qty="6000")
            ack3 = await bridge.submit(risky)
            assert (ack3.reason, ack3.field_errors[0].rule) == (
                RejectReason.RISK_LIMIT,
                "max_order_qty",
            )
            # ...and the engine still serves good orders.
            good = await bridge.submit(market(account, qty="1"))
            assert good.status is AckStatus.ACCEPTED
    finally:
        await nc.close()


async def test_engine_absent_fails_fast_with_engine_unavailable(
    nats_server: ServerHandle, settings: BridgeSettings
) -> None:
    """With no engine subscribed, submit raises EngineUnavailableError (not a timeout)."""
    patient = settings.model_copy(update={"request_timeout_ms": 60_000})
    async with BridgeClient(patient) as bridge:
        order = market(new_id("U"))
        with pytest.raises(EngineUnavailableError) as info:
            async with asyncio.timeout(30):  # far below the 60 s request timeout
                await bridge.submit(order)
    assert info.value.client_order_id == order.client_order_id
    assert info.value.correlation_id


async def test_acked_order_survives_engine_crash_right_after_ack(
    nats_server: ServerHandle, settings: BridgeSettings, tmp_path: Path
) -> None:
    """Killed the instant after its ack: the ack followed the journal entry holding the order's
    execution, so the restarted engine publishes its reports from the journal (repair), once."""
    account = new_id("K")
    crashing = EngineProcess(
        nats_server, log_file=tmp_path / "crash.log", env={"BRIDGE_FAILPOINT": "after_ack"}
    ).start()
    order = market(account, qty="40")
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        ack = await bridge.submit(order)
        assert ack.status is AckStatus.ACCEPTED
        assert crashing.wait(timeout=20) == -signal.SIGABRT  # died right after the ack
        with EngineProcess(nats_server, log_file=tmp_path / "restart.log") as restarted:
            assert restarted.recovered == 0  # nothing left to execute: repaired instead
            assert "projections repaired from the journal" in restarted.log_tail(200)
            await collect_until_final(stream, {order.client_order_id})
            state = await bridge.status(account, order.client_order_id)
    assert state.last_report is not None
    assert state.last_report.order_status is OrderStatus.FILLED
    assert state.last_report.cum_qty == Decimal(40)
    durable = await stored_reports(nats_server, account)
    assert sum(1 for r in durable if _is_final(r.order_status)) == 1


async def test_cancel_and_status(engine: EngineProcess, settings: BridgeSettings) -> None:
    """A resting GTC order can be queried and canceled; canceling it again is TOO_LATE."""
    account = new_id("C")
    order = Order(
        client_order_id=new_id("gtc"),
        account=account,
        symbol="MSFT",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        limit_price=Decimal("300.00"),
        quantity=Decimal(5),
        time_in_force=TimeInForce.GTC,
    )
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        ack = await bridge.submit(order)
        assert ack.accepted
        new = await stream.next(timeout=10)
        assert (new.exec_type, new.order_status) == (ExecType.NEW, OrderStatus.NEW)
        state = await bridge.status(account, order.client_order_id)
        assert state.found
        assert state.last_report is not None
        assert state.last_report.order_status is OrderStatus.NEW
        canceled = await bridge.cancel(account, order.client_order_id)
        assert canceled.accepted, canceled
        report = await stream.next(timeout=10)
        assert (report.exec_type, report.order_status) == (ExecType.CANCELED, OrderStatus.CANCELED)
        assert report.leaves_qty == 0
        again = await bridge.cancel(account, order.client_order_id)
        assert (again.status, again.reason) == (AckStatus.REJECTED, RejectReason.TOO_LATE)
        unknown = await bridge.cancel(account, "never-sent")
        assert unknown.reason is RejectReason.UNKNOWN_ORDER
        missing = await bridge.status(account, "never-sent")
        assert missing.found is False


async def test_queued_order_stored_then_crash_is_executed_once_after_restart(
    nats_server: ServerHandle, settings: BridgeSettings, tmp_path: Path
) -> None:
    """Killed after storing a queued order, the restarted engine finishes it exactly once."""
    account = new_id("J")
    crashing = EngineProcess(
        nats_server, log_file=tmp_path / "crash.log", env={"BRIDGE_FAILPOINT": "after_store"}
    ).start()
    order = market(account, qty="12", side=Side.SELL)
    async with BridgeClient(settings) as bridge:
        stored = await bridge.enqueue(order)
        assert stored.stream == contract.ORDERS_STREAM
        code = await asyncio.to_thread(crashing.wait, 20)
        assert code == -signal.SIGABRT  # died right after storing, before executing
        async with bridge.reports(account) as stream:
            with EngineProcess(nats_server, log_file=tmp_path / "restart.log") as restarted:
                assert restarted.recovered == 1
                live = await collect_until_final(stream, {order.client_order_id})
    finals = [r for r in live[order.client_order_id] if r.is_final]
    assert len(finals) == 1
    assert finals[0].order_status is OrderStatus.FILLED
    durable = await stored_reports(nats_server, account)
    assert sum(1 for r in durable if _is_final(r.order_status)) == 1
    assert len({r.exec_id for r in durable}) == len(durable)


async def test_several_subscribers_see_the_same_flow(
    engine: EngineProcess, settings: BridgeSettings
) -> None:
    """Account-wide and per-order subscribers, on separate clients, see identical reports."""
    account = new_id("S")
    watched, other = market(account, qty="15"), market(account, qty="5", side=Side.SELL)
    async with (
        BridgeClient(settings) as sender,
        BridgeClient(settings) as watcher,
        watcher.reports(account) as everything,
        watcher.reports(account, watched.client_order_id) as one_order,
        sender.reports(account) as senders_view,
    ):
        await sender.submit(watched)
        await sender.submit(other)
        want = {watched.client_order_id, other.client_order_id}
        seen_all = await collect_until_final(everything, want)
        seen_sender = await collect_until_final(senders_view, want)
        seen_one = await collect_until_final(one_order, {watched.client_order_id})
    assert set(seen_one) == {watched.client_order_id}  # the order filter holds
    ids = {order_id: [r.exec_id for r in reports] for order_id, reports in seen_all.items()}
    assert ids == {
        order_id: [r.exec_id for r in reports] for order_id, reports in seen_sender.items()
    }
    assert [r.exec_id for r in seen_one[watched.client_order_id]] == ids[watched.client_order_id]
