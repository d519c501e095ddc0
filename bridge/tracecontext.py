"""W3C Trace Context (``traceparent``) for order operations: pure functions, no I/O.

Every order operation (``submit``, ``cancel``, ``status``, ``enqueue``, ``enqueue_batch``) is
one trace. Its ``traceparent`` header (``contract.HEADER_TRACEPARENT``) rides on every message
the operation sends, every attempt and every order of a batch alike, next to the correlation
id, which stays the join key of the logs. The two are tied together so that one id joins
everything:

* no correlation id given: a fresh trace id is generated and the correlation id *is* that
  trace id (32 lowercase hex digits);
* a correlation id given that is a valid trace id (e.g. ``uuid4().hex``): it is the trace id;
* any other correlation id: a fresh trace id, logged beside it.

The engine applies the same rule to a message without a valid ``traceparent`` and to orders it
recovers after a restart (it stores the correlation id, not the trace id), so their lines carry
the same trace id too.

Format (W3C Trace Context, version ``00``): ``00-<trace-id>-<parent-id>-<trace-flags>``,
lowercase hex, 55 characters; an all-zero trace id or parent id is invalid; version ``ff`` is
invalid; a higher version is read by its first 55 characters when the 56th is a dash or the
value ends there (``parse``). The parent id is the span id of this operation as the client
knows it (one per operation); the flags are ``01`` (sampled: every order is logged).

Ids come from ``random.getrandbits`` (what OpenTelemetry's Python SDK ``RandomIdGenerator``
uses): trace ids need to be unique, not secret, and this costs a fraction of ``uuid4``.
Hand-written rather than OpenTelemetry's propagator because creating an OpenTelemetry span per
order costs several times the 5 % CPU budget of the hot path; this is a string format.
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

VERSION = "00"
FLAGS_SAMPLED = "01"
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_FLAGS = re.compile(r"[0-9a-f]{2}")
_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16
_LENGTH = 55  # version 00: 2 + 1 + 32 + 1 + 16 + 1 + 2

_getrandbits = random.getrandbits


class TraceParent(NamedTuple):
    """A parsed ``traceparent``: its trace id, parent id and flags (lowercase hex)."""

    trace_id: str
    parent_id: str
    flags: str

    @property
    def sampled(self) -> bool:
        return int(self.flags, 16) & 1 == 1

    def header(self) -> str:
        """The value as this implementation sends it (version 00)."""
        return f"{VERSION}-{self.trace_id}-{self.parent_id}-{self.flags}"


def new_trace_id() -> str:
    """A fresh, valid trace id: 32 lowercase hex digits, not all zero."""
    bits = _getrandbits(128)
    while not bits:  # pragma: no cover  (one chance in 2**128)
        bits = _getrandbits(128)
    return f"{bits:032x}"


def new_span_id() -> str:
    """A fresh, valid parent (span) id: 16 lowercase hex digits, not all zero."""
    bits = _getrandbits(64)
    while not bits:  # pragma: no cover
        bits = _getrandbits(64)
    return f"{bits:016x}"


def is_trace_id(value: str) -> bool:
    """True when ``value`` is a valid W3C trace id (32 lowercase hex digits, not all zero)."""
    return (
        len(value) == 32 and _TRACE_ID.fullmatch(value) is not None and value != _INVALID_TRACE_ID
    )


def trace_id_for(correlation_id: str) -> str:
    """The trace id of an operation with this correlation id: the id itself when it is a
    valid trace id, else a fresh one."""
    return correlation_id if is_trace_id(correlation_id) else new_trace_id()


def traceparent(trace_id: str) -> str:
    """A ``traceparent`` for one operation of trace ``trace_id`` (a valid trace id), with a
    fresh parent id, sampled."""
    return f"{VERSION}-{trace_id}-{new_span_id()}-{FLAGS_SAMPLED}"


def parse(value: str | None) -> TraceParent | None:
    """A ``traceparent`` header value read by the W3C rules, or None when absent or invalid
    (the receiver then starts a new trace)."""
    if not value or len(value) < _LENGTH:
        return None
    version = value[:2]
    if _FLAGS.fullmatch(version) is None or version == "ff":
        return None
    if version == VERSION and len(value) != _LENGTH:
        return None
    if len(value) > _LENGTH and value[_LENGTH] != "-":
        return None
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    trace_id, parent_id, flags = value[3:35], value[36:52], value[53:55]
    if (
        _TRACE_ID.fullmatch(trace_id) is None
        or trace_id == _INVALID_TRACE_ID
        or _SPAN_ID.fullmatch(parent_id) is None
        or parent_id == _INVALID_SPAN_ID
        or _FLAGS.fullmatch(flags) is None
    ):
        return None
    return TraceParent(trace_id, parent_id, flags)


def trace_id_of(traceparent_value: str | None, correlation_id: str) -> str:
    """The trace id a receiver logs: the ``traceparent``'s when valid, else the correlation
    id when it is a trace id, else ``""`` (no trace known)."""
    parsed = parse(traceparent_value)
    if parsed is not None:
        return parsed.trace_id
    return correlation_id if is_trace_id(correlation_id) else ""
