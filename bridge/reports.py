"""``ReportStream``: execution reports read from the durable EXECUTIONS stream, exactly once.

A report stream is an ordered, flow-controlled reader of EXECUTIONS, not a plain subscription:

* **Durable, then visible.** Reports come from an ephemeral pull consumer on EXECUTIONS, so a
  report reaches the caller only after JetStream has stored (and fsynced) it. A plain core
  subscription sees a report before it is stored and, when its reader falls behind, nats-py
  drops what does not fit in its buffer with nothing but a log line (issue 9, defect 4).
* **Bounded, never lossy.** At most ``subscription_capacity`` reports are requested from the
  server and not yet read (the pull window, re-filled when half of it is consumed), so a slow
  reader holds bounded memory and the server keeps the rest. Nothing is ever dropped silently.
* **Exactly once, in stream order.** Each delivery carries its stream and consumer sequence. A
  consumer sequence that skips (a delivery dropped on the way), a consumer that vanished (server
  restart, deletion, inactivity), a reconnect or missing heartbeats make the stream re-create
  its consumer from the stream sequence after the last report it yielded: nothing is skipped
  and nothing is yielded twice. ``resets`` counts these recoveries.
* **Loss is loud.** The only reports that can be missed are those EXECUTIONS itself no longer
  holds (aged out past its 7-day / 1 GiB limits while the reader was away): then the iterator
  raises ``ReportsLostError`` naming the range, rather than skipping it.

``last_seq`` is the EXECUTIONS sequence of the last report yielded; ``bridge.reports(account,
since_seq=last_seq + 1)`` resumes after a restart of the orchestrator without a gap.

With debug logging on, each report yielded is logged (``bridge.report``) with the ids of its
order: the correlation id and trace id the engine stored it with (its ``Bridge-Correlation-Id``
and ``traceparent`` headers), ``client_order_id`` and ``account``, the field names of every
other line about that order on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Self

import nats.errors
import nats.js.api
import nats.js.errors
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from bridge import contract
from bridge.errors import ClientClosedError, ProtocolError, ReportsLostError
from bridge.logs import get_logger
from bridge.models import ExecutionReport
from bridge.retry import backoff_delay
from bridge.tracecontext import trace_id_of
from bridge.transport import Subscription, Transport
from bridge.v1 import orders_pb2

if TYPE_CHECKING:
    from bridge._connection import Connection

log = get_logger("bridge.reports")

# Pull requests: the server sends an idle heartbeat every HEARTBEAT_S while a request waits for
# reports; silence for STALL_S means the consumer or its server is gone (re-create it). A
# request lives PULL_EXPIRES_S, then the window is re-requested.
HEARTBEAT_S = 1.0
STALL_S = 3 * HEARTBEAT_S
PULL_EXPIRES_S = 30.0
# An abandoned consumer (its reader closed or died) is removed by the server after this.
INACTIVE_THRESHOLD_S = 30.0
# Status messages (heartbeats, request timeouts) may sit in the buffer beside the reports.
_STATUS_HEADROOM = 1024
# How many reports a pull request still owed when it ended (408/409 status messages).
_PENDING_MESSAGES = "Nats-Pending-Messages"


class ReportStream:
    """An open, exactly-once reader of execution reports; iterate it with ``async for``."""

    def __init__(self, conn: Connection, subject: str, since_seq: int | None = None) -> None:
        self._conn = conn
        self.subject = subject
        self._window = conn.settings.subscription_capacity
        self._next_seq = since_seq  # None: "from now", fixed when the stream opens
        self.last_seq = 0 if since_seq is None else since_seq - 1
        self.resets = 0
        self._sub: Subscription | None = None
        self._consumer = ""
        self._requested = 0  # reports asked for and not yet received
        self._consumer_seq = 0  # consumer sequence of the last delivery received
        self._generation = -1  # the client's reconnect count the consumer was made under
        self._open = False

    async def __aenter__(self) -> Self:
        transport = self._conn.open()
        if self._next_seq is None:
            info = await transport.stream_info(contract.EXECUTIONS_STREAM)
            self._next_seq = info.last_seq + 1
            self.last_seq = info.last_seq
        self._open = True
        await self._start_consumer()
        self._conn.metrics.reader_opened()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._open:
            self._conn.metrics.reader_closed()
        self._open = False
        await self._drop_subscription()

    @property
    def buffered(self) -> int:
        """Deliveries held in this process, not yet read (at most ``subscription_capacity`` reports
        plus a few status messages)."""
        return 0 if self._sub is None else self._sub.pending_msgs

    @property
    def consumer(self) -> str:
        """Name of the current EXECUTIONS consumer (it changes when the stream recovers)."""
        return self._consumer

    def __aiter__(self) -> AsyncIterator[ExecutionReport]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ExecutionReport]:
        while True:
            yield await self._next(deadline=None)

    async def next(self, timeout: float) -> ExecutionReport:
        """The next report, or ``TimeoutError`` after ``timeout`` seconds."""
        return await self._next(deadline=time.monotonic() + timeout)

    # -- the consumer ------------------------------------------------------------------------

    async def _next(self, deadline: float | None) -> ExecutionReport:
        if self._conn.violation is not None:
            raise self._conn.violation.for_operation(None, None)
        if not self._open:
            raise ClientClosedError("use `async with bridge.reports(...)` before reading it")
        while True:
            if self._conn.reconnects != self._generation:
                await self._reset("the connection was re-established")
            sub = self._sub
            assert sub is not None
            await self._request_more(sub)
            wait = STALL_S
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"no execution report on {self.subject} in time")
            try:
                msg = await sub.next_msg(timeout=wait)
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                await self._reset(f"no report and no heartbeat for {STALL_S:.0f}s")
                continue
            except nats.errors.ConnectionClosedError as exc:
                if self._conn.violation is not None:
                    raise self._conn.violation.for_operation(None, None) from exc
                raise ClientClosedError("the client closed while reading reports") from exc
            report = await self._take(msg)
            if report is not None:
                return report

    async def _take(self, msg: Msg) -> ExecutionReport | None:
        """One delivery: a report to yield, or ``None`` (a status message, a repeat, a reset)."""
        headers = msg.headers or {}
        status = headers.get(nats.js.api.Header.STATUS)
        if status:
            if status == "100":  # idle heartbeat: the consumer is alive
                return None
            if status == "408":  # a pull request expired: what it still owed is re-requested
                pending = int(headers.get(_PENDING_MESSAGES, "0") or 0)
                self._requested = max(0, self._requested - pending)
                return None
            # 409 (consumer deleted, leadership change, ...), 503 (no consumer answers): start a
            # new consumer after the last report yielded.
            description = headers.get(nats.js.api.Header.DESCRIPTION, "")
            await self._reset(f"status {status} {description}".strip())
            return None
        self._requested = max(0, self._requested - 1)
        meta = msg.metadata
        if meta.sequence.consumer != self._consumer_seq + 1:
            await self._reset(
                f"delivery {meta.sequence.consumer} follows {self._consumer_seq}: "
                "a delivery was lost on the way"
            )
            return None
        self._consumer_seq = meta.sequence.consumer
        if meta.sequence.stream < (self._next_seq or 0):
            return None  # already yielded before a reset
        self._next_seq = meta.sequence.stream + 1
        self.last_seq = meta.sequence.stream
        report = _decode_report(msg.data)
        self._conn.metrics.report(report.exec_type, report.client_order_id)
        if log.isEnabledFor(logging.DEBUG):
            _log_report(report, headers, meta.sequence.stream)
        return report

    async def _request_more(self, sub: Subscription) -> None:
        """Keep up to ``subscription_capacity`` reports requested; re-fill at half received."""
        if self._requested > self._window // 2:
            return
        batch = self._window - self._requested
        request = {
            "batch": batch,
            "expires": int(PULL_EXPIRES_S * 1e9),
            "idle_heartbeat": int(HEARTBEAT_S * 1e9),
        }
        transport = self._conn.open()
        await transport.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{contract.EXECUTIONS_STREAM}.{self._consumer}",
            json.dumps(request).encode(),
            reply=sub.subject,
        )
        self._requested += batch

    async def _reset(self, why: str) -> None:
        """Replace the consumer by one starting after the last report yielded."""
        self.resets += 1
        log.warning(
            "bridge.reports_resumed",
            subject=self.subject,
            why=why,
            resume_from_seq=self._next_seq,
        )
        await self._drop_subscription()
        await self._start_consumer()

    async def _start_consumer(self) -> None:
        """A new ephemeral consumer from ``_next_seq``, retried with the client's backoff while
        the connection is down or JetStream is between leaders."""
        failures = 0
        while True:
            transport = self._conn.open()  # ClientClosedError once the client has given up
            generation = self._conn.reconnects
            try:
                await self._create(transport)
                self._generation = generation
                return
            except (nats.errors.Error, TimeoutError) as exc:
                if isinstance(exc, nats.js.errors.APIError) and exc.code not in (None, 503):
                    raise  # refused (e.g. permissions): a retry cannot cure it
                delay = backoff_delay(self._conn.settings, failures)
                failures += 1
                log.info("bridge.reports_consumer_retry", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)

    async def _create(self, transport: Transport) -> None:
        start = self._next_seq
        assert start is not None
        info = await transport.stream_info(contract.EXECUTIONS_STREAM)
        if info.first_seq > start and info.messages:
            raise ReportsLostError(
                f"EXECUTIONS no longer holds sequences {start}..{info.first_seq - 1} "
                f"(aged out of the stream) that {self.subject} had not read; their reports "
                "cannot be recovered from the stream",
                first_missing_seq=start,
                first_available_seq=info.first_seq,
            )
        inbox = transport.new_inbox()
        sub = await transport.subscribe(inbox, pending_msgs_limit=self._window + _STATUS_HEADROOM)
        name = f"reports-{uuid.uuid4().hex[:16]}"
        config = nats.js.api.ConsumerConfig(
            name=name,
            filter_subject=self.subject,
            deliver_policy=nats.js.api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=nats.js.api.AckPolicy.NONE,
            inactive_threshold=INACTIVE_THRESHOLD_S,
            mem_storage=True,
            num_replicas=1,
        )
        try:
            await transport.add_consumer(contract.EXECUTIONS_STREAM, config)
        except BaseException:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
            raise
        self._sub, self._consumer = sub, name
        self._requested = 0
        self._consumer_seq = 0
        # Ask at once: reports stored while nobody reads wait here, up to the window.
        await self._request_more(sub)

    async def _drop_subscription(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            # A closed connection has nothing left to unsubscribe; the consumer itself is
            # removed by the server after INACTIVE_THRESHOLD_S without pull requests.
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()


def _log_report(report: ExecutionReport, headers: dict[str, str], seq: int) -> None:
    correlation_id = headers.get(contract.HEADER_CORRELATION_ID, "")
    log.debug(
        "bridge.report",
        correlation_id=correlation_id,
        trace_id=trace_id_of(headers.get(contract.HEADER_TRACEPARENT), correlation_id),
        client_order_id=report.client_order_id,
        account=report.account,
        exec_id=report.exec_id,
        exec_type=report.exec_type.value,
        order_status=report.order_status.value,
        stream_seq=seq,
    )


def _decode_report(data: bytes) -> ExecutionReport:
    msg = orders_pb2.ExecutionReport()
    try:
        msg.ParseFromString(data)
        return ExecutionReport.from_proto(msg)
    except (DecodeError, ValueError) as exc:
        raise ProtocolError(f"undecodable bridge.v1.ExecutionReport: {exc}") from exc
