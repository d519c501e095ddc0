"""Request-reply with the engine: submit, cancel, replace and status, and how their failures
map.

Each operation is one core NATS request to the engines' queue group, under the retry policy of
``bridge.retry`` (same client order id and correlation id on every attempt). What a failed
request means: NATS "no responders" -> ``EngineUnavailableError`` (nothing was delivered), or
``UnsupportedOperationError`` when engines are up but speak a contract older than the
request's (``bridge._versions``); no answer in time, or the connection failed after sending ->
``OutcomeUnknownError``; the connection down before sending -> ``ConnectionFailedError``; an
undecodable answer -> ``ProtocolError``; an answer refusing it for a security reason ->
``SecurityViolationError`` (the client closes itself, see ``bridge._connection``).

Every request carries ``Bridge-Schema-Version`` (``contract.CONTRACT_VERSION``). Each attempt
is signed anew (``Bridge-Signer``, ``Bridge-Signed-At``, ``Bridge-Signature`` over the
subject, the time and the exact bytes sent) when the client signs: a retry is a new
signature, never a replay of the old one. Every attempt carries the operation's correlation id
and ``traceparent`` (``bridge.tracecontext``): the same trace, whichever attempt is answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import nats.errors
from google.protobuf.message import DecodeError, Message

from bridge import _versions, _violations, contract
from bridge._connection import Connection
from bridge.config import BridgeSettings
from bridge.errors import (
    BridgeError,
    EngineUnavailableError,
    OutcomeUnknownError,
    ProtocolError,
    SecurityViolationError,
)
from bridge.logs import get_logger
from bridge.metrics import outcome_of
from bridge.models import (
    SECURITY_REASONS,
    AckStatus,
    Order,
    OrderAck,
    OrderState,
    RejectReason,
)
from bridge.outbox import OrderOutbox
from bridge.replace import Replace
from bridge.retry import with_retries
from bridge.tracecontext import new_trace_id
from bridge.transport import ServiceError
from bridge.v1 import orders_pb2

log = get_logger("bridge.client")
_P = TypeVar("_P", bound=Message)
_T = TypeVar("_T")


def new_correlation_id() -> str:
    """A fresh correlation id (joins client and engine log lines of one request); it is also a
    valid W3C trace id, so that an operation given it has it as its trace id."""
    return new_trace_id()


class _RefusedError(Exception):
    """An engine answer refusing the operation for a security reason (``_request`` turns it
    into the client's ``SecurityViolationError``)."""

    def __init__(self, reason: RejectReason, text: str, ack: OrderAck | None) -> None:
        super().__init__(reason.value)
        self.reason, self.text, self.ack = reason, text, ack


def _checked_ack(msg: orders_pb2.OrderAck) -> OrderAck:
    ack = OrderAck.from_proto(msg)
    if ack.reason in SECURITY_REASONS:
        raise _RefusedError(ack.reason, ack.text, ack)
    return ack


class Requests:
    """The request-reply operations of one client."""

    def __init__(self, conn: Connection, outbox: OrderOutbox | None) -> None:
        self._conn = conn
        self._outbox = outbox

    @property
    def _settings(self) -> BridgeSettings:
        """The client's live settings (a runtime ``client`` document may replace them)."""
        return self._conn.settings

    async def _request(
        self,
        what: str,
        subject: str,
        account: str,
        msg: Message,
        answer: Callable[[bytes], _T],
        *,
        client_order_id: str,
        correlation_id: str,
        traceparent: str,
        timeout: float | None,
    ) -> _T:
        """One request-reply round trip (one attempt: signed now); the engine's answer
        decoded by ``answer``."""
        conn = self._conn
        transport = conn.connected(client_order_id, correlation_id)
        wait = timeout if timeout is not None else self._settings.request_timeout_ms / 1000
        data = msg.SerializeToString()
        headers = {
            contract.HEADER_CORRELATION_ID: correlation_id,
            contract.HEADER_TRACEPARENT: traceparent,
            contract.HEADER_SCHEMA: msg.DESCRIPTOR.full_name,
            **_versions.headers(),
        }
        signer = conn.signer
        if signer is not None:
            headers.update(signer.headers(subject, data))
        try:
            reply = await transport.request(subject, data, timeout=wait, headers=headers)
        except SecurityViolationError as exc:  # the client closed itself meanwhile
            raise exc.for_operation(client_order_id, correlation_id) from None
        except nats.errors.NoRespondersError as exc:
            error = await _versions.no_responders(
                transport,
                operation=what,
                message=msg.DESCRIPTOR.full_name,
                subject=subject,
                timeout=wait,
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            )
            await self._conn.engine_seen(not isinstance(error, EngineUnavailableError))
            raise error from exc
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            raise OutcomeUnknownError(
                f"no answer on {subject} within {wait:.3f}s; query the order status",
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            ) from exc
        except ServiceError as exc:
            if exc.code == contract.SERVICE_ERROR_NO_OWNER:
                # Relayed to its partition's owner while it had none (a takeover): delivered
                # to nobody, so it is safe to send again, like "no responders".
                raise EngineUnavailableError(
                    f"no engine owns the order's partition right now ({exc.status})",
                    client_order_id=client_order_id,
                    correlation_id=correlation_id,
                ) from exc
            await conn.engine_seen(True)
            if exc.code < 500:  # the engine could not decode it: nothing happened
                raise ProtocolError(
                    f"the engine could not take the request on {subject}: {exc.status}",
                    client_order_id=client_order_id,
                    correlation_id=correlation_id,
                ) from exc
            raise OutcomeUnknownError(
                f"the engine failed while serving the request on {subject}: {exc.status}",
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            ) from exc
        except nats.errors.Error as exc:
            raise OutcomeUnknownError(
                f"request on {subject} failed after sending: {exc!r}",
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            ) from exc
        await conn.engine_seen(True)
        try:
            return answer(reply)
        except _RefusedError as refused:
            violation = _violations.from_refusal(
                what,
                refused.reason,
                refused.text,
                subject=subject,
                account=account,
                ack=refused.ack,
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            )
            await conn.violated(violation)
            raise violation from None

    async def submit(
        self, order: Order, timeout: float | None, correlation_id: str, traceparent: str
    ) -> OrderAck:
        """``BridgeClient.submit`` (the caller binds the log context); counted in
        ``bridge_client_orders_total{path="sync"}``, its ack timed from here."""
        started = time.perf_counter()
        metrics = self._conn.metrics
        path = metrics.sync
        outbox = self._outbox
        log.debug("bridge.submit", symbol=order.symbol)
        try:
            subject = self._conn.subjects.of(order.account, "Order").submit
            if metrics.report_readers:
                path.sent(order.client_order_id, started)  # for its first report
            if outbox is not None:
                outbox.record([order], route="submit")
            request = order.to_proto()
            decode = _answer(
                orders_pb2.OrderAck, _checked_ack, order.client_order_id, correlation_id
            )
            ack = await with_retries(
                self._settings,
                "submit",
                lambda: self._request(
                    "submit",
                    subject,
                    order.account,
                    request,
                    decode,
                    client_order_id=order.client_order_id,
                    correlation_id=correlation_id,
                    traceparent=traceparent,
                    timeout=timeout,
                ),
                metrics.retries["submit"].inc,
            )
        except BridgeError as exc:
            path.outcomes[outcome_of(exc)].inc()
            refused = exc.ack if isinstance(exc, SecurityViolationError) else None
            if refused is not None and outbox is not None:
                outbox.resolve({order.client_order_id: f"ack:{refused.status.value}"})
            raise
        path.ack_latency.observe(time.perf_counter() - started)
        path.outcomes["accepted" if ack.status is AckStatus.ACCEPTED else "rejected"].inc()
        if outbox is not None:
            outbox.resolve({order.client_order_id: f"ack:{ack.status.value}"})
        log.debug(
            "bridge.ack",
            status=ack.status.value,
            reason=ack.reason.value,
            duplicate=ack.duplicate,
        )
        return ack

    async def cancel(
        self,
        account: str,
        client_order_id: str,
        timeout: float | None,
        correlation_id: str,
        traceparent: str,
    ) -> OrderAck:
        """``BridgeClient.cancel``."""
        subject = self._conn.subjects.of(account, "CancelRequest").cancel
        ack = await with_retries(
            self._settings,
            "cancel",
            lambda: self._request(
                "cancel",
                subject,
                account,
                orders_pb2.CancelRequest(account=account, client_order_id=client_order_id),
                _answer(orders_pb2.OrderAck, _checked_ack, client_order_id, correlation_id),
                client_order_id=client_order_id,
                correlation_id=correlation_id,
                traceparent=traceparent,
                timeout=timeout,
            ),
            self._conn.metrics.retries["cancel"].inc,
        )
        log.debug("bridge.cancel_ack", status=ack.status.value, reason=ack.reason.value)
        return ack

    async def replace(
        self, request: Replace, timeout: float | None, correlation_id: str, traceparent: str
    ) -> OrderAck:
        """``BridgeClient.replace`` (the caller binds the log context); retried like a cancel,
        with the same replace id (a re-sent replace is answered as a duplicate)."""
        subject = self._conn.subjects.of(request.account, "Replace").replace
        ack = await with_retries(
            self._settings,
            "replace",
            lambda: self._request(
                "replace",
                subject,
                request.account,
                request.to_proto(),
                _answer(orders_pb2.OrderAck, _checked_ack, request.client_order_id, correlation_id),
                client_order_id=request.client_order_id,
                correlation_id=correlation_id,
                traceparent=traceparent,
                timeout=timeout,
            ),
            self._conn.metrics.retries["replace"].inc,
        )
        log.debug(
            "bridge.replace_ack",
            status=ack.status.value,
            reason=ack.reason.value,
            duplicate=ack.duplicate,
        )
        return ack

    async def status(
        self,
        account: str,
        client_order_id: str,
        timeout: float | None,
        correlation_id: str,
        traceparent: str,
    ) -> OrderState:
        """``BridgeClient.status``."""
        subject = self._conn.subjects.of(account, "OrderStatusRequest").status

        def state(m: orders_pb2.OrderStatusReply) -> OrderState:
            if m.reason in _SECURITY_PB:
                raise _RefusedError(_SECURITY_PB[m.reason], m.text, None)
            if not m.found and m.reason == orders_pb2.REJECT_REASON_ENGINE_UNAVAILABLE:
                raise OutcomeUnknownError(
                    f"status unknown: {m.text or 'the engine could not retire the id'}",
                    client_order_id=client_order_id,
                    correlation_id=correlation_id,
                )
            return OrderState.from_proto(account, client_order_id, m)

        found = await with_retries(
            self._settings,
            "status",
            lambda: self._request(
                "status",
                subject,
                account,
                orders_pb2.OrderStatusRequest(account=account, client_order_id=client_order_id),
                _answer(orders_pb2.OrderStatusReply, state, client_order_id, correlation_id),
                client_order_id=client_order_id,
                correlation_id=correlation_id,
                traceparent=traceparent,
                timeout=timeout,
            ),
            self._conn.metrics.retries["status"].inc,
        )
        log.debug("bridge.status", found=found.found)
        return found


_SECURITY_PB: dict[int, RejectReason] = {
    orders_pb2.RejectReason.Value(f"REJECT_REASON_{r.value}"): r for r in SECURITY_REASONS
}
"""Wire values of the security reasons (a status reply carries the bare enum value)."""


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
