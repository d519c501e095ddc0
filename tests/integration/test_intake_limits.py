"""Issue 9, item 2: no order the server accepts can stop the engine.

An order with tens of thousands of tags is well-formed protobuf and fits the server's 1 MiB
max_payload, but an order store record holding it would not. The engine must reject it at intake,
on both paths, with the field and the limit, store only a bounded record, and keep serving
(same process). Orders are sent as raw protobuf: the Python model refuses them before sending.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import (
    AckStatus,
    BridgeClient,
    BridgeSettings,
    ExecType,
    Order,
    OrderAck,
    OrderType,
    PublishError,
    RejectReason,
    Side,
    StreamFullError,
    TimeInForce,
    contract,
)
from bridge.v1 import common_pb2, orders_pb2
from bridge_dev.engine import EngineProcess, client_settings
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as
from bridge_dev.signing import dev_signer, signed
from tests.faults.harness import stored_reports

pytestmark = pytest.mark.integration


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def tagged_order(account: str, tags: int) -> orders_pb2.NewOrder:
    """A valid market order but for its ``tags`` tags (~30 bytes each on the wire)."""
    return orders_pb2.NewOrder(
        client_order_id=new_id("tags"),
        account=account,
        symbol="AAPL",
        side=orders_pb2.SIDE_BUY,
        order_type=orders_pb2.ORDER_TYPE_MARKET,
        quantity=common_pb2.Decimal(units=1, scale=0),
        time_in_force=orders_pb2.TIME_IN_FORCE_IOC,
        tags={f"key-{i:06d}": f"value-{i:06d}-xxxxxxxxxx" for i in range(tags)},
    )


def market(account: str) -> Order:
    return Order(
        client_order_id=new_id("ok"),
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(1),
        time_in_force=TimeInForce.IOC,
    )


async def test_oversized_tags_on_the_submit_path_are_rejected_and_the_engine_keeps_serving(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """A ~750 KB order with 25,000 tags on the submit subject is REJECTED naming tags and the
    limit, with one small REJECTED report; the same engine process acks a valid order next."""
    account = new_id("TS")
    pid = engine.pid
    huge = tagged_order(account, 25_000)
    payload = huge.SerializeToString()
    assert 600_000 < len(payload) < 1_000_000  # under the server's max_payload
    signer = dev_signer(nats_server.creds)

    def sign(subject: str, payload: bytes) -> dict[str, str]:
        return signed(signer, subject, payload)

    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
    try:
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            subject = contract.submit(account)
            reply = await nc.request(subject, payload, timeout=10, headers=sign(subject, payload))
            ack = OrderAck.from_proto(orders_pb2.OrderAck.FromString(reply.data))
            report = await stream.next(timeout=10)
            good = await bridge.submit(market(account))
    finally:
        await nc.close()
    assert (ack.status, ack.reason) == (AckStatus.REJECTED, RejectReason.INVALID_FIELD), ack
    assert ack.client_order_id == huge.client_order_id
    errors = {(e.field, e.rule): e.message for e in ack.field_errors}
    assert "32" in errors["tags", "max_items"]
    assert "4096" in errors["<message>", "max_bytes"]
    assert len(ack.text) < 1000
    assert (report.client_order_id, report.exec_type) == (huge.client_order_id, ExecType.REJECTED)
    assert report.tags == {}, "the rejected tags are not carried into the report"
    assert good.status is AckStatus.ACCEPTED, good
    assert engine.running
    assert engine.pid == pid
    durable = await stored_reports(nats_server, account)
    rejected = [r for r in durable if r.client_order_id == huge.client_order_id]
    assert len(rejected) == 1
    assert rejected[0].ByteSize() < 2048


async def test_oversized_tags_on_the_queued_path_are_rejected_or_refused_by_the_stream(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """Queued: an order under ORDERS' 64 KiB limit but over the tag limit gets a REJECTED
    report naming tags; one over 64 KiB is refused by the stream with a typed PublishError;
    the same engine then executes a valid queued order."""
    account = new_id("TQ")
    pid = engine.pid
    mid = tagged_order(account, 1_500)
    assert 4096 < mid.ByteSize() < 65_536
    big = tagged_order(account, 3_000)
    assert big.ByteSize() > 65_536
    oversized = Order.model_construct(  # bypasses the model's own limits on purpose
        client_order_id=big.client_order_id,
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(1),
        time_in_force=TimeInForce.IOC,
        tags=dict(big.tags),
    )
    signer = dev_signer(nats_server.creds)
    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
    try:
        js = nc.jetstream()
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            subject, payload = contract.queue(account), mid.SerializeToString()
            headers = {contract.HEADER_MSG_ID: mid.client_order_id}
            await js.publish(subject, payload, headers=signed(signer, subject, payload, headers))
            report = await stream.next(timeout=10)
            with pytest.raises(PublishError) as refused:
                await bridge.enqueue(oversized)
            valid = market(account)
            await bridge.enqueue(valid)
            final = await stream.next(timeout=10)
            while final.client_order_id != valid.client_order_id or not final.is_final:
                final = await stream.next(timeout=10)
    finally:
        await nc.close()
    assert (report.client_order_id, report.exec_type) == (mid.client_order_id, ExecType.REJECTED)
    assert report.reason is RejectReason.INVALID_FIELD
    rules = {(e.field, e.rule) for e in report.field_errors}
    assert {("tags", "max_items"), ("<message>", "max_bytes")} <= rules
    assert report.tags == {}
    assert not isinstance(refused.value, StreamFullError)
    assert refused.value.err_code == 10054  # JetStream: message size exceeds maximum allowed
    assert not refused.value.transient
    assert final.order_status.is_final
    assert engine.running
    assert engine.pid == pid


async def _set_store_max_msg_size(handle: ServerHandle, size: int) -> None:
    """Change the order bucket's stream limit on one message (as the operator)."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        stream = contract.kv_stream(contract.ORDERS_KV_BUCKET)
        config = (await js.stream_info(stream)).config
        await js.update_stream(config.evolve(max_msg_size=size))
    finally:
        await nc.close()


async def test_a_record_the_order_store_refuses_for_good_is_answered_not_retried(
    fresh_server: LocalNatsServer, tmp_path: Path
) -> None:
    """With the order store's per-message limit cut below one record, a submit is answered REJECTED
    (ENGINE_UNAVAILABLE) at once instead of being retried until the engine exits; the engine
    logs it at ERROR and, once the limit is back, accepts the next order in the same process."""
    handle = fresh_server.handle
    account = new_id("JR")
    await _set_store_max_msg_size(handle, 128)  # every OrderRecord is larger
    engine = EngineProcess(handle, log_file=tmp_path / "engine.log").start()
    pid = engine.pid
    settings = client_settings(handle, request_timeout_ms=5000, order_retry_max_attempts=1)
    try:
        async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
            refused = await bridge.submit(market(account))
            report = await stream.next(timeout=10)
            await _set_store_max_msg_size(handle, -1)
            accepted = await bridge.submit(market(account))
        running = engine.running
    finally:
        code = engine.stop()
    assert code == 0, engine.log_tail()
    assert (refused.status, refused.reason) == (
        AckStatus.REJECTED,
        RejectReason.ENGINE_UNAVAILABLE,
    ), refused
    assert "refused" in refused.text
    assert "10054" in refused.text  # JetStream: message size exceeds maximum allowed
    assert (report.exec_type, report.reason) == (ExecType.REJECTED, RejectReason.ENGINE_UNAVAILABLE)
    assert accepted.status is AckStatus.ACCEPTED, accepted
    assert running
    assert engine.pid == pid
    log = engine.log_tail(200)
    assert "order store refused an order's record for good" in log
    assert "retrying" not in log
