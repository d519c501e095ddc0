"""The client's connection and its events: lifecycle, state, listeners, reconnect hooks.

``Connection`` owns the transport: it opens it once (retrying the first connect with the
client's backoff), tracks where it is (``ConnectionState``), tells listeners what happened
(``ConnectionEvent``), fails what waits on a dropped connection and closes it. The other rooms
ask it for the transport (``open()`` / ``connected()``) and report what they learn about the
engine (``engine_seen``).
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable

import nats.errors

from bridge.config import BridgeSettings
from bridge.errors import ClientClosedError, ConnectionFailedError
from bridge.logs import get_logger
from bridge.retry import backoff_delay, connect_retrying
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
    CLOSED = "closed"


ConnectionListener = Callable[[ConnectionEvent], Awaitable[None] | None]


class Connection:
    """One client's connection: opened once, observable, closed once (``TransportEvents``)."""

    def __init__(self, settings: BridgeSettings, transport: Transport) -> None:
        self.settings = settings
        self.transport = transport
        self._state = _State.UNOPENED
        self.state = ConnectionState.DISCONNECTED
        self.engine_available: bool | None = None
        self.reconnects = 0  # report streams re-create their consumers after each reconnect
        self._listeners: list[ConnectionListener] = []
        self._on_open: list[Callable[[Transport], Awaitable[None]]] = []
        self._on_drop: list[Callable[[], None]] = []

    # -- for the other rooms ----------------------------------------------------------------

    def open(self) -> Transport:
        """The transport of an open client (``ClientClosedError`` otherwise)."""
        if self._state is not _State.OPEN:
            raise ClientClosedError(f"client is {self._state.value}; use it inside `async with`")
        return self.transport

    def connected(self, client_order_id: str, correlation_id: str) -> Transport:
        """The transport, if the connection is up: while it is down nothing is sent (not even
        buffered)."""
        if self._state is not _State.OPEN:
            raise ClientClosedError(f"client is {self._state.value}; use it inside `async with`")
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
        s = self.settings
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
        self._state = _State.OPEN
        self.state = ConnectionState.CONNECTED
        log.info("bridge.connected", servers=s.nats_url, client_name=s.client_name)
        await self._emit(ConnectionEvent.CONNECTED)

    async def close(self) -> None:
        """Drain subscriptions and close. Idempotent."""
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
        log.error("bridge.nats_error", error=str(exc))

    async def on_disconnected(self) -> None:
        if self._state is _State.CLOSING:
            log.debug("bridge.disconnected", reason="closed by the application")
            return
        if self._state is not _State.OPEN:
            return  # a failed first-connect attempt
        log.warning("bridge.disconnected")
        self.state = ConnectionState.RECONNECTING
        self.transport.abort_requests()
        for callback in self._on_drop:
            callback()
        await self._emit(ConnectionEvent.DISCONNECTED)

    async def on_reconnected(self) -> None:
        self.state = ConnectionState.CONNECTED
        self.reconnects += 1
        await self._emit(ConnectionEvent.RECONNECTED)

    async def on_closed(self) -> None:
        if self._state in (_State.OPEN, _State.CLOSING):
            if self._state is _State.OPEN:
                # Not asked for: max_reconnect_attempts ran out.
                log.error("bridge.connection_closed", reason="reconnect attempts exhausted")
                self._state = _State.CLOSED
            self.state = ConnectionState.CLOSED
            await self._emit(ConnectionEvent.CLOSED)
