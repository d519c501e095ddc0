"""The queued pipeline: orders published into the ORDERS stream, pipelined and bounded.

Two ways in, chosen per call by ``Pipeline.batching()``: ``OrderBatch`` messages of many orders
(contract 1.2, when every engine speaks it: ``bridge._batch_send``, ``bridge._engine_contracts``)
or one message per order, below. Both share the in-flight slots and JetStream's answers
(``bridge._pubacks``) and account for each order the same way.

One publish path for every attempt of every single queued order: the order is published with
``Nats-Msg-Id`` = its client order id and a reply subject of its own under one wildcard
subscription of this client (``PubAcks``), and JetStream's answer on that subject resolves
it to a ``QueuedOrder`` or to the ``BridgeError`` it means. First attempts of a batch are
pipelined (no task and no timer per order); an order whose attempt failed transiently is
retried (same id) under the policy of ``bridge.retry``. At most ``max_inflight`` publishes
are unconfirmed at once (backpressure: wait ``backpressure_wait_ms`` for a slot, then
``BackpressureError``).

Every message of a batch carries the batch's correlation id and ``traceparent`` (one trace per
operation, ``bridge.tracecontext``); with debug logging on, one ``bridge.queued`` line per order
names its outcome with the order's ids (the batch's context binds only the operation's).

Each attempt is signed anew when the client signs (``bridge._requests`` says how); a security
violation fails every order still waiting for JetStream's answer with the
``SecurityViolationError`` (``Connection.on_violation``).

``js.publish`` costs a request per order (inbox token, future, timer, ``wait_for``), three
times the client CPU of this path, and nats-py 2.16's ``publish_async`` never resolves its
futures when JetStream answers with an error (stream full); hence ``PubAcks``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence

import nats.errors
import nats.js.api
import nats.js.errors

from bridge import _versions, contract
from bridge._batch_send import BatchSender
from bridge._connection import Connection
from bridge._engine_contracts import BATCH_CONTRACT, EngineContracts
from bridge._pubacks import PubAcks, publish_failure
from bridge._slots import Slots
from bridge.config import BridgeSettings
from bridge.errors import (
    BackpressureError,
    BridgeError,
    PartialBatchError,
    StreamFullError,
)
from bridge.logs import bound_ids, get_logger
from bridge.metrics import outcome_of
from bridge.models import Order, QueuedOrder
from bridge.outbox import OrderOutbox
from bridge.retry import is_transient, retry_after
from bridge.transport import Transport

log = get_logger("bridge.client")

Outcome = QueuedOrder | BridgeError | None
"""What happened to one order of a batch: stored, its error, or None (never sent)."""


class Pipeline:
    """The queued orders of one client: ``run`` a batch, get each order's outcome."""

    def __init__(self, conn: Connection, outbox: OrderOutbox | None) -> None:
        self._conn = conn
        self._outbox = outbox
        self._inflight = Slots(conn.settings.max_inflight)
        self.in_flight = 0  # slots taken now (bridge_client_queued_in_flight, read at scrape)
        self._metrics = conn.metrics
        self._acks = PubAcks(lambda: conn.settings.publish_timeout_ms / 1000, conn.metrics.queued)
        self.engines = EngineContracts(conn)
        self._batches = BatchSender(conn, self._acks, self)
        conn.on_open(self._acks.start)  # JetStream's answers, subscribed before the first order
        conn.on_drop(
            lambda: self._acks.fail_all("the connection dropped before JetStream confirmed it")
        )
        conn.on_violation(self._acks.fail_all_with)

    @property
    def settings(self) -> BridgeSettings:
        """The client's live settings."""
        return self._conn.settings

    @property
    def _settings(self) -> BridgeSettings:
        """The client's live settings (a runtime ``client`` document may replace them)."""
        return self._conn.settings

    def resize(self, max_inflight: int) -> None:
        """A new ``max_inflight``: more slots free waiters at once; fewer take none back (the
        publishes in flight finish, new ones wait until fewer are in flight)."""
        self._inflight.resize(max_inflight)

    async def batching(self) -> bool:
        """Do queued orders travel in ``OrderBatch`` messages now? Only when the knob allows
        (``queued_batch_max_orders`` > 0) and every engine speaks contract 1.2 or later
        (``bridge._engine_contracts``: asked once, cached)."""
        if self._settings.queued_batch_max_orders <= 0:
            return False
        return await self.engines.all_speak(BATCH_CONTRACT)

    async def run(
        self,
        orders: Sequence[Order],
        correlation_id: str,
        traceparent: str,
        *,
        independent: bool = False,
    ) -> list[Outcome]:
        """Queue ``orders`` in input order; every order's outcome, in input order.

        In ``OrderBatch`` messages when ``batching()`` (``bridge._batch_send``), else one
        message per order. After the first failure a retry cannot cure, or when backpressure
        stops the batch, no further message is sent (its orders are ``None``), unless the
        orders are ``independent`` (concurrent callers' orders sharing messages: each message
        is tried). Counted in ``bridge_client_orders_total{path="queued"}``, each order's ack
        timed from its publish.
        """
        outcome_counters = self._metrics.queued.outcomes
        try:
            transport = self._conn.open()
        except BridgeError:
            outcome_counters["error"].inc(len(orders))
            raise
        if self._outbox is not None:
            self._outbox.record(orders, route="queue")
        started = time.monotonic()
        if orders and await self.batching():
            outcomes = await self._batches.send(
                transport, orders, correlation_id, traceparent, started, independent
            )
        else:
            outcomes = await self._send_each(
                transport, orders, correlation_id, traceparent, started
            )
        result = [_as_outcome(o) for o in outcomes]
        accepted = 0
        for o in result:
            if isinstance(o, QueuedOrder):
                accepted += 1
            elif o is not None:
                outcome_counters[outcome_of(o)].inc()
        if accepted:
            outcome_counters["accepted"].inc(accepted)
        if self._outbox is not None:
            resolved = {q.client_order_id: "queued" for q in result if isinstance(q, QueuedOrder)}
            for o in result:
                if isinstance(o, StreamFullError) and o.client_order_id:
                    resolved[o.client_order_id] = "refused:stream_full"
            self._outbox.resolve(resolved)
        if log.isEnabledFor(logging.DEBUG):
            _log_outcomes(orders, result)
        return result

    async def _send_each(
        self,
        transport: Transport,
        orders: Sequence[Order],
        correlation_id: str,
        traceparent: str,
        started: float,
    ) -> list[QueuedOrder | BaseException | None]:
        """One message per order (contract 1.0's and 1.1's queued path)."""
        inflight = self._inflight
        sent: list[tuple[Order, asyncio.Future[QueuedOrder]]] = []
        stopped: BackpressureError | None = None
        failed = False

        def settled(future: asyncio.Future[QueuedOrder]) -> None:
            nonlocal failed
            inflight.release()
            self.in_flight -= 1
            exc = None if future.cancelled() else future.exception()
            failed = failed or (exc is not None and not is_transient(exc))

        try:
            # First attempts, pipelined: no task and no timer per order (the hot path).
            for order in orders:
                if failed:
                    break  # stop sending after the first failure that a retry cannot cure
                try:
                    await self._acquire_slot(order.client_order_id, correlation_id)
                except BackpressureError as exc:
                    stopped = exc
                    break
                future = await self._send(transport, order, correlation_id, traceparent)
                future.add_done_callback(settled)
                sent.append((order, future))
            await self._acks.settle([f for _, f in sent])
            outcomes: list[QueuedOrder | BaseException | None] = []
            retries: dict[int, Awaitable[QueuedOrder]] = {}
            for order, future in sent:
                error = future.exception()
                if error is None:
                    outcomes.append(future.result())
                    continue
                if isinstance(error, BridgeError) and is_transient(error):
                    # Timeout, reconnect, no stream leader: retried, same id, under the policy.
                    retries[len(outcomes)] = self._retry(
                        order, error, correlation_id, traceparent, started
                    )
                outcomes.append(error)
            if retries:
                retried = await asyncio.gather(*retries.values(), return_exceptions=True)
                for i, retry_outcome in zip(retries, retried, strict=True):
                    outcomes[i] = retry_outcome
        except BaseException:
            self._acks.cancel([f for _, f in sent])
            raise
        if stopped is not None:
            outcomes.append(stopped)
        outcomes.extend([None] * (len(orders) - len(outcomes)))
        return outcomes

    async def _send(
        self, transport: Transport, order: Order, correlation_id: str, traceparent: str
    ) -> asyncio.Future[QueuedOrder]:
        """One attempt of one queued order; the future resolves with JetStream's answer."""
        reply, future, at = self._acks.expect(order.client_order_id, correlation_id)
        if self._metrics.report_readers:
            self._metrics.queued.sent(order.client_order_id, at)  # for its first report
        conn = self._conn
        try:
            conn.connected(order.client_order_id, correlation_id)
            subject = conn.subjects.of(order.account, "Order").queue
            data = order.to_proto().SerializeToString()
            headers = _queued_headers(order, correlation_id, traceparent)
            signer = conn.signer
            if signer is not None:
                headers.update(signer.headers(subject, data))
            await transport.publish(subject, data, reply=reply, headers=headers)
        except BridgeError as exc:
            self._acks.resolve(reply, exc)
        except nats.errors.Error as exc:
            wait = self._settings.publish_timeout_ms / 1000
            self._acks.resolve(
                reply, publish_failure(exc, order.client_order_id, correlation_id, wait)
            )
        return future

    async def _publish_once(
        self, order: Order, correlation_id: str, traceparent: str
    ) -> QueuedOrder:
        """One more attempt of one order, awaited (retries: the same path as first attempts)."""
        future = await self._send(self._conn.open(), order, correlation_id, traceparent)
        await self._acks.settle([future])
        return future.result()

    async def _retry(
        self,
        order: Order,
        failed: BridgeError,
        correlation_id: str,
        traceparent: str,
        started: float,
    ) -> QueuedOrder:
        """Retries of a queued order whose first attempt failed transiently (holding a slot).
        Runs as a task of its own, so the order's ids are bound to its log context here."""
        trace_id = traceparent[3:35]
        ids = (order.client_order_id, order.account, order.symbol)
        with bound_ids(correlation_id, *ids, trace_id=trace_id):
            await self._acquire_slot(order.client_order_id, correlation_id)
            try:
                return await retry_after(
                    self._settings,
                    "enqueue",
                    lambda: self._publish_once(order, correlation_id, traceparent),
                    failed,
                    started,
                    self._metrics.retries["enqueue"].inc,
                )
            finally:
                self._inflight.release()
                self.in_flight -= 1

    def release_slot(self) -> None:
        """Give back a slot taken by ``acquire_slot`` (its publish is confirmed or failed)."""
        self._inflight.release()
        self.in_flight -= 1

    async def acquire_slot(self, client_order_id: str, correlation_id: str) -> None:
        """Backpressure, for one publish (``client_order_id`` names it in the error)."""
        await self._acquire_slot(client_order_id, correlation_id)

    async def _acquire_slot(self, client_order_id: str, correlation_id: str) -> None:
        """Backpressure: wait for one of ``max_inflight`` slots, or raise."""
        inflight = self._inflight
        if not inflight.locked():
            await inflight.acquire()  # a free slot: taken at once, nothing to time out
            self.in_flight += 1
            return
        wait_ms = self._settings.backpressure_wait_ms
        try:
            if wait_ms == 0:
                raise TimeoutError
            async with asyncio.timeout(wait_ms / 1000 if wait_ms else None):
                await inflight.acquire()
            self.in_flight += 1
        except TimeoutError:
            self._metrics.backpressure_refusals.inc()
            raise BackpressureError(
                f"max_inflight={self._settings.max_inflight} queued publishes are awaiting "
                f"JetStream acks and none completed within backpressure_wait_ms={wait_ms}; "
                "the order was not sent",
                client_order_id=client_order_id,
                correlation_id=correlation_id,
            ) from None


def batch_result(
    outcomes: Sequence[Outcome], orders: Sequence[Order] | None = None
) -> list[QueuedOrder]:
    """Every order stored: their ``QueuedOrder``s; else ``PartialBatchError`` naming the
    earliest failure (and, given ``orders``, every order's id)."""
    queued: list[QueuedOrder] = []
    for outcome in outcomes:
        if not isinstance(outcome, QueuedOrder):
            failure = next(o for o in outcomes if isinstance(o, BridgeError))
            ids = [o.client_order_id for o in orders] if orders is not None else None
            raise PartialBatchError(failure, outcomes, ids) from failure
        queued.append(outcome)
    return queued


def _queued_headers(order: Order, correlation_id: str, traceparent: str) -> dict[str, str]:
    return {
        contract.HEADER_MSG_ID: order.client_order_id,
        contract.HEADER_CORRELATION_ID: correlation_id,
        contract.HEADER_TRACEPARENT: traceparent,
        contract.HEADER_SCHEMA: "bridge.v1.NewOrder",
        **_versions.headers(),
    }


def _log_outcomes(orders: Sequence[Order], outcomes: Sequence[Outcome]) -> None:
    """One debug line per order of a batch: its ids (beside the operation's correlation and
    trace ids, bound by the caller) and what JetStream did with it."""
    for order, outcome in zip(orders, outcomes, strict=True):
        ids = {
            "client_order_id": order.client_order_id,
            "account": order.account,
            "symbol": order.symbol,
        }
        if isinstance(outcome, QueuedOrder):
            log.debug("bridge.queued", stream_seq=outcome.seq, duplicate=outcome.duplicate, **ids)
        elif outcome is None:
            log.debug("bridge.queue_skipped", **ids)
        else:
            log.debug("bridge.queue_failed", error=type(outcome).__name__, **ids)


def _as_outcome(result: QueuedOrder | BaseException | None) -> Outcome:
    if result is None or isinstance(result, QueuedOrder | BridgeError):
        return result
    raise result
