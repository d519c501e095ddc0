"""``bridge config get|set|diff|history``: the runtime configuration documents (the
``bridge_config`` bucket; ``bridge.runtime_config``), for the operator identity.

``get KEY``
    the document in force (canonical JSON on stdout; revision, time and signer on stderr);
    exit 1 when there is none.
``set KEY SOURCE``
    SOURCE is a file, ``-`` (stdin) or the JSON document itself (an argument starting with
    ``{``). Validated first against the document's JSON Schema: refused with each field and rule,
    exit 1, nothing written. Then signed with the identity's NKey, written, and the change
    printed; then it waits up to ``--wait`` seconds for ConfigApplied from the sides that read
    the key (engine: risk, symbols, trading_state, log_levels; client: client, routing,
    log_levels) and prints each answer. Exit 1 when a side refused it; a side that did not answer
    in time is named (no process of that side may be running), exit 0.
``diff KEY SOURCE``
    what ``set`` would change, without writing (exit 1 when SOURCE is invalid).
``history KEY``
    every revision kept (the bucket keeps 64 per key): revision, time, signer, operation and the
    diff from the one before: the audit trail.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg

from bridge import contract
from bridge.cli._common import (
    Negative,
    async_command,
    connect,
    connection_options,
    settings,
)
from bridge.config import BridgeSettings
from bridge.runtime_config import documents, store
from bridge.security.signing import Signer
from bridge.v1 import market_data_pb2

DEFAULT_WAIT_S = 3.0
LINGER_S = 0.2
"""After every side answered once: how long to wait for more instances of the sides."""

key_argument = click.argument("key", type=click.Choice(documents.KEYS), metavar="KEY")
source_argument = click.argument("source", metavar="FILE|-|JSON")


@click.group(name="config")
def config() -> None:
    """Runtime configuration documents (the bridge_config bucket): KEY is one of
    risk, symbols, trading_state, log_levels, client, routing (schemas/config/v1)."""


def _read(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    if source.lstrip().startswith("{"):
        return source.encode()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source}: {exc}", param_hint="SOURCE") from exc


def _checked(key: str, body: bytes) -> documents.Checked:
    """The validated document, or exit 1 naming each field and rule."""
    checked = documents.validate(key, body)
    if not checked.ok:
        for e in checked.errors:
            click.echo(f"refused: {e.field}: {e.rule}: {e.message}", err=True)
        raise Negative()
    return checked


def _signer(s: BridgeSettings) -> Signer | None:
    if s.nkey_seed is not None:
        return Signer(s.nkey_seed.get_secret_value().encode())
    if s.nkey_seed_file is not None:
        return Signer(s.nkey_seed_file.read_bytes().strip())
    return None


def _when(revision: store.Revision) -> str:
    return revision.time.isoformat(timespec="milliseconds") if revision.time else "-"


def _echo_diff(lines: list[str], indent: str = "  ") -> None:
    for line in lines or ["(no change)"]:
        click.echo(f"{indent}{line}")


@config.command(name="get")
@key_argument
@connection_options
@async_command("config get")
async def get(key: str, config: Path | None, nats_url: str | None) -> None:
    """Print the document KEY in force."""
    nc = await connect(settings(config, nats_url))
    try:
        current = await store.get(nc, key)
    finally:
        await nc.close()
    if current is None or current.document is None:
        click.echo(f"{key}: no document (the built-in configuration is in force)", err=True)
        raise Negative()
    click.echo(f"# {key} revision {current.revision} {_when(current)} {current.signer}", err=True)
    click.echo(documents.canonical(current.document))


@config.command(name="diff")
@key_argument
@source_argument
@connection_options
@async_command("config diff")
async def diff(key: str, source: str, config: Path | None, nats_url: str | None) -> None:
    """Show what `set KEY SOURCE` would change, without writing."""
    checked = _checked(key, _read(source))
    nc = await connect(settings(config, nats_url))
    try:
        current = await store.get(nc, key)
    finally:
        await nc.close()
    before = current.document if current is not None else None
    _echo_diff(documents.diff_text(before, checked.document), indent="")


@config.command(name="set")
@key_argument
@source_argument
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=DEFAULT_WAIT_S,
    show_default=True,
    help="Seconds to wait for the sides' ConfigApplied (0: do not wait).",
)
@connection_options
@async_command("config set")
async def set_(
    key: str, source: str, wait_s: float, config: Path | None, nats_url: str | None
) -> None:
    """Validate, sign and write the document KEY, then show what each side did with it."""
    body = _read(source)
    checked = _checked(key, body)
    s = settings(config, nats_url)
    signer = _signer(s)
    nc = await connect(s)
    try:
        answers: asyncio.Queue[market_data_pb2.ConfigApplied] = asyncio.Queue()

        async def on_applied(msg: Msg) -> None:
            answer = market_data_pb2.ConfigApplied()
            answer.ParseFromString(msg.data)
            await answers.put(answer)

        await nc.subscribe(contract.CONFIG_APPLIED_ALL, cb=on_applied)
        await nc.flush()
        current = await store.get(nc, key)
        revision = await store.put(nc, key, body, signer)
        who = signer.public_key if signer is not None else "unsigned"
        click.echo(f"{key}: revision {revision} written, signed by {who}")
        _echo_diff(documents.diff_text(current.document if current else None, checked.document))
        refused = await _wait(nc, answers, key, revision, wait_s) if wait_s else False
    finally:
        await nc.close()
    if refused:
        raise Negative()


async def _wait(
    nc: NatsConnection,
    answers: asyncio.Queue[market_data_pb2.ConfigApplied],
    key: str,
    revision: int,
    wait_s: float,
) -> bool:
    """Print the sides' answers to one revision; True when one refused it."""
    expected = set(documents.SIDES[key])
    heard: set[str] = set()
    refused = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        left = deadline - loop.time()
        if expected <= heard:
            left = min(left, LINGER_S)
        if left <= 0:
            break
        try:
            answer = await asyncio.wait_for(answers.get(), left)
        except TimeoutError:
            break
        if answer.document != key or answer.revision != revision:
            continue
        heard.add(answer.side)
        if answer.applied:
            click.echo(f"{answer.side} {answer.instance}: applied")
            continue
        refused = True
        click.echo(f"{answer.side} {answer.instance}: REFUSED (its previous configuration stays)")
        for e in answer.errors:
            click.echo(f"  {e.field}: {e.rule}: {e.message}")
    for side in sorted(expected - heard):
        click.echo(f"{side}: no answer within {wait_s:g}s (is one running?)", err=True)
    return refused


@config.command(name="history")
@key_argument
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@connection_options
@async_command("config history")
async def history(key: str, limit: int, config: Path | None, nats_url: str | None) -> None:
    """Every revision of KEY kept: revision, time, signer, operation, diff from the previous."""
    nc = await connect(settings(config, nats_url))
    try:
        revisions = await store.history(nc, key, limit)
    finally:
        await nc.close()
    if not revisions:
        click.echo(f"{key}: no revisions", err=True)
        raise Negative()
    previous = None
    for r in revisions:
        click.echo(f"revision {r.revision}  {_when(r)}  {r.signer}  {r.operation}")
        valid = documents.validate(key, r.body).document if r.operation == "PUT" else None
        if r.operation == "PUT" and valid is None:
            click.echo("  (invalid: refused by the sides; the previous one stayed in force)")
            continue
        _echo_diff(documents.diff_text(previous, valid))
        previous = valid
