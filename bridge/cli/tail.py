"""``bridge tail ACCOUNT``: execution reports of one account (or one order) as they are stored
in EXECUTIONS, one line each, through the client's exactly-once report stream
(:mod:`bridge.reports`). By default from now on; ``--since SEQ`` from an EXECUTIONS sequence
(each line starts with ``#SEQ``: resume with the last one + 1), ``--last N`` from the account's
N newest reports. ``--count N`` stops after N reports, ``--timeout S`` when none came for S
seconds (exit 1)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import click
from nats.aio.client import Client as NatsConnection
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bridge import contract
from bridge.cli._common import (
    Negative,
    async_command,
    client,
    connect,
    connection_options,
    dec,
    settings,
)
from bridge.models import ExecutionReport

FOREVER_S = 365 * 86400.0
"""Without ``--timeout``: wait for the next report this long (until Ctrl-C, in practice)."""


def render(seq: int, r: ExecutionReport) -> str:
    when = dt.datetime.fromtimestamp(r.transact_time_unix_ns / 1e9, dt.UTC).isoformat(
        timespec="milliseconds"
    )
    side = r.side.value if r.side is not None else "-"
    line = (
        f"#{seq} {when} {r.account} {r.client_order_id} {r.exec_type} {r.order_status} "
        f"{side} {r.symbol} last={dec(r.last_qty)}@{dec(r.last_px)} cum={dec(r.cum_qty)} "
        f"leaves={dec(r.leaves_qty)} avg={dec(r.avg_px)} engine={r.engine_id}"
    )
    return line + (f" reason={r.reason}" if r.reason != "NONE" else "")


async def _matching_from(nc: NatsConnection, subject: str, seq: int) -> int:
    """How many EXECUTIONS messages on ``subject`` are stored at or after ``seq`` (the pending
    count of a throw-away consumer starting there)."""
    jsm = nc.jetstream()
    name = f"bridge-tail-{uuid.uuid4().hex[:12]}"
    info = await jsm.add_consumer(
        contract.EXECUTIONS_STREAM,
        ConsumerConfig(
            name=name,
            filter_subject=subject,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=seq,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=5.0,
            mem_storage=True,
        ),
    )
    try:
        return int(info.num_pending or 0)
    finally:
        await jsm.delete_consumer(contract.EXECUTIONS_STREAM, name)


async def start_of_last(nc: NatsConnection, subject: str, last: int) -> int:
    """The EXECUTIONS sequence from which ``subject`` has its ``last`` newest reports (binary
    search over the stream: a few round trips, no reading)."""
    state = (await nc.jetstream().stream_info(contract.EXECUTIONS_STREAM)).state
    lo, hi = state.first_seq, state.last_seq + 1  # count(lo) >= last is what we look for
    if last <= 0:
        return hi
    if await _matching_from(nc, subject, lo) <= last:
        return lo
    while hi - lo > 1:  # invariant: count(lo) > last ... count(hi) <= last
        mid = (lo + hi) // 2
        if await _matching_from(nc, subject, mid) > last:
            lo = mid
        else:
            hi = mid
    return hi


@click.command()
@click.argument("account")
@click.option(
    "--order",
    "client_order_id",
    metavar="CLIENT_ORDER_ID",
    help="Only this client order id's reports.",
)
@click.option(
    "--since",
    "since_seq",
    type=click.IntRange(min=1),
    metavar="SEQ",
    help="Start at this EXECUTIONS sequence (e.g. the last line's #SEQ + 1).",
)
@click.option(
    "--last",
    type=click.IntRange(min=0),
    metavar="N",
    help="Start with the account's (or order's) N newest stored reports.",
)
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N reports.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop when no report came for this many seconds (exit 1).",
)
@connection_options
@async_command("tail")
async def tail(
    account: str,
    client_order_id: str | None,
    since_seq: int | None,
    last: int | None,
    count: int | None,
    timeout: float | None,
    config: Path | None,
    nats_url: str | None,
) -> None:
    """Follow the execution reports of ACCOUNT, one line each: #SEQ time account order
    exec_type status side symbol last=qty@px cum leaves avg engine. Ctrl-C stops."""
    if since_seq is not None and last is not None:
        raise click.UsageError("--since and --last exclude each other")
    s = settings(config, nats_url)
    if last is not None:
        subject = (
            contract.executions(account, client_order_id)
            if client_order_id
            else contract.executions_for_account(account)
        )
        nc = await connect(s, name="bridge-tail")
        try:
            since_seq = await start_of_last(nc, subject, last)
        finally:
            await nc.close()
    seen = 0
    async with (
        client(s) as bridge,
        bridge.reports(account, client_order_id, since_seq=since_seq) as stream,
    ):
        while count is None or seen < count:
            try:
                report = await stream.next(timeout or FOREVER_S)
            except TimeoutError:
                click.echo(f"no report for {timeout}s; last #{stream.last_seq}", err=True)
                raise Negative() from None
            seen += 1
            click.echo(render(stream.last_seq, report))
