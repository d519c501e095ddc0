"""N-1 on the wire, both directions, against a real nats-server: contract 1.0's client with the
current engine, the current client with 1.0's engine, and the engine's version header check.

The previous peers are release 1.0's own code (``bridge_dev.compat``, built by ./dev setup from
the release commit): the 1.0 engine binary ``bridge-engine-1-0`` (fixture ``engine_1_0``) and
the 1.0 ``bridge`` package, run as a script (tests/integration/released_client.py) in a process
of its own. The matrix (docs-16/compat.md):

* 1.0 client, 1.1 engine: submit (sync and queued), cancel, status and reports() work; a 1.1
  report's new field (price) survives the 1.0 client's re-encoding.
* 1.1 client, 1.0 engine: submit (sync and queued), cancel, status and reports() work, new
  fields ignored; replace, mass cancel and session open are refused with
  UnsupportedOperationError (EngineUnavailableError once no engine is up).
* raw requests, 1.1 engine: Bridge-Schema-Version of major 2 refused (UNSUPPORTED_VERSION, field
  error), unparsable refused (format), 1.7 accepted, absent accepted as 1.0, on every order
  operation, queued orders too; the versions in the metric and in the log span.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient

from bridge import (
    AckStatus,
    BridgeClient,
    BridgeSettings,
    EngineUnavailableError,
    ExecType,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    UnsupportedOperationError,
    contract,
)
from bridge.retry import with_retries
from bridge.v1 import common_pb2, lifecycle_pb2, orders_pb2, session_pb2
from bridge_dev import compat
from bridge_dev.engine import EngineProcess
from bridge_dev.pki import DevCredentials
from bridge_dev.server import ServerHandle, connect_as
from bridge_dev.signing import dev_signer, signed
from tests.conftest import provisioned_server
from tests.faults.harness import stored_reports, wait_for_ack_floor

pytestmark = pytest.mark.integration

RELEASED_CLIENT = Path(__file__).with_name("released_client.py")
RESTING_PRICE = Decimal("150.00")
"""Far below the seeded AAPL book (about 190): a buy limit there rests until canceled."""
METRIC = "bridge_engine_schema_version_requests_total"


@pytest.fixture(scope="module")
def nats_server(
    dev_creds: DevCredentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """The module's server provisioned like a deployment upgraded from contract 1.1, which is
    where a 1.0 engine and a current one meet: the projections persisted per message, and
    EXECUTIONS allowing the atomic batches engines before 1.2 commit their reports in (a stream
    persisted asynchronously refuses them; ``bridge provision --projections fsync``)."""
    yield from provisioned_server(dev_creds, tmp_path_factory, projections="fsync")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run_released_client(settings: BridgeSettings, account: str, tmp_path: Path) -> dict[str, Any]:
    """Release 1.0's client, in a process of its own, through its order path (see
    released_client.py); what it saw."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(compat.client_path())
    request = {
        "settings": settings.model_dump(mode="json", exclude_unset=True, exclude={"nkey_seed"}),
        "account": account,
    }
    done = subprocess.run(
        [sys.executable, "-P", str(RELEASED_CLIENT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out: dict[str, Any] = json.loads(done.stdout)
    assert Path(out["bridge"]).is_relative_to(compat.client_path()), out["bridge"]
    return out


def versions_seen(engine: EngineProcess) -> dict[str, float]:
    """The engine's ``bridge_engine_schema_version_requests_total`` by version label."""
    with urllib.request.urlopen(engine.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    pattern = re.compile(rf'^{METRIC}{{schema_version="([^"]+)"}} (\S+)$', re.M)
    return {label: float(value) for label, value in pattern.findall(text)}


def log_lines(engine: EngineProcess) -> list[dict[str, Any]]:
    lines = []
    for line in engine.log_file.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def decimal(d: common_pb2.Decimal) -> Decimal:
    return Decimal(d.units).scaleb(-d.scale)


# --- 1.0 client -> 1.1 engine ---------------------------------------------------------------


def test_a_1_0_client_trades_with_the_current_engine(
    engine: EngineProcess, settings: BridgeSettings, tmp_path: Path
) -> None:
    account = new_id("N1")
    out = run_released_client(settings, account, tmp_path)
    ids = out["ids"]
    assert out["sync_ack"]["status"] == AckStatus.ACCEPTED
    assert out["queued_ack"]["seq"] > 0
    assert out["resting_ack"]["status"] == AckStatus.ACCEPTED
    assert out["cancel_ack"]["status"] == AckStatus.ACCEPTED
    assert out["cancel_ack"]["order_status"] == OrderStatus.CANCELED
    assert out["status"]["found"] is True
    assert out["status"]["last_report"]["order_status"] == OrderStatus.CANCELED
    finals = {r["client_order_id"]: r for r in out["reports"] if r["order_status"] in _FINAL}
    assert finals[ids["sync"]]["order_status"] == OrderStatus.FILLED
    assert Decimal(finals[ids["sync"]]["cum_qty"]) == 10
    assert finals[ids["queued"]]["order_status"] == OrderStatus.FILLED
    assert Decimal(finals[ids["queued"]]["cum_qty"]) == 20
    assert finals[ids["resting"]]["order_status"] == OrderStatus.CANCELED
    assert {r["exec_type"] for r in out["reports"]} >= {ExecType.NEW, ExecType.TRADE}

    # Unknown fields: the current engine's reports carry `price` (1.1); 1.0's generated Python
    # does not know it, and writes it back untouched.
    assert "price" not in out["report_fields_1_0"]
    reencoded = [
        orders_pb2.ExecutionReport.FromString(bytes.fromhex(h)) for h in out["reports_reencoded"]
    ]
    assert len(reencoded) == len(out["reports"])
    resting = [r for r in reencoded if r.client_order_id == ids["resting"]]
    assert resting
    for report in resting:
        assert report.HasField("price"), report
        assert decimal(report.price) == RESTING_PRICE

    # The engine counted the 1.0 client's operations as 1.0 (it sends no header): two
    # submits, a queued order, a cancel, a status query.
    assert versions_seen(engine).get("1.0", 0) >= 5


_FINAL = {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}


# --- 1.1 client -> 1.0 engine ---------------------------------------------------------------


def _resting(account: str) -> Order:
    return Order(
        client_order_id=new_id("l"),
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        limit_price=RESTING_PRICE,
        quantity=Decimal(5),
        time_in_force=TimeInForce.GTC,
    )


def _market(account: str, qty: str) -> Order:
    return Order(
        client_order_id=new_id("m"),
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(qty),
        time_in_force=TimeInForce.IOC,
    )


async def request_1_1(bridge: BridgeClient, what: str, subject: str, msg: Message) -> bytes:
    """A 1.1 request on the client's one request path, under its retries, as the 1.1
    operations' methods make it (they are built beside this lane)."""
    requests = bridge._requests
    return await with_retries(
        bridge.settings,
        what,
        lambda: requests._request(
            what,
            subject,
            "",
            msg,
            lambda data: data,
            client_order_id=new_id("r"),
            correlation_id=new_id("c"),
            traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
            timeout=5.0,
        ),
        lambda: None,
    )


def requests_of_1_1(account: str, client_order_id: str) -> list[tuple[str, str, Message]]:
    return [
        (
            "replace",
            contract.replace(account),
            lifecycle_pb2.ReplaceRequest(
                account=account,
                orig_client_order_id=client_order_id,
                client_order_id=new_id("r"),
                limit_price=common_pb2.Decimal(units=15100, scale=2),
            ),
        ),
        (
            "mass_cancel",
            contract.mass_cancel(account),
            lifecycle_pb2.MassCancelRequest(account=account, request_id=new_id("mc")),
        ),
        (
            "session_open",
            contract.session_open("s-1"),
            session_pb2.SessionOpen(session_id="s-1", grace_ms=5000, cancel_on_disconnect=True),
        ),
    ]


async def test_the_current_client_trades_with_a_1_0_engine(
    engine_1_0: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    account = new_id("N1")
    sync, queued, resting = _market(account, "10"), _market(account, "20"), _resting(account)
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        ack = await bridge.submit(sync)
        assert ack.status is AckStatus.ACCEPTED, ack
        assert (await bridge.enqueue(queued)).seq > 0
        ack = await bridge.submit(resting)
        assert ack.status is AckStatus.ACCEPTED, ack
        canceled = await bridge.cancel(account, resting.client_order_id)
        assert canceled.status is AckStatus.ACCEPTED, canceled
        state = await bridge.status(account, resting.client_order_id)
        assert state.found
        assert state.last_report is not None
        assert state.last_report.order_status is OrderStatus.CANCELED

        # A 1.1 field the 1.0 engine does not know (NewOrder.session_id) is ignored.
        nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
        try:
            with_session = _market(account, "5").to_proto()
            with_session.session_id = "s-1"
            ack_msg = await signed_request(
                nc, nats_server, contract.submit(account), with_session, {}
            )
        finally:
            await nc.close()
        assert orders_pb2.OrderAck.FromString(ack_msg).status == orders_pb2.ACK_STATUS_ACCEPTED

        pending = {
            sync.client_order_id,
            queued.client_order_id,
            resting.client_order_id,
            with_session.client_order_id,
        }
        finals = {}
        async with asyncio.timeout(60):
            while pending:
                report = await stream.next(timeout=30)
                if report.is_final:
                    finals[report.client_order_id] = report.order_status
                    pending.discard(report.client_order_id)
        assert finals[sync.client_order_id] is OrderStatus.FILLED
        assert finals[queued.client_order_id] is OrderStatus.FILLED
        assert finals[resting.client_order_id] is OrderStatus.CANCELED
        assert finals[with_session.client_order_id] is OrderStatus.FILLED

        # The 1.1 operations: the 1.0 engine does not serve them, and the client says so.
        for what, subject, msg in requests_of_1_1(account, resting.client_order_id):
            with pytest.raises(UnsupportedOperationError) as raised:
                await request_1_1(bridge, what, subject, msg)
            err = raised.value
            assert (err.operation, err.min_contract, err.engine_contract) == (what, "1.1", "1.0")
            assert err.engine_ids == (engine_1_0.engine_id,)
            assert subject in str(err)

        # With no engine up, the same request is EngineUnavailableError (retried, then raised).
        assert engine_1_0.stop() == 0
        bridge._conn.settings = bridge.settings.model_copy(update={"order_retry_max_attempts": 1})
        what, subject, msg = requests_of_1_1(account, resting.client_order_id)[0]
        with pytest.raises(EngineUnavailableError):
            await request_1_1(bridge, what, subject, msg)


# --- the version header ---------------------------------------------------------------------


async def signed_request(
    nc: NatsClient, handle: ServerHandle, subject: str, msg: Message, headers: dict[str, str]
) -> bytes:
    payload = msg.SerializeToString()
    reply = await nc.request(
        subject,
        payload,
        timeout=10,
        headers=signed(dev_signer(handle.creds), subject, payload, headers),
    )
    return bytes(reply.data)


def version(value: str | None) -> dict[str, str]:
    return {} if value is None else {contract.HEADER_SCHEMA_VERSION: value}


def _refused(errors: Any, rule: str, said: str) -> None:
    (error,) = errors
    assert (error.field, error.rule) == (contract.HEADER_SCHEMA_VERSION, rule)
    assert said in error.message, error.message
    assert f"contract {contract.CONTRACT_VERSION}" in error.message, error.message


async def test_the_engine_reads_the_version_header(
    nats_server: ServerHandle, settings: BridgeSettings, tmp_path: Path
) -> None:
    account = new_id("V")
    log = tmp_path / "engine.log"
    with EngineProcess(nats_server, log_file=log, env={"BRIDGE_LOG": "debug"}) as engine:
        before = versions_seen(engine)
        nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
        try:
            await _version_checks(nc, nats_server, account, settings)
        finally:
            await nc.close()
        await wait_for_ack_floor(nats_server)
        after = versions_seen(engine)
        lines = log_lines(engine)
    # A queued order of another major: REJECTED, reported with the field error.
    reports = await stored_reports(nats_server, account)
    (queued,) = [r for r in reports if r.client_order_id.startswith("q2-")]
    assert queued.order_status == orders_pb2.ORDER_STATUS_REJECTED
    assert queued.reason == orders_pb2.REJECT_REASON_UNSUPPORTED_VERSION
    _refused(queued.field_errors, "supported_major", "2.0")

    # The metric: every version the requests declared, bounded labels.
    seen = {label: after.get(label, 0) - before.get(label, 0) for label in after}
    assert set(after) == {"1.0", "1.1", "1.2", "1.newer", "unsupported", "invalid"}
    assert seen["1.0"] >= 1  # no header
    assert seen[contract.CONTRACT_VERSION] >= 2  # the current client: submit and status
    assert seen["1.newer"] >= 1  # 1.7
    assert seen["unsupported"] >= 7  # 2.0: submit, cancel, status, replace, mass, session, queued
    assert seen["invalid"] >= 1

    # The log span carries the version the request declared.
    newer = [line for line in lines if line.get("schema_version") == "1.7"]
    assert any(line.get("client_order_id", "").startswith("v17-") for line in newer), newer
    refused = [line for line in lines if line.get("message") == _REFUSED_LINE]
    assert any(line.get("schema_version") == "2.0" for line in refused), refused


_REFUSED_LINE = "request refused: unsupported contract version"


async def _version_checks(
    nc: NatsClient, handle: ServerHandle, account: str, settings: BridgeSettings
) -> None:
    def order(prefix: str) -> orders_pb2.NewOrder:
        return (
            _market(account, "1").model_copy(update={"client_order_id": new_id(prefix)}).to_proto()
        )

    async def ask(subject: str, msg: Message, said: str | None) -> bytes:
        return await signed_request(nc, handle, subject, msg, version(said))

    ack = orders_pb2.OrderAck.FromString
    # Another major: refused with the detailed error, nothing stored.
    refused = order("v2")
    a = ack(await ask(contract.submit(account), refused, "2.0"))
    assert a.status == orders_pb2.ACK_STATUS_REJECTED
    assert a.reason == orders_pb2.REJECT_REASON_UNSUPPORTED_VERSION
    assert a.client_order_id == refused.client_order_id
    _refused(a.field_errors, "supported_major", "2.0")
    assert "Bridge-Schema-Version" in a.text
    # Unparsable: the same, rule "format".
    a = ack(await ask(contract.submit(account), order("vx"), "v2"))
    assert a.reason == orders_pb2.REJECT_REASON_UNSUPPORTED_VERSION
    _refused(a.field_errors, "format", '"v2"')
    # A newer minor, and no header at all: accepted.
    for prefix, said in (("v17", "1.7"), ("v10", None)):
        a = ack(await ask(contract.submit(account), order(prefix), said))
        assert a.status == orders_pb2.ACK_STATUS_ACCEPTED, (said, a)
    # Every other order operation of another major: refused in its own reply type.
    cancel = orders_pb2.CancelRequest(account=account, client_order_id=refused.client_order_id)
    a = ack(await ask(contract.cancel(account), cancel, "2.0"))
    assert a.reason == orders_pb2.REJECT_REASON_UNSUPPORTED_VERSION
    _refused(a.field_errors, "supported_major", "2.0")
    query = orders_pb2.OrderStatusRequest(account=account, client_order_id=refused.client_order_id)
    reply = orders_pb2.OrderStatusReply.FromString(
        await ask(contract.status(account), query, "2.0")
    )
    assert not reply.found
    assert reply.reason == orders_pb2.REJECT_REASON_UNSUPPORTED_VERSION
    assert "supported_major" in reply.text
    answers: list[tuple[str, Message, Callable[[bytes], Any]]] = [
        (
            contract.replace(account),
            lifecycle_pb2.ReplaceRequest(
                account=account, orig_client_order_id="x", client_order_id=new_id("r")
            ),
            orders_pb2.OrderAck.FromString,
        ),
        (
            contract.mass_cancel(account),
            lifecycle_pb2.MassCancelRequest(account=account),
            lifecycle_pb2.MassCancelReply.FromString,
        ),
        (
            contract.session_open("s-v2"),
            session_pb2.SessionOpen(session_id="s-v2"),
            session_pb2.SessionAck.FromString,
        ),
    ]
    for subject, msg, decode in answers:
        answer = decode(await ask(subject, msg, "2.0"))
        assert answer.reason == orders_pb2.REJECT_REASON_UNSUPPORTED_VERSION, subject
        _refused(answer.field_errors, "supported_major", "2.0")
    # The refused order was never taken: its id is unknown (and now retired).
    async with BridgeClient(settings) as bridge:
        state = await bridge.status(account, refused.client_order_id)
        assert not state.found
        ack_11 = await bridge.submit(_market(account, "1"))
        assert ack_11.status is AckStatus.ACCEPTED
    # A queued order of another major.
    js = nc.jetstream()
    queued = order("q2")
    payload = queued.SerializeToString()
    subject = contract.queue(account)
    headers = {contract.HEADER_MSG_ID: queued.client_order_id, **version("2.0")}
    await js.publish(
        subject, payload, headers=signed(dev_signer(handle.creds), subject, payload, headers)
    )


# --- 1.1 enum values in a 1.0 client --------------------------------------------------------

_ENUM_READER = """
import json, sys
from bridge.errors import ProtocolError
from bridge.reports import _decode_report

out = {}
for name, data in json.load(sys.stdin).items():
    try:
        report = _decode_report(bytes.fromhex(data))
        out[name] = "read: " + report.order_status.value
    except ProtocolError as exc:
        out[name] = "ProtocolError: " + str(exc)
json.dump(out, sys.stdout)
"""


def read_with_1_0_client(tmp_path: Path, sent: dict[str, str]) -> dict[str, str]:
    """Each hex-encoded report of ``sent`` through the released 1.0 client's report decoding
    (in a process of its own): ``read: <status>`` or ``ProtocolError: ...``."""
    script = tmp_path / "enum_reader.py"
    script.write_text(_ENUM_READER, "utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(compat.client_path())
    done = subprocess.run(
        [sys.executable, "-P", str(script)],
        input=json.dumps(sent),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    read: dict[str, str] = json.loads(done.stdout)
    return read


def test_what_a_1_0_client_makes_of_1_1_enum_values(tmp_path: Path) -> None:
    """A report carrying an enum value added in 1.1 (an exec type, an order status, a reason)
    cannot be turned into 1.0's models: the 1.0 client's report stream raises ProtocolError
    for it (the raw protobuf keeps the number, see tests/unit/test_released_contract.py). A
    report of 1.0's values with 1.1's new fields reads fine. Which reports a 1.0 client can
    meet with such values: docs-16/compat.md."""
    base = orders_pb2.ExecutionReport(
        exec_id="e1-1-2",
        engine_order_id="e1-1",
        client_order_id="ord-1",
        account="acct-1",
        symbol="AAPL",
        side=orders_pb2.SIDE_BUY,
        exec_type=orders_pb2.EXEC_TYPE_CANCELED,
        order_status=orders_pb2.ORDER_STATUS_CANCELED,
        order_qty=common_pb2.Decimal(units=5),
        leaves_qty=common_pb2.Decimal(units=0),
        cum_qty=common_pb2.Decimal(units=0),
        price=common_pb2.Decimal(units=15000, scale=2),
        orig_client_order_id="ord-0",
        seq=2,
    )

    def variant(**changes: int) -> str:
        report = orders_pb2.ExecutionReport()
        report.CopyFrom(base)
        for field, value in changes.items():
            setattr(report, field, value)
        return report.SerializeToString().hex()

    sent = {
        "1.0 values, 1.1 fields": variant(),
        "exec_type REPLACED": variant(exec_type=orders_pb2.EXEC_TYPE_REPLACED),
        "order_status PENDING_REPLACE": variant(
            order_status=orders_pb2.ORDER_STATUS_PENDING_REPLACE
        ),
        "reason MASS_CANCELED": variant(reason=orders_pb2.REJECT_REASON_MASS_CANCELED),
        "reason SESSION_LOST": variant(reason=orders_pb2.REJECT_REASON_SESSION_LOST),
        "reason SESSION_END": variant(reason=orders_pb2.REJECT_REASON_SESSION_END),
    }
    read = read_with_1_0_client(tmp_path, sent)
    assert read["1.0 values, 1.1 fields"] == "read: CANCELED"
    for name in sent.keys() - {"1.0 values, 1.1 fields"}:
        assert read[name].startswith("ProtocolError: undecodable bridge.v1.ExecutionReport"), (
            name,
            read[name],
        )


async def test_a_1_0_senders_orders_are_reported_with_1_0_reasons(
    engine: EngineProcess, nats_server: ServerHandle, settings: BridgeSettings, tmp_path: Path
) -> None:
    """A 1.1 client mass-cancels an account where a 1.0 sender (no version header) and a 1.1
    client each rest an order: the 1.1 order's CANCELED report says MASS_CANCELED, the 1.0
    order's says UNSPECIFIED (1.0's reason for a cancel; the text keeps "mass cancel"), and
    the released 1.0 client's models read that report."""
    account = new_id("D")
    old, new = _resting(account), _resting(account)
    nc = await connect_as(nats_server.url, nats_server.creds, "orchestrator")
    try:
        answer = await signed_request(
            nc, nats_server, contract.submit(account), old.to_proto(), version(None)
        )
    finally:
        await nc.close()
    assert orders_pb2.OrderAck.FromString(answer).status == orders_pb2.ACK_STATUS_ACCEPTED
    async with BridgeClient(settings) as bridge:
        assert (await bridge.submit(new)).status is AckStatus.ACCEPTED
        result = await bridge.cancel_all(account)
    assert (result.complete, result.canceled) == (True, 2), result
    canceled = {
        r.client_order_id: r
        for r in await stored_reports(nats_server, account)
        if r.order_status == orders_pb2.ORDER_STATUS_CANCELED
    }
    assert canceled[new.client_order_id].reason == orders_pb2.REJECT_REASON_MASS_CANCELED
    from_1_0 = canceled[old.client_order_id]
    assert from_1_0.reason == orders_pb2.REJECT_REASON_UNSPECIFIED
    assert "mass cancel" in from_1_0.text
    sent = {"1.0 order": from_1_0.SerializeToString().hex()}
    read = await asyncio.to_thread(read_with_1_0_client, tmp_path, sent)
    assert read == {"1.0 order": "read: CANCELED"}
