"""JetStream's answers to queued publishes, on one wildcard subscription of this client.

Each publish of the queued path (one order, or one ``OrderBatch``) goes out with a reply
subject of its own under one subscription (``PubAcks``), and JetStream's answer on that subject
resolves its future to a ``QueuedOrder`` or to the ``BridgeError`` it means (``queued_order``,
``publish_failure``). Shared by ``bridge._pipeline`` (one message per order) and
``bridge._batch_send`` (batches).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence

import nats.errors
import nats.js.api
import nats.js.errors
from nats.aio.msg import Msg

from bridge.errors import (
    BridgeError,
    OutcomeUnknownError,
    PublishError,
    SecurityViolationError,
    StreamFullError,
)
from bridge.metrics import PathMetrics
from bridge.models import QueuedOrder
from bridge.transport import Transport

# JetStream error codes that mean "the stream is at its limits and discard: new refused this".
_STREAM_FULL_CODES = frozenset({10077})  # JSStreamStoreFailedF: maximum messages/bytes exceeded
_STREAM_FULL_WORDS = ("maximum messages", "maximum bytes", "resource limits exceeded")
_NO_RESPONDERS = "503"  # status of the answer when no stream listens on the subject
_JS_UNAVAILABLE = 10008  # JSClusterNotAvailErr: JetStream system temporarily unavailable


class PubAcks:
    """JetStream's answers to queued orders, on one wildcard subscription of this client.

    Each order is published with a reply subject of its own under one subscription, and its
    future resolves with a ``QueuedOrder`` or the ``BridgeError`` its answer means (ack,
    JetStream error, or the no-responders status).
    """

    def __init__(self, wait_s: Callable[[], float], metrics: PathMetrics) -> None:
        self._prefix = ""
        self._wait = wait_s  # the live publish_timeout_ms, in seconds
        self._count = 0
        self._ack_latency = metrics.ack_latency
        # reply token -> (future, client order id, correlation id, perf_counter at publish)
        self._waiting: dict[str, tuple[asyncio.Future[QueuedOrder], str, str, float]] = {}

    async def start(self, transport: Transport) -> None:
        self._prefix = transport.new_inbox() + "."
        await transport.subscribe(self._prefix + "*", cb=self._on_answer)

    def expect(
        self, client_order_id: str, correlation_id: str
    ) -> tuple[str, asyncio.Future[QueuedOrder], float]:
        """A reply subject for one publish, the future its answer resolves and the time it
        was sent (``time.perf_counter``)."""
        self._count += 1
        token = str(self._count)
        future: asyncio.Future[QueuedOrder] = asyncio.get_running_loop().create_future()
        at = time.perf_counter()
        self._waiting[token] = (future, client_order_id, correlation_id, at)
        return self._prefix + token, future, at

    def resolve(self, reply: str, exc: BridgeError) -> None:
        """Fail one expected answer (the publish itself failed)."""
        entry = self._waiting.pop(reply[len(self._prefix) :], None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(exc)

    async def _on_answer(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if entry is None or entry[0].done():
            return  # expired or failed already: its retry has its own answer
        future, client_order_id, correlation_id, at = entry
        try:
            queued = queued_order(msg, client_order_id, correlation_id)
        except BridgeError as exc:
            future.set_exception(exc)
            return
        self._ack_latency.observe(time.perf_counter() - at)
        future.set_result(queued)

    async def settle(self, futures: Sequence[asyncio.Future[QueuedOrder]]) -> None:
        """Wait for ``futures`` up to the publish timeout; fail those still unanswered."""
        if not futures:
            return
        wait_s = self._wait()
        _, late = await asyncio.wait(futures, timeout=wait_s)
        for future, client_order_id, correlation_id, _ in self._drop(late):
            future.set_exception(
                publish_failure(nats.errors.TimeoutError(), client_order_id, correlation_id, wait_s)
            )

    def cancel(self, futures: Sequence[asyncio.Future[QueuedOrder]]) -> None:
        """Stop waiting for ``futures`` (the batch was cancelled)."""
        for future, _, _, _ in self._drop(set(futures)):
            future.cancel()

    def _drop(
        self, futures: set[asyncio.Future[QueuedOrder]]
    ) -> list[tuple[asyncio.Future[QueuedOrder], str, str, float]]:
        """Forget the still-unanswered entries of ``futures``."""
        if not futures:
            return []
        tokens = [t for t, entry in self._waiting.items() if entry[0] in futures]
        return [self._waiting.pop(t) for t in tokens]

    def fail_all_with(self, error: SecurityViolationError) -> None:
        """Fail every expected answer now with ``error`` (the client closed itself)."""
        waiting, self._waiting = self._waiting, {}
        for future, client_order_id, correlation_id, _ in waiting.values():
            if not future.done():
                future.set_exception(error.for_operation(client_order_id, correlation_id))

    def fail_all(self, why: str) -> None:
        """Fail every expected answer now (the connection dropped): they are retried."""
        waiting, self._waiting = self._waiting, {}
        for future, client_order_id, correlation_id, _ in waiting.values():
            if not future.done():
                future.set_exception(
                    OutcomeUnknownError(
                        f"queued order sent, {why}; re-sending it (same client order id)",
                        client_order_id=client_order_id,
                        correlation_id=correlation_id,
                    )
                )


def queued_order(msg: Msg, client_order_id: str, correlation_id: str) -> QueuedOrder:
    """JetStream's answer to one queued order, or the ``BridgeError`` it amounts to."""
    wait = 0.0  # only used in timeout messages, and an answer is not a timeout
    if msg.headers and msg.headers.get(nats.js.api.Header.STATUS) == _NO_RESPONDERS:
        raise publish_failure(
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
        raise publish_failure(exc, client_order_id, correlation_id, wait) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise PublishError(
            f"unreadable JetStream answer {msg.data[:200]!r}: {exc!r}",
            client_order_id=client_order_id,
            correlation_id=correlation_id,
        ) from exc


def publish_failure(
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
