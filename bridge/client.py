"""``BridgeClient``: the one object an orchestrator holds. The only module that imports nats.

::

    async with BridgeClient(settings) as bridge:
        async with bridge.reports(account="ACC1") as reports:    # pub-sub, subscribe first
            ack = await bridge.submit(order)                        # request-reply, urgent
            queued = await bridge.enqueue_batch(orders)             # JetStream, batches
            async for report in reports: ...

Synchronous ``submit`` is a core NATS request to the engines' queue group: when no engine is
subscribed the server answers "no responders" at once and ``EngineUnavailableError`` is raised
well before the timeout. Queued orders go to the ORDERS stream with ``Nats-Msg-Id`` set to the
client order id, so JetStream deduplicates re-sends inside its window and the engine's own
record of seen orders deduplicates them forever.

Faults: the connection reconnects forever (or ``max_reconnect_attempts`` times) with
exponential backoff and jitter, re-subscribing by itself; transient failures of an order
operation are retried with the same ids (``bridge.retry``); the typed errors of
``bridge.errors`` reach the caller only when retries are exhausted. Connection changes are
observable: ``bridge.connection_state``, ``bridge.engine_available`` and
``bridge.on_connection_event(callback)``.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import json
import ssl
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import nats
import nats.errors
import nats.js.api
import nats.js.errors
import structlog
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NatsConnection
from nats.aio.client import Server as NatsServer
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bridge import subjects
from bridge.config import BridgeSettings
from bridge.errors import (
    BackpressureError,
    BridgeError,
    ClientClosedError,
    ConnectionFailedError,
    EngineUnavailableError,
    OutcomeUnknownError,
    ProtocolError,
    PublishError,
    StreamFullError,
)
from bridge.models import Order, OrderAck, OrderState, QueuedOrder
from bridge.outbox import OrderOutbox
from bridge.reports import ReportStream
from bridge.retry import (
    backoff_delay,
    connect_retrying,
    is_transient,
    log_first_retry,
    request_retrying,
)
from bridge.v1 import orders_pb2

log = structlog.get_logger("bridge.client")
_P = TypeVar("_P", bound=Message)
_T = TypeVar("_T")

# JetStream error codes that mean "the stream is at its limits and discard: new refused this".
_STREAM_FULL_CODES = frozenset({10077})  # JSStreamStoreFailedF: maximum messages/bytes exceeded
_STREAM_FULL_WORDS = ("maximum messages", "maximum bytes", "resource limits exceeded")
_NO_RESPONDERS = "503"  # status of the answer when no stream listens on the subject
_JS_UNAVAILABLE = 10008  # JSClusterNotAvailErr: JetStream system temporarily unavailable


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


def new_correlation_id() -> str:
    """A fresh correlation id (joins client and engine log lines of one request)."""
    return uuid.uuid4().hex


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


class BridgeClient:
    """Submit orders, await acks and fills, subscribe to execution reports."""

    def __init__(
        self,
        settings: BridgeSettings | None = None,
        *,
        outbox: OrderOutbox | None = None,
        journal: OrderOutbox | None = None,
    ) -> None:
        """``outbox``: optional local record of orders sent and their outcomes, so that after
        a restart of this process ``resubmit_pending()`` can re-send what has no outcome.
        ``journal`` is its deprecated old name (warns)."""
        self._settings = settings or BridgeSettings()
        if journal is not None:
            warnings.warn(
                "BridgeClient(journal=...) was renamed BridgeClient(outbox=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            outbox = outbox or journal
        self._outbox = outbox
        self._state = _State.UNOPENED
        self._nc: NatsConnection | None = None
        self._js: JetStreamContext | None = None
        self._inflight: asyncio.Semaphore | None = None
        self._pub_acks = _PubAcks()
        self._conn_state = ConnectionState.DISCONNECTED
        self._engine_available: bool | None = None
        self._listeners: list[ConnectionListener] = []
        self._reconnects = 0  # report streams re-create their consumers after each reconnect

    @property
    def settings(self) -> BridgeSettings:
        return self._settings

    @property
    def connection_state(self) -> ConnectionState:
        return self._conn_state

    @property
    def connected_server(self) -> str | None:
        """``host:port`` of the NATS server in use, None while not connected."""
        nc = self._nc
        if nc is None or not nc.is_connected or nc.connected_url is None:
            return None
        return str(nc.connected_url.netloc)

    @property
    def engine_available(self) -> bool | None:
        """False after a request found no engine, True once one answered, None before either."""
        return self._engine_available

    def on_connection_event(self, listener: ConnectionListener) -> Callable[[], None]:
        """Call ``listener`` (plain or async) on every ``ConnectionEvent``; returns a function
        that removes it. A listener that raises is logged and kept."""
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

    async def _engine_seen(self, available: bool) -> None:
        if self._engine_available is available:
            return
        was_known = self._engine_available is not None
        self._engine_available = available
        if not available:
            await self._emit(ConnectionEvent.ENGINE_UNAVAILABLE)
        elif was_known:
            await self._emit(ConnectionEvent.ENGINE_AVAILABLE)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect to NATS with mTLS and the role's NKey. A client is opened once.

        The first connection is retried with backoff until ``connect_deadline_ms``; refused
        credentials or certificates are not retried. ``ConnectionFailedError`` if it fails.
        """
        if self._state is not _State.UNOPENED:
            raise ClientClosedError(f"client is {self._state.value}; create a new BridgeClient")
        s = self._settings
        try:
            async for attempt in connect_retrying(s, _connect_error_is_transient):
                with attempt:
                    self._nc = await self._open()
        except (TimeoutError, OSError, ssl.SSLError, nats.errors.Error) as exc:
            self._state = _State.CLOSED
            self._conn_state = ConnectionState.CLOSED
            raise ConnectionFailedError(f"cannot connect to {s.nats_url}: {exc!r}") from exc
        assert self._nc is not None
        # Connected: from now on nats-py reconnects by itself, paced by _reconnect_to(). The
        # first connect ran with reconnects off so that tenacity, not nats-py's fixed-wait
        # loop, governs it.
        self._nc.options["allow_reconnect"] = True
        self._js = self._nc.jetstream(timeout=s.publish_timeout_ms / 1000)
        self._inflight = asyncio.Semaphore(s.max_inflight)
        await self._pub_acks.start(self._nc, s.publish_timeout_ms / 1000)
        self._state = _State.OPEN
        self._conn_state = ConnectionState.CONNECTED
        log.info("bridge.connected", servers=s.nats_url, client_name=s.client_name)
        await self._emit(ConnectionEvent.CONNECTED)

    async def _open(self) -> NatsConnection:
        s = self._settings
        seed = s.nkey_seed.get_secret_value() if s.nkey_seed is not None else None
        return await nats.connect(
            servers=[u.strip() for u in s.nats_url.split(",") if u.strip()],
            name=s.client_name,
            tls=tls_context(s),
            tls_hostname=None,
            nkeys_seed=str(s.nkey_seed_file) if s.nkey_seed_file else None,
            nkeys_seed_str=seed,
            inbox_prefix=s.inbox_prefix,
            connect_timeout=max(1, s.connect_timeout_ms // 1000),
            allow_reconnect=False,
            max_reconnect_attempts=s.max_reconnect_attempts,
            reconnect_to_server_handler=self._reconnect_to,
            ping_interval=max(1, s.ping_interval_ms // 1000),
            max_outstanding_pings=2,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )

    def _reconnect_to(
        self, servers: list[NatsServer], _info: dict[str, Any]
    ) -> tuple[NatsServer | None, float]:
        """nats-py's reconnect hook: the least-tried server, after the backoff delay."""
        target = min(servers, key=lambda srv: srv.reconnects)
        delay = backoff_delay(self._settings, target.reconnects)
        log.info(
            "bridge.reconnecting",
            server=target.uri.netloc,
            attempt=target.reconnects + 1,
            delay_s=round(delay, 3),
        )
        return target, delay

    async def close(self) -> None:
        """Drain subscriptions and close. Idempotent."""
        if self._state is _State.OPEN and self._nc is not None:
            self._state = _State.CLOSING
            try:
                await self._nc.drain()
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("bridge.drain_failed", error=repr(exc))
                await self._nc.close()
        self._state = _State.CLOSED

    def _conn(self) -> NatsConnection:
        if self._state is not _State.OPEN or self._nc is None:
            raise ClientClosedError(f"client is {self._state.value}; use it inside `async with`")
        return self._nc

    def _connected(self, client_order_id: str, correlation_id: str) -> NatsConnection:
        """The connection, if it is up: while it is down nothing is sent (not even buffered)."""
        nc = self._conn()
        if not nc.is_connected:
            raise ConnectionFailedError(
                f"NATS connection is {self._conn_state.value}; nothing was sent",
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            )
        return nc

    async def _on_error(self, exc: Exception) -> None:
        log.error("bridge.nats_error", error=str(exc))

    async def _on_disconnected(self) -> None:
        if self._state is _State.CLOSING:
            log.debug("bridge.disconnected", reason="closed by the application")
            return
        if self._state is not _State.OPEN:
            return  # a failed first-connect attempt
        log.warning("bridge.disconnected")
        self._conn_state = ConnectionState.RECONNECTING
        if self._nc is not None:
            _fail_pending_requests(self._nc)
        self._pub_acks.fail_all("the connection dropped before JetStream confirmed it")
        await self._emit(ConnectionEvent.DISCONNECTED)

    async def _on_reconnected(self) -> None:
        self._conn_state = ConnectionState.CONNECTED
        self._reconnects += 1
        await self._emit(ConnectionEvent.RECONNECTED)

    async def _on_closed(self) -> None:
        if self._state in (_State.OPEN, _State.CLOSING):
            if self._state is _State.OPEN:
                # Not asked for: max_reconnect_attempts ran out.
                log.error("bridge.connection_closed", reason="reconnect attempts exhausted")
                self._state = _State.CLOSED
            self._conn_state = ConnectionState.CLOSED
            await self._emit(ConnectionEvent.CLOSED)

    async def _with_retries(self, what: str, op: Callable[[], Awaitable[_T]]) -> _T:
        """``op`` under the retry policy of ``bridge.retry`` (same ids on every attempt).

        The first attempt runs without the retry machinery (the hot path of every order);
        only a transient failure enters it.
        """
        started = time.monotonic()
        try:
            return await op()
        except BridgeError as exc:
            return await self._retry(what, op, exc, started)

    async def _retry(
        self, what: str, op: Callable[[], Awaitable[_T]], failed: BridgeError, started: float
    ) -> _T:
        """Attempts 2.. of ``op``, whose first attempt (begun at ``started``) raised ``failed``;
        re-raises ``failed`` if it is not worth retrying."""
        if not is_transient(failed) or self._settings.order_retry_max_attempts == 1:
            raise failed
        delay = backoff_delay(self._settings, 0)
        log_first_retry(what, failed, delay)
        await asyncio.sleep(delay)  # the backoff before the second attempt
        elapsed = time.monotonic() - started
        async for attempt in request_retrying(self._settings, what, done=1, elapsed_s=elapsed):
            with attempt:
                return await op()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    # -- synchronous request-reply -----------------------------------------------------------

    async def _request(
        self,
        subject: str,
        msg: Message,
        answer: Callable[[bytes], _T],
        *,
        client_order_id: str,
        correlation_id: str,
        timeout: float | None,
    ) -> _T:
        """One request-reply round trip; the engine's answer decoded by ``answer``."""
        nc = self._connected(client_order_id, correlation_id)
        wait = timeout if timeout is not None else self._settings.request_timeout_ms / 1000
        headers = {
            subjects.HEADER_CORRELATION_ID: correlation_id,
            subjects.HEADER_SCHEMA: msg.DESCRIPTOR.full_name,
        }
        try:
            reply = await nc.request(
                subject, msg.SerializeToString(), timeout=wait, headers=headers
            )
        except nats.errors.NoRespondersError as exc:
            await self._engine_seen(False)
            raise EngineUnavailableError(
                f"no engine is serving {subject}",
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            ) from exc
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            raise OutcomeUnknownError(
                f"no answer on {subject} within {wait:.3f}s; query the order status",
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            ) from exc
        except nats.errors.Error as exc:
            raise OutcomeUnknownError(
                f"request on {subject} failed after sending: {exc!r}",
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            ) from exc
        await self._engine_seen(True)
        return answer(reply.data)

    async def submit(
        self, order: Order, *, timeout: float | None = None, correlation_id: str | None = None
    ) -> OrderAck:
        """Send an urgent order and wait for the engine's ack (ACCEPTED or REJECTED).

        ACCEPTED means the engine recorded the order durably before answering. Transient
        failures are retried with the same client order id (a re-sent order is answered with
        its original ack, ``duplicate=True``). When retries run out: ``EngineUnavailableError``
        (no engine listens), ``ConnectionFailedError`` (NATS down; nothing sent) or
        ``OutcomeUnknownError`` (sent, unanswered: resolve it with ``status()``).
        """
        cid = correlation_id or new_correlation_id()
        if self._outbox is not None:
            self._outbox.record([order], route="submit")
        request = order.to_proto()
        decode = _answer(orders_pb2.OrderAck, OrderAck.from_proto, order.client_order_id, cid)
        ack = await self._with_retries(
            "submit",
            lambda: self._request(
                subjects.SUBMIT,
                request,
                decode,
                client_order_id=order.client_order_id,
                correlation_id=cid,
                timeout=timeout,
            ),
        )
        if self._outbox is not None:
            self._outbox.resolve({order.client_order_id: f"ack:{ack.status.value}"})
        log.debug(
            "bridge.ack",
            client_order_id=order.client_order_id,
            correlation_id=cid,
            status=ack.status.value,
            duplicate=ack.duplicate,
        )
        return ack

    async def cancel(
        self, account: str, client_order_id: str, *, timeout: float | None = None
    ) -> OrderAck:
        """Ask the engine to cancel a resting order; the ack says whether it did."""
        cid = new_correlation_id()
        return await self._with_retries(
            "cancel",
            lambda: self._request(
                subjects.CANCEL,
                orders_pb2.CancelRequest(account=account, client_order_id=client_order_id),
                _answer(orders_pb2.OrderAck, OrderAck.from_proto, client_order_id, cid),
                client_order_id=client_order_id,
                correlation_id=cid,
                timeout=timeout,
            ),
        )

    async def status(
        self, account: str, client_order_id: str, *, timeout: float | None = None
    ) -> OrderState:
        """The engine's record of an order; ``found=False`` is definitive.

        This is how an ``OutcomeUnknownError`` is resolved: the answer comes from the engine's
        durable order store, which every engine sharing the deployment reads. ``found=True``: that
        is the order. ``found=False``: the engine has no order with this id and never will,
        because it retired the id (atomically, before answering); an order with this id that
        is still on its way is REJECTED (``UNKNOWN_ORDER``) and never executes, so re-sending
        under a new id is safe. Raises ``OutcomeUnknownError`` (retried like a timeout) when the
        engine could not retire the id and so cannot say "not found".
        """
        cid = new_correlation_id()

        def state(m: orders_pb2.OrderStatusReply) -> OrderState:
            if not m.found and m.reason == orders_pb2.REJECT_REASON_ENGINE_UNAVAILABLE:
                raise OutcomeUnknownError(
                    f"status unknown: {m.text or 'the engine could not retire the id'}",
                    client_order_id=client_order_id,
                    correlation_id=cid,
                )
            return OrderState.from_proto(account, client_order_id, m)

        return await self._with_retries(
            "status",
            lambda: self._request(
                subjects.STATUS,
                orders_pb2.OrderStatusRequest(account=account, client_order_id=client_order_id),
                _answer(orders_pb2.OrderStatusReply, state, client_order_id, cid),
                client_order_id=client_order_id,
                correlation_id=cid,
                timeout=timeout,
            ),
        )

    # -- asynchronous JetStream queueing -----------------------------------------------------

    async def enqueue(self, order: Order, *, correlation_id: str | None = None) -> QueuedOrder:
        """Queue one order in the ORDERS stream; returns JetStream's acknowledgement."""
        (queued,) = await self.enqueue_batch([order], correlation_id=correlation_id)
        return queued

    async def enqueue_batch(
        self, orders: Sequence[Order], *, correlation_id: str | None = None
    ) -> list[QueuedOrder]:
        """Queue orders, pipelined (at most ``max_inflight`` unconfirmed), in input order.

        Every order is published with ``Nats-Msg-Id`` = its client order id; transient
        failures are retried per order with the same id. At most ``max_inflight`` publishes
        (of all callers) are unconfirmed at once: a caller waits for a slot up to
        ``backpressure_wait_ms``, then gets ``BackpressureError``. After the first failure no
        further order of the batch is sent, and the failure of the earliest order in input
        order is raised (``StreamFullError``, ``PublishError``, ``OutcomeUnknownError``,
        ``ConnectionFailedError``, or ``BackpressureError`` when backpressure alone stopped the
        batch), naming its order. The error accounts for every order of the batch:
        ``exc.queued`` lists those JetStream stored, ``exc.unknown`` the client order ids sent
        without a confirmation either way (resolve them with ``status()`` or re-send them), and
        every other order was refused or never sent. Re-sending the whole batch is always safe:
        a client order id cannot create a second order (JetStream's duplicate window, then the
        engine's own record).
        """
        nc = self._conn()
        inflight = self._inflight
        assert inflight is not None
        cid = correlation_id or new_correlation_id()
        if self._outbox is not None:
            self._outbox.record(orders, route="queue")
        started = time.monotonic()
        sent: list[tuple[Order, asyncio.Future[QueuedOrder]]] = []
        stopped: BackpressureError | None = None
        failed = False

        def settled(future: asyncio.Future[QueuedOrder]) -> None:
            nonlocal failed
            inflight.release()
            exc = None if future.cancelled() else future.exception()
            failed = failed or (exc is not None and not is_transient(exc))

        try:
            # First attempts, pipelined: no task and no timer per order (the hot path).
            for order in orders:
                if failed:
                    break  # stop sending after the first failure that a retry cannot cure
                try:
                    await self._acquire_slot(inflight, order.client_order_id, cid)
                except BackpressureError as exc:
                    stopped = exc
                    break
                future = await self._send_queued(nc, order, cid)
                future.add_done_callback(settled)
                sent.append((order, future))
            await self._pub_acks.settle([f for _, f in sent])
            outcomes: list[QueuedOrder | BaseException] = []
            retries: dict[int, Awaitable[QueuedOrder]] = {}
            for order, future in sent:
                error = future.exception()
                if error is None:
                    outcomes.append(future.result())
                    continue
                if isinstance(error, BridgeError) and is_transient(error):
                    # Timeout, reconnect, no stream leader: retried, same id, under the policy.
                    retries[len(outcomes)] = self._retry_queued(
                        inflight, order, error, cid, started
                    )
                outcomes.append(error)
            if retries:
                retried = await asyncio.gather(*retries.values(), return_exceptions=True)
                for i, result in zip(retries, retried, strict=True):
                    outcomes[i] = result
        except BaseException:
            self._pub_acks.cancel([f for _, f in sent])
            raise
        queued, unknown, failure = _batch_outcome(outcomes, stopped)
        if self._outbox is not None:
            resolved = {q.client_order_id: "queued" for q in queued}
            for result in outcomes:
                if isinstance(result, StreamFullError) and result.client_order_id:
                    resolved[result.client_order_id] = "refused:stream_full"
            self._outbox.resolve(resolved)
        if failure is not None:
            failure.queued = tuple(queued)
            failure.unknown = unknown
            raise failure
        return queued

    async def _send_queued(
        self, nc: NatsConnection, order: Order, correlation_id: str
    ) -> asyncio.Future[QueuedOrder]:
        """First attempt of one queued order; the future resolves with JetStream's answer."""
        reply, future = self._pub_acks.expect(order.client_order_id, correlation_id)
        try:
            self._connected(order.client_order_id, correlation_id)
            await nc.publish(
                subjects.queue(order.account),
                order.to_proto().SerializeToString(),
                reply=reply,
                headers=_queued_headers(order, correlation_id),
            )
        except BridgeError as exc:
            self._pub_acks.resolve(reply, exc)
        except nats.errors.Error as exc:
            wait = self._settings.publish_timeout_ms / 1000
            self._pub_acks.resolve(
                reply, _publish_failure(exc, order.client_order_id, correlation_id, wait)
            )
        return future

    async def _retry_queued(
        self,
        inflight: asyncio.Semaphore,
        order: Order,
        failed: BridgeError,
        correlation_id: str,
        started: float,
    ) -> QueuedOrder:
        """Retries of a queued order whose first attempt failed transiently (holding a slot)."""
        await self._acquire_slot(inflight, order.client_order_id, correlation_id)
        try:
            return await self._retry(
                "enqueue", lambda: self._publish_once(order, correlation_id), failed, started
            )
        finally:
            inflight.release()

    async def _acquire_slot(
        self, inflight: asyncio.Semaphore, client_order_id: str, correlation_id: str
    ) -> None:
        """Backpressure: wait for one of ``max_inflight`` slots, or raise."""
        if not inflight.locked():
            await inflight.acquire()  # a free slot: taken at once, nothing to time out
            return
        wait_ms = self._settings.backpressure_wait_ms
        try:
            if wait_ms == 0:
                raise TimeoutError
            async with asyncio.timeout(wait_ms / 1000 if wait_ms else None):
                await inflight.acquire()
        except TimeoutError:
            raise BackpressureError(
                f"max_inflight={self._settings.max_inflight} queued publishes are awaiting "
                f"JetStream acks and none completed within backpressure_wait_ms={wait_ms}; "
                "the order was not sent",
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            ) from None

    async def _publish_once(self, order: Order, correlation_id: str) -> QueuedOrder:
        js = self._js
        assert js is not None
        self._connected(order.client_order_id, correlation_id)
        wait = self._settings.publish_timeout_ms / 1000
        # Retries only (first attempts go through _send_queued): one request per order.
        try:
            ack = await js.publish(
                subjects.queue(order.account),
                order.to_proto().SerializeToString(),
                timeout=wait,
                headers=_queued_headers(order, correlation_id),
            )
        except Exception as exc:
            raise _publish_failure(exc, order.client_order_id, correlation_id, wait) from exc
        return QueuedOrder.model_construct(
            client_order_id=order.client_order_id,
            stream=ack.stream,
            seq=ack.seq,
            duplicate=bool(ack.duplicate),
        )

    async def resubmit_pending(self) -> tuple[list[OrderAck], list[QueuedOrder]]:
        """Re-send, by their original route and ids, the outbox's orders without an outcome.

        For after a restart of this process: orders that did reach the engine are answered as
        duplicates (``OrderAck.duplicate`` / ``QueuedOrder.duplicate`` or the engine's record)
        and are not executed twice. Raises like ``submit``/``enqueue_batch``.
        """
        if self._outbox is None:
            raise BridgeError("resubmit_pending() needs BridgeClient(..., outbox=...)")
        pending = self._outbox.pending()
        acks = [await self.submit(p.order) for p in pending if p.route == "submit"]
        queued = await self.enqueue_batch([p.order for p in pending if p.route == "queue"])
        return acks, queued

    # -- publish-subscribe of execution reports ---------------------------------------------

    def reports(
        self, account: str, client_order_id: str | None = None, *, since_seq: int | None = None
    ) -> ReportStream:
        """Execution reports of ``account`` (or of one order), each exactly once, in order.

        Use as ``async with bridge.reports("ACC1") as stream: async for r in stream: ...``.
        Reports are read from the durable EXECUTIONS stream (see ``bridge.reports``): a report
        is yielded only once JetStream has stored it, a slow reader holds at most
        ``subscription_capacity`` of them while the server keeps the rest, and nothing is skipped or
        repeated across reconnects. By default the stream starts with the reports stored
        after it opens; ``since_seq`` starts at that EXECUTIONS sequence instead (resume with
        ``stream.last_seq + 1``). Any number of readers may watch the same flow.
        """
        subject = (
            subjects.executions(account, client_order_id)
            if client_order_id
            else subjects.executions_for_account(account)
        )
        return ReportStream(self, subject, since_seq)


def _decode(
    data: bytes,
    proto: Callable[[], _P],
    convert: Callable[[_P], _T],
    client_order_id: str | None,
    correlation_id: str | None,
) -> _T:
    """Parse an engine answer; anything undecodable is a ``ProtocolError`` naming the ids."""
    msg = proto()
    try:
        msg.ParseFromString(data)
        return convert(msg)
    except (DecodeError, ValueError) as exc:
        raise ProtocolError(
            f"undecodable {msg.DESCRIPTOR.full_name}: {exc}",
            client_order_id=client_order_id,
            correlation_id=correlation_id,
        ) from exc


class _PubAcks:
    """JetStream's answers to queued orders, on one wildcard subscription of this client.

    ``js.publish`` costs a request per order (inbox token, future, timer, ``wait_for``), three
    times the client CPU of nats-py's ``publish_async``, whose futures in 2.16 never resolve
    when JetStream answers with an error (stream full). Here each order is published with a
    reply subject of its own under one subscription, and its future resolves with a
    ``QueuedOrder`` or the ``BridgeError`` its answer means (ack, JetStream error, or the
    no-responders status).
    """

    def __init__(self) -> None:
        self._prefix = ""
        self._wait_s = 0.0
        self._count = 0
        self._waiting: dict[str, tuple[asyncio.Future[QueuedOrder], str, str]] = {}

    async def start(self, nc: NatsConnection, wait_s: float) -> None:
        self._prefix = nc.new_inbox() + "."
        self._wait_s = wait_s
        await nc.subscribe(self._prefix + "*", cb=self._on_answer)

    def expect(
        self, client_order_id: str, correlation_id: str
    ) -> tuple[str, asyncio.Future[QueuedOrder]]:
        """A reply subject for one publish, and the future its answer resolves."""
        self._count += 1
        token = str(self._count)
        future: asyncio.Future[QueuedOrder] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (future, client_order_id, correlation_id)
        return self._prefix + token, future

    def resolve(self, reply: str, exc: BridgeError) -> None:
        """Fail one expected answer (the publish itself failed)."""
        entry = self._waiting.pop(reply[len(self._prefix) :], None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(exc)

    async def _on_answer(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if entry is None or entry[0].done():
            return  # expired or failed already: its retry has its own answer
        future, client_order_id, correlation_id = entry
        try:
            future.set_result(_queued_order(msg, client_order_id, correlation_id))
        except BridgeError as exc:
            future.set_exception(exc)

    async def settle(self, futures: Sequence[asyncio.Future[QueuedOrder]]) -> None:
        """Wait for ``futures`` up to the publish timeout; fail those still unanswered."""
        if not futures:
            return
        _, late = await asyncio.wait(futures, timeout=self._wait_s)
        for future, client_order_id, correlation_id in self._drop(late):
            future.set_exception(
                _publish_failure(
                    nats.errors.TimeoutError(), client_order_id, correlation_id, self._wait_s
                )
            )

    def cancel(self, futures: Sequence[asyncio.Future[QueuedOrder]]) -> None:
        """Stop waiting for ``futures`` (the batch was cancelled)."""
        for future, _, _ in self._drop(set(futures)):
            future.cancel()

    def _drop(
        self, futures: set[asyncio.Future[QueuedOrder]]
    ) -> list[tuple[asyncio.Future[QueuedOrder], str, str]]:
        """Forget the still-unanswered entries of ``futures``."""
        if not futures:
            return []
        tokens = [t for t, entry in self._waiting.items() if entry[0] in futures]
        return [self._waiting.pop(t) for t in tokens]

    def fail_all(self, why: str) -> None:
        """Fail every expected answer now (the connection dropped): they are retried."""
        waiting, self._waiting = self._waiting, {}
        for future, client_order_id, correlation_id in waiting.values():
            if not future.done():
                future.set_exception(
                    OutcomeUnknownError(
                        f"queued order sent, {why}; re-sending it (same client order id)",
                        client_order_id=client_order_id,
                        correlation_id=correlation_id,
                    )
                )


def _queued_headers(order: Order, correlation_id: str) -> dict[str, str]:
    return {
        subjects.HEADER_MSG_ID: order.client_order_id,
        subjects.HEADER_CORRELATION_ID: correlation_id,
        subjects.HEADER_SCHEMA: "bridge.v1.NewOrder",
    }


def _queued_order(msg: Msg, client_order_id: str, correlation_id: str) -> QueuedOrder:
    """JetStream's answer to one queued order, or the ``BridgeError`` it amounts to."""
    wait = 0.0  # only used in timeout messages, and an answer is not a timeout
    if msg.headers and msg.headers.get(nats.js.api.Header.STATUS) == _NO_RESPONDERS:
        raise _publish_failure(
            nats.js.errors.NoStreamResponseError(), client_order_id, correlation_id, wait
        )
    try:
        answer = json.loads(msg.data)
        if "error" in answer:
            nats.js.errors.APIError.from_error(answer["error"])  # raises its APIError subclass
        return QueuedOrder.model_construct(
            client_order_id=client_order_id,
            stream=answer["stream"],
            seq=answer["seq"],
            duplicate=bool(answer.get("duplicate", False)),
        )
    except nats.js.errors.APIError as exc:
        raise _publish_failure(exc, client_order_id, correlation_id, wait) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise PublishError(
            f"unreadable JetStream answer {msg.data[:200]!r}: {exc!r}",
            client_order_id=client_order_id,
            correlation_id=correlation_id,
        ) from exc


def _answer(
    proto: Callable[[], _P],
    convert: Callable[[_P], _T],
    client_order_id: str,
    correlation_id: str,
) -> Callable[[bytes], _T]:
    """A decoder for one engine answer, bound to the ids its errors must carry."""
    return lambda data: _decode(data, proto, convert, client_order_id, correlation_id)


def _fail_pending_requests(nc: NatsConnection) -> None:
    """Fail every request still awaiting its reply when the connection drops.

    nats-py 2.16 leaves them waiting for their full timeout although no reply can arrive on a
    dead connection; failing them now lets the retry policy re-send (same ids, so safely) as
    soon as the connection is back, instead of after ``publish_timeout_ms``: across a 50 ms
    server restart the first publish ack came 2.06 s after the kill before, 0.07-0.11 s after
    (tests/faults/test_server_restart.py). ``_resp_map`` is private: the only handle on them.
    """
    for future in list(nc._resp_map.values()):
        if not future.done():
            future.set_exception(nats.errors.ConnectionReconnectingError())


def _batch_outcome(
    outcomes: Sequence[QueuedOrder | BaseException], stopped: BackpressureError | None
) -> tuple[list[QueuedOrder], tuple[str, ...], BridgeError | None]:
    """What a batch's per-order outcomes (in input order) come to: the orders stored, the ids
    whose outcome is unknown, and the error to raise: the earliest order's failure, else the
    backpressure that stopped the batch after its last sent order, else none."""
    queued = [r for r in outcomes if isinstance(r, QueuedOrder)]
    failures = [_as_bridge_error(r) for r in outcomes if not isinstance(r, QueuedOrder)]
    unknown = tuple(
        f.client_order_id
        for f in failures
        if isinstance(f, OutcomeUnknownError) and f.client_order_id
    )
    failure: BridgeError | None = failures[0] if failures else stopped
    return queued, unknown, failure


def _as_bridge_error(exc: BaseException) -> BridgeError:
    if isinstance(exc, BridgeError):
        return exc
    raise exc


def _connect_error_is_transient(exc: BaseException) -> bool:
    """Retry the first connect on unreachable/refused sockets and timeouts, not on
    certificate or authorization failures (a retry cannot fix those)."""
    if isinstance(exc, ssl.SSLError | nats.errors.AuthorizationError):
        return False
    if isinstance(exc, nats.errors.Error) and "authorization" in str(exc).lower():
        return False
    return isinstance(exc, OSError | TimeoutError | nats.errors.Error)


def _publish_failure(
    exc: BaseException, client_order_id: str, correlation_id: str, wait: float
) -> BridgeError:
    """Maps a failed JetStream publish to the bridge's error tree."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        # 503: no stream server answered: not provisioned, or (cluster) no leader right now.
        return PublishError(
            "no JetStream stream answered for the ORDERS subject (leader election in "
            "progress, or the stream is not provisioned)",
            client_order_id=client_order_id,
            correlation_id=correlation_id,
            transient=True,
        )
    if isinstance(exc, nats.js.errors.APIError):
        description = (exc.description or "").lower()
        full = exc.err_code in _STREAM_FULL_CODES or any(
            w in description for w in _STREAM_FULL_WORDS
        )
        cls = StreamFullError if full else PublishError
        return cls(
            f"JetStream refused the order: {exc.description or exc!r} (err_code={exc.err_code})",
            client_order_id=client_order_id,
            correlation_id=correlation_id,
            err_code=exc.err_code,
            # 503 / "temporarily unavailable": the stream is between leaders.
            transient=not full and (exc.code == 503 or exc.err_code == _JS_UNAVAILABLE),
        )
    if isinstance(exc, nats.errors.Error | asyncio.TimeoutError):
        return OutcomeUnknownError(
            f"JetStream did not confirm the queued order within {wait:.3f}s: {exc!r}; "
            "re-send it (the same client order id cannot create a second order)",
            client_order_id=client_order_id,
            correlation_id=correlation_id,
        )
    raise exc
