"""``bridge alerts [--last N]``: the newest security alerts of the ALERTS stream, one line each
(who, what, which subject or account, which connection, what was done), oldest first."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
import nats.js.errors

from bridge import contract
from bridge.cli._common import async_command, connect, connection_options, settings
from bridge.v1 import security_pb2


def render_alert(seq: int, alert: security_pb2.SecurityAlert) -> str:
    """One alert as one line: when, who raised it, kind, who, where, which connection, action."""
    when = dt.datetime.fromtimestamp(alert.time_unix_ns / 1e9, dt.UTC).isoformat(
        timespec="milliseconds"
    )
    kind = security_pb2.SecurityViolationKind.Name(alert.kind)
    kind = kind.removeprefix("SECURITY_VIOLATION_KIND_").lower()
    fields = {
        "identity": alert.identity,
        "nkey": alert.nkey,
        "account": alert.account,
        "subject": alert.subject,
        "cid": str(alert.connection_id) if alert.connection_id else "",
        "remote": alert.remote_address,
        "client_order_id": alert.client_order_id,
        "action": alert.action,
        "reason": alert.reason,
    }
    detail = " ".join(f"{k}={v!r}" for k, v in fields.items() if v)
    return f"#{seq} {when} {alert.source} {kind} {detail}"


@click.command()
@click.option(
    "--last",
    type=click.IntRange(min=0),
    metavar="N",
    default=20,
    show_default=True,
    help="How many.",
)
@connection_options
@async_command(f"reading {contract.ALERTS_STREAM}")
async def alerts(last: int, config: Path | None, nats_url: str | None) -> None:
    """The newest SecurityAlerts of the ALERTS stream, oldest first."""
    nc = await connect(settings(config, nats_url))
    try:
        js = nc.jetstream()
        state = (await js.stream_info(contract.ALERTS_STREAM)).state
        lines = []
        # An empty stream reports first_seq 0 (or last_seq + 1): nothing to read then.
        first = max(state.first_seq, state.last_seq - last + 1, 1)
        for seq in range(first, state.last_seq + 1):
            try:
                msg = await js.get_msg(contract.ALERTS_STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue  # deleted (the stream denies deletes; or aged out meanwhile)
            alert = security_pb2.SecurityAlert.FromString(msg.data or b"")
            lines.append(render_alert(seq, alert))
    finally:
        await nc.close()
    click.echo("\n".join(lines) if lines else "no alerts")
