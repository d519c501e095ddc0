"""The client's watch of the runtime configuration bucket: apply ``client``, ``routing`` and
``log_levels`` while running, without a restart and without touching an order in flight.

An ordered consumer on the bucket's stream (``KV_bridge_config``, ``Transport.watch_stream``)
delivers the last revision of every key, then every new one, with its headers. For each
revision of a document the client reads (``documents.CLIENT_KEYS``), once (a revision not newer
than the last one handled is skipped):

1. a present signature (``Bridge-Signer`` ...) must verify over ``$KV.bridge_config.<key>``
   and the body, else the revision is refused; an unsigned one is accepted (the server lets only
   the operator role write the bucket) and its signer logged as ``unsigned``;
2. the body must pass the document's JSON Schema (``documents.validate``), and a ``client``
   document must make valid settings;
3. applied: ``client`` -> a new ``BridgeSettings``, the settings the client was built with
   overlaid with the document's values (a value left out, or a deleted document, goes back to
   the built-in one), swapped in whole: the next operation reads it, ``max_inflight`` resizes
   the in-flight limit; ``routing`` -> ``BridgeClient.send``'s rule; ``log_levels`` -> the level of
   the ``bridge.*`` loggers (its ``client`` entry; none: the application's level).

Refused: the previous configuration stays in force and a WARNING line says why. Either way one
line is logged (document, revision, signer, the diff from the previous version) and
``ConfigApplied`` (side ``client``, instance = ``client_name``) published on
``contract.config_applied("client")``.

``connect()`` returns once the documents present when it subscribed are handled (bounded by
``connect_timeout_ms``). After a reconnect the watch is made anew from the last revision of each
key (resync: what changed while disconnected applies then); meanwhile, and if the bucket cannot
be read at all, the last good configuration stays in force.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from pydantic import ValidationError

from bridge import contract, logs
from bridge._connection import Connection, ConnectionEvent
from bridge.config import BridgeSettings
from bridge.logs import get_logger
from bridge.models import FieldError
from bridge.runtime_config import documents
from bridge.runtime_config.routing import DEFAULT_ROUTING, Routing
from bridge.security.signing import SignatureError, verify
from bridge.transport import Subscription, Transport
from bridge.v1 import common_pb2, market_data_pb2

log = get_logger("bridge.config")

SIDE = "client"
UNSIGNED = "unsigned"
KV_OPERATION_HEADER = "KV-Operation"
"""JetStream KV's header on a delete or purge marker (DEL / PURGE)."""
HEARTBEAT_S = 0.5
"""The ordered consumer's idle heartbeat: a consumer lost without a reconnect (e.g. the server
restarted faster than the client noticed) is re-created after two missed ones."""

_STREAM = contract.kv_stream(contract.CONFIG_KV_BUCKET)
_SUBJECT_PREFIX = contract.kv_key_subject(contract.CONFIG_KV_BUCKET, "")


class ConfigWatch:
    """One client's view of the bucket: the documents in force and their revisions."""

    def __init__(
        self,
        conn: Connection,
        baseline: BridgeSettings,
        use_settings: Callable[[BridgeSettings], None],
    ) -> None:
        self._conn = conn
        self._baseline = baseline
        self._use_settings = use_settings
        self.routing: Routing = DEFAULT_ROUTING
        self.revisions: dict[str, int] = {}
        """Key -> the last revision handled (applied or refused)."""
        self.documents: dict[str, dict[str, Any]] = {}
        """Key -> the document in force (absent: none; the built-in configuration)."""
        self._sub: Subscription | None = None
        self._pending = 0  # messages still to come in the current catch-up
        self._caught_up = asyncio.Event()
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._resyncing: asyncio.Task[None] | None = None  # held: the loop keeps weak refs
        self._level_set = False  # this watch set the bridge loggers' level (undone on stop)
        conn.on_open(self.start)
        conn.add_listener(self._on_event)

    # -- subscription ------------------------------------------------------------------------

    async def start(self, transport: Transport) -> None:
        """Subscribe and wait (bounded) until the documents present now are handled."""
        async with self._lock:
            await self._subscribe(transport)
        wait = self._conn.settings.connect_timeout_ms / 1000
        try:
            async with asyncio.timeout(wait):
                await self._caught_up.wait()
        except TimeoutError:
            log.warning("bridge.config_watch_slow", waited_s=wait, pending=self._pending)

    async def stop(self) -> None:
        """End the watch (its heartbeat and flow-control tasks too); the client is closing.
        A log level this watch set (the ``bridge.*`` loggers are the process's) goes back to
        the application's own."""
        async with self._lock:
            await self._unsubscribe()
        if self._level_set:
            self._level_set = False
            logs.set_level(None)

    async def _unsubscribe(self) -> None:
        old, self._sub = self._sub, None
        if old is not None:
            try:
                await old.unsubscribe()
            except (nats.errors.Error, TimeoutError) as exc:
                log.debug("bridge.config_unsubscribe_failed", error=repr(exc))

    async def _subscribe(self, transport: Transport) -> None:
        await self._unsubscribe()
        self._caught_up.clear()
        try:
            info = await transport.stream_info(_STREAM)
            if info.messages == 0:
                self._caught_up.set()
            self._sub = await transport.watch_stream(
                _STREAM, f"{_SUBJECT_PREFIX}>", self._on_msg, HEARTBEAT_S
            )
        except Exception as exc:  # the bucket unreadable must not stop the client trading
            self._caught_up.set()
            log.warning(
                "bridge.config_watch_failed",
                error=repr(exc),
                note="the configuration in force stays; retried after the next reconnect",
            )

    async def _on_event(self, event: ConnectionEvent) -> None:
        if event is ConnectionEvent.RECONNECTED:
            self._resyncing = asyncio.get_running_loop().create_task(self._resync())

    async def _resync(self) -> None:
        async with self._lock:
            if self._conn.is_up:
                log.info("bridge.config_resync")
                await self._subscribe(self._conn.transport)

    async def wait_for(self, key: str, revision: int, timeout: float) -> None:
        """Until revision ``revision`` (or a later one) of ``key`` is handled."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.revisions.get(key, 0) >= revision)

    # -- one revision --------------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        meta = msg.metadata
        self._pending = meta.num_pending
        try:
            key = msg.subject[len(_SUBJECT_PREFIX) :]
            revision = meta.sequence.stream
            if key in documents.CLIENT_KEYS and revision > self.revisions.get(key, 0):
                await self._handle(key, revision, msg)
        finally:
            if meta.num_pending == 0:
                self._caught_up.set()

    async def _handle(self, key: str, revision: int, msg: Msg) -> None:
        headers = msg.headers or {}
        started = time.perf_counter()
        signer, errors, document = UNSIGNED, list[FieldError](), None
        removed = headers.get(KV_OPERATION_HEADER) in ("DEL", "PURGE")
        if not removed:
            signer, errors = _signer(msg.subject, msg.data, headers)
            if not errors:
                checked = documents.validate(key, msg.data)
                errors, document = list(checked.errors), checked.document
        if not errors:
            errors = self._apply(key, revision, document)
        previous = self.documents.get(key)
        self.revisions[key] = revision
        fields: dict[str, Any] = {
            "document": key,
            "revision": revision,
            "signer": signer,
            "apply_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if errors:
            log.warning(
                "bridge.config_refused",
                errors=[f"{e.field}: {e.rule}: {e.message}" for e in errors],
                note="the previous configuration stays in force",
                **fields,
            )
        else:
            if document is None:
                self.documents.pop(key, None)
            else:
                self.documents[key] = document
            log.info(
                "bridge.config_applied",
                diff=documents.diff_text(previous, document),
                removed=removed,
                **fields,
            )
        async with self._changed:
            self._changed.notify_all()
        await self._publish(key, revision, errors)

    def _apply(self, key: str, revision: int, document: dict[str, Any] | None) -> list[FieldError]:
        """Put one valid document (None: removed) in force; errors if it cannot be."""
        body = document or {}
        if key == contract.CONFIG_CLIENT_KEY:
            overrides = {k: v for k, v in body.items() if k != "version"}
            try:
                checked = BridgeSettings.model_validate(
                    {**self._baseline.model_dump(), **overrides}
                )
            except ValidationError as exc:
                return [
                    FieldError.model_construct(
                        field=".".join(str(p) for p in e["loc"]) or documents.DOCUMENT,
                        rule="settings",
                        message=e["msg"],
                    )
                    for e in exc.errors()
                ]
            # The built-in settings with the document's values (validated just above).
            update = {k: getattr(checked, k) for k in overrides}
            self._use_settings(self._baseline.model_copy(update=update))
        elif key == contract.CONFIG_ROUTING_KEY:
            self.routing = (
                DEFAULT_ROUTING if document is None else Routing.from_document(body, revision)
            )
        elif key == contract.CONFIG_LOG_LEVELS_KEY:
            level = body.get(SIDE)
            logs.set_level(level)
            self._level_set = level is not None
        return []

    async def _publish(self, key: str, revision: int, errors: list[FieldError]) -> None:
        applied = market_data_pb2.ConfigApplied(
            side=SIDE,
            instance=self._conn.settings.client_name,
            document=key,
            revision=revision,
            applied=not errors,
            errors=[
                common_pb2.FieldError(field=e.field, rule=e.rule, message=e.message) for e in errors
            ],
            applied_unix_ns=time.time_ns(),
        )
        try:
            await self._conn.transport.publish(
                contract.config_applied(SIDE), applied.SerializeToString()
            )
        except (nats.errors.Error, OSError) as exc:  # the outcome is logged regardless
            log.debug("bridge.config_applied_unpublished", error=repr(exc))


def _signer(subject: str, data: bytes, headers: dict[str, str]) -> tuple[str, list[FieldError]]:
    """Who signed a revision (``unsigned`` when nobody did), or why its signature is refused."""
    if not any(
        h in headers
        for h in (contract.HEADER_SIGNER, contract.HEADER_SIGNATURE, contract.HEADER_SIGNED_AT)
    ):
        return UNSIGNED, []
    try:
        return verify(subject, data, headers), []
    except SignatureError as exc:
        signer = headers.get(contract.HEADER_SIGNER, UNSIGNED)
        return signer, [
            FieldError.model_construct(field=documents.DOCUMENT, rule="signature", message=str(exc))
        ]
