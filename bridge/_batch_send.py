"""The queued path in ``OrderBatch`` messages (contract 1.2): many orders, one stored message.

``BatchSender.send`` encodes each order once, packs the frames into batches
(``bridge._batch``: one account per batch, bounded by ``queued_batch_max_orders`` and
``queued_batch_max_bytes``), and publishes every batch pipelined, like a single queued order
is: to ``contract.queue_batch(account)``, with ``Nats-Msg-Id`` = ``batch_msg_id`` (derived from
the account and the orders' ids), the operation's correlation id and ``traceparent``,
``Bridge-Schema: bridge.v1.OrderBatch``, the version header, and the identity's signature over
the subject and the whole batch payload (signed anew on each attempt). One in-flight slot
(``max_inflight``) per batch message, one reply subject per attempt (``bridge._pubacks``).

An order is stored only when its batch's publish ack came back: every order of a batch gets
the batch's answer, a ``QueuedOrder`` (the batch's stream sequence, ``duplicate`` when
JetStream recognised the message id inside its duplicate window, ``batch_index`` its position)
or a copy of the batch's error naming the order's own id. A batch that failed transiently
(timeout, no stream leader, dropped connection) is retried whole with the same bytes and
message id (``bridge.retry``), so a copy that did get stored is answered as a duplicate. After
a failure a retry cannot cure (or backpressure), no further batch of the call is sent (their
orders are ``None``), unless the orders are ``independent`` (concurrent ``enqueue`` calls
sharing messages, ``bridge._linger``).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import nats.errors

from bridge import _versions, contract
from bridge._batch import batch_msg_id, frame, pack
from bridge._connection import Connection
from bridge._pubacks import PubAcks, publish_failure
from bridge.errors import BackpressureError, BridgeError, SecurityViolationError
from bridge.logs import bound_ids
from bridge.models import Order, QueuedOrder
from bridge.retry import is_transient, retry_after
from bridge.transport import Transport

if TYPE_CHECKING:
    from bridge.config import BridgeSettings

SCHEMA = "bridge.v1.OrderBatch"
"""``Bridge-Schema`` of a batch message."""

Result = QueuedOrder | BaseException | None
"""What happened to one order (before ``_pipeline`` checks it is a ``BridgeError``)."""


class Slots(Protocol):
    """The pipeline's in-flight slots (``max_inflight``): one per unconfirmed publish."""

    async def acquire_slot(self, client_order_id: str, correlation_id: str) -> None: ...

    def release_slot(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Message:
    """One batch message: where it goes, what it carries, and which orders of the call."""

    subject: str
    msg_id: str
    payload: bytes
    indexes: tuple[int, ...]
    client_order_ids: tuple[str, ...]


class BatchSender:
    """Sends the orders of one call as batch messages (see the module)."""

    def __init__(self, conn: Connection, acks: PubAcks, slots: Slots) -> None:
        self._conn = conn
        self._acks = acks
        self._slots = slots
        self._metrics = conn.metrics

    @property
    def _settings(self) -> BridgeSettings:
        return self._conn.settings

    def messages(self, orders: Sequence[Order]) -> list[_Message]:
        """The batch messages of ``orders``: each order encoded and framed once."""
        frames = [frame(o.to_proto().SerializeToString()) for o in orders]
        settings = self._settings
        batches = pack(
            [o.account for o in orders],
            [len(f) for f in frames],
            settings.queued_batch_max_orders,
            settings.queued_batch_max_bytes,
        )
        subjects = self._conn.subjects
        messages = []
        for b in batches:
            ids = tuple([orders[i].client_order_id for i in b.indexes])
            messages.append(
                _Message(
                    subject=subjects.of(b.account, "Order").queue_batch,
                    msg_id=batch_msg_id(b.account, ids),
                    payload=b"".join([frames[i] for i in b.indexes]),
                    indexes=b.indexes,
                    client_order_ids=ids,
                )
            )
        return messages

    async def send(
        self,
        transport: Transport,
        orders: Sequence[Order],
        correlation_id: str,
        traceparent: str,
        started: float,
        independent: bool,
    ) -> list[Result]:
        """Every order's outcome, in input order (see the module)."""
        messages = self.messages(orders)
        outcomes: list[Result] = [None] * len(orders)
        sent: list[tuple[_Message, asyncio.Future[QueuedOrder]]] = []
        failed = False
        slots = self._slots

        def settled(future: asyncio.Future[QueuedOrder]) -> None:
            nonlocal failed
            slots.release_slot()
            exc = None if future.cancelled() else future.exception()
            failed = failed or (exc is not None and not is_transient(exc))

        try:
            for message in messages:
                if failed and not independent:
                    break  # stop sending after the first failure that a retry cannot cure
                try:
                    await slots.acquire_slot(message.msg_id, correlation_id)
                except BackpressureError as exc:
                    self._fail(outcomes, orders, message, exc)
                    if independent:
                        continue
                    break
                future = await self._publish(transport, message, correlation_id, traceparent)
                future.add_done_callback(settled)
                sent.append((message, future))
            await self._acks.settle([f for _, f in sent])
            retries: dict[int, Awaitable[QueuedOrder]] = {}
            for n, (message, future) in enumerate(sent):
                error = future.exception()
                if error is None:
                    self._stored(outcomes, orders, message, future.result())
                elif isinstance(error, BridgeError) and is_transient(error):
                    # Timeout, reconnect, no stream leader: the same batch again, same id.
                    retries[n] = self._retry(message, error, correlation_id, traceparent, started)
                else:
                    self._fail(outcomes, orders, message, error)
            if retries:
                retried = await asyncio.gather(*retries.values(), return_exceptions=True)
                for n, result in zip(retries, retried, strict=True):
                    message = sent[n][0]
                    if isinstance(result, QueuedOrder):
                        self._stored(outcomes, orders, message, result)
                    else:
                        self._fail(outcomes, orders, message, result)
        except BaseException:
            self._acks.cancel([f for _, f in sent])
            raise
        return outcomes

    @staticmethod
    def _stored(
        outcomes: list[Result], orders: Sequence[Order], message: _Message, ack: QueuedOrder
    ) -> None:
        """JetStream stored (or recognised) the batch: each of its orders is stored."""
        # One copy of a template per order: half the cost of model_construct (hot path).
        template = ack.model_copy(update={"batch_index": 0})
        for position, i in enumerate(message.indexes):
            outcomes[i] = template.model_copy(
                update={"client_order_id": orders[i].client_order_id, "batch_index": position}
            )

    @staticmethod
    def _fail(
        outcomes: list[Result], orders: Sequence[Order], message: _Message, error: BaseException
    ) -> None:
        """The batch was not stored (or it is not known): each order gets the error, naming it."""
        for i in message.indexes:
            outcomes[i] = for_order(error, orders[i].client_order_id)

    async def _publish(
        self, transport: Transport, message: _Message, correlation_id: str, traceparent: str
    ) -> asyncio.Future[QueuedOrder]:
        """One attempt of one batch; the future resolves with JetStream's answer."""
        reply, future, at = self._acks.expect(message.msg_id, correlation_id)
        if self._metrics.report_readers:
            queued = self._metrics.queued
            for client_order_id in message.client_order_ids:
                queued.sent(client_order_id, at)  # for its first report
        conn = self._conn
        try:
            conn.connected(message.msg_id, correlation_id)
            headers = {
                contract.HEADER_MSG_ID: message.msg_id,
                contract.HEADER_CORRELATION_ID: correlation_id,
                contract.HEADER_TRACEPARENT: traceparent,
                contract.HEADER_SCHEMA: SCHEMA,
                **_versions.headers(),
            }
            signer = conn.signer
            if signer is not None:
                headers.update(signer.headers(message.subject, message.payload))
            await transport.publish(message.subject, message.payload, reply=reply, headers=headers)
        except BridgeError as exc:
            self._acks.resolve(reply, exc)
        except nats.errors.Error as exc:
            wait = self._settings.publish_timeout_ms / 1000
            self._acks.resolve(reply, publish_failure(exc, message.msg_id, correlation_id, wait))
        return future

    async def _publish_once(
        self, message: _Message, correlation_id: str, traceparent: str
    ) -> QueuedOrder:
        """One more attempt of one batch, awaited."""
        future = await self._publish(self._conn.open(), message, correlation_id, traceparent)
        await self._acks.settle([future])
        return future.result()

    async def _retry(
        self,
        message: _Message,
        failed: BridgeError,
        correlation_id: str,
        traceparent: str,
        started: float,
    ) -> QueuedOrder:
        """Retries of a batch whose first attempt failed transiently (holding a slot)."""
        with bound_ids(correlation_id, trace_id=traceparent[3:35]):
            await self._slots.acquire_slot(message.msg_id, correlation_id)
            try:
                return await retry_after(
                    self._settings,
                    "enqueue",
                    lambda: self._publish_once(message, correlation_id, traceparent),
                    failed,
                    started,
                    self._metrics.retries["enqueue"].inc,
                )
            finally:
                self._slots.release_slot()


def for_order(error: BaseException, client_order_id: str) -> BaseException:
    """``error`` (a batch's) as one of its orders': a copy naming the order's id."""
    if isinstance(error, SecurityViolationError):
        return error.for_operation(client_order_id, error.correlation_id)
    if not isinstance(error, BridgeError):
        return error
    clone = copy.copy(error)
    clone.client_order_id = client_order_id
    clone.__cause__ = error.__cause__
    return clone
