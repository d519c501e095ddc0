"""``bridge submit``, ``bridge status``, ``bridge cancel``: order operations through the client
(:class:`bridge.BridgeClient`: signed, retried, idempotent by client order id).

Who may do what (``nats/entitlements.toml``): an **orchestrator** identity submits (give its
settings with ``--config``, e.g. ``.dev/orchestrator.toml``); the **operator** may query and
cancel orders of its accounts, not submit. Exit codes: 0 accepted / found, 1 rejected / not
found, 2 could not run (e.g. refused by the server: the identity lacks the right)."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from bridge.cli._common import (
    Negative,
    async_command,
    client,
    connection_options,
    dec,
    settings,
)
from bridge.models import (
    AckStatus,
    ExecutionReport,
    Order,
    OrderAck,
    OrderType,
    QueuedOrder,
    Side,
    TimeInForce,
)


def _decimal(ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
    """A decimal number exactly as typed (money is never a float)."""
    if value is None:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a decimal number") from None


def render_ack(ack: OrderAck) -> str:
    parts = [f"{ack.client_order_id}: {ack.status}"]
    if ack.status is AckStatus.REJECTED:
        parts.append(f"reason={ack.reason}")
    if ack.order_status is not None:
        parts.append(f"order_status={ack.order_status}")
    if ack.engine_order_id:
        parts.append(f"engine_order_id={ack.engine_order_id}")
    if ack.duplicate:
        parts.append("duplicate=True")
    parts += [f"{e.field}: {e.rule}: {e.message}" for e in ack.field_errors]
    if ack.text:
        parts.append(f"text={ack.text!r}")
    return " ".join(parts)


def render_report(report: ExecutionReport) -> str:
    line = (
        f"{report.client_order_id}: {report.order_status} cum_qty={dec(report.cum_qty)} "
        f"leaves_qty={dec(report.leaves_qty)} avg_px={dec(report.avg_px)} "
        f"last exec_id={report.exec_id}"
    )
    return line + (f" reason={report.reason}" if report.reason != "NONE" else "")


@click.command()
@click.argument("account")
@click.argument("symbol")
@click.argument("side", type=click.Choice([s.value for s in Side], case_sensitive=False))
@click.argument("quantity", callback=_decimal)
@click.option(
    "--price",
    callback=_decimal,
    metavar="DECIMAL",
    help="Limit price (a LIMIT order); none: MARKET.",
)
@click.option(
    "--tif",
    type=click.Choice([t.value for t in TimeInForce], case_sensitive=False),
    default=TimeInForce.DAY.value,
    show_default=True,
    help="Time in force.",
)
@click.option(
    "--client-order-id", help="Unique per account (default: cli-<random>); re-sending is safe."
)
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="An order tag; repeatable.")
@click.option(
    "--queued",
    is_flag=True,
    help="Queue it in ORDERS (JetStream) instead of the synchronous request.",
)
@connection_options
@async_command("submit")
async def submit(
    account: str,
    symbol: str,
    side: str,
    quantity: Decimal,
    price: Decimal | None,
    tif: str,
    client_order_id: str | None,
    tags: tuple[str, ...],
    queued: bool,
    config: Path | None,
    nats_url: str | None,
) -> None:
    """Send an order: ACCOUNT SYMBOL BUY|SELL QUANTITY [--price P].

    Needs an orchestrator identity's settings (--config). Prints the ack (synchronous: the
    engine's ACCEPTED/REJECTED; --queued: the ORDERS stream sequence). Exit 1 when rejected."""
    pairs = dict(t.partition("=")[::2] for t in tags)
    order = Order(
        client_order_id=client_order_id or f"cli-{uuid.uuid4().hex[:12]}",
        account=account,
        symbol=symbol,
        side=Side(side.upper()),
        order_type=OrderType.LIMIT if price is not None else OrderType.MARKET,
        limit_price=price,
        quantity=quantity,
        time_in_force=TimeInForce(tif.upper()),
        tags=pairs,
    )
    s = settings(config, nats_url)
    async with client(s) as bridge:
        if queued:
            q: QueuedOrder = await bridge.enqueue(order)
            dup = " duplicate=True" if q.duplicate else ""
            click.echo(f"{q.client_order_id}: QUEUED stream={q.stream} seq={q.seq}{dup}")
            return
        ack = await bridge.submit(order)
    click.echo(render_ack(ack))
    if ack.status is not AckStatus.ACCEPTED:
        raise Negative()


@click.command()
@click.argument("account")
@click.argument("client_order_id")
@connection_options
@async_command("status")
async def status(
    account: str, client_order_id: str, config: Path | None, nats_url: str | None
) -> None:
    """The engine's record of an order (its order store). Exit 1 when not found.

    Not found is definitive: the engine retires the id before answering, so an order with it
    still on its way never executes (runbooks/outcome-unknown.md)."""
    async with client(settings(config, nats_url)) as bridge:
        state = await bridge.status(account, client_order_id)
    if not state.found:
        click.echo(
            f"{client_order_id}: found=False: no such order; the id is now retired and can "
            "never execute"
        )
        raise Negative()
    if state.last_report is None:
        click.echo(f"{client_order_id}: found=True: accepted (PENDING_NEW), no report yet")
    else:
        click.echo(f"found=True {render_report(state.last_report)}")


@click.command()
@click.argument("account")
@click.argument("client_order_id")
@connection_options
@async_command("cancel")
async def cancel(
    account: str, client_order_id: str, config: Path | None, nats_url: str | None
) -> None:
    """Cancel a resting order; prints the engine's ack. Exit 1 when rejected (e.g. the order
    is unknown or already final)."""
    async with client(settings(config, nats_url)) as bridge:
        ack = await bridge.cancel(account, client_order_id)
    click.echo(render_ack(ack))
    if ack.status is not AckStatus.ACCEPTED:
        raise Negative()
