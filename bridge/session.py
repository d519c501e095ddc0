"""An orchestrator session with cancel on disconnect (``schemas/bridge/v1/session.proto``).

A client with ``session_id`` set (``BridgeSettings``, or ``BRIDGE_SESSION_ID``) opens the session
when it connects and then keeps it alive::

    settings = BridgeSettings(session_id="algo-7", session_grace_ms=3000)
    async with BridgeClient(settings) as bridge:      # SessionOpen; heartbeats start
        await bridge.submit(order)                    # NewOrder.session_id = "algo-7"
    # close(): SessionClose (with cancel_orders when session_cancel_on_close)

What the session does, in order:

* **open** at connect (``SessionOpen``: the id, the grace asked for, ``cancel_on_disconnect``);
  the engine's ``SessionAck`` says the grace in force and how often to heartbeat
  (``Session.info``). A refusal raises ``SessionError`` from ``connect()``.
* **heartbeat** on a background task every ``heartbeat_ms`` (core NATS, no answer; skipped
  while the connection is down: missing heartbeats are what a disconnect looks like).
* **stamp** ``session_id`` on every order the client sends that names none
  (``submit``, ``send``, ``enqueue``, ``enqueue_batch``; ``resubmit_pending`` re-stamps).
* **renew** after every reconnect (``SessionOpen`` again, same settings), and when a submitted
  order comes back REJECTED because the session is not open (rule ``open_session``): a disconnect
  shorter than the grace changes nothing; a longer one lost the session, the engines canceled
  its resting orders (reason ``SESSION_LOST``), and the renewal opens it afresh (logged at
  WARN, ``bridge.session_renewed`` with the engine's text).
* **close** on ``close()`` (``SessionClose``; ``cancel_orders`` = ``session_cancel_on_close``):
  no disconnect fires for it afterwards.

If the process dies (kill -9) or its connection stays down longer than the grace, the
heartbeats stop and every engine cancels its resting orders of the session one grace later.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from google.protobuf.message import DecodeError, Message

from bridge import contract
from bridge._connection import Connection, ConnectionEvent
from bridge.config import BridgeSettings
from bridge.errors import (
    BridgeError,
    EngineUnavailableError,
    FieldIssue,
    InvalidOrderError,
    OutcomeUnknownError,
    ProtocolError,
    SessionError,
)
from bridge.logs import get_logger
from bridge.models import Order, OrderAck
from bridge.retry import with_retries
from bridge.transport import ServiceError
from bridge.v1 import orders_pb2, session_pb2

log = get_logger("bridge.client")
_SESSION_ID = re.compile(contract.SESSION_ID_PATTERN)

RULE_OPEN_SESSION = "open_session"
"""The engine's rule for an order naming a session that is not open."""


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """What the session asks the engines for (from ``BridgeSettings``' ``session_*`` knobs)."""

    session_id: str
    grace_ms: int = 0
    """0: the engine's default grace; the engine clamps it to its bounds."""
    cancel_on_disconnect: bool = True
    cancel_on_close: bool = False

    def __post_init__(self) -> None:
        issues = []
        if _SESSION_ID.fullmatch(self.session_id) is None:
            issues.append(
                FieldIssue(
                    "session_id",
                    "string_pattern_mismatch",
                    f"{self.session_id!r} does not match {contract.SESSION_ID_PATTERN}",
                )
            )
        if not 0 <= self.grace_ms < 2**32:
            issues.append(FieldIssue("grace_ms", "range", "must be within 0 and 2**32 - 1 ms"))
        if issues:
            raise InvalidOrderError(issues, model="SessionOptions")

    @classmethod
    def from_settings(cls, settings: BridgeSettings) -> SessionOptions | None:
        """The session the settings ask for; None without ``session_id``."""
        if settings.session_id is None:
            return None
        return cls(
            session_id=settings.session_id,
            grace_ms=settings.session_grace_ms,
            cancel_on_disconnect=settings.session_cancel_on_disconnect,
            cancel_on_close=settings.session_cancel_on_close,
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """The engine's answer to the last open or renewal (``SessionAck``)."""

    session_id: str
    grace_ms: int
    heartbeat_ms: int
    engine_id: str
    text: str


class Session:
    """One open session of a client: its heartbeats, renewals and close (see the module)."""

    def __init__(self, conn: Connection, options: SessionOptions) -> None:
        self._conn = conn
        self.options = options
        self.info: SessionInfo | None = None
        self.heartbeats_sent = 0
        self.renewals = 0
        self._renew = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._remove_listener: Callable[[], None] | None = None

    @property
    def session_id(self) -> str:
        return self.options.session_id

    @property
    def is_open(self) -> bool:
        """Opened and not closed (it may be lost meanwhile: renewed at the next chance)."""
        return self.info is not None and not self._closed

    def stamp(self, order: Order, *, replace: bool = False) -> Order:
        """``order`` naming this session: as it is if it names one already (unless
        ``replace``: a re-send from the outbox names the session in force now)."""
        if order.session_id == self.session_id or (order.session_id and not replace):
            return order
        return order.model_copy(update={"session_id": self.session_id})

    def noticed(self, ack: OrderAck) -> None:
        """An order's ack: REJECTED because this session is not open -> renew it now."""
        if (
            any(e.field == "session_id" and e.rule == RULE_OPEN_SESSION for e in ack.field_errors)
            and not self._closed
        ):
            log.warning("bridge.session_not_open", session_id=self.session_id, text=ack.text)
            self._renew.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> SessionInfo:
        """Open (or renew) the session and start heartbeating it. ``SessionError`` if the
        engine refuses it; the transport's typed errors when no engine answers."""
        info = await self._open()
        if self._task is None:
            self._remove_listener = self._conn.add_listener(self._on_connection_event)
            self._task = asyncio.create_task(self._beat(), name=f"session-{self.session_id}")
        return info

    async def close(self, cancel_orders: bool | None = None) -> int:
        """End the session cleanly (no disconnect fires for it): stop heartbeating and send
        ``SessionClose``. Returns how many resting orders the answering engine canceled
        (``cancel_orders``, default ``options.cancel_on_close``). Idempotent."""
        if self._closed:
            return 0
        self._closed = True
        await self._stop()
        cancel = self.options.cancel_on_close if cancel_orders is None else cancel_orders
        request = session_pb2.SessionClose(session_id=self.session_id, cancel_orders=cancel)
        ack = await self._ask(contract.session_close(self.session_id), request)
        log.info("bridge.session_closed", session_id=self.session_id, canceled=ack.canceled)
        return ack.canceled

    async def _stop(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def abandon(self) -> None:
        """Stop heartbeating without closing (the connection is gone): the engines will
        declare the session lost one grace later."""
        self._closed = True
        await self._stop()

    # -- internals ---------------------------------------------------------------------------

    async def _open(self) -> SessionInfo:
        o = self.options
        request = session_pb2.SessionOpen(
            session_id=o.session_id,
            grace_ms=o.grace_ms,
            cancel_on_disconnect=o.cancel_on_disconnect,
        )
        ack = await self._ask(contract.session_open(o.session_id), request)
        renewal = self.info is not None
        self.info = SessionInfo(
            session_id=ack.session_id,
            grace_ms=ack.grace_ms,
            heartbeat_ms=ack.heartbeat_ms,
            engine_id=ack.engine_id,
            text=ack.text,
        )
        fields = {"session_id": o.session_id, "grace_ms": ack.grace_ms, "text": ack.text}
        if renewal:
            self.renewals += 1
            lost = "lost" in ack.text
            (log.warning if lost else log.info)("bridge.session_renewed", **fields)
        else:
            log.info("bridge.session_opened", heartbeat_ms=ack.heartbeat_ms, **fields)
        return self.info

    def _on_connection_event(self, event: ConnectionEvent) -> None:
        if event is ConnectionEvent.RECONNECTED:
            self._renew.set()

    async def _beat(self) -> None:
        """Every heartbeat_ms: renew first if asked to, then one heartbeat while connected.
        Nothing but cancellation ends it: a failure is logged and the next beat tries again."""
        while True:
            assert self.info is not None
            interval = max(self.info.heartbeat_ms, 1) / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._renew.wait(), timeout=interval)
            try:
                if self._renew.is_set() and self._conn.transport.is_connected:
                    self._renew.clear()
                    try:
                        await self._open()
                    except BridgeError as exc:  # e.g. no engine yet: try again next beat
                        log.warning(
                            "bridge.session_renew_failed",
                            session_id=self.session_id,
                            error=str(exc),
                        )
                        self._renew.set()
                await self._heartbeat()
            except Exception as exc:  # never let the heartbeats die silently
                log.error("bridge.session_beat_failed", session_id=self.session_id, error=repr(exc))

    async def _heartbeat(self) -> None:
        transport = self._conn.transport
        if not transport.is_connected:
            return
        beat = session_pb2.SessionHeartbeat(
            session_id=self.session_id, sent_at_unix_ns=time.time_ns()
        )
        try:
            await transport.publish(
                contract.session_heartbeat(self.session_id), beat.SerializeToString()
            )
        except (nats.errors.Error, OSError) as exc:
            log.debug("bridge.heartbeat_not_sent", session_id=self.session_id, error=repr(exc))
            return
        self.heartbeats_sent += 1

    async def _ask(self, subject: str, request: Message) -> session_pb2.SessionAck:
        """One session request under the retry policy (open and close are idempotent)."""
        settings = self._conn.settings

        async def attempt() -> session_pb2.SessionAck:
            return await self._request(subject, request, settings.request_timeout_ms / 1000)

        ack = await with_retries(settings, "session", attempt)
        if ack.status != orders_pb2.ACK_STATUS_ACCEPTED:
            reason = orders_pb2.RejectReason.Name(ack.reason).removeprefix("REJECT_REASON_")
            raise SessionError(
                f"session {self.session_id} refused: {reason}: {ack.text or 'no detail'}",
                reason=reason,
                errors=[FieldIssue(e.field, e.rule, e.message) for e in ack.field_errors],
                session_id=self.session_id,
            )
        return ack

    async def _request(
        self, subject: str, request: Message, timeout: float
    ) -> session_pb2.SessionAck:
        transport = self._conn.connected("", "")
        data = request.SerializeToString()
        headers = {contract.HEADER_SCHEMA: request.DESCRIPTOR.full_name}
        signer = self._conn.signer
        if signer is not None:
            headers.update(signer.headers(subject, data))
        try:
            reply = await transport.request(subject, data, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError as exc:
            raise EngineUnavailableError(f"no engine is serving {subject}") from exc
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            raise OutcomeUnknownError(f"no answer on {subject} within {timeout:.3f}s") from exc
        except ServiceError as exc:
            if exc.code < 500:
                raise ProtocolError(f"the engine could not take {subject}: {exc.status}") from exc
            raise OutcomeUnknownError(f"the engine failed serving {subject}: {exc.status}") from exc
        except nats.errors.Error as exc:
            raise OutcomeUnknownError(f"request on {subject} failed: {exc!r}") from exc
        ack = session_pb2.SessionAck()
        try:
            ack.ParseFromString(reply)
        except DecodeError as exc:
            raise ProtocolError(f"undecodable bridge.v1.SessionAck: {exc}") from exc
        return ack
