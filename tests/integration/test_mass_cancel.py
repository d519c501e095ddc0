"""Mass cancel and the per-account kill switch against a real nats-server and the real engine.

* only the matching orders are canceled (another account's, another symbol's, another side's
  keep resting), the count is right, a re-send answers 0, each canceled order has one CANCELED
  report with reason MASS_CANCELED; the FIX invariants and conservation hold on the stream;
* ``bridge orders cancel-all ACCOUNT --halt``: the account is HALTED first (its new orders are
  REJECTED with TRADING_HALTED, other accounts trade), ``bridge orders resume`` lifts it;
* refusals: unsigned, a foreign account (ACCOUNT_MISMATCH), an identity not entitled
  (NOT_ENTITLED): REJECTED with the reason, alerted, nothing canceled;
* several engines: the engine that takes the request relays it to every other live engine of
  the lease bucket and sums their counts; a relayed request cancels locally only; a peer that
  does not answer is named in a REJECTED (ENGINE_UNAVAILABLE) reply that counts only what was
  canceled. Two live engines cannot share one server today (each takes the shared ``intake``
  lease, engine-rs/src/lease.rs), so the second engine here is a stand-in speaking the relay
  protocol as an engine (its lease in ``bridge_leases``, its relay subject).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from nats.aio.msg import Msg

from bridge import (
    AckStatus,
    BridgeClient,
    BridgeSettings,
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
from bridge.cli import cli
from bridge.v1 import lifecycle_pb2, orders_pb2, security_pb2
from bridge_dev.engine import EngineProcess, client_settings, write_client_config
from bridge_dev.server import ServerHandle, connect_as
from bridge_dev.signing import dev_signer
from tests.faults.invariants import Invariants, all_reports, check_reports
from tests.integration.authz_helpers import ask, orchestrator, wait_for_alert

pytestmark = pytest.mark.integration

ENGINE_ID = "engine-1"
REJECTED = orders_pb2.ACK_STATUS_REJECTED
# Far from the seeded books (AAPL around 190, MSFT around 420): these rest, nothing trades.
PRICES = {("AAPL", Side.BUY): "150", ("AAPL", Side.SELL): "250"}
PRICES |= {("MSFT", Side.BUY): "300", ("MSFT", Side.SELL): "600"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def resting(account: str, symbol: str, side: Side, qty: str = "5") -> Order:
    return Order(
        client_order_id=new_id("r"),
        account=account,
        symbol=symbol,
        side=side,
        order_type=OrderType.LIMIT,
        limit_price=Decimal(PRICES[(symbol, side)]),
        quantity=Decimal(qty),
        time_in_force=TimeInForce.GTC,
    )


async def place(bridge: BridgeClient, orders: list[Order]) -> None:
    for order in orders:
        ack = await bridge.submit(order)
        assert ack.accepted, ack


async def canceled_reports(
    stream: ReportStream, ids: set[str], timeout: float = 30
) -> dict[str, ExecutionReport]:
    """Reads ``stream`` until each order of ``ids`` has its CANCELED report."""
    got: dict[str, ExecutionReport] = {}
    async with asyncio.timeout(timeout):
        async for report in stream:
            if report.exec_type is ExecType.CANCELED:
                got[report.client_order_id] = report
            if ids <= set(got):
                return got
    raise AssertionError("unreachable")


async def open_status(bridge: BridgeClient, order: Order) -> OrderStatus | None:
    state = await bridge.status(order.account, order.client_order_id)
    assert state.found
    assert state.last_report is not None
    return state.last_report.order_status


def assert_invariants_hold(reports: list[orders_pb2.ExecutionReport]) -> None:
    found = Invariants()
    check_reports(reports, found)
    assert not found.violations, found.violations


async def test_only_matching_orders_are_canceled_once_with_mass_canceled_reports(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    account, other = new_id("MC"), new_id("MCO")
    buys = [resting(account, "AAPL", Side.BUY) for _ in range(2)]
    aapl_sell = resting(account, "AAPL", Side.SELL)
    msft_buy = resting(account, "MSFT", Side.BUY)
    foreign = resting(other, "AAPL", Side.BUY)
    traded = Order(
        client_order_id=new_id("t"),
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        quantity=Decimal(7),
        time_in_force=TimeInForce.IOC,
    )
    async with BridgeClient(settings) as bridge, bridge.reports(account) as stream:
        await place(bridge, [*buys, aapl_sell, msft_buy, foreign, traded])

        first = await bridge.cancel_all(account, symbol="AAPL", side=Side.BUY, request_id="mc-1")
        assert first.complete, first
        assert (first.account, first.request_id, first.canceled) == (account, "mc-1", 2)
        assert first.engine_ids == (ENGINE_ID,)
        got = await canceled_reports(stream, {o.client_order_id for o in buys})
        for order in buys:
            r = got[order.client_order_id]
            assert (r.order_status, r.reason) == (OrderStatus.CANCELED, RejectReason.MASS_CANCELED)
            assert (r.cum_qty, r.leaves_qty, r.order_qty) == (Decimal(0), Decimal(0), Decimal(5))
            assert r.text == "mass cancel mc-1"
        for order in (aapl_sell, msft_buy, foreign):
            assert await open_status(bridge, order) is OrderStatus.NEW

        again = await bridge.cancel_all(account, symbol="AAPL", side=Side.BUY, request_id="mc-1")
        assert (again.complete, again.canceled) == (True, 0)

        rest = await bridge.cancel_all(account)
        assert (rest.complete, rest.canceled) == (True, 2)
        got = await canceled_reports(stream, {aapl_sell.client_order_id, msft_buy.client_order_id})
        assert {r.reason for r in got.values()} == {RejectReason.MASS_CANCELED}
        assert (await bridge.cancel_all(account)).canceled == 0
        assert await open_status(bridge, foreign) is OrderStatus.NEW
        assert (await bridge.cancel(other, foreign.client_order_id)).accepted

    reports = await all_reports(nats_server)
    assert_invariants_hold(reports)
    mine = [r for r in reports if r.account == account]
    mass = [r for r in mine if r.reason == orders_pb2.REJECT_REASON_MASS_CANCELED]
    assert len(mass) == 4
    assert len({r.exec_id for r in mine}) == len(mine)


def bridge_cli(*args: str, config: Path) -> Result:
    return CliRunner().invoke(cli, [*args, "--config", str(config)], catch_exceptions=False)


@pytest.fixture
def operator_config(
    nats_server: ServerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The operator's settings file; no BRIDGE_* variable of this process leaks into them."""
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    return write_client_config(client_settings(nats_server, role="operator"), tmp_path / "op.toml")


async def test_cancel_all_halt_refuses_new_orders_until_resumed(
    engine: EngineProcess, settings: BridgeSettings, operator_config: Path
) -> None:
    """`bridge orders cancel-all ACCOUNT --halt`: the account is HALTED (ConfigApplied from the
    engine) and its orders canceled; its new orders are refused TRADING_HALTED while another
    account trades and cancels still work; `bridge orders resume` lifts it."""
    account, other = new_id("KS"), new_id("KSO")
    old = resting(account, "AAPL", Side.BUY)
    async with BridgeClient(settings) as bridge:
        await place(bridge, [old])
        halted = await asyncio.to_thread(
            bridge_cli, "orders", "cancel-all", account, "--halt", config=operator_config
        )
        try:
            assert halted.exit_code == 0, halted.output
            assert f'accounts.{account}: (absent) -> "HALTED"' in halted.output
            assert ": applied" in halted.output
            assert f"{account}: mass cancel" in halted.output
            assert "ACCEPTED canceled=1 engines=engine-1" in halted.output
            assert await open_status(bridge, old) is OrderStatus.CANCELED

            refused = await bridge.submit(resting(account, "MSFT", Side.SELL))
            assert (refused.status, refused.reason) == (
                AckStatus.REJECTED,
                RejectReason.TRADING_HALTED,
            )
            assert [(e.field, e.rule) for e in refused.field_errors] == [
                ("account", "trading_halted")
            ]
            assert f'account "{account}" is HALTED' in refused.text
            elsewhere = resting(other, "MSFT", Side.SELL)
            await place(bridge, [elsewhere])
            assert (await bridge.cancel(other, elsewhere.client_order_id)).accepted
            again = await asyncio.to_thread(
                bridge_cli, "orders", "cancel-all", account, "--halt", config=operator_config
            )
            assert again.exit_code == 0, again.output
            assert "already HALTED: nothing written" in again.output
            assert "canceled=0" in again.output
        finally:
            resumed = await asyncio.to_thread(
                bridge_cli, "orders", "resume", account, config=operator_config
            )
        assert resumed.exit_code == 0, resumed.output
        assert f'accounts.{account}: "HALTED" -> (absent)' in resumed.output
        assert ": applied" in resumed.output
        back = resting(account, "MSFT", Side.SELL)
        await place(bridge, [back])
        assert (await bridge.cancel_all(account, symbol="MSFT")).canceled == 1
    bad = await asyncio.to_thread(
        bridge_cli, "orders", "cancel-all", "no.such", "--halt", config=operator_config
    )
    assert bad.exit_code == 2
    assert "InvalidOrderError" in bad.output
    assert "account" in bad.output


def mass_cancel_request(account: str, request_id: str = "") -> bytes:
    return lifecycle_pb2.MassCancelRequest(
        account=account, request_id=request_id
    ).SerializeToString()


async def test_refusals_are_answered_with_their_reason_and_cancel_nothing(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """Unsigned, a payload of another account (ACCOUNT_MISMATCH), a desk not entitled to the
    account (NOT_ENTITLED): REJECTED with the reason, alerted; the order keeps resting."""
    account = new_id("RF")
    order = resting(account, "AAPL", Side.BUY)
    subject = contract.mass_cancel(account)
    orchestrator_key, desk = dev_signer(nats_server.creds), dev_signer(nats_server.creds, "desk-a")
    async with BridgeClient(settings) as bridge:
        await place(bridge, [order])
        nc = await orchestrator(nats_server)
        try:
            cases = {
                "unsigned": (mass_cancel_request(account, "u"), None),
                "foreign": (mass_cancel_request(new_id("ELSE"), "f"), orchestrator_key),
                "not_entitled": (mass_cancel_request(account, "n"), desk),
            }
            answers = {}
            for case, (payload, signer) in cases.items():
                headers = signer.headers(subject, payload) if signer is not None else {}
                corr = new_id("corr")
                raw = await ask(nc, subject, payload, headers, corr)
                answers[case] = (lifecycle_pb2.MassCancelReply.FromString(raw), corr)
        finally:
            await nc.close()
        expected = {
            "unsigned": (orders_pb2.REJECT_REASON_UNSIGNED, "unsigned"),
            "foreign": (orders_pb2.REJECT_REASON_ACCOUNT_MISMATCH, f"subject account {account}"),
            "not_entitled": (
                orders_pb2.REJECT_REASON_NOT_ENTITLED,
                f"identity desk-a is not entitled to account {account}",
            ),
        }
        for case, (reply, corr) in answers.items():
            reason, words = expected[case]
            assert (reply.status, reply.reason, reply.canceled) == (REJECTED, reason, 0), case
            assert words in reply.text, (case, reply.text)
            assert (reply.account, list(reply.engine_ids)) == (account, [])
            _, alert = await wait_for_alert(nats_server, corr)
            assert (alert.subject, alert.action) == (subject, "refused")
            assert alert.kind != security_pb2.SECURITY_VIOLATION_KIND_UNSPECIFIED
        assert await open_status(bridge, order) is OrderStatus.NEW
        assert (await bridge.cancel_all(account)).canceled == 1


class StandIn:
    """A peer engine for the relay: holds a symbol lease in ``bridge_leases`` as ``engine_id``
    and answers on its relay subject with ``canceled`` orders, recording each request."""

    def __init__(self, engine_id: str, canceled: int) -> None:
        self.engine_id = engine_id
        self.canceled = canceled
        self.requests: list[tuple[lifecycle_pb2.MassCancelRequest, dict[str, str]]] = []

    async def answer(self, msg: Msg) -> None:
        req = lifecycle_pb2.MassCancelRequest.FromString(msg.data)
        self.requests.append((req, dict(msg.headers or {})))
        reply = lifecycle_pb2.MassCancelReply(
            account=req.account,
            request_id=req.request_id,
            status=orders_pb2.ACK_STATUS_ACCEPTED,
            canceled=self.canceled,
            engine_ids=[self.engine_id],
        )
        await msg.respond(reply.SerializeToString())


@asynccontextmanager
async def stand_in_peer(
    handle: ServerHandle, peer: StandIn, symbol: str
) -> AsyncIterator[tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]]:
    """The stand-in's lease key and its relay subscription; yields (renew, unsubscribe)."""
    nc = await connect_as(handle.url, handle.creds, "engine")
    kv = await nc.jetstream().key_value(contract.LEASES_KV_BUCKET)
    key = contract.lease_symbol_key(symbol)
    holder = {
        "engine_id": peer.engine_id,
        "instance": uuid.uuid4().hex[:16],
        "host": "stand-in",
        "pid": os.getpid(),
        "taken_unix_ms": int(time.time() * 1000),
    }

    async def renew() -> None:  # the bucket's TTL is a few seconds: renewed before each use
        await kv.put(key, json.dumps(holder).encode())

    sub = await nc.subscribe(contract.engine_mass_cancel(peer.engine_id), cb=peer.answer)
    await nc.flush()
    try:
        yield renew, sub.unsubscribe
    finally:
        await kv.delete(key)
        await nc.close()


async def test_one_request_cancels_in_every_engine_and_names_a_missing_one(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    account = new_id("ME")
    peer = StandIn("engine-standin", canceled=4)
    async with (
        BridgeClient(settings) as bridge,
        stand_in_peer(nats_server, peer, "STANDIN") as (renew, unsubscribe),
    ):
        await place(
            bridge, [resting(account, "AAPL", Side.BUY), resting(account, "MSFT", Side.SELL)]
        )

        # A symbol only the local engine holds: not relayed.
        await renew()
        local = await bridge.cancel_all(account, symbol="AAPL")
        assert (local.complete, local.canceled, local.engine_ids) == (True, 1, (ENGINE_ID,))
        assert peer.requests == []

        # Every symbol: relayed to the peer, counts summed, both engines named.
        await renew()
        both = await bridge.cancel_all(account, request_id="everywhere")
        assert both.complete, both
        assert both.canceled == 1 + 4
        assert both.engine_ids == (ENGINE_ID, peer.engine_id)
        ((relayed, headers),) = peer.requests
        assert (relayed.account, relayed.request_id, relayed.symbol) == (account, "everywhere", "")
        assert contract.HEADER_CORRELATION_ID in headers

        # A relayed request (engine to engine) cancels locally and relays nothing further.
        nc = await connect_as(nats_server.url, nats_server.creds, "engine")
        try:
            await renew()
            raw = await nc.request(
                contract.engine_mass_cancel(ENGINE_ID), mass_cancel_request(account), timeout=10
            )
        finally:
            await nc.close()
        forwarded = lifecycle_pb2.MassCancelReply.FromString(raw.data)
        assert (forwarded.status, forwarded.canceled) == (orders_pb2.ACK_STATUS_ACCEPTED, 0)
        assert list(forwarded.engine_ids) == [ENGINE_ID]
        assert len(peer.requests) == 1

        # The peer stops answering while its lease still stands: not hidden, not counted.
        await unsubscribe()
        leftover = resting(account, "AAPL", Side.SELL)
        await place(bridge, [leftover])
        await renew()
        partial = await bridge.cancel_all(account)
        assert not partial.complete
        assert partial.reason is RejectReason.ENGINE_UNAVAILABLE
        assert (partial.canceled, partial.engine_ids) == (1, (ENGINE_ID,))
        assert f"engine {peer.engine_id} not running" in partial.text
        assert partial.text.startswith("incomplete: canceled 1 open order(s)")
        assert await open_status(bridge, leftover) is OrderStatus.CANCELED
