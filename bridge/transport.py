"""The transport seam: what ``BridgeClient`` needs from NATS, and its nats-py implementation.

``Transport`` is the small typed surface the client's rooms use (request, publish with headers
and a reply subject, subscribe, the two JetStream calls of a report stream, drain/close);
``NatsTransport`` implements it with nats-py and holds every nats-py workaround, each pinned by
a test. ``BridgeClient(settings, transport=...)`` takes another implementation, such as the
in-memory fake of ``tests/unit/fake_transport.py`` that tests the client without a server.

Errors crossing the seam are nats-py's (``nats.errors.NoRespondersError``, ``TimeoutError`` /
``nats.errors.TimeoutError``, other ``nats.errors.Error``, ``nats.js.errors.APIError``); the
client maps them to ``bridge.errors``, as it maps ``ServiceError`` (an engine's NATS service API
error answer). Messages are nats-py's ``Msg``.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import nats
import nats.errors
import nats.js.api
from nats.aio.client import DEFAULT_RECONNECT_TIME_WAIT
from nats.aio.client import Client as NatsConnection
from nats.aio.client import Server as NatsServer
from nats.aio.msg import Msg

from bridge import contract
from bridge.config import BridgeSettings
from bridge.logs import get_logger

log = get_logger("bridge.transport")

MessageHandler = Callable[[Msg], Awaitable[None]]

# The NATS service API's error answer (ADR-32): no payload, these two headers.
SERVICE_ERROR_HEADER = "Nats-Service-Error"
SERVICE_ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class ServiceError(Exception):
    """An engine answered a request with a service API error instead of its answer: ``code``
    400, it could not decode the request (nothing happened); 500, it failed while serving it
    (the outcome is unknown)."""

    def __init__(self, code: int, status: str) -> None:
        super().__init__(f"engine service error {code}: {status}")
        self.code = code
        self.status = status


def service_error(headers: dict[str, str] | None) -> ServiceError | None:
    """The service API error a reply's headers carry, if any."""
    if not headers or SERVICE_ERROR_HEADER not in headers:
        return None
    code = headers.get(SERVICE_ERROR_CODE_HEADER, "")
    return ServiceError(int(code) if code.isdigit() else 500, headers[SERVICE_ERROR_HEADER])


class Subscription(Protocol):
    """One subscription: its subject, what it buffers, its next message."""

    @property
    def subject(self) -> str: ...

    @property
    def pending_msgs(self) -> int: ...

    async def next_msg(self, timeout: float) -> Msg: ...

    async def unsubscribe(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamState:
    """What a report stream needs to know of a JetStream stream."""

    first_seq: int
    last_seq: int
    messages: int


class TransportEvents(Protocol):
    """What a transport tells the client about its connection (called on the event loop)."""

    async def on_disconnected(self) -> None: ...

    async def on_reconnected(self) -> None: ...

    async def on_closed(self) -> None: ...

    async def on_error(self, exc: Exception) -> None: ...

    def reconnect_delay(self, failures: int) -> float:
        """Seconds to wait before reconnect attempt ``failures`` + 1 (the client's backoff)."""
        ...


class Transport(Protocol):
    """What the client needs from NATS. One transport is one connection, opened once."""

    async def connect(self, settings: BridgeSettings, events: TransportEvents) -> None:
        """One connect attempt, without reconnects (the client retries it with its backoff)."""
        ...

    def connect_error(self, exc: BaseException) -> bool | None:
        """Classify a failed ``connect``: True = a retry may cure it (unreachable, timeout),
        False = it cannot (TLS, authorization), None = not a connect failure (re-raise it)."""
        ...

    def allow_reconnect(self) -> None:
        """Connected: from now on the transport reconnects by itself, paced by the events'
        ``reconnect_delay``, and re-subscribes."""
        ...

    @property
    def is_connected(self) -> bool: ...

    @property
    def connected_server(self) -> str | None:
        """``host:port`` of the server in use, None while not connected."""
        ...

    def new_inbox(self) -> str: ...

    async def request(
        self, subject: str, data: bytes, *, timeout: float, headers: dict[str, str]
    ) -> bytes:
        """One request-reply round trip; the reply's payload (``ServiceError`` if the reply is
        a service API error)."""
        ...

    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
    ) -> None: ...

    async def subscribe(
        self,
        subject: str,
        *,
        cb: MessageHandler | None = None,
        pending_msgs_limit: int | None = None,
    ) -> Subscription: ...

    def abort_requests(self, error: BaseException | None = None) -> None:
        """Fail every request still awaiting its reply with ``error`` (default: nats-py's
        ``ConnectionReconnectingError``; the connection dropped)."""
        ...

    async def stream_info(self, stream: str) -> StreamState: ...

    async def add_consumer(self, stream: str, config: nats.js.api.ConsumerConfig) -> None: ...

    async def watch_stream(
        self, stream: str, subject: str, cb: MessageHandler, heartbeat_s: float
    ) -> Subscription:
        """An ordered consumer of ``stream`` filtered to ``subject``: the last message of each
        subject, then every new one, in stream order, headers included (nats-py's KV watch
        drops them). Re-created from the last sequence seen when ``heartbeat_s`` passes twice
        without a message or heartbeat; ``unsubscribe`` ends it."""
        ...

    async def drain(self) -> None: ...

    async def close(self) -> None: ...


def tls_context(settings: BridgeSettings) -> ssl.SSLContext | None:
    """Mutual-TLS context (TLS 1.3 only) from the settings, or None when TLS is not configured."""
    if settings.tls_ca_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.tls_ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if settings.tls_cert_file is not None:
        key = str(settings.tls_key_file) if settings.tls_key_file else None
        ctx.load_cert_chain(str(settings.tls_cert_file), key)
    return ctx


async def flush_ordered(nc: NatsConnection, timeout: float = 5.0) -> None:
    """``nc.flush()`` made to mean what it says: on return the server has processed every
    command this connection sent before the call (e.g. a SUB is registered).

    nats-py 2.16 writes the flush PING straight to the socket while earlier commands still wait
    in its pending buffer for the flusher task, so the PONG can come back before the server has
    seen them (the bug nats.py2 fixed in 2017, PR #24). A subscriber on one connection would then
    miss messages published on another right after ``flush()``; we measured ~3% of such first
    messages lost. Pushing the pending buffer out first restores the guarantee
    (tests/integration/test_flush_ordering.py).
    """
    await nc._flush_pending(force_flush=True)  # private: the only way to drain the buffer
    await nc.flush(timeout=max(1, int(timeout)))


class NatsTransport:
    """``Transport`` over one nats-py connection (mTLS, the role's NKey)."""

    def __init__(self) -> None:
        self._nc: NatsConnection | None = None
        self._max_reconnect_attempts = -1

    def _conn(self) -> NatsConnection:
        assert self._nc is not None, "NatsTransport used before connect()"
        return self._nc

    async def connect(self, settings: BridgeSettings, events: TransportEvents) -> None:
        s = settings
        seed = s.nkey_seed.get_secret_value() if s.nkey_seed is not None else None
        self._max_reconnect_attempts = s.max_reconnect_attempts

        def reconnect_to(
            servers: list[NatsServer], _info: dict[str, Any]
        ) -> tuple[NatsServer | None, float]:
            """nats-py's reconnect hook: the least-tried server, after the backoff delay."""
            target = min(servers, key=lambda srv: srv.reconnects)
            delay = events.reconnect_delay(target.reconnects)
            log.info(
                "bridge.reconnecting",
                server=target.uri.netloc,
                attempt=target.reconnects + 1,
                delay_s=round(delay, 3),
            )
            return target, delay

        # What each server answered during this attempt: nats-py reports only NoServersError
        # once all were tried, the caller should see why (refused, timed out, no route).
        refusals: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            if self._nc is None:
                refusals.append(exc)
            await events.on_error(exc)

        try:
            self._nc = await nats.connect(
                servers=[u.strip() for u in s.nats_url.split(",") if u.strip()],
                name=s.client_name,
                tls=tls_context(s),
                tls_hostname=None,
                nkeys_seed=str(s.nkey_seed_file) if s.nkey_seed_file else None,
                nkeys_seed_str=seed,
                inbox_prefix=s.inbox_prefix or contract.inbox_prefix("orchestrator"),
                connect_timeout=max(1, s.connect_timeout_ms // 1000),
                # The first connect runs with reconnects off so that the client's backoff, not
                # nats-py's fixed-wait loop, governs it; allow_reconnect() turns them on. Until
                # then each server is tried at most twice, without nats-py's wait: with -1 (never
                # give up) nats-py's initial server selection would loop forever on a refused
                # port, past connect_deadline_ms.
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                reconnect_to_server_handler=reconnect_to,
                ping_interval=max(1, s.ping_interval_ms // 1000),
                max_outstanding_pings=2,
                error_cb=on_error,
                disconnected_cb=events.on_disconnected,
                reconnected_cb=events.on_reconnected,
                closed_cb=events.on_closed,
            )
        except nats.errors.NoServersError:
            if refusals:
                raise refusals[-1] from None
            raise

    def connect_error(self, exc: BaseException) -> bool | None:
        if isinstance(exc, ssl.SSLError | nats.errors.AuthorizationError):
            return False
        if isinstance(exc, nats.errors.Error) and "authorization" in str(exc).lower():
            return False
        if isinstance(exc, OSError | TimeoutError | nats.errors.Error):
            return True
        return None

    def allow_reconnect(self) -> None:
        options = self._conn().options
        options["allow_reconnect"] = True
        options["max_reconnect_attempts"] = self._max_reconnect_attempts
        # Only close() still reads it (how long to wait for a cancelled reconnect loop).
        options["reconnect_time_wait"] = DEFAULT_RECONNECT_TIME_WAIT

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def connected_server(self) -> str | None:
        nc = self._nc
        if nc is None or not nc.is_connected or nc.connected_url is None:
            return None
        return str(nc.connected_url.netloc)

    def new_inbox(self) -> str:
        return self._conn().new_inbox()

    async def request(
        self, subject: str, data: bytes, *, timeout: float, headers: dict[str, str]
    ) -> bytes:
        reply = await self._conn().request(subject, data, timeout=timeout, headers=headers)
        error = service_error(reply.headers)
        if error is not None:
            raise error
        return reply.data

    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        await self._conn().publish(subject, data, reply=reply, headers=headers)

    async def subscribe(
        self,
        subject: str,
        *,
        cb: MessageHandler | None = None,
        pending_msgs_limit: int | None = None,
    ) -> Subscription:
        nc = self._conn()
        if pending_msgs_limit is None:
            return await nc.subscribe(subject, cb=cb)
        return await nc.subscribe(subject, cb=cb, pending_msgs_limit=pending_msgs_limit)

    def abort_requests(self, error: BaseException | None = None) -> None:
        """nats-py 2.16 leaves requests waiting for their full timeout although no reply can
        arrive on a dead connection; failing them now lets the retry policy re-send (same ids,
        so safely) as soon as the connection is back, instead of after the timeout: across a
        50 ms server restart the first publish ack came 2.06 s after the kill before, 0.07-0.11
        s after (tests/faults/test_server_restart.py). ``_resp_map`` is private: the only
        handle on them. A security violation fails them with its ``SecurityViolationError``:
        nats-py 2.16 leaves them waiting when it closes, too."""
        if self._nc is None:
            return
        for future in list(self._nc._resp_map.values()):
            if not future.done():
                future.set_exception(error or nats.errors.ConnectionReconnectingError())

    async def stream_info(self, stream: str) -> StreamState:
        info = await self._conn().jetstream().stream_info(stream)
        state = info.state
        return StreamState(state.first_seq, state.last_seq, state.messages)

    async def add_consumer(self, stream: str, config: nats.js.api.ConsumerConfig) -> None:
        await self._conn().jetstream().add_consumer(stream, config)

    async def watch_stream(
        self, stream: str, subject: str, cb: MessageHandler, heartbeat_s: float
    ) -> Subscription:
        return (
            await self._conn()
            .jetstream()
            .subscribe(
                subject,
                stream=stream,  # no stream lookup by subject (an API the client may not call)
                cb=cb,
                ordered_consumer=True,
                idle_heartbeat=heartbeat_s,
                deliver_policy=nats.js.api.DeliverPolicy.LAST_PER_SUBJECT,
            )
        )

    async def drain(self) -> None:
        await self._conn().drain()

    async def close(self) -> None:
        await self._conn().close()
