"""Reading and writing the config bucket's documents with their headers (operator tools:
``bridge config``, tests), over a plain nats-py connection.

A write is a JetStream publish to ``$KV.bridge_config.<key>`` (what a KV put is) with the
signature headers of ``bridge.security.signing`` over that subject and the body, so the
stream's sequence is the document's revision and the signer is kept beside it: the bucket's
history (``history`` 64 revisions per key) is the audit trail. nats-py's KV API drops headers,
hence the stream calls.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsConnection
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from bridge import contract
from bridge.runtime_config.watch import KV_OPERATION_HEADER, UNSIGNED
from bridge.security.signing import SignatureError, Signer, verify

STREAM = contract.kv_stream(contract.CONFIG_KV_BUCKET)


def subject(key: str) -> str:
    """The subject a revision of ``key`` is written to (and signed over)."""
    return contract.kv_key_subject(contract.CONFIG_KV_BUCKET, key)


@dataclass(frozen=True, slots=True)
class Revision:
    """One stored revision of a document."""

    key: str
    revision: int
    time: datetime.datetime | None
    signer: str
    """Public NKey of the signer, ``unsigned``, or ``BAD SIGNATURE (<claimed signer>)``."""
    operation: str
    """PUT, DEL or PURGE."""
    body: bytes

    @property
    def document(self) -> dict[str, Any] | None:
        """The body as a JSON object (None for a delete, or a body that is not one)."""
        if self.operation != "PUT":
            return None
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def _revision(key: str, seq: int, when: Any, body: bytes, headers: dict[str, str]) -> Revision:
    operation = headers.get(KV_OPERATION_HEADER, "PUT")
    signer = UNSIGNED
    if contract.HEADER_SIGNER in headers or contract.HEADER_SIGNATURE in headers:
        try:
            signer = verify(subject(key), body, headers)
        except SignatureError:
            signer = f"BAD SIGNATURE ({headers.get(contract.HEADER_SIGNER, '?')})"
    when = when if isinstance(when, datetime.datetime) else None
    return Revision(key, seq, when, signer, operation, body)


class RevisionConflictError(Exception):
    """``put(..., expected_revision=...)``: the key's newest revision is another one (someone
    wrote it meanwhile); nothing was written."""


_WRONG_LAST_SEQUENCE = (10071, 10164)
"""JetStream's error codes for a failed ``Nats-Expected-Last-Subject-Sequence`` check."""


async def put(
    nc: NatsConnection,
    key: str,
    body: bytes,
    signer: Signer | None,
    expected_revision: int | None = None,
) -> int:
    """Write one revision of ``key`` (signed when ``signer`` is given); its revision.

    ``expected_revision``: write only if the key's newest revision is this one (0: it has
    none), else ``RevisionConflictError``: a read-modify-write never loses another writer's
    change."""
    headers = signer.headers(subject(key), body) if signer is not None else {}
    if expected_revision is not None:
        headers[api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(expected_revision)
    try:
        ack = await nc.jetstream().publish(
            subject(key), body, stream=STREAM, headers=headers or None
        )
    except APIError as exc:
        if exc.err_code in _WRONG_LAST_SEQUENCE:
            raise RevisionConflictError(f"{key}: {exc.description}") from exc
        raise
    return int(ack.seq)


async def get(nc: NatsConnection, key: str) -> Revision | None:
    """The newest revision of ``key`` (a delete marker included), None if it has none."""
    try:
        msg = await nc.jetstream().get_last_msg(STREAM, subject(key))
    except NotFoundError:
        return None
    return _revision(key, msg.seq or 0, msg.time, msg.data or b"", msg.headers or {})


async def history(nc: NatsConnection, key: str, limit: int = 1000) -> list[Revision]:
    """Every stored revision of ``key``, oldest first (at most ``limit``)."""
    js = nc.jetstream()
    out: list[Revision] = []
    seq = 1
    while len(out) < limit:
        try:
            msg = await js.get_msg(STREAM, seq=seq, subject=subject(key), next=True)
        except NotFoundError:
            break
        got = msg.seq or seq
        out.append(_revision(key, got, msg.time, msg.data or b"", msg.headers or {}))
        seq = got + 1
    return out


async def delete(nc: NatsConnection, key: str) -> int:
    """Delete ``key`` (a KV delete marker; the history stays): the sides go back to their
    built-in configuration for it. Its revision."""
    headers = {KV_OPERATION_HEADER: "DEL"}
    ack = await nc.jetstream().publish(subject(key), b"", stream=STREAM, headers=headers)
    return int(ack.seq)
