"""``bridge sessions``: orchestrator sessions (cancel on disconnect) and the orders they hold,
read from the engines' buckets (runbooks/orders-left-resting.md). Operator identity.

* ``bridge sessions ls``: every session record of ``bridge_sessions``: open, closed or lost,
  its grace, whether its orders are canceled on disconnect, when it was opened and ended and
  by which engine.
* ``bridge sessions orders ACCOUNT [--session ID]``: the live orders of ACCOUNT in the order
  store ``bridge_orders`` (not final: PENDING_NEW, NEW, PARTIALLY_FILLED), each with the
  session it names and that session's state. Exit 1 when there is any (something rests), 0
  when none.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import click
from nats.js.errors import NotFoundError

from bridge import contract
from bridge.cli._common import (
    CommandFailed,
    Negative,
    async_command,
    connect,
    connection_options,
    settings,
)
from bridge.cli._records import OrderRecord, SessionRecord
from bridge.models import decimal_from_proto
from bridge.v1 import orders_pb2

_ACCOUNT = re.compile(contract.ACCOUNT_PATTERN)
_SESSION = re.compile(contract.SESSION_ID_PATTERN)
_LIVE = {
    orders_pb2.ORDER_STATUS_PENDING_NEW,
    orders_pb2.ORDER_STATUS_NEW,
    orders_pb2.ORDER_STATUS_PARTIALLY_FILLED,
}
_WATCH_TIMEOUT_S = 10.0


def _when(unix_ns: int) -> str:
    if not unix_ns:
        return "-"
    return dt.datetime.fromtimestamp(unix_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def state_of(record: Any) -> str:
    """open, closed or lost."""
    if not record.closed:
        return "open"
    return "lost" if record.lost else "closed"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


async def _entries(nc: Any, bucket: str, keys: str) -> list[tuple[str, bytes]]:
    """(key, value) of every key of ``bucket`` matching ``keys`` that holds a value now."""
    try:
        kv = await nc.jetstream().key_value(bucket)
    except NotFoundError as exc:
        raise CommandFailed(f"bucket {bucket} is not provisioned (bridge provision)") from exc
    watcher = await kv.watch(keys)
    out: list[tuple[str, bytes]] = []
    try:
        while (entry := await watcher.updates(timeout=_WATCH_TIMEOUT_S)) is not None:
            if entry.operation is None and entry.value:
                out.append((entry.key, entry.value))
    finally:
        await watcher.stop()
    return out


async def _sessions(nc: Any) -> dict[str, Any]:
    prefix = contract.SESSION_KEY_PREFIX
    found = {}
    for _key, value in await _entries(nc, contract.SESSIONS_KV_BUCKET, f"{prefix}>"):
        record = SessionRecord.FromString(value)
        found[record.session_id] = record
    return found


@click.group()
def sessions() -> None:
    """Orchestrator sessions (cancel on disconnect) and the live orders they hold."""


@sessions.command("ls")
@connection_options
@async_command("reading the sessions bucket")
async def ls(config: Path | None, nats_url: str | None) -> None:
    """Every session the engines know: state (open, closed, lost), grace, cancel on disconnect,
    when it was opened and ended, the engine that wrote it last and the signer."""
    nc = await connect(settings(config, nats_url))
    try:
        found = await _sessions(nc)
    finally:
        await nc.close()
    if not found:
        click.echo("no sessions")
        return
    rows: list[tuple[str, ...]] = [
        (
            "session",
            "state",
            "grace_ms",
            "cancel_on_disconnect",
            "opened",
            "ended",
            "engine",
            "signer",
        )
    ]
    for session_id in sorted(found):
        r = found[session_id]
        rows.append(
            (
                session_id,
                state_of(r),
                str(r.grace_ms),
                "yes" if r.cancel_on_disconnect else "no",
                _when(r.opened_at_unix_ns),
                _when(r.ended_at_unix_ns),
                r.engine_id or "-",
                r.signer or "-",
            )
        )
    for line in _table(rows):
        click.echo(line)


@sessions.command("orders")
@click.argument("account")
@click.option("--session", "session_id", help="Only the orders naming this session.")
@connection_options
@async_command("reading the order store")
async def orders(
    account: str, session_id: str | None, config: Path | None, nats_url: str | None
) -> None:
    """The live orders of ACCOUNT with the session each names and its state. Exit 1 when any
    order is live (something rests), 0 when none."""
    if _ACCOUNT.fullmatch(account) is None:
        raise click.BadParameter(f"{account!r} is not an account ({contract.ACCOUNT_PATTERN})")
    if session_id is not None and _SESSION.fullmatch(session_id) is None:
        raise click.BadParameter(f"{session_id!r} is not a session id")
    nc = await connect(settings(config, nats_url))
    try:
        records = [
            OrderRecord.FromString(value)
            for _key, value in await _entries(nc, contract.ORDERS_KV_BUCKET, f"{account}.>")
        ]
        known = await _sessions(nc)
    finally:
        await nc.close()
    live = [
        r
        for r in records
        if r.status in _LIVE
        and not r.tombstone
        and not r.alias_of
        and (session_id is None or r.order.session_id == session_id)
    ]
    which = f" naming session {session_id}" if session_id else ""
    if not live:
        click.echo(f"no live orders of {account}{which}")
        return
    rows: list[tuple[str, ...]] = [
        ("client_order_id", "status", "symbol", "side", "leaves", "price", "session", "engine")
    ]
    for r in sorted(live, key=lambda r: r.order.client_order_id):
        o = r.order
        leaves = (
            decimal_from_proto(r.last_report.leaves_qty)
            if r.HasField("last_report")
            else decimal_from_proto(o.quantity)
        )
        session = "-"
        if o.session_id:
            state = state_of(known[o.session_id]) if o.session_id in known else "unknown"
            session = f"{o.session_id} ({state})"
        rows.append(
            (
                o.client_order_id,
                orders_pb2.OrderStatus.Name(r.status).removeprefix("ORDER_STATUS_"),
                o.symbol,
                orders_pb2.Side.Name(o.side).removeprefix("SIDE_"),
                str(leaves),
                str(decimal_from_proto(o.limit_price)) if o.HasField("limit_price") else "MARKET",
                session,
                r.engine_id,
            )
        )
    for line in _table(rows):
        click.echo(line)
    click.echo(f"{len(live)} live order(s) of {account}{which}")
    raise Negative()
