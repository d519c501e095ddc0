"""``bridge audit verify``: walk a stream (default EXECUTIONS) and check every engine's hash chain
(:mod:`bridge.audit`): prints ``OK: ...`` and exits 0, or ``BROKEN at stream sequence ...``
naming the first broken link and exits 1 (2: it could not run, e.g. no connection). The engine
keys come from the entitlements file (identities of role ``engine``)."""

from __future__ import annotations

from pathlib import Path

import click
from nacl.signing import VerifyKey

from bridge import audit as chain
from bridge import contract
from bridge.cli._common import (
    CommandFailed,
    Negative,
    async_command,
    connect,
    connection_options,
    settings,
)
from bridge.security import entitlements

DEFAULT_ENTITLEMENTS = Path(".dev") / "entitlements.toml"


@click.group()
def audit() -> None:
    """The tamper-evident execution journal."""


@audit.command()
@click.option("--stream", default=contract.EXECUTIONS_STREAM, show_default=True)
@click.option(
    "--entitlements",
    "entitlements_file",
    type=click.Path(path_type=Path),
    default=DEFAULT_ENTITLEMENTS,
    show_default=True,
    help="Entitlements file naming the engine keys.",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per read.")
@connection_options
def verify(
    stream: str,
    entitlements_file: Path,
    timeout: float,
    config: Path | None,
    nats_url: str | None,
) -> None:
    """Check each engine's report chain in a stream: prev, digest and signature of every link.
    Exit 0 (OK), 1 (BROKEN) or 2 (could not check)."""
    try:
        ents = entitlements.load(entitlements_file)
    except (entitlements.EntitlementsError, OSError, ValueError) as exc:
        raise CommandFailed(str(exc)) from exc
    keys = chain.engine_keys((i.name, i.nkey) for i in ents.with_role("engine"))
    result = _verify(stream, keys, timeout, config, nats_url)
    click.echo(result.render())
    if not result.ok:
        raise Negative()


@async_command("reading the stream")
async def _verify(
    stream: str,
    keys: dict[str, VerifyKey],
    timeout: float,
    config: Path | None,
    nats_url: str | None,
) -> chain.Result:
    nc = await connect(settings(config, nats_url))
    try:
        return await chain.verify_stream(nc.jetstream(), stream, keys, timeout=timeout)
    finally:
        await nc.close()
