"""The client's connection and its events: lifecycle, state, listeners, reconnect hooks.

``Connection`` owns the transport: it opens it once (retrying the first connect with the
client's backoff), tracks where it is (``ConnectionState``), tells listeners what happened
(``ConnectionEvent``), fails what waits on a dropped connection and closes it. The other rooms
ask it for the transport (``open()`` / ``connected()``), the identity's signer and the checked
subjects, and report what they learn about the engine (``engine_seen``) or a security refusal
(``violated``).

A security violation (the server's permissions violation, or an engine's security refusal)
ends the client: the connection is closed at once (no drain, no reconnect), every operation
waiting for an answer fails with the ``SecurityViolationError``, and so does every later one;
one ERROR line is logged and ``SECURITY_VIOLATION`` is emitted, then ``CLOSED``.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections.abc import Awaitable, Callable

import nats.errors

from bridge import _identity, _violations
from bridge._subjects import Subjects
from bridge.config import BridgeSettings
from bridge.errors import ClientClosedError, ConnectionFailedError, SecurityViolationError
from bridge.logs import get_logger
from bridge.metrics import ClientMetrics
from bridge.retry import backoff_delay, connect_retrying
from bridge.security.signing import Signer
from bridge.transport import Transport

log = get_logger("bridge.client")


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ConnectionState(enum.Enum):
    """Where the NATS connection is (``BridgeClient.connection_state``)."""

    DISCONNECTED = "disconnected"  # not opened yet, or closed
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # lost; reconnecting with backoff, nothing is sent meanwhile
    CLOSED = "closed"


class ConnectionEvent(enum.Enum):
    """What ``on_connection_event`` callbacks receive."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTED = "reconnected"
    ENGINE_UNAVAILABLE = "engine_unavailable"  # a request found no engine subscribed
    ENGINE_AVAILABLE = "engine_available"  # an engine answered again after that
    SECURITY_VIOLATION = "security_violation"  # the client closed itself: .security_violation
    CLOSED = "closed"


ConnectionListener = Callable[[ConnectionEvent], Awaitable[None] | None]


class Connection:
    """One client's connection: opened once, observable, closed once (``TransportEvents``)."""

    def __init__(
        self, settings: BridgeSettings, transport: Transport, metrics: ClientMetrics
    ) -> None:
        _identity.check_settings(settings)  # a missing seed fails here, not at connect
        self.settings = settings
        self.transport = transport
        self.metrics = metrics
        self.identity: _identity.Identity | None = None  # read at connect
        self.signer: Signer | None = None  # the identity's, when sign_orders
        self.subjects = Subjects()
        self.violation: SecurityViolationError | None = None
        self._state = _State.UNOPENED
        self.state = ConnectionState.DISCONNECTED
        self.engine_available: bool | None = None
        self.reconnects = 0  # report streams re-create their consumers after each reconnect
        self._listeners: list[ConnectionListener] = []
        self._on_open: list[Callable[[Transport], Awaitable[None]]] = []
        self._on_drop: list[Callable[[], None]] = []
        self._on_violation: list[Callable[[SecurityViolationError], None]] = []
        self._on_slow_consumer: list[Callable[[str], bool]] = []
        self._violation_closed: asyncio.Event | None = None  # set once violated() is done
        self._violating: asyncio.Task[object] | None = None  # the task running violated()

    @property
    def is_up(self) -> bool:
        """Connected now (``bridge_client_connected`` counts it)."""
        return self._state is _State.OPEN and self.state is ConnectionState.CONNECTED

    # -- for the other rooms ----------------------------------------------------------------

    def _not_open(
        self, client_order_id: str | None = None, correlation_id: str | None = None
    ) -> Exception:
        if self.violation is not None:
            return self.violation.for_operation(client_order_id, correlation_id)
        return ClientClosedError(f"client is {self._state.value}; use it inside `async with`")

    def open(self) -> Transport:
        """The transport of an open client (``ClientClosedError``, or the
        ``SecurityViolationError`` that closed it, otherwise)."""
        if self._state is not _State.OPEN:
            raise self._not_open()
        return self.transport

    def connected(self, client_order_id: str, correlation_id: str) -> Transport:
        """The transport, if the connection is up: while it is down nothing is sent (not even
        buffered)."""
        if self._state is not _State.OPEN:
            raise self._not_open(client_order_id, correlation_id)
        transport = self.transport
        if not transport.is_connected:
            raise ConnectionFailedError(
                f"NATS connection is {self.state.value}; nothing was sent",
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            )
        return transport

    def on_open(self, callback: Callable[[Transport], Awaitable[None]]) -> None:
        """Await ``callback`` once connected, before the client is open and ``CONNECTED`` is
        emitted (e.g. subscribe to what the first operation needs)."""
        self._on_open.append(callback)

    def on_drop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the connection drops (fail what waits for an answer)."""
        self._on_drop.append(callback)

    def on_violation(self, callback: Callable[[SecurityViolationError], None]) -> None:
        """Call ``callback`` on a security violation (fail what waits for an answer with it)."""
        self._on_violation.append(callback)

    def on_slow_consumer(self, callback: Callable[[str], bool]) -> Callable[[], None]:
        """Call ``callback(subject)`` when nats-py dropped a message of a subscription whose
        buffer was full (its ``SlowConsumerError``); a callback returning True owns that
        subscription and its logging. Returns a function that removes the callback."""
        self._on_slow_consumer.append(callback)
        return lambda: self._on_slow_consumer.remove(callback)

    async def engine_seen(self, available: bool) -> None:
        """A request found an engine (True) or none (False): emit the change, if any."""
        if self.engine_available is available:
            return
        was_known = self.engine_available is not None
        self.engine_available = available
        if not available:
            await self._emit(ConnectionEvent.ENGINE_UNAVAILABLE)
        elif was_known:
            await self._emit(ConnectionEvent.ENGINE_AVAILABLE)

    # -- listeners --------------------------------------------------------------------------

    def add_listener(self, listener: ConnectionListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def _emit(self, event: ConnectionEvent) -> None:
        log.info("bridge.connection_event", connection_event=event.value)
        for listener in list(self._listeners):
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.error("bridge.listener_failed", connection_event=event.value, error=repr(exc))

    # -- lifecycle --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect with mTLS and the role's NKey, retrying the first connect with backoff until
        ``connect_deadline_ms``; refused credentials or certificates are not retried.
        ``ConnectionFailedError`` if it fails."""
        if self._state is not _State.UNOPENED:
            raise ClientClosedError(f"client is {self._state.value}; create a new BridgeClient")
        identity = _identity.load(self.settings)  # the one read of the seed
        self.identity, self.signer = identity, identity.signer
        s = identity.transport_settings(self.settings)
        transport = self.transport

        def transient(exc: BaseException) -> bool:
            return transport.connect_error(exc) is True

        try:
            async for attempt in connect_retrying(s, transient):
                with attempt:
                    await transport.connect(s, self)
        except Exception as exc:
            if transport.connect_error(exc) is None:
                raise
            self._state = _State.CLOSED
            self.state = ConnectionState.CLOSED
            raise ConnectionFailedError(f"cannot connect to {s.nats_url}: {exc!r}") from exc
        # Connected: from now on the transport reconnects by itself, paced by reconnect_delay.
        transport.allow_reconnect()
        for callback in self._on_open:
            await callback(transport)
        if self.violation is not None:  # e.g. the server refused a subscription just made
            raise self.violation
        self._state = _State.OPEN
        self.state = ConnectionState.CONNECTED
        log.info(
            "bridge.connected",
            servers=s.nats_url,
            client_name=s.client_name,
            signer=identity.public_key,
            signing=identity.signer is not None,
        )
        await self._emit(ConnectionEvent.CONNECTED)

    async def close(self) -> None:
        """Drain subscriptions and close. Idempotent. After a security violation: wait until
        the violation has closed the connection and told the listeners."""
        if self._violation_closed is not None:
            if asyncio.current_task() is not self._violating:  # not from one of its listeners
                await self._violation_closed.wait()
            return
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
            try:
                await self.transport.drain()
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("bridge.drain_failed", error=repr(exc))
                await self.transport.close()
        self._state = _State.CLOSED

    # -- TransportEvents --------------------------------------------------------------------

    def reconnect_delay(self, failures: int) -> float:
        return backoff_delay(self.settings, failures)

    async def on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            claimed = [cb(exc.subject) for cb in list(self._on_slow_consumer)]
            if any(claimed):
                return
        violation = _violations.from_server_error(exc, self.subjects)
        if violation is None:
            log.error("bridge.nats_error", error=str(exc))
            return
        self.metrics.security_violations.inc()
        await self.violated(violation)

    # -- security violations ----------------------------------------------------------------

    async def violated(self, violation: SecurityViolationError) -> None:
        """End the client for ``violation``: from now on nothing is sent; fail what waits for
        an answer and everything after with it, log one ERROR line, emit ``SECURITY_VIOLATION``,
        close the connection (no drain, no reconnect), emit ``CLOSED``. Only the first
        violation counts."""
        if self.violation is not None or self._state is _State.CLOSED:
            return
        self.violation = violation
        was = self._state
        self._state = _State.CLOSING  # from here on, nothing is sent
        self.state = ConnectionState.CLOSED
        log.error(
            "bridge.security_violation",
            reason=violation.reason,
            subject=violation.subject,
            account=violation.account,
            detail=violation.text,
            signer=self.identity.public_key if self.identity else None,
            error=str(violation),
        )
        self.transport.abort_requests(violation)
        for callback in self._on_violation:
            callback(violation)
        closed = self._violation_closed = asyncio.Event()
        self._violating = asyncio.current_task()
        try:
            await self._emit(ConnectionEvent.SECURITY_VIOLATION)
            try:
                await self.transport.close()
            except Exception as exc:  # best effort: the client has ended regardless
                log.warning("bridge.close_failed", error=repr(exc))
            self._state = _State.CLOSED
            if was is _State.OPEN:
                await self._emit(ConnectionEvent.CLOSED)
        finally:
            closed.set()

    async def on_disconnected(self) -> None:
        if self._state is _State.CLOSING:
            why = "closed by the application" if self.violation is None else "security violation"
            log.debug("bridge.disconnected", reason=why)
            return
        if self._state is not _State.OPEN:
            return  # a failed first-connect attempt
        log.warning("bridge.disconnected")
        self.metrics.disconnects.inc()
        self.state = ConnectionState.RECONNECTING
        self.transport.abort_requests()
        for callback in self._on_drop:
            callback()
        await self._emit(ConnectionEvent.DISCONNECTED)

    async def on_reconnected(self) -> None:
        self.state = ConnectionState.CONNECTED
        self.reconnects += 1
        self.metrics.reconnects.inc()
        await self._emit(ConnectionEvent.RECONNECTED)

    async def on_closed(self) -> None:
        if self.violation is not None:
            return  # violated() emits SECURITY_VIOLATION, then CLOSED
        if self._state in (_State.OPEN, _State.CLOSING):
            if self._state is _State.OPEN:
                # Not asked for: max_reconnect_attempts ran out.
                log.error("bridge.connection_closed", reason="reconnect attempts exhausted")
                self._state = _State.CLOSED
            self.state = ConnectionState.CLOSED
            await self._emit(ConnectionEvent.CLOSED)
