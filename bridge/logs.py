"""Structured logging for the bridge: quiet until the application configures it.

The standard library's convention for libraries: the bridge logs through stdlib loggers named
``bridge.*``, and ``bridge`` carries a ``NullHandler``, so nothing is printed (not a per-order
debug line, not a warning) until the application configures logging, either with
``configure_logging()`` below (JSON lines on stderr, readable lines on a terminal) or with its
own ``logging`` setup (``logging.basicConfig``, ``dictConfig``), which then decides levels and
handlers. A disabled level costs one ``isEnabledFor`` check per call.

Each bridge line is a structlog event dict handed to stdlib logging (``record.msg``): the
operation's ids, bound once per operation by ``BridgeClient`` with
``structlog.contextvars.bound_contextvars`` (``correlation_id``, ``trace_id``,
``client_order_id``, ``account``, ``symbol``; the engine's lines about an order carry the same
names, see ``bridge.tracecontext``), ``level`` (lowercase: debug, info, warning, error),
``timestamp`` (ISO 8601, UTC), and secrets redacted before the line leaves the library. JSON
lines call the text ``message``: the field names of the engine's JSON lines.

Secrets (NKey seeds, PEM private keys, values under secret-looking keys such as ``token`` or
``password``) are redacted whatever logging configuration the application chooses, in two
layers that do not depend on it: the ``redact_secrets`` structlog processor, first in every
bridge logger's own chain (nested values and exception text included), and ``SecretsFilter``,
a ``logging.Filter`` on each ``bridge`` logger object itself (not on a handler), which scrubs
the stdlib record (``msg``, ``args``, extra attributes, exception and stack text) before any
handler or formatter of the application sees it. Settings print their inline secrets as
``SecretStr`` (``**********``). Signatures and public keys are not secrets and are kept.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog
from structlog.stdlib import ProcessorFormatter
from structlog.typing import Processor

_SECRET_KEY = re.compile(
    r"(seed|secret|password|passwd|token|private|key_pem|nkey|api_key|credential|authorization)",
    re.I,
)
# NKey seeds ("SU...", "SO...", "SA...", ...) and PEM private keys, wherever they appear in a value.
# A seed is masked wherever a run of base32 characters starts with it, even glued to other
# text ("seed_SU...", "xSU..."); a public key ("U...", "N...") starts a run with another letter.
_SECRET_VALUE = re.compile(
    r"(?<![A-Z2-7])S[UOANCXP][A-Z2-7]{40,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
)
REDACTED = "***"

logging.getLogger("bridge").addHandler(logging.NullHandler())


def _secret_key(key: object) -> bool:
    return (
        isinstance(key, str)
        and _SECRET_KEY.search(key) is not None
        and not key.endswith(("_file", "_path"))
    )


def scrub(value: Any, depth: int = 0) -> Any:
    """``value`` with every secret inside it masked: strings, bytes, nested dicts, lists and
    tuples (values under secret-looking keys entirely); any other object whose text shows a
    secret becomes that text, masked. Numbers, booleans, None and harmless objects are kept."""
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value) if "S" in value or "-----" in value else value
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > 8:
        return REDACTED  # deeper than any log value should be: do not risk it
    if isinstance(value, dict):
        return {k: REDACTED if _secret_key(k) else scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [scrub(v, depth + 1) for v in value]
        return type(value)(items) if not isinstance(value, tuple) else tuple(items)
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("latin-1")
        return _SECRET_VALUE.sub(REDACTED, text) if _SECRET_VALUE.search(text) else value
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # an object that cannot print itself prints nothing secret either
        return value
    return _SECRET_VALUE.sub(REDACTED, text) if _SECRET_VALUE.search(text) else value


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask values of secret-looking keys and secrets anywhere in the
    other values (nested ones, exceptions and objects included)."""
    for key, value in list(event.items()):
        if _secret_key(key):
            event[key] = REDACTED
        else:
            event[key] = scrub(value)
    return event


# Attributes every record has, and those structlog's wrap_for_formatter adds (its logger object):
# not the application's extra values.
_STANDARD_RECORD_KEYS = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))
) | {"message", "asctime", "taskName", "_logger", "_name", "_from_structlog"}


class SecretsFilter(logging.Filter):
    """Scrubs secrets from a stdlib record before any handler or formatter sees it.

    Attached to each ``bridge`` logger object (``get_logger``), so it holds whatever handlers,
    formatters or structlog setup the application installs: ``msg`` (a string or the event
    dict of a structlog line), ``args``, every extra attribute, and the exception and stack
    text (an exception whose text shows a secret is formatted here, masked and kept as
    ``exc_text``; its ``exc_info`` is dropped so that no formatter renders the original). A
    filter on a logger sees only that logger's own records, hence one per bridge logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.msg)
        if record.args:
            record.args = scrub(record.args)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_RECORD_KEYS:
                setattr(record, key, REDACTED if _secret_key(key) else scrub(value))
        if record.exc_info:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            if _SECRET_VALUE.search(text):
                record.exc_text = _SECRET_VALUE.sub(REDACTED, text)
                record.exc_info = None
        elif record.exc_text:
            record.exc_text = _SECRET_VALUE.sub(REDACTED, record.exc_text)
        if record.stack_info:
            record.stack_info = _SECRET_VALUE.sub(REDACTED, record.stack_info)
        return True


_FILTER = SecretsFilter()


def _protected(logger: logging.Logger) -> logging.Logger:
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


_protected(logging.getLogger("bridge"))


# Everything a line gets before it leaves the library (or the application's structlog loggers,
# once configured): context, level, time, exception text, then redaction of all of it.
_ENRICH: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    structlog.processors.format_exc_info,
    redact_secrets,  # after format_exc_info so exception text is redacted too
]


def _context_var(key: str) -> ContextVar[Any]:
    """structlog's context variable of ``key`` (what ``bound_contextvars`` sets)."""
    tokens = structlog.contextvars.bind_contextvars(**{key: None})
    structlog.contextvars.reset_contextvars(**tokens)
    return tokens[key].var


_CORRELATION_ID, _TRACE_ID, _CLIENT_ORDER_ID, _ACCOUNT, _SYMBOL = (
    _context_var(key)
    for key in ("correlation_id", "trace_id", "client_order_id", "account", "symbol")
)


class bound_ids:  # noqa: N801  (used like structlog's bound_contextvars)
    """Bind an operation's ids to the log context for the ``with`` block: what
    ``structlog.contextvars.bound_contextvars(correlation_id=..., trace_id=...,
    client_order_id=..., account=..., symbol=...)`` does, at a fifth of its cost (it runs once
    per order). ``None`` leaves an id unbound."""

    __slots__ = (
        "_account",
        "_client_order_id",
        "_correlation_id",
        "_symbol",
        "_tokens",
        "_trace_id",
    )

    def __init__(
        self,
        correlation_id: str,
        client_order_id: str | None = None,
        account: str | None = None,
        symbol: str | None = None,
        *,
        trace_id: str | None = None,
    ) -> None:
        self._correlation_id = correlation_id
        self._trace_id = trace_id
        self._client_order_id = client_order_id
        self._account = account
        self._symbol = symbol

    def __enter__(self) -> None:
        trace, order = self._trace_id, self._client_order_id
        account, symbol = self._account, self._symbol
        self._tokens = (
            _CORRELATION_ID.set(self._correlation_id),
            None if trace is None else _TRACE_ID.set(trace),
            None if order is None else _CLIENT_ORDER_ID.set(order),
            None if account is None else _ACCOUNT.set(account),
            None if symbol is None else _SYMBOL.set(symbol),
        )

    def __exit__(self, *_exc: object) -> None:
        correlation, trace, order, account, symbol = self._tokens
        if symbol is not None:
            _SYMBOL.reset(symbol)
        if account is not None:
            _ACCOUNT.reset(account)
        if order is not None:
            _CLIENT_ORDER_ID.reset(order)
        if trace is not None:
            _TRACE_ID.reset(trace)
        _CORRELATION_ID.reset(correlation)


class _BridgeLogger(structlog.stdlib.BoundLogger):
    """A stdlib-backed structlog logger that does no work for a level that is off."""

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.DEBUG):
            return None
        return super().debug(event, *args, **kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.INFO):
            return None
        return super().info(event, *args, **kw)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """The logger of one bridge module (``name`` starts with ``bridge.``)."""
    processors = [*_ENRICH, ProcessorFormatter.wrap_for_formatter]
    return _BridgeLogger(_protected(logging.getLogger(name)), processors, {})


_installed: logging.Handler | None = None


def _not_ssl_eof_notice(record: logging.LogRecord) -> bool:
    """asyncio warns on every TLS connection nats-py closes ("returning true from
    eof_received() has no effect when using ssl"): harmless, and one line per connection."""
    return not (record.name == "asyncio" and "eof_received()" in record.getMessage())


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Configure logging for the process (call once at start-up; a second call replaces the
    first): one stderr handler on the root logger at ``level``, rendering bridge lines, the
    application's structlog lines and other stdlib records alike, as JSON lines (default when
    stderr is not a terminal) or readable console lines. asyncio's notice on each closed TLS
    connection ("eof_received() has no effect when using ssl") is dropped."""
    global _installed
    use_json = json if json is not None else not sys.stderr.isatty()
    render: list[Processor] = [ProcessorFormatter.remove_processors_meta]
    if use_json:
        render += [
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(),
        ]
    else:
        render.append(structlog.dev.ConsoleRenderer())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ProcessorFormatter(processors=render, foreign_pre_chain=_ENRICH))
    handler.addFilter(_not_ssl_eof_notice)
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    root.addHandler(handler)
    _installed = handler
    levelno = logging.getLevelName(level.upper())
    root.setLevel(levelno)
    structlog.configure(
        processors=[*_ENRICH, ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


LEVELS: dict[str, int] = {
    "trace": logging.DEBUG,  # Python has no trace level: the bridge's finest is debug
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
"""The runtime ``log_levels`` document's level names (the engine's) -> stdlib levels."""

_level_before: int | None = None  # the bridge logger's own level before the first override


def set_level(level: str | None) -> None:
    """Set the level of every ``bridge.*`` logger at run time (the ``client`` entry of the
    ``log_levels`` document: trace, debug, info, warn, error), or, with None, give back the
    level the ``bridge`` logger had before the first call (the application's choice)."""
    global _level_before
    bridge = logging.getLogger("bridge")
    if level is None:
        if _level_before is not None:
            bridge.setLevel(_level_before)
            _level_before = None
        return
    if _level_before is None:
        _level_before = bridge.level
    bridge.setLevel(LEVELS[level])
