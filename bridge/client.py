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
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Self, TypeVar

import nats
import nats.errors
import nats.js.errors
import structlog
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from bridge import subjects
from bridge.config import BridgeSettings
from bridge.errors import (
    BridgeError,
    ClientClosedError,
    ConnectionFailedError,
    EngineUnavailableError,
    OutcomeUnknownError,
    ProtocolError,
    PublishError,
    StreamFullError,
)
from bridge.models import ExecutionReport, Order, OrderAck, OrderState, QueuedOrder
from bridge.v1 import orders_pb2

log = structlog.get_logger("bridge.client")
_P = TypeVar("_P", bound=Message)
_T = TypeVar("_T")

# JetStream error codes that mean "the stream is at its limits and discard: new refused this".
_STREAM_FULL_CODES = frozenset({10077})  # JSStreamStoreFailedF: maximum messages/bytes exceeded
_STREAM_FULL_WORDS = ("maximum messages", "maximum bytes", "resource limits exceeded")


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


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

    def __init__(self, settings: BridgeSettings | None = None) -> None:
        self._settings = settings or BridgeSettings()
        self._state = _State.UNOPENED
        self._nc: NatsConnection | None = None
        self._js: JetStreamContext | None = None
        self._inflight: asyncio.Semaphore | None = None

    @property
    def settings(self) -> BridgeSettings:
        return self._settings

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
        """Connect to NATS with mTLS and the role's NKey. A client is opened once."""
        if self._state is not _State.UNOPENED:
            raise ClientClosedError(f"client is {self._state.value}; create a new BridgeClient")
        s = self._settings
        seed = s.nkey_seed.get_secret_value() if s.nkey_seed is not None else None
        try:
            self._nc = await nats.connect(
                servers=[u.strip() for u in s.nats_url.split(",") if u.strip()],
                name=s.client_name,
                tls=tls_context(s),
                tls_hostname=None,
                nkeys_seed=str(s.nkey_seed_file) if s.nkey_seed_file else None,
                nkeys_seed_str=seed,
                inbox_prefix=s.inbox_prefix,
                connect_timeout=max(1, s.connect_timeout_ms // 1000),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except (TimeoutError, OSError, ssl.SSLError, nats.errors.Error) as exc:
            self._state = _State.CLOSED
            raise ConnectionFailedError(f"cannot connect to {s.nats_url}: {exc!r}") from exc
        self._js = self._nc.jetstream(timeout=s.publish_timeout_ms / 1000)
        self._inflight = asyncio.Semaphore(s.max_inflight)
        self._state = _State.OPEN
        log.info("bridge.connected", servers=s.nats_url, client_name=s.client_name)

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

    async def _on_error(self, exc: Exception) -> None:
        log.error("bridge.nats_error", error=str(exc))

    async def _on_disconnected(self) -> None:
        if self._state is _State.CLOSING:
            log.debug("bridge.disconnected", reason="closed by the application")
        else:
            log.warning("bridge.disconnected")

    async def _on_reconnected(self) -> None:
        log.info("bridge.reconnected")

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
        nc = self._conn()
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
        return answer(reply.data)

    async def submit(
        self, order: Order, *, timeout: float | None = None, correlation_id: str | None = None
    ) -> OrderAck:
        """Send an urgent order and wait for the engine's ack (ACCEPTED or REJECTED).

        ACCEPTED means the engine recorded the order durably before answering. Raises
        ``EngineUnavailableError`` at once when no engine listens, ``OutcomeUnknownError``
        when the answer does not arrive in time.
        """
        cid = correlation_id or new_correlation_id()
        ack = await self._request(
            subjects.SUBMIT,
            order.to_proto(),
            _answer(orders_pb2.OrderAck, OrderAck.from_proto, order.client_order_id, cid),
            client_order_id=order.client_order_id,
            correlation_id=cid,
            timeout=timeout,
        )
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
        return await self._request(
            subjects.CANCEL,
            orders_pb2.CancelRequest(account=account, client_order_id=client_order_id),
            _answer(orders_pb2.OrderAck, OrderAck.from_proto, client_order_id, cid),
            client_order_id=client_order_id,
            correlation_id=cid,
            timeout=timeout,
        )

    async def status(
        self, account: str, client_order_id: str, *, timeout: float | None = None
    ) -> OrderState:
        """The engine's record of an order (``found=False`` if it never reached the engine)."""
        cid = new_correlation_id()

        def state(m: orders_pb2.OrderStatusReply) -> OrderState:
            return OrderState.from_proto(account, client_order_id, m)

        return await self._request(
            subjects.STATUS,
            orders_pb2.OrderStatusRequest(account=account, client_order_id=client_order_id),
            _answer(orders_pb2.OrderStatusReply, state, client_order_id, cid),
            client_order_id=client_order_id,
            correlation_id=cid,
            timeout=timeout,
        )

    # -- asynchronous JetStream queueing -----------------------------------------------------

    async def enqueue(self, order: Order, *, correlation_id: str | None = None) -> QueuedOrder:
        """Queue one order in the ORDERS stream; returns JetStream's acknowledgement."""
        (queued,) = await self.enqueue_batch([order], correlation_id=correlation_id)
        return queued

    async def enqueue_batch(
        self, orders: Sequence[Order], *, correlation_id: str | None = None
    ) -> list[QueuedOrder]:
        """Queue orders, pipelined (at most ``max_inflight`` unacknowledged), in input order.

        Every order is published with ``Nats-Msg-Id`` = its client order id. Raises
        ``StreamFullError`` / ``PublishError`` naming the first order JetStream refused, or
        ``OutcomeUnknownError`` when acks did not arrive; earlier orders of the batch may be
        stored. Re-sending the whole batch is always safe: a client order id cannot create a
        second order (JetStream's duplicate window, then the engine's own record).
        """
        self._conn()
        js, inflight = self._js, self._inflight
        assert js is not None
        assert inflight is not None
        cid = correlation_id or new_correlation_id()
        wait = self._settings.publish_timeout_ms / 1000

        async def publish(order: Order) -> nats.js.api.PubAck:
            headers = {
                subjects.HEADER_MSG_ID: order.client_order_id,
                subjects.HEADER_CORRELATION_ID: cid,
                subjects.HEADER_SCHEMA: "bridge.v1.NewOrder",
            }
            async with inflight:  # backpressure: at most max_inflight unconfirmed publishes
                return await js.publish(
                    subjects.queue(order.account),
                    order.to_proto().SerializeToString(),
                    timeout=wait,
                    headers=headers,
                )

        # Not nats-py's publish_async: in 2.16 a JetStream error reply (e.g. stream full) is
        # raised inside its reply handler and the order's future never resolves.
        results = await asyncio.gather(*(publish(o) for o in orders), return_exceptions=True)
        queued: list[QueuedOrder] = []
        for order, result in zip(orders, results, strict=True):
            if isinstance(result, BaseException):
                raise _publish_failure(result, order.client_order_id, cid, wait) from result
            queued.append(
                QueuedOrder.model_construct(
                    client_order_id=order.client_order_id,
                    stream=result.stream,
                    seq=result.seq,
                    duplicate=bool(result.duplicate),
                )
            )
        return queued

    # -- publish-subscribe of execution reports ---------------------------------------------

    def reports(self, account: str, client_order_id: str | None = None) -> ReportStream:
        """Execution reports of ``account`` (or of one order), as they are published.

        Use as ``async with bridge.reports("ACC1") as stream: async for r in stream: ...``.
        Any number of subscribers may watch the same flow.
        """
        subject = (
            subjects.executions(account, client_order_id)
            if client_order_id
            else subjects.executions_for_account(account)
        )
        return ReportStream(self, subject)


class ReportStream:
    """An open subscription to execution reports; iterate it with ``async for``."""

    def __init__(self, client: BridgeClient, subject: str) -> None:
        self._client = client
        self.subject = subject
        self._sub: Subscription | None = None

    async def __aenter__(self) -> Self:
        nc = self._client._conn()
        limit = self._client.settings.report_buffer
        self._sub = await nc.subscribe(self.subject, pending_msgs_limit=limit)
        # The subscription must be registered server-side before the caller sends orders,
        # possibly from another connection.
        await flush_ordered(nc)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sub is not None:
            # A closed connection has nothing left to unsubscribe.
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()

    def __aiter__(self) -> AsyncIterator[ExecutionReport]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ExecutionReport]:
        if self._sub is None:
            raise ClientClosedError("use `async with bridge.reports(...)` before iterating")
        async for msg in self._sub.messages:
            yield _decode_report(msg)

    async def next(self, timeout: float) -> ExecutionReport:
        """The next report, or ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        if self._sub is None:
            raise ClientClosedError("use `async with bridge.reports(...)` first")
        msg = await self._sub.next_msg(timeout=timeout)
        return _decode_report(msg)


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


def _answer(
    proto: Callable[[], _P],
    convert: Callable[[_P], _T],
    client_order_id: str,
    correlation_id: str,
) -> Callable[[bytes], _T]:
    """A decoder for one engine answer, bound to the ids its errors must carry."""
    return lambda data: _decode(data, proto, convert, client_order_id, correlation_id)


def _decode_report(msg: Msg) -> ExecutionReport:
    return _decode(msg.data, orders_pb2.ExecutionReport, ExecutionReport.from_proto, None, None)


def _publish_failure(
    exc: BaseException, client_order_id: str, correlation_id: str, wait: float
) -> BridgeError:
    """Maps a failed JetStream publish to the bridge's error tree."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return PublishError(
            "no JetStream stream answered for the ORDERS subject (not provisioned?)",
            client_order_id=client_order_id,
            correlation_id=correlation_id,
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
        )
    if isinstance(exc, nats.errors.Error | asyncio.TimeoutError):
        return OutcomeUnknownError(
            f"JetStream did not confirm the queued order within {wait:.3f}s: {exc!r}; "
            "re-send it (the same client order id cannot create a second order)",
            client_order_id=client_order_id,
            correlation_id=correlation_id,
        )
    raise exc
