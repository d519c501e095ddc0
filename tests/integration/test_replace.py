"""Order replace (FIX OrderCancelReplaceRequest) end to end: Python bridge -> real nats-server
(mTLS + NKeys) -> real engine.

The book: the house's seeded AAPL liquidity leaves 190.00 empty between its best bid (189.99)
and best ask (190.01), so the tests' own buys at 190.00 are the best bid and a sell at 190.00
reaches only them, in their priority. Which one fills first shows whether a replace kept or
lost its priority. Every test checks the FIX invariants on every report of its account
(``assert_fix``) and cancels what it left resting.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from nats.js.api import DeliverPolicy

from bridge import (
    AckStatus,
    BridgeSettings,
    InvalidOrderError,
    OrderStatus,
    RejectReason,
    contract,
)
from bridge.v1 import common_pb2, lifecycle_pb2, orders_pb2
from bridge_dev.engine import EngineProcess
from bridge_dev.server import ServerHandle, connect_as
from bridge_dev.signing import dev_signer
from tests.faults.harness import stored_entries, stored_reports
from tests.integration.authz_helpers import (
    ask,
    entitlements_file,
    fresh_signer,
    orchestrator,
)
from tests.integration.replace_helpers import (
    PENDING_REPLACE,
    PRICE,
    REPLACED,
    TRADE,
    conserved,
    dec,
    desk,
    limit,
    new_id,
    of_order,
)

pytestmark = pytest.mark.integration


async def test_reducing_quantity_keeps_priority(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """B1 then B2 at 190.00; B1 reduced 10 -> 6: PENDING_REPLACE then REPLACED under the new id
    (orig = B1, order_qty/leaves amended, cum unchanged), and B1 still fills first."""
    async with desk(settings, nats_server) as d:
        b1 = await d.buy("b1", 10)
        await d.buy("b2", 10)
        ack = await d.bridge.replace(d.replace("b1", "r1", qty=6))
        assert ack.status is AckStatus.ACCEPTED, ack
        assert (ack.client_order_id, ack.orig_client_order_id) == ("r1", "b1")
        assert ack.engine_order_id == b1.engine_order_id
        assert ack.order_status is OrderStatus.NEW
        assert not ack.duplicate
        rs = of_order(await d.reports(), b1)
        assert [r.exec_type for r in rs[-2:]] == [PENDING_REPLACE, REPLACED]
        assert rs[-2].order_status == orders_pb2.ORDER_STATUS_PENDING_REPLACE
        for r in rs[-2:]:
            assert (r.client_order_id, r.orig_client_order_id) == ("r1", "b1")
            assert [dec(r.order_qty), dec(r.leaves_qty), dec(r.cum_qty)] == [6, 6, 0]
            assert dec(r.price) == Decimal(PRICE)
        assert await d.sweep(8) == ["b1", "b2"]
        filled = of_order(await d.reports(), b1)[-1]
        assert (filled.client_order_id, filled.order_status) == (
            "r1",
            orders_pb2.ORDER_STATUS_FILLED,
        )


async def test_increasing_quantity_loses_priority(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    async with desk(settings, nats_server) as d:
        await d.buy("b1", 10)
        await d.buy("b2", 10)
        ack = await d.bridge.replace(d.replace("b1", "r1", qty=15))
        assert ack.accepted, ack
        assert await d.sweep(12) == ["b2", "b1"]


async def test_a_price_change_loses_priority_even_back_to_the_same_price(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """B1 moved away and back (a chain: the second replace names the first's id, and its
    reports carry orig = the first's id) is behind B2."""
    async with desk(settings, nats_server) as d:
        b1 = await d.buy("b1", 10)
        await d.buy("b2", 10)
        assert (await d.bridge.replace(d.replace("b1", "r1", price="189.50"))).accepted
        second = await d.bridge.replace(d.replace("r1", "r2", price=PRICE))
        assert second.accepted, second
        assert second.orig_client_order_id == "r1"
        last = of_order(await d.reports(), b1)[-1]
        assert (last.client_order_id, last.orig_client_order_id) == ("r2", "r1")
        assert await d.sweep(12) == ["b2", "b1"]


async def test_a_crossing_price_trades_at_once_at_the_makers_prices(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """A bid moved across the house's asks trades as an incoming order: 190.01 first (600),
    then the remainder rests at its new price; the replace's reports, its fills and the
    makers' fills are one fact; bought = sold."""
    async with desk(settings, nats_server) as d:
        b = await d.buy("b", 700, price="189.50")
        ack = await d.bridge.replace(d.replace("b", "r", price="190.01"))
        assert ack.accepted, ack
        assert ack.order_status is OrderStatus.PARTIALLY_FILLED
        entries = await stored_entries(nats_server, None)
        mine = [(seq, r) for seq, r in entries if r.engine_order_id == b.engine_order_id]
        kinds = [r.exec_type for _, r in mine]
        assert kinds[-5:] == [PENDING_REPLACE, REPLACED, TRADE, TRADE, TRADE], kinds
        fills = [r for _, r in mine if r.exec_type == TRADE]
        assert {dec(r.last_px) for r in fills} == {Decimal("190.01")}
        assert sum(dec(r.last_qty) for r in fills) == 600
        assert [dec(fills[-1].leaves_qty), dec(fills[-1].order_qty)] == [100, 700]
        # The makers' fills follow in the same batch, at consecutive stream sequences.
        first = mine[-5][0]
        batch = [r for seq, r in entries if first <= seq < first + 8]
        makers = [r for r in batch if r.account == "_house"]
        assert len(makers) == 3
        assert sum(dec(r.last_qty) for r in makers) == 600
        conserved(r for _, r in entries)
        book = await d.bridge.status(d.account, "r")
        assert book.last_report is not None
        assert book.last_report.order_status is OrderStatus.PARTIALLY_FILLED


async def test_reducing_to_what_is_filled_ends_the_order(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    async with desk(settings, nats_server) as d:
        b = await d.buy("b", 10)
        assert await d.sweep(6) == ["b"]
        ack = await d.bridge.replace(d.replace("b", "r", qty=5))
        assert ack.accepted, ack
        assert ack.order_status is OrderStatus.FILLED
        last = of_order(await d.reports(), b)[-1]
        assert last.exec_type == REPLACED
        assert last.order_status == orders_pb2.ORDER_STATUS_FILLED
        assert [dec(last.order_qty), dec(last.cum_qty), dec(last.leaves_qty)] == [6, 6, 0]
        for name in ("b", "r"):
            state = await d.bridge.status(d.account, name)
            assert state.last_report is not None
            assert state.last_report.order_status is OrderStatus.FILLED
        late = await d.bridge.replace(d.replace("r", "r2", qty=9))
        assert (late.status, late.reason) == (AckStatus.REJECTED, RejectReason.TOO_LATE)


async def test_a_resent_replace_is_a_duplicate_applied_once(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """The same replace id again (even with other terms) is answered with the original ack,
    duplicate=True; one REPLACED report only. An id taken by an order refuses a replace, and
    an order under a replace's id is refused."""
    async with desk(settings, nats_server) as d:
        b = await d.buy("b", 10)
        await d.buy("other", 1, price="189.00")
        first = await d.bridge.replace(d.replace("b", "r", qty=8))
        again = await d.bridge.replace(d.replace("b", "r", qty=8))
        other_terms = await d.bridge.replace(d.replace("b", "r", qty=3, price="189.10"))
        assert first.accepted
        assert not first.duplicate
        for dup in (again, other_terms):
            assert dup.duplicate
            assert dup.status is AckStatus.ACCEPTED
            assert (dup.engine_order_id, dup.orig_client_order_id) == (b.engine_order_id, "b")
            assert dup.ack_time_unix_ns == first.ack_time_unix_ns
        rs = of_order(await d.reports(), b)
        assert sum(r.exec_type == REPLACED for r in rs) == 1
        assert dec(rs[-1].order_qty) == 8
        taken = await d.bridge.replace(d.replace("b", "other", qty=4))
        assert (taken.status, taken.reason) == (AckStatus.REJECTED, RejectReason.INVALID_FIELD)
        assert [(e.field, e.rule) for e in taken.field_errors] == [("client_order_id", "unique")]
        order = await d.bridge.submit(limit(d.account, "r", 1, price="189.00"))
        assert (order.status, order.reason) == (AckStatus.REJECTED, RejectReason.INVALID_FIELD)
        assert "replace of order b" in order.field_errors[0].message


async def test_refusals_name_their_reason(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """Unknown order, final order, another account's order (never found under this one),
    nothing to amend, a quantity over the symbol's limit: refused, nothing changed."""
    async with desk(settings, nats_server) as d, desk(settings, nats_server) as other:
        await d.buy("b", 10)
        await other.buy("theirs", 10)
        canceled = await d.buy("gone", 1, price="189.00")
        await d.bridge.cancel(d.account, "gone")
        before = await d.reports()
        unknown = await d.bridge.replace(d.replace("nope", "r1", qty=5))
        assert (unknown.status, unknown.reason) == (AckStatus.REJECTED, RejectReason.UNKNOWN_ORDER)
        final = await d.bridge.replace(d.replace("gone", "r2", qty=5))
        assert (final.reason, final.engine_order_id) == (
            RejectReason.TOO_LATE,
            canceled.engine_order_id,
        )
        assert "order is already final" in final.text
        foreign = await d.bridge.replace(d.replace("theirs", "r3", qty=5))
        assert foreign.reason is RejectReason.UNKNOWN_ORDER
        assert f"no order theirs in account {d.account}" in foreign.text
        risky = await d.bridge.replace(d.replace("b", "r4", qty=100_000))
        assert risky.reason is RejectReason.RISK_LIMIT
        assert [(e.field, e.rule) for e in risky.field_errors] == [("quantity", "max_order_qty")]
        with pytest.raises(InvalidOrderError):
            d.replace("b", "r5")
        assert await d.reports() == before, "a refused replace changes nothing"
        # A refused id stays free: the same id, valid now, is applied.
        assert (await d.bridge.replace(d.replace("b", "r4", qty=9))).accepted


async def test_cancel_and_status_by_the_replace_id(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    async with desk(settings, nats_server) as d:
        b = await d.buy("b", 10)
        assert (await d.bridge.replace(d.replace("b", "r", price="189.20"))).accepted
        for name in ("b", "r"):
            state = await d.bridge.status(d.account, name)
            assert state.found
            assert state.last_report is not None
            assert state.last_report.client_order_id == "r"
            assert state.last_report.price == Decimal("189.20")
        ack = await d.bridge.cancel(d.account, "r")
        assert (ack.status, ack.order_status) == (AckStatus.ACCEPTED, OrderStatus.CANCELED)
        last = of_order(await d.reports(), b)[-1]
        assert last.exec_type == orders_pb2.EXEC_TYPE_CANCELED
        assert (last.client_order_id, last.orig_client_order_id) == ("r", "b")
        # Every report of the order is on its original id's subject.
        subjects = await _subjects_of(nats_server, d.account, b.engine_order_id)
        assert subjects == {contract.executions(d.account, "b")}


async def _subjects_of(handle: ServerHandle, account: str, engine_order_id: str) -> set[str]:
    """The subjects EXECUTIONS holds one order's reports on (read as the operator)."""
    subject = contract.executions_for_account(account)
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        info = await js.stream_info(contract.EXECUTIONS_STREAM, subjects_filter=subject)
        sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        out: set[str] = set()
        try:
            for _ in range(sum((info.state.subjects or {}).values())):
                m = await sub.next_msg(timeout=10)
                report = orders_pb2.ExecutionReport.FromString(m.data)
                if report.engine_order_id == engine_order_id:
                    out.add(m.subject)
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def test_a_clean_restart_keeps_amended_terms_and_priority(
    engine: EngineProcess, settings: BridgeSettings, nats_server: ServerHandle
) -> None:
    """B1, B2, B3 at 190.00; B1 increased (priority lost), B3 reduced (kept): B2, B3, B1. The
    restarted engine restores that priority and the amended terms."""
    async with desk(settings, nats_server) as d:
        for name in ("b1", "b2", "b3"):
            await d.buy(name, 10)
        assert (await d.bridge.replace(d.replace("b1", "r1", qty=12))).accepted
        assert (await d.bridge.replace(d.replace("b3", "r3", qty=5))).accepted
        assert engine.stop() == 0, engine.log_tail()
        engine.start()
        state = await d.bridge.status(d.account, "r1")
        assert state.last_report is not None
        assert state.last_report.order_qty == 12
        assert await d.sweep(27) == ["b2", "b3", "b1"]


async def test_replace_refusals_for_security_reasons(
    engine: EngineProcess, nats_server: ServerHandle
) -> None:
    """Unsigned: UNSIGNED; signed but naming another account than the subject's:
    ACCOUNT_MISMATCH. Nothing is replaced."""
    account = new_id("RS")
    nc = await orchestrator(nats_server)
    try:
        request = lifecycle_pb2.ReplaceRequest(
            account=account,
            orig_client_order_id="o",
            client_order_id="r",
            quantity=common_pb2.Decimal(units=1, scale=0),
        )
        subject = contract.replace(account)
        payload = request.SerializeToString()
        unsigned = orders_pb2.OrderAck.FromString(
            await ask(nc, subject, payload, {}, new_id("corr"))
        )
        assert unsigned.reason == orders_pb2.REJECT_REASON_UNSIGNED
        signer = dev_signer(nats_server.creds)
        other = lifecycle_pb2.ReplaceRequest()
        other.CopyFrom(request)
        other.account = new_id("ELSE")
        payload = other.SerializeToString()
        mismatch = orders_pb2.OrderAck.FromString(
            await ask(nc, subject, payload, signer.headers(subject, payload), new_id("corr"))
        )
        assert mismatch.reason == orders_pb2.REJECT_REASON_ACCOUNT_MISMATCH
        assert await stored_reports(nats_server, account) == []
    finally:
        await nc.close()


async def test_a_replace_in_an_account_not_entitled_is_refused(
    nats_server: ServerHandle, tmp_path: Path
) -> None:
    """A desk entitled to one account is refused a replace in another (NOT_ENTITLED)."""
    desk_key, _ = fresh_signer()
    own, foreign = new_id("DA"), new_id("DB")
    file = entitlements_file(
        tmp_path / "entitlements.toml", nats_server, [("desk-r", desk_key.public_key, [own])]
    )
    with EngineProcess(
        nats_server,
        log_file=tmp_path / "engine.log",
        env={"BRIDGE_ENTITLEMENTS_FILE": str(file)},
    ):
        nc = await orchestrator(nats_server)
        try:
            request = lifecycle_pb2.ReplaceRequest(
                account=foreign,
                orig_client_order_id="o",
                client_order_id="r",
                limit_price=common_pb2.Decimal(units=190, scale=0),
            )
            subject, payload = contract.replace(foreign), request.SerializeToString()
            ack = orders_pb2.OrderAck.FromString(
                await ask(nc, subject, payload, desk_key.headers(subject, payload), new_id("corr"))
            )
            assert ack.reason == orders_pb2.REJECT_REASON_NOT_ENTITLED
            assert "not entitled to account" in ack.text
        finally:
            await nc.close()
