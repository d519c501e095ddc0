"""JetStream provisioning: owns creating/updating the bridge's streams, consumers and KV buckets.

The definitions are the JSON files the package ships in ``bridge/jetstream/`` (see
:mod:`bridge.jetstream`; the same files ``nats stream add --config`` / ``nats consumer add
--config`` accept). :func:`provision` is idempotent: it creates what is missing, updates what
differs, and leaves the rest alone; with ``dry_run=True`` it only says what it would do. Run it
with the operator role's connection (the only role allowed to manage streams); ``bridge
provision`` (:mod:`bridge.cli.provision`) is its command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from nats.aio.client import Client
from nats.js.api import (
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    PersistMode,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError
from nats.js.manager import JetStreamManager

from bridge import contract, jetstream

# (stream the consumer belongs to, file)
CONSUMER_FILES: tuple[tuple[str, str], ...] = tuple(
    (stream, file) for file, stream in jetstream.CONSUMER_STREAMS.items()
)

# JSStreamNameExistErr: "stream name already in use with a different configuration".
_ERR_STREAM_NAME_IN_USE = 10058

# KeyValueConfig field -> field of the KV's backing stream (as nats-py creates it).
_KV_TO_STREAM: dict[str, str] = {
    "description": "description",
    "history": "max_msgs_per_subject",
    "max_bytes": "max_bytes",
    "max_value_size": "max_msg_size",
    "storage": "storage",
    "replicas": "num_replicas",
    "ttl": "max_age",
    "limit_marker_ttl": "subject_delete_marker_ttl",
    "direct": "allow_direct",
}


Projections = Literal["async", "fsync"]
"""How the projections (EXECUTIONS and the order store's bucket) are persisted: ``async``
(their definitions' ``persist_mode: async``, ADR-56: no fsync per message; the engines' JOURNAL
is the fsynced fact and the engine repairs a tail a server crash loses), or ``fsync`` (every
message fsynced, and EXECUTIONS allows atomic batches: what engines before contract 1.2 need,
e.g. during a rolling upgrade from 1.1)."""

_PERSIST_MODE = "persist_mode"
_DEFAULT_PERSIST = "default"


class ProvisionError(RuntimeError):
    """A definition could not be applied (e.g. an immutable field differs)."""


def _load(name: str) -> dict[str, Any]:
    try:
        return jetstream.load(name)
    except ValueError as exc:
        raise ProvisionError(str(exc)) from exc


def _diff(
    keys: list[str], desired: Mapping[str, object], current: Mapping[str, object]
) -> list[str]:
    """Keys whose desired value differs from the current one, rendered for humans."""
    changed: list[str] = []
    for key in keys:
        want, have = desired.get(key), current.get(key)
        # The server omits a flag that is off: absent and false are the same setting.
        if want is False and have is None:
            continue
        if want != have:
            changed.append(f"{key}: {have!r} -> {want!r}")
    return changed


def _fmt(changes: list[str]) -> str:
    return "; ".join(changes)


def _projection_mode(raw: dict[str, Any], projections: Projections) -> dict[str, Any]:
    """A definition with ``persist_mode: async`` as ``projections`` wants it. A replicated
    stream is always persisted per message (the async mode applies to one replica only; raft
    already commits many messages with one write)."""
    replicas = raw.get("num_replicas", raw.get("replicas", 1))
    if raw.get(_PERSIST_MODE) != "async" or (projections == "async" and replicas == 1):
        return raw
    raw = {k: v for k, v in raw.items() if k != _PERSIST_MODE}
    if "allow_atomic" in raw:
        raw["allow_atomic"] = True
    return raw


def _keep_persist_mode(raw: dict[str, Any], current: StreamConfig) -> tuple[dict[str, Any], str]:
    """``persist_mode`` cannot change after a stream is created: an existing stream keeps its
    own (and, persisted per message, keeps allowing atomic batches). Returns the definition to
    compare and a note for the line when the file asks for another mode."""
    have = current.persist_mode or _DEFAULT_PERSIST
    want = raw.get(_PERSIST_MODE, _DEFAULT_PERSIST)
    if have == want:
        return raw, ""
    kept = {k: v for k, v in raw.items() if k != _PERSIST_MODE}
    if have == _DEFAULT_PERSIST and "allow_atomic" in kept:
        kept["allow_atomic"] = current.allow_atomic
    note = (
        f"; persist_mode stays {have!r} (the definition says {want!r}; it cannot change after "
        "creation: recreate the stream to apply it, runbooks/journal.md)"
    )
    return kept, note


async def _ensure_stream(
    jsm: JetStreamManager,
    raw: dict[str, Any],
    replicas: int | None,
    dry_run: bool,
    projections: Projections = "async",
) -> str:
    if replicas is not None:
        raw = {**raw, "num_replicas": replicas}
    raw = _projection_mode(raw, projections)
    keys = list(raw)
    desired = StreamConfig.from_response(dict(raw))
    name = desired.name
    if not name:
        raise ProvisionError("stream definition without a name")
    try:
        current = (await jsm.stream_info(name)).config
    except NotFoundError:
        if dry_run:
            return f"stream {name}: would create ({', '.join(desired.subjects or [])})"
        try:
            await jsm.add_stream(desired)
        except BadRequestError as exc:
            if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                raise
            # Created concurrently by someone else: fall through to compare/update.
            current = (await jsm.stream_info(name)).config
        else:
            return f"stream {name}: created ({', '.join(desired.subjects or [])})"
    raw, note = _keep_persist_mode(raw, current)
    keys = list(raw)
    desired = StreamConfig.from_response(dict(raw))
    changes = _diff(keys, desired.as_dict(), current.as_dict())
    if not changes:
        return f"stream {name}: up to date{note}"
    if dry_run:
        return f"stream {name}: would update ({_fmt(changes)}){note}"
    try:
        await jsm.update_stream(desired)
    except APIError as exc:
        raise ProvisionError(
            f"stream {name}: cannot update ({_fmt(changes)}): {exc.description}"
        ) from exc
    return f"stream {name}: updated ({_fmt(changes)}){note}"


async def _ensure_consumer(
    jsm: JetStreamManager, stream: str, raw: dict[str, Any], replicas: int | None, dry_run: bool
) -> str:
    # A consumer without num_replicas inherits the stream's replica count (reported as 0),
    # so the override only applies to definitions that pin it.
    if replicas is not None and "num_replicas" in raw:
        raw = {**raw, "num_replicas": replicas}
    keys = list(raw)
    desired = ConsumerConfig.from_response(dict(raw))
    name = desired.durable_name or desired.name
    if not name:
        raise ProvisionError(f"consumer definition for {stream} without durable_name/name")
    # Setting `name` makes nats-py use the CONSUMER.CREATE.<stream>.<name>.<filter> API.
    desired = desired.evolve(name=name)
    try:
        info = await jsm.consumer_info(stream, name)
    except NotFoundError:
        if dry_run:
            return f"consumer {stream}/{name}: would create"
        # Plain (create-or-update) CONSUMER.CREATE: a concurrent creation is not an error.
        await jsm.add_consumer(stream, desired)
        return f"consumer {stream}/{name}: created"
    current: ConsumerConfig = info.config
    changes = _diff(keys, desired.as_dict(), current.as_dict())
    if not changes:
        return f"consumer {stream}/{name}: up to date"
    if dry_run:
        return f"consumer {stream}/{name}: would update ({_fmt(changes)})"
    try:
        await jsm.add_consumer(stream, desired)
    except APIError as exc:
        raise ProvisionError(
            f"consumer {stream}/{name}: cannot update ({_fmt(changes)}): {exc.description}"
        ) from exc
    return f"consumer {stream}/{name}: updated ({_fmt(changes)})"


def _kv_stream(desired: KeyValueConfig, persist_mode: str) -> StreamConfig:
    """The stream behind a bucket exactly as nats-py's ``create_key_value`` defines it, plus a
    persist mode (which that call cannot set)."""
    window = 120.0
    if desired.ttl and desired.ttl < window:
        window = desired.ttl
    return StreamConfig(
        name=contract.kv_stream(desired.bucket),
        description=desired.description,
        subjects=[contract.kv_key_subject(desired.bucket, ">")],
        allow_direct=desired.direct,
        allow_rollup_hdrs=True,
        allow_msg_ttl=True,
        deny_delete=True,
        discard=DiscardPolicy.NEW,
        duplicate_window=window,
        max_age=desired.ttl,
        max_bytes=desired.max_bytes,
        max_consumers=-1,
        max_msg_size=desired.max_value_size,
        max_msgs=-1,
        max_msgs_per_subject=desired.history,
        num_replicas=desired.replicas,
        storage=desired.storage,
        persist_mode=PersistMode(persist_mode),
    )


async def _ensure_kv(
    nc: Client,
    raw: dict[str, Any],
    replicas: int | None,
    dry_run: bool,
    projections: Projections = "async",
) -> str:
    if replicas is not None:
        raw = {**raw, "replicas": replicas}
    raw = _projection_mode(raw, projections)
    persist_mode = raw.pop(_PERSIST_MODE, None)
    desired = KeyValueConfig.from_response(dict(raw))
    js = nc.jetstream()
    stream = contract.kv_stream(desired.bucket)
    try:
        current = (await js.stream_info(stream)).config
    except NotFoundError:
        if dry_run:
            return f"kv {desired.bucket}: would create (stream {stream})"
        try:
            if persist_mode is None:
                await js.create_key_value(desired)
            else:
                await js.add_stream(_kv_stream(desired, persist_mode))
        except BadRequestError as exc:
            if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                raise
            current = (await js.stream_info(stream)).config
        else:
            return f"kv {desired.bucket}: created (stream {stream})"
    wanted: dict[str, object] = {}
    for kv_field, stream_field in _KV_TO_STREAM.items():
        if kv_field in raw:
            wanted[stream_field] = getattr(desired, kv_field)
    have: dict[str, object] = {key: getattr(current, key) for key in wanted}
    _, note = _keep_persist_mode(
        {} if persist_mode is None else {_PERSIST_MODE: persist_mode}, current
    )
    changes = _diff(list(wanted), wanted, have)
    if not changes:
        return f"kv {desired.bucket}: up to date{note}"
    if dry_run:
        return f"kv {desired.bucket}: would update ({_fmt(changes)}){note}"
    update = dict(wanted)
    if desired.ttl and (current.duplicate_window or 0) > desired.ttl:
        # The server refuses a duplicate window longer than max_age (a bucket that had no TTL
        # has 2 minutes); nats-py's create_key_value caps it at the TTL the same way.
        update["duplicate_window"] = desired.ttl
    try:
        await js.update_stream(current.evolve(**update))
    except APIError as exc:
        raise ProvisionError(
            f"kv {desired.bucket}: cannot update ({_fmt(changes)}): {exc.description}"
        ) from exc
    return f"kv {desired.bucket}: updated ({_fmt(changes)}){note}"


async def provision(
    nc: Client,
    *,
    replicas: int | None = None,
    dry_run: bool = False,
    projections: Projections = "async",
) -> list[str]:
    """Create or update the ORDERS/EXECUTIONS/JOURNAL/ALERTS streams, the engine and sentinel
    consumers and the KV buckets.

    ``replicas`` overrides every definition's replica count (for a future cluster).
    ``projections`` says how EXECUTIONS and the order store are persisted when they are created
    (:data:`Projections`); an existing stream keeps its persist mode, which cannot change.
    ``dry_run`` changes nothing: each line says what would be created or updated (``would
    create``, ``would update (...)``) or ``up to date``. Returns one human-readable line per
    object.
    """
    jsm = nc.jetstream()
    lines: list[str] = []
    for file in jetstream.STREAM_FILES:
        lines.append(await _ensure_stream(jsm, _load(file), replicas, dry_run, projections))
    for stream, file in CONSUMER_FILES:
        lines.append(await _ensure_consumer(jsm, stream, _load(file), replicas, dry_run))
    for file in jetstream.KV_FILES:
        lines.append(await _ensure_kv(nc, _load(file), replicas, dry_run, projections))
    return lines
