"""Verifying the tamper-evident execution journal: each engine's reports form a hash chain.

Every report an engine publishes to EXECUTIONS carries its link (engine-rs ``chain.rs``):
``Bridge-Chain`` (the engine id: whose chain), ``Bridge-Chain-Prev`` and ``Bridge-Chain-Digest``
(hex; ``digest = SHA-256(prev || payload)``, the first report's prev is 32 zero bytes) and
``Bridge-Chain-Signature`` (base64url Ed25519 of the engine's NKey over the 32 digest bytes).

:func:`verify` (pure, no I/O) checks a stream's messages in stream order, per chain: prev equals
the chain's previous digest (else a report is missing or reordered before it), the digest holds
for the payload (else the report was altered) and the signature verifies under an engine key of
the entitlements (else it was inserted or forged). It stops at the first broken link. A sequence
missing from the stream (a deleted message) that no chain break explains, and a report without
chain headers after the first chained one, are breaks too. Reports without chain headers before
the first chained one predate the chain: counted and skipped. A chain whose first report does not
start at genesis had its start trimmed (aged out of the stream): noted, not a break.

:func:`read_stream` reads a stream as the operator role (an ephemeral pull consumer);
``bridge audit verify`` (:mod:`bridge.cli`) puts the two together.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import Enum

import nats.errors
import nats.js.errors
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamState

from bridge import contract
from bridge.security import signing

GENESIS = bytes(32)
"""The ``prev`` of a chain's first report."""


@dataclass(frozen=True)
class StoredMessage:
    """One message of a stream: its sequence, headers and exact payload bytes."""

    seq: int
    headers: Mapping[str, str]
    payload: bytes


class Break(Enum):
    """Why a link is broken."""

    PREV_MISMATCH = "prev mismatch"
    DIGEST_MISMATCH = "digest mismatch"
    MISSING_SIGNATURE = "missing signature"
    BAD_SIGNATURE = "bad signature"
    UNKNOWN_ENGINE_KEY = "unknown engine key"
    MALFORMED = "malformed chain headers"
    UNCHAINED = "report without chain headers"
    MISSING_MESSAGE = "message missing"


@dataclass(frozen=True)
class Broken:
    """The first broken link: where, in which chain, and why."""

    seq: int
    chain: str | None
    kind: Break
    why: str


@dataclass(frozen=True)
class ChainSummary:
    """One verified chain."""

    engine_id: str
    first_seq: int
    last_seq: int
    reports: int
    from_genesis: bool
    signed_by: tuple[str, ...]
    """Names of the engine identities whose keys signed its links."""


@dataclass(frozen=True)
class Result:
    """What :func:`verify` found."""

    reports: int
    chains: tuple[ChainSummary, ...]
    unchained: int
    broken: Broken | None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.broken is None

    def render(self) -> str:
        """The verifier's answer: one line, then any notes."""
        if self.broken is not None:
            b = self.broken
            where = f"stream sequence {b.seq} (chain {b.chain or '-'})"
            head = f"BROKEN at {where}: {b.kind.value}: {b.why}"
        else:
            spans = ", ".join(
                f"engine {c.engine_id}: seq {c.first_seq}..{c.last_seq}" for c in self.chains
            )
            head = f"OK: {self.reports} reports in {len(self.chains)} chains"
            head += f" ({spans})" if spans else ""
        return "\n".join([head, *(f"note: {n}" for n in self.notes)])


@dataclass
class _Chain:
    engine_id: str
    first_seq: int
    last_seq: int
    head: bytes
    from_genesis: bool
    reports: int = 1
    signed_by: list[str] = field(default_factory=list)


def link(prev: bytes, payload: bytes) -> bytes:
    """``SHA-256(prev || payload)``."""
    return hashlib.sha256(prev + payload).digest()


def _hex(text: str | None) -> bytes | None:
    if text is None or len(text) != 64 or text != text.lower():
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def engine_keys(entitlements: Iterable[tuple[str, str]]) -> dict[str, VerifyKey]:
    """Verify keys of ``(identity name, public NKey)`` pairs, e.g. the identities of role
    ``engine`` of an entitlements file."""
    return {name: signing.public_key(nkey) for name, nkey in entitlements}


def _signer(digest: bytes, signature: str, keys: Mapping[str, VerifyKey]) -> str | None:
    raw = _unb64(signature)
    if raw is None or len(raw) != 64:
        return None
    for name, key in keys.items():
        try:
            key.verify(digest, raw)
        except BadSignatureError:
            continue
        return name
    return None


def _short(d: bytes) -> str:
    return d.hex()[:16] + "…"


@dataclass(frozen=True)
class _Link:
    prev: bytes
    digest: bytes
    signer: str


def _check(
    m: StoredMessage, known: _Chain | None, keys: Mapping[str, VerifyKey]
) -> tuple[Break, str] | _Link:
    """One chained message against its chain so far: why it is broken, or its link."""
    prev = _hex(m.headers.get(contract.HEADER_CHAIN_PREV))
    digest = _hex(m.headers.get(contract.HEADER_CHAIN_DIGEST))
    if prev is None or digest is None:
        bad = contract.HEADER_CHAIN_PREV if prev is None else contract.HEADER_CHAIN_DIGEST
        return Break.MALFORMED, f"{bad} is missing or not 64 lower-case hex digits"
    if known is not None and prev != known.head:
        return Break.PREV_MISMATCH, (
            f"its prev {_short(prev)} is not the digest {_short(known.head)} of this chain's "
            f"previous report (stream sequence {known.last_seq}): a report of this chain is "
            "missing or reordered before it"
        )
    computed = link(prev, m.payload)
    if computed != digest:
        return Break.DIGEST_MISMATCH, (
            f"its digest {_short(digest)} is not SHA-256(prev || payload) {_short(computed)}: "
            "the report was altered"
        )
    signature = m.headers.get(contract.HEADER_CHAIN_SIGNATURE)
    if signature is None:
        return Break.MISSING_SIGNATURE, (
            f"no {contract.HEADER_CHAIN_SIGNATURE}: inserted, or written without an engine key"
        )
    if not keys:
        return Break.UNKNOWN_ENGINE_KEY, "the entitlements name no engine key to check it with"
    signer = _signer(digest, signature, keys)
    if signer is None:
        return Break.BAD_SIGNATURE, (
            f"the signature verifies under none of the {len(keys)} engine keys of the "
            "entitlements: inserted or forged, or signed by an unknown engine key"
        )
    return _Link(prev, digest, signer)


class Verifier:
    """The incremental form of :func:`verify`: :meth:`add` each message in stream order (it
    returns the break once there is one, and ignores what follows), then :meth:`result`."""

    def __init__(self, keys: Mapping[str, VerifyKey]) -> None:
        self._keys = keys
        self._chains: dict[str, _Chain] = {}
        self._unchained = 0
        self._first_gap: int | None = None
        self._missing = 0
        self._last_seq: int | None = None
        self._reports = 0
        self.broken: Broken | None = None

    def add(self, m: StoredMessage) -> Broken | None:
        if self.broken is not None:
            return self.broken
        self._note_gap(m.seq)
        engine_id = m.headers.get(contract.HEADER_CHAIN)
        if engine_id is None:
            if self._chains:
                why = (
                    "a report without chain headers after chained reports: inserted, or "
                    "written by an engine older than the chain"
                )
                self.broken = Broken(m.seq, None, Break.UNCHAINED, why)
            else:
                self._unchained += 1
            return self.broken
        known = self._chains.get(engine_id)
        checked = _check(m, known, self._keys)
        if not isinstance(checked, _Link):
            kind, why = checked
            self.broken = Broken(m.seq, engine_id, kind, why)
            return self.broken
        self._reports += 1
        if known is None:
            self._chains[engine_id] = _Chain(
                engine_id,
                m.seq,
                m.seq,
                checked.digest,
                checked.prev == GENESIS,
                signed_by=[checked.signer],
            )
            return None
        known.head, known.last_seq = checked.digest, m.seq
        known.reports += 1
        if checked.signer not in known.signed_by:
            known.signed_by.append(checked.signer)
        return None

    def _note_gap(self, seq: int) -> None:
        if self._last_seq is not None and seq > self._last_seq + 1:
            if self._first_gap is None:
                self._first_gap = self._last_seq + 1
            self._missing += seq - self._last_seq - 1
        self._last_seq = seq if self._last_seq is None else max(seq, self._last_seq)

    def result(self, last_seq: int | None = None) -> Result:
        """The verdict; ``last_seq``: the stream's last sequence, if known (a deleted last
        message leaves no later message to show the gap)."""
        first_gap, missing = self._first_gap, self._missing
        seen = self._last_seq
        if self.broken is None and last_seq is not None and seen is not None and last_seq > seen:
            first_gap = seen + 1 if first_gap is None else first_gap
            missing += last_seq - seen
        broken = self.broken
        if broken is None and first_gap is not None:
            why = (
                "deleted from the stream, and no chain shows it: it was the last report of a "
                "chain (before its engine restarted, or of all); sequences missing in all: "
                f"{missing}"
            )
            broken = Broken(first_gap, None, Break.MISSING_MESSAGE, why)
        notes = []
        if self._unchained:
            notes.append(
                f"{self._unchained} reports without chain headers (written before the chain "
                "existed) skipped"
            )
        for c in self._chains.values():
            if not c.from_genesis:
                notes.append(
                    f"chain {c.engine_id} starts at stream sequence {c.first_seq} after reports "
                    "no longer in the stream (aged out): its first link is not checked"
                )
        summaries = tuple(
            ChainSummary(
                c.engine_id, c.first_seq, c.last_seq, c.reports, c.from_genesis, tuple(c.signed_by)
            )
            for c in self._chains.values()
        )
        return Result(self._reports, summaries, self._unchained, broken, tuple(notes))


def verify(
    messages: Iterable[StoredMessage],
    keys: Mapping[str, VerifyKey],
    *,
    last_seq: int | None = None,
) -> Result:
    """Check every chain in ``messages`` (stream order) against ``keys`` (engine identity name
    -> verify key) and stop at the first broken link (see the module docs for the rules).
    ``last_seq``: the stream's last sequence, if known."""
    verifier = Verifier(keys)
    for m in messages:
        if verifier.add(m) is not None:
            break
    return verifier.result(last_seq)


RETRIES = 30
"""Reads of a stream that answer "no leader" (503) or time out are resumed this many times, each
after :data:`RETRY_DELAY_S` (a cluster electing a stream or consumer leader after a fault)."""
RETRY_DELAY_S = 0.5

_TRANSIENT = (nats.js.errors.ServiceUnavailableError, TimeoutError)


async def _stream_state(js: JetStreamContext, stream: str) -> StreamState:
    for attempt in range(RETRIES):  # bounded: a cluster electing the stream's leader
        try:
            return (await js.stream_info(stream)).state
        except _TRANSIENT:
            if attempt + 1 == RETRIES:
                raise
            await asyncio.sleep(RETRY_DELAY_S)  # polling interval of a server-side state
    raise AssertionError("unreachable")


async def verify_stream(
    js: JetStreamContext, stream: str, keys: Mapping[str, VerifyKey], *, timeout: float = 5.0
) -> Result:
    """Read ``stream`` to the last sequence it had when the read started and verify it."""
    state = await _stream_state(js, stream)
    verifier = Verifier(keys)
    if not state.messages:
        return verifier.result()
    # Closed here, not by the garbage collector: its consumer is deleted before the caller
    # closes the connection, also when the walk stops at a break.
    async with aclosing(read_stream(js, stream, state.last_seq, timeout=timeout)) as messages:
        async for m in messages:
            if verifier.add(m) is not None:
                break
    return verifier.result(state.last_seq)


async def read_stream(
    js: JetStreamContext, stream: str, last: int, *, batch: int = 256, timeout: float = 5.0
) -> AsyncGenerator[StoredMessage, None]:
    """The messages of ``stream`` in order, up to sequence ``last``.

    Each read is an ephemeral pull consumer without acks (the operator role may create one on
    any stream), deleted at its end (the server removes it anyway once inactive). A read that
    fails transiently resumes after the last message it yielded (:data:`RETRIES`)."""
    next_seq, failures = 1, 0
    while True:  # bounded by RETRIES consecutive failures
        try:
            async for m in _read_from(js, stream, next_seq, last, batch, timeout):
                next_seq, failures = m.seq + 1, 0
                yield m
            return
        except _TRANSIENT:
            failures += 1
            if failures >= RETRIES:
                raise
            await asyncio.sleep(RETRY_DELAY_S)  # polling interval of a server-side state


async def _read_from(
    js: JetStreamContext, stream: str, first: int, last: int, batch: int, timeout: float
) -> AsyncGenerator[StoredMessage, None]:
    name = f"audit-{uuid.uuid4().hex[:12]}"
    config = ConsumerConfig(
        name=name,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=first,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=60.0,
        num_replicas=1,
        mem_storage=True,
    )
    await js.add_consumer(stream, config)
    try:
        sub = await js.pull_subscribe_bind(name, stream=stream)
        try:
            while True:  # each fetch returns a message or raises TimeoutError: bounded
                for msg in await sub.fetch(batch, timeout=timeout):
                    seq = msg.metadata.sequence.stream
                    if seq > last:  # stored after the read started
                        return
                    yield StoredMessage(seq, dict(msg.headers or {}), msg.data)
                    if seq == last or msg.metadata.num_pending == 0:
                        return
        finally:
            await sub.unsubscribe()
    finally:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await js.delete_consumer(stream, name)
