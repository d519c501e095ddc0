"""``bridge orders cancel-all|resume``: an account's kill switch, for the operator identity.

``cancel-all ACCOUNT [--symbol S] [--side buy|sell] [--halt]``
    Cancels every open order of ACCOUNT in every engine (``BridgeClient.cancel_all``; only one
    symbol's and/or one side's if given) and prints how many, and which engines took part.
    ``--halt`` first sets the account's entry of the ``trading_state`` document to HALTED (the
    per-account kill switch: every new order of the account is refused TRADING_HALTED), signed
    and written like ``bridge config set`` does, and waits for the engines' ConfigApplied, so
    that nothing new slips in between the cancel and the operator's next step. Exit 1 when an
    engine refused the document or the mass cancel is incomplete (an engine that could hold the
    account's orders did not take part: re-run it, it is idempotent); exit 2 for an ACCOUNT
    that is not a valid account (nothing is written or sent).
``resume ACCOUNT``
    Removes the account's entry (the account trades again as the venue's and its symbols'
    states allow); waits for the engines' ConfigApplied the same way.

The document is changed by read-modify-write at the revision read (``Nats-Expected-Last-
Subject-Sequence``): another operator's change written meanwhile is never lost, the change is
re-applied on top of it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg

from bridge import contract
from bridge._mass_cancel import MassCancelResult, check_account
from bridge.cli._common import (
    CommandFailed,
    Negative,
    async_command,
    client,
    connect,
    connection_options,
    settings,
)
from bridge.cli.config import DEFAULT_WAIT_S, _echo_diff, _signer, _wait
from bridge.config import BridgeSettings
from bridge.models import Side
from bridge.runtime_config import documents, store
from bridge.security.signing import Signer
from bridge.v1 import market_data_pb2

KEY = contract.CONFIG_TRADING_STATE_KEY
WRITE_ATTEMPTS = 5
"""Read-modify-write rounds before giving up when other writers keep changing the document."""

wait_option = click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=DEFAULT_WAIT_S,
    show_default=True,
    help="Seconds to wait for the engines' ConfigApplied (0: do not wait).",
)


@click.group(name="orders")
def orders() -> None:
    """Account-wide order operations: cancel-all (mass cancel, --halt: the account's kill
    switch first) and resume (lift the account's switch)."""


def render(result: MassCancelResult) -> str:
    parts = [
        f"{result.account}: mass cancel {result.request_id}: {result.status}",
        f"canceled={result.canceled}",
        f"engines={','.join(result.engine_ids) or '-'}",
    ]
    if not result.complete:
        parts.append(f"reason={result.reason}")
    parts += [f"{e.field}: {e.rule}: {e.message}" for e in result.field_errors]
    if result.text:
        parts.append(f"text={result.text!r}")
    return " ".join(parts)


async def set_account_state(
    s: BridgeSettings, account: str, state: str | None, wait_s: float
) -> bool:
    """Sets (``None``: removes) ``account``'s entry of the trading_state document and prints
    what each engine did with it; False when one refused it (or the result is invalid)."""
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
        revision = await _write(nc, signer, account, state)
        if revision is None:
            return True
        if revision < 0:
            return False
        return not await _wait(nc, answers, KEY, revision, wait_s) if wait_s else True
    finally:
        await nc.close()


async def _write(
    nc: NatsConnection, signer: Signer | None, account: str, state: str | None
) -> int | None:
    """One revision with the change, written at the revision read: its number; None when the
    document already says so (nothing written); -1 when the result is invalid."""
    for _ in range(WRITE_ATTEMPTS):
        current = await store.get(nc, KEY)
        before = current.document if current is not None else None
        if current is not None and current.operation == "PUT" and before is None:
            click.echo(f"{KEY}: revision {current.revision} is not a JSON object", err=True)
            return -1
        after = documents.with_account_state(before, account, state)
        if after == before:
            shown = state or "no entry (ACTIVE unless the venue or a symbol says otherwise)"
            click.echo(f"{KEY}: account {account} is already {shown}: nothing written")
            return None
        body = documents.canonical(after).encode()
        checked = documents.validate(KEY, body)
        if not checked.ok:
            for e in checked.errors:
                click.echo(f"refused: {e.field}: {e.rule}: {e.message}", err=True)
            return -1
        try:
            revision = await store.put(
                nc, KEY, body, signer, expected_revision=current.revision if current else 0
            )
        except store.RevisionConflictError:
            continue  # written meanwhile: apply the change on top of the newer revision
        who = signer.public_key if signer is not None else "unsigned"
        click.echo(f"{KEY}: revision {revision} written, signed by {who}")
        _echo_diff(documents.diff_text(before, after))
        return revision
    raise CommandFailed(f"{KEY} kept changing under {WRITE_ATTEMPTS} attempts: try again")


@orders.command(name="cancel-all")
@click.argument("account")
@click.option("--symbol", help="Only this symbol's orders (default: every symbol).")
@click.option(
    "--side",
    type=click.Choice([s.value for s in Side], case_sensitive=False),
    help="Only this side's orders (default: both).",
)
@click.option(
    "--halt",
    is_flag=True,
    help="First set the account HALTED (trading_state.accounts), so no new order is taken.",
)
@click.option("--request-id", help="The mass cancel's id, echoed (default: mc-<random>).")
@wait_option
@connection_options
@async_command("orders cancel-all")
async def cancel_all(
    account: str,
    symbol: str | None,
    side: str | None,
    halt: bool,
    request_id: str | None,
    wait_s: float,
    config: Path | None,
    nats_url: str | None,
) -> None:
    """Cancel every open order of ACCOUNT in every engine (optionally --halt it first)."""
    check_account(account)
    s = settings(config, nats_url)
    halted = await set_account_state(s, account, "HALTED", wait_s) if halt else True
    async with client(s) as bridge:
        result = await bridge.cancel_all(
            account,
            symbol=symbol,
            side=Side(side.upper()) if side else None,
            request_id=request_id,
        )
    click.echo(render(result))
    if not halted:
        click.echo(f"{account}: NOT halted (an engine refused the document)", err=True)
    if not (halted and result.complete):
        raise Negative()


@orders.command(name="resume")
@click.argument("account")
@wait_option
@connection_options
@async_command("orders resume")
async def resume(account: str, wait_s: float, config: Path | None, nats_url: str | None) -> None:
    """Lift ACCOUNT's kill switch: remove its entry from the trading_state document."""
    check_account(account)
    if not await set_account_state(settings(config, nats_url), account, None, wait_s):
        raise Negative()
