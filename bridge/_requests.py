"""Request-reply with the engine: submit, cancel and status, and how their failures map.

Each operation is one core NATS request to the engines' queue group, under the retry policy of
``bridge.retry`` (same client order id and correlation id on every attempt). What a failed
request means: NATS "no responders" -> ``EngineUnavailableError`` (nothing was delivered); no
answer in time, or the connection failed after sending -> ``OutcomeUnknownError``; the
connection down before sending -> ``ConnectionFailedError``; an undecodable answer ->
``ProtocolError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

import nats.errors
from google.protobuf.message import DecodeError, Message

from bridge import contract
from bridge._connection import Connection
from bridge.errors import EngineUnavailableError, OutcomeUnknownError, ProtocolError
from bridge.logs import get_logger
from bridge.models import Order, OrderAck, OrderState
from bridge.outbox import OrderOutbox
from bridge.retry import with_retries
from bridge.v1 import orders_pb2

log = get_logger("bridge.client")
_P = TypeVar("_P", bound=Message)
_T = TypeVar("_T")


def new_correlation_id() -> str:
    """A fresh correlation id (joins client and engine log lines of one request)."""
    return uuid.uuid4().hex


class Requests:
    """The request-reply operations of one client."""

    def __init__(self, conn: Connection, outbox: OrderOutbox | None) -> None:
        self._conn = conn
        self._settings = conn.settings
        self._outbox = outbox

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
        transport = self._conn.connected(client_order_id, correlation_id)
        wait = timeout if timeout is not None else self._settings.request_timeout_ms / 1000
        headers = {
            contract.HEADER_CORRELATION_ID: correlation_id,
            contract.HEADER_SCHEMA: msg.DESCRIPTOR.full_name,
        }
        try:
            reply = await transport.request(
                subject, msg.SerializeToString(), timeout=wait, headers=headers
            )
        except nats.errors.NoRespondersError as exc:
            await self._conn.engine_seen(False)
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
        await self._conn.engine_seen(True)
        return answer(reply)

    async def submit(self, order: Order, timeout: float | None, correlation_id: str) -> OrderAck:
        """``BridgeClient.submit`` (the caller binds the log context)."""
        if self._outbox is not None:
            self._outbox.record([order], route="submit")
        request = order.to_proto()
        decode = _answer(
            orders_pb2.OrderAck, OrderAck.from_proto, order.client_order_id, correlation_id
        )
        ack = await with_retries(
            self._settings,
            "submit",
            lambda: self._request(
                contract.submit(order.account),
                request,
                decode,
                client_order_id=order.client_order_id,
                correlation_id=correlation_id,
                timeout=timeout,
            ),
        )
        if self._outbox is not None:
            self._outbox.resolve({order.client_order_id: f"ack:{ack.status.value}"})
        log.debug("bridge.ack", status=ack.status.value, duplicate=ack.duplicate)
        return ack

    async def cancel(
        self, account: str, client_order_id: str, timeout: float | None, correlation_id: str
    ) -> OrderAck:
        """``BridgeClient.cancel``."""
        return await with_retries(
            self._settings,
            "cancel",
            lambda: self._request(
                contract.cancel(account),
                orders_pb2.CancelRequest(account=account, client_order_id=client_order_id),
                _answer(orders_pb2.OrderAck, OrderAck.from_proto, client_order_id, correlation_id),
                client_order_id=client_order_id,
                correlation_id=correlation_id,
                timeout=timeout,
            ),
        )

    async def status(
        self, account: str, client_order_id: str, timeout: float | None, correlation_id: str
    ) -> OrderState:
        """``BridgeClient.status``."""

        def state(m: orders_pb2.OrderStatusReply) -> OrderState:
            if not m.found and m.reason == orders_pb2.REJECT_REASON_ENGINE_UNAVAILABLE:
                raise OutcomeUnknownError(
                    f"status unknown: {m.text or 'the engine could not retire the id'}",
                    client_order_id=client_order_id,
                    correlation_id=correlation_id,
                )
            return OrderState.from_proto(account, client_order_id, m)

        return await with_retries(
            self._settings,
            "status",
            lambda: self._request(
                contract.status(account),
                orders_pb2.OrderStatusRequest(account=account, client_order_id=client_order_id),
                _answer(orders_pb2.OrderStatusReply, state, client_order_id, correlation_id),
                client_order_id=client_order_id,
                correlation_id=correlation_id,
                timeout=timeout,
            ),
        )


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
