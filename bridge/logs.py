"""Structured logging for the bridge: structlog configured once, secrets redacted.

JSON lines when stderr is not a terminal (production, CI), readable console output otherwise.
Per-request context (``correlation_id``, ``client_order_id``) is bound with
``structlog.contextvars.bound_contextvars`` and lands on every line logged inside it; the field
names match the engine's ``tracing`` fields.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(
    r"(seed|secret|password|passwd|token|private|key_pem|nkey|api_key|credential|authorization)",
    re.I,
)
# NKey seeds ("SU...", "SO...", "SA...", ...) and PEM private keys, wherever they appear in a value.
_SECRET_VALUE = re.compile(
    r"\bS[UOANCXP][A-Z2-7]{40,}\b"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
)
REDACTED = "***"


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask values of secret-looking keys and secret-looking substrings."""
    for key, value in list(event.items()):
        if _SECRET_KEY.search(key) and not key.endswith(("_file", "_path")):
            event[key] = REDACTED
        elif isinstance(value, str):
            event[key] = _SECRET_VALUE.sub(REDACTED, value)
    return event


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Configure structlog (and stdlib logging) for the process. Call once at start-up."""
    use_json = json if json is not None else not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,  # after format_exc_info so exception text is redacted too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
