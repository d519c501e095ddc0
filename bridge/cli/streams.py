"""``bridge streams``: one table of the bridge's JetStream state: streams ORDERS, EXECUTIONS,
ALERTS and the KV buckets' streams (the engine's order store ``bridge_orders``, the journal, its
leases, the runtime configuration and the orchestrator sessions), then their durable consumers
(pending, ack pending, redelivered, ack floor). Ephemeral consumers (report readers) are counted
per stream, not listed."""

from __future__ import annotations

from pathlib import Path

import click
from nats.js.api import ConsumerInfo, StreamInfo
from nats.js.errors import NotFoundError

from bridge import contract
from bridge.cli._common import (
    Negative,
    async_command,
    connect,
    connection_options,
    settings,
)

STREAMS: tuple[tuple[str, str], ...] = (
    (contract.ORDERS_STREAM, "queued orders"),
    (contract.EXECUTIONS_STREAM, "execution reports"),
    (contract.ALERTS_STREAM, "security alerts"),
    (contract.kv_stream(contract.ORDERS_KV_BUCKET), "journal: the engines' order store"),
    (contract.kv_stream(contract.LEASES_KV_BUCKET), "engine leases"),
    (contract.kv_stream(contract.CONFIG_KV_BUCKET), "runtime configuration and its history"),
    (
        contract.kv_stream(contract.SESSIONS_KV_BUCKET),
        "orchestrator sessions (cancel on disconnect)",
    ),
)


def _limit(value: int | None) -> str:
    return "-" if value is None or value < 0 else str(value)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to width: numbers right-aligned, the first and the ``what`` column left."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = {0} | {i for i, title in enumerate(rows[0]) if title == "what"}
    return [
        "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def stream_row(name: str, info: StreamInfo | None, ephemeral: int, what: str) -> tuple[str, ...]:
    if info is None:
        return (name, "MISSING", "", "", "", "", "", what)
    state, cfg = info.state, info.config
    return (
        name,
        str(state.messages),
        f"{_limit(cfg.max_msgs)}",
        str(state.bytes),
        f"{_limit(cfg.max_bytes)}",
        f"{state.first_seq}..{state.last_seq}",
        str(ephemeral),
        what,
    )


def consumer_row(stream: str, info: ConsumerInfo) -> tuple[str, ...]:
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    return (
        f"{stream}/{info.name}",
        str(info.num_pending or 0),
        str(info.num_ack_pending or 0),
        str(info.num_redelivered or 0),
        str(floor),
        str(info.num_waiting or 0),
    )


@click.command()
@connection_options
@async_command("reading JetStream")
async def streams(config: Path | None, nats_url: str | None) -> None:
    """Messages, bytes and limits of ORDERS, EXECUTIONS, ALERTS and the KV buckets, and their
    durable consumers' pending, ack pending and redelivered counts. Exit 1 if a stream is
    missing (not provisioned)."""
    nc = await connect(settings(config, nats_url))
    missing = False
    srows: list[tuple[str, ...]] = [
        ("stream", "messages", "max_msgs", "bytes", "max_bytes", "seq", "ephemeral", "what")
    ]
    crows: list[tuple[str, ...]] = [
        ("consumer", "pending", "ack_pending", "redelivered", "ack_floor", "waiting")
    ]
    try:
        jsm = nc.jetstream()
        for name, what in STREAMS:
            try:
                info: StreamInfo | None = await jsm.stream_info(name)
                consumers = await jsm.consumers_info(name)
            except NotFoundError:
                info, consumers, missing = None, [], True
            durable = [c for c in consumers if c.config.durable_name]
            srows.append(stream_row(name, info, len(consumers) - len(durable), what))
            crows += [consumer_row(name, c) for c in sorted(durable, key=lambda c: c.name)]
    finally:
        await nc.close()
    for line in _table(srows):
        click.echo(line)
    click.echo("")
    for line in _table(crows):
        click.echo(line)
    if missing:
        raise Negative()
