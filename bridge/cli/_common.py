"""What every ``bridge`` command shares: the connection options, the settings they build, the
operator's connection (raw nats-py or a ``BridgeClient``), HTTP probes and the exit codes.

Connection options (identical on every command that talks to NATS):

``--config FILE``
    settings TOML (the ``BridgeSettings`` keys; same as ``BRIDGE_CONFIG_FILE``); ``BRIDGE_*``
    environment variables override it, as for the client.
``--nats-url URL[,URL...]``
    overrides ``nats_url``.

The identity is the one the settings' TLS files and NKey seed name; the commands are meant for
the **operator** identity, so the inbox prefix defaults to the operator's (``_INBOX.operator``)
unless the settings name one (an orchestrator's settings file written by ``./dev server`` does).

Exit codes: 0 success; 1 a definite negative answer (unhealthy, rejected, not found, a broken
chain); 2 the command could not run (no connection, bad settings, a refused operation).
"""

from __future__ import annotations

import asyncio
import functools
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import nats
import nats.errors
from nats.aio.client import Client as NatsConnection
from pydantic import ValidationError

from bridge import contract
from bridge.client import BridgeClient
from bridge.config import BridgeSettings
from bridge.errors import BridgeError
from bridge.metrics import ClientMetrics
from bridge.transport import tls_context

EXIT_NEGATIVE = 1
EXIT_FAILED = 2

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_ENGINE_URL = "http://127.0.0.1:9464"
"""The engine's HTTP endpoints at its default ``http_listen``."""
DEFAULT_MONITOR_URL = "http://127.0.0.1:8222"
"""nats-server's monitoring port as ``./dev server`` and the shipped config run it."""


def engine_url() -> str:
    """The engine's HTTP base URL by the engine's own knob: ``BRIDGE_HTTP_LISTEN`` (its
    ``http_listen``) when set, else :data:`DEFAULT_ENGINE_URL`."""
    listen = os.environ.get("BRIDGE_HTTP_LISTEN")
    return f"http://{listen}" if listen else DEFAULT_ENGINE_URL


def monitor_url() -> str:
    """nats-server's monitoring URL by the server config's variables (``nats/server.conf``):
    ``BRIDGE_NATS_HOST`` and ``BRIDGE_NATS_HTTP_PORT`` when set, else
    :data:`DEFAULT_MONITOR_URL`."""
    port = os.environ.get("BRIDGE_NATS_HTTP_PORT")
    if not port:
        return DEFAULT_MONITOR_URL
    host = os.environ.get("BRIDGE_NATS_HOST", "127.0.0.1")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


CONFIG_ENV = "BRIDGE_CONFIG_FILE"
CLI_RECONNECT_ATTEMPTS = 3
"""``max_reconnect_attempts`` of the commands' connections unless the settings give one."""


class CommandFailed(click.ClickException):
    """The command could not run (exit 2); click prints ``Error: <message>`` on stderr."""

    exit_code = EXIT_FAILED


class Negative(click.exceptions.Exit):
    """A definite negative answer, already printed (exit 1)."""

    def __init__(self) -> None:
        super().__init__(EXIT_NEGATIVE)


def connection_options(command: Callable[P, T]) -> Callable[P, T]:
    """Add ``--config`` and ``--nats-url`` (passed on as ``config`` and ``nats_url``)."""
    command = click.option(
        "--nats-url",
        metavar="URL[,URL...]",
        help="NATS server URL(s), comma-separated (default: the settings' nats_url).",
    )(command)
    return click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Settings TOML of the connection (like BRIDGE_CONFIG_FILE); BRIDGE_* environment "
        "variables override it.",
    )(command)


engine_url_option = click.option(
    "--engine-url",
    "engine_urls",
    multiple=True,
    default=lambda: [engine_url()],
    show_default=f"$BRIDGE_HTTP_LISTEN, else {DEFAULT_ENGINE_URL}",
    metavar="URL",
    help="An engine's HTTP base URL (its http_listen); repeat for several engines.",
)
"""``--engine-url`` of the commands that read the engines' HTTP endpoints (``health``, ``top``)."""


def settings(config: Path | None, nats_url: str | None, **extra: object) -> BridgeSettings:
    """The client settings of ``--config``/``BRIDGE_*``/``--nats-url``; the operator's inbox
    unless they name one."""
    overrides: dict[str, object] = dict(extra)
    if nats_url:
        overrides["nats_url"] = nats_url
    before = os.environ.get(CONFIG_ENV)
    if config is not None:  # BridgeSettings reads the file it names; restored below
        os.environ[CONFIG_ENV] = str(config)
    try:
        result = BridgeSettings(**overrides)  # type: ignore[arg-type]
    except (ValidationError, OSError, ValueError) as exc:
        raise CommandFailed(f"settings: {exc}") from exc
    finally:
        if before is None:
            os.environ.pop(CONFIG_ENV, None)
        else:
            os.environ[CONFIG_ENV] = before
    update: dict[str, object] = {}
    if "inbox_prefix" not in result.model_fields_set:
        update["inbox_prefix"] = contract.inbox_prefix("operator")
    if "max_reconnect_attempts" not in result.model_fields_set:
        # A command gives up on a lost server after a few attempts; a trading process (the
        # default, -1) keeps reconnecting.
        update["max_reconnect_attempts"] = CLI_RECONNECT_ATTEMPTS
    return result.model_copy(update=update) if update else result


async def connect(s: BridgeSettings, name: str = "bridge-cli") -> NatsConnection:
    """A plain nats-py connection with the settings' TLS files, NKey and inbox; no reconnect."""
    seed = s.nkey_seed.get_secret_value() if s.nkey_seed is not None else None
    return await nats.connect(
        servers=[u.strip() for u in s.nats_url.split(",") if u.strip()],
        name=name,
        tls=tls_context(s),
        nkeys_seed=str(s.nkey_seed_file) if s.nkey_seed_file else None,
        nkeys_seed_str=seed,
        inbox_prefix=s.inbox_prefix or contract.inbox_prefix("operator"),
        connect_timeout=max(1, s.connect_timeout_ms // 1000),
        allow_reconnect=False,
        max_reconnect_attempts=max(1, s.max_reconnect_attempts),
    )


def client(s: BridgeSettings) -> BridgeClient:
    """A ``BridgeClient`` for the order commands (``async with``); its metrics are registered
    nowhere (a one-shot command exports none)."""
    return BridgeClient(s, metrics=ClientMetrics(None))


def run(coro: Coroutine[Any, Any, T], what: str) -> T:
    """Run ``coro``; connection and client errors become :class:`CommandFailed` (exit 2)."""
    try:
        return asyncio.run(coro)
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except BridgeError as exc:
        raise CommandFailed(f"{what}: {type(exc).__name__}: {exc}") from exc
    except (OSError, ValueError, nats.errors.Error, TimeoutError) as exc:
        raise CommandFailed(f"{what}: {exc!r}") from exc


def async_command(what: str) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, T]]:
    """Decorator: a click callback written as a coroutine, run by :func:`run`."""

    def wrap(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
        @functools.wraps(fn)
        def sync(*args: P.args, **kwargs: P.kwargs) -> T:
            return run(fn(*args, **kwargs), what)

        return sync

    return wrap


def dec(value: Decimal) -> str:
    """A quantity or price for humans: exact, without the wire's trailing zeros (5, 0, 190.01)."""
    return format(value.normalize(), "f")


def http_get(url: str, timeout: float) -> tuple[int | None, str]:
    """(status, body) of a GET; (None, the error) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status), answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))
