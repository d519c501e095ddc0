"""Concurrent ``enqueue()`` calls sharing batch messages, lingering at most ``enqueue_linger_ms``.

While queued orders travel in ``OrderBatch`` messages (``Pipeline.batching()``), an
``enqueue(order)`` does not publish by itself: its order waits for company, and the orders that
wait together go through the pipeline as one call of independent orders
(``Pipeline.run(..., independent=True)``: packed per account, each message tried whatever
happens to the others). Each caller gets its own order's outcome: its ``QueuedOrder`` or its
error. An order waits:

* when no shared send is in flight: until the end of the event loop's current iteration (the
  calls started together, e.g. by one ``asyncio.gather``, share a message; a lone caller pays
  nothing);
* while one is in flight: until it is confirmed, or ``enqueue_linger_ms`` after the first order
  that waits, whichever comes first (under load, orders gather while the previous message is
  being stored);
* never longer than it takes ``queued_batch_max_orders`` orders to wait.

The message carries the correlation id and ``traceparent`` of the first call that waited; the
others' orders are in it with their own ids, and each call's ``bridge.queued`` debug line (in
its own log context) names the stream sequence and batch correlation id that join it to the
engine's lines.

With ``enqueue_linger_ms = 0``, or while orders travel one per message, each call sends its
own order at once, as before. A call cancelled while its order waits takes the order back; once
sent it is like a cancelled ``enqueue`` (the order may be stored). ``drain()`` sends what waits
(the client is closing) and waits for it.
"""

from __future__ import annotations

import asyncio
import logging

from bridge._pipeline import Outcome, Pipeline
from bridge.errors import BridgeError
from bridge.logs import get_logger
from bridge.models import Order, QueuedOrder

log = get_logger("bridge.client")

_Waiting = tuple[Order, asyncio.Future[Outcome]]


class Linger:
    """One client's ``enqueue`` calls waiting to share a message (see the module)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._waiting: list[_Waiting] = []
        self._ids = ("", "")  # correlation id, traceparent of the first waiting call
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def enqueue(self, order: Order, correlation_id: str, traceparent: str) -> Outcome:
        """``order``'s outcome: sent alone, or with the concurrent calls' orders."""
        pipeline = self._pipeline
        settings = pipeline.settings
        linger_ms = settings.enqueue_linger_ms
        if linger_ms <= 0 or not await pipeline.batching():
            (outcome,) = await pipeline.run([order], correlation_id, traceparent)
            return outcome
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._waiting.append((order, future))
        if len(self._waiting) == 1:
            self._ids = (correlation_id, traceparent)
            if self._sending:  # under load: wait for the send in flight, or the linger
                self._timer = loop.call_later(linger_ms / 1000, self._flush)
            else:  # idle: only the calls of this loop iteration join
                self._timer = loop.call_later(0, self._flush)
        batch_correlation_id = self._ids[0]
        if len(self._waiting) >= settings.queued_batch_max_orders:
            self._flush()
        outcome = await future
        if log.isEnabledFor(logging.DEBUG) and isinstance(outcome, QueuedOrder):
            log.debug(
                "bridge.queued",
                stream_seq=outcome.seq,
                batch_index=outcome.batch_index,
                batch_correlation_id=batch_correlation_id,
            )
        return outcome

    @property
    def waiting(self) -> int:
        """Orders waiting for the linger to end."""
        return len(self._waiting)

    def _flush(self) -> None:
        """Send what waits (the linger ended, or enough orders wait)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting = [(o, f) for o, f in self._waiting if not f.done()]  # not cancelled
        self._waiting = []
        if not waiting:
            return
        correlation_id, traceparent = self._ids
        task = asyncio.get_running_loop().create_task(
            self._send(waiting, correlation_id, traceparent)
        )
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        """A shared send is done: what waited meanwhile goes now."""
        self._sending.discard(task)
        if self._waiting and not self._sending:
            self._flush()

    async def _send(self, waiting: list[_Waiting], correlation_id: str, traceparent: str) -> None:
        try:
            outcomes = await self._pipeline.run(
                [o for o, _ in waiting], correlation_id, traceparent, independent=True
            )
        except BaseException as exc:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (order, future), outcome in zip(waiting, outcomes, strict=True):
            if future.done():
                continue
            if outcome is None:  # independent orders are all tried: not expected
                outcome = BridgeError(
                    "the queued order was not sent", client_order_id=order.client_order_id
                )
            if isinstance(outcome, BridgeError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def drain(self) -> None:
        """Send what waits now and wait until every send is done (the client is closing)."""
        self._flush()
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)
