"""The demo's security tour: two violations, the sentinel's alerts, the journal verified.

1. desk-a (entitled to DESK-A only) submits for DESK-B through ``BridgeClient``: the server
   refuses the publish, the client closes itself with ``SecurityViolationError``;
2. an order signed with a key nobody is entitled with: the engine answers BAD_SIGNATURE;
3. the alerts the sentinel raised for both, read back from the ALERTS stream;
4. ``bridge audit verify`` of EXECUTIONS: every report the demo caused is in its engine's chain.
"""

from __future__ import annotations

import asyncio
import os
from decimal import Decimal

import nats.errors
import nats.js.errors
import nkeys
from rich.console import Console

from bridge import BridgeClient, Order, OrderType, SecurityViolationError, Side, contract
from bridge.audit import engine_keys, verify_stream
from bridge.cli import render_alert
from bridge.security.entitlements import load
from bridge.security.signing import Signer
from bridge.v1 import orders_pb2, security_pb2
from bridge_dev.engine import client_settings
from bridge_dev.server import ServerHandle, connect_as

SENTINEL_ALERTS = contract.alerts_from("sentinel")


def _order(account: str, coid: str) -> Order:
    return Order(
        client_order_id=coid,
        account=account,
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal("1"),
        limit_price=Decimal("0.01"),
    )


async def _sentinel_alerts(handle: ServerHandle, at_least: int) -> list[str]:
    """The sentinel's alerts on ALERTS, once there are ``at_least`` (bounded wait)."""
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        js = nc.jetstream()
        async with asyncio.timeout(10):
            while True:  # each turn is a round trip to the server: a bounded poll
                state = (await js.stream_info(contract.ALERTS_STREAM)).state
                lines = []
                for seq in range(state.first_seq, state.last_seq + 1):
                    try:
                        msg = await js.get_msg(contract.ALERTS_STREAM, seq)
                    except nats.js.errors.NotFoundError:
                        continue
                    if msg.subject and msg.subject.startswith(SENTINEL_ALERTS[:-1]):
                        alert = security_pb2.SecurityAlert.FromString(msg.data or b"")
                        lines.append(render_alert(seq, alert))
                if len(lines) >= at_least:
                    return lines
                await asyncio.sleep(0.05)  # polling interval of a server-side state
    finally:
        await nc.close()


async def security_tour(handle: ServerHandle, console: Console) -> bool:
    """Run the tour; True when every step did what it should."""
    ok = True
    console.rule("[bold]Security")
    desk_a = client_settings(handle, "desk-a")
    async with BridgeClient(desk_a) as bridge:
        try:
            await bridge.submit(_order("DESK-B", "demo-forbidden"))
            console.print("[red]desk-a traded DESK-B: entitlements not enforced[/red]")
            ok = False
        except SecurityViolationError as exc:
            console.print(f"desk-a -> DESK-B: refused, client closed ({exc})")

    stranger = Signer(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    nc = await connect_as(handle.url, handle.creds, "orchestrator")
    try:
        subject = contract.submit("DEMO")
        data = _order("DEMO", "demo-forged").to_proto().SerializeToString()
        reply = await nc.request(subject, data, timeout=5, headers=stranger.headers(subject, data))
        ack = orders_pb2.OrderAck.FromString(reply.data)
        reason = orders_pb2.RejectReason.Name(ack.reason)
        console.print(f"order signed by an unknown key: {reason}: {ack.text}")
        ok &= ack.reason == orders_pb2.REJECT_REASON_BAD_SIGNATURE
    except nats.errors.Error as exc:  # the sentinel may kick this connection first
        console.print(f"order signed by an unknown key: connection ended ({exc!r})")
    finally:
        await nc.close()

    console.print("alerts raised by the sentinel (bridge alerts):")
    for line in await _sentinel_alerts(handle, at_least=2):
        console.print(f"  {line}", highlight=False, soft_wrap=True)

    entitlements = load(handle.creds.entitlements_file)
    keys = engine_keys((i.name, i.nkey) for i in entitlements.with_role("engine"))
    operator = await connect_as(handle.url, handle.creds, "operator")
    try:
        result = await verify_stream(operator.jetstream(), contract.EXECUTIONS_STREAM, keys)
    finally:
        await operator.close()
    console.print(f"bridge audit verify: {result.render()}")
    return ok and result.ok
