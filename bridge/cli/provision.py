"""``bridge provision [--dry-run] [--replicas N] [--projections async|fsync]``: create or
update the bridge's JetStream objects (streams ORDERS, EXECUTIONS, JOURNAL, ALERTS, their
consumers, the KV buckets) from the definitions the package ships
(:mod:`bridge.jetstream.provision`). Idempotent; one line per object. ``--dry-run`` changes
nothing and says what it would create or update."""

from __future__ import annotations

from pathlib import Path

import click

from bridge.cli._common import CommandFailed, async_command, connect, connection_options, settings
from bridge.jetstream.provision import Projections, ProvisionError
from bridge.jetstream.provision import provision as apply_definitions


@click.command()
@click.option(
    "--dry-run", is_flag=True, help="Change nothing; print what would be created or updated."
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    metavar="N",
    help="Override every definition's replica count (a cluster).",
)
@click.option(
    "--projections",
    type=click.Choice(["async", "fsync"]),
    default="async",
    show_default=True,
    help="How EXECUTIONS and the order store are persisted when created: async (the journal "
    "is the fsynced fact) or fsync (per message, with atomic batches: engines before contract "
    "1.2 need it, e.g. during a rolling upgrade). An existing stream keeps its mode.",
)
@connection_options
@async_command("provisioning")
async def provision(
    dry_run: bool,
    replicas: int | None,
    projections: Projections,
    config: Path | None,
    nats_url: str | None,
) -> None:
    """Create or update the streams, consumers and KV buckets (as the operator).

    Prints one line per object: created, updated (what changed), up to date; with --dry-run
    "would create" / "would update (...)" instead, and a last line saying whether anything
    would change."""
    nc = await connect(settings(config, nats_url), name="bridge-provision")
    try:
        lines = await apply_definitions(
            nc, replicas=replicas, dry_run=dry_run, projections=projections
        )
    except ProvisionError as exc:
        raise CommandFailed(str(exc)) from exc
    finally:
        await nc.close()
    for line in lines:
        click.echo(line)
    if dry_run:
        pending = sum(1 for line in lines if ": would " in line)
        click.echo(f"dry run: {pending} to change" if pending else "dry run: nothing to do")
