"""``BridgeClient``: the one object an orchestrator holds; a façade over the client's rooms.

::

    async with BridgeClient(settings) as bridge:
        async with bridge.reports(account="ACC1") as reports:    # pub-sub, subscribe first
            ack = await bridge.submit(order)                        # request-reply, urgent
            amended = await bridge.replace(Replace(...))            # amend price/quantity
            queued = await bridge.enqueue_batch(orders)             # JetStream, batches
            either = await bridge.send(order)                       # by the routing rule
            async for report in reports: ...

Synchronous ``submit`` is a core NATS request to the engines' queue group: when no engine is
subscribed the server answers "no responders" at once and ``EngineUnavailableError`` is raised
well before the timeout. Queued orders go to the ORDERS stream, many of one account per
``OrderBatch`` message when every engine speaks contract 1.2 (``Nats-Msg-Id`` derived from the
account and the orders' ids), else one per message with ``Nats-Msg-Id`` set to the client
order id; either way JetStream deduplicates re-sends inside its window and the engine's own
record of seen orders deduplicates them forever.

Faults: the connection reconnects forever (or ``max_reconnect_attempts`` times) with
exponential backoff and jitter, re-subscribing by itself; transient failures of an order
operation are retried with the same ids (``bridge.retry``); the typed errors of
``bridge.errors`` reach the caller only when retries are exhausted. Connection changes are
observable: ``bridge.connection_state``, ``bridge.engine_available`` and
``bridge.on_connection_event(callback)``.

Security: every order operation is signed with the identity's NKey seed (``sign_orders``, on by
default; a retry signs anew), and goes to a subject that carries its account, built only from a
valid account token (else ``InvalidOrderError`` before anything is sent). A security violation
(the server reports a permissions violation, or the engine refuses an operation as unsigned,
badly signed, expired, replayed, for another account or not entitled) ends the client at once:
its connection is closed without reconnecting, every pending and later operation raises
``SecurityViolationError``, ``SECURITY_VIOLATION`` is emitted and one ERROR line logged
(``bridge.security_violation`` holds the error).

The rooms behind it, one concern each: ``bridge._connection`` (lifecycle, state, events),
``bridge._requests`` (submit, cancel, replace, status), ``bridge._mass_cancel`` (cancel_all),
``bridge._pipeline`` (queued orders),
``bridge.reports`` (report streams), all over ``bridge.transport`` (the seam to NATS); each
records into ``bridge.metrics`` (Prometheus), and ``readiness()`` asks ``bridge._readiness``. Every
operation binds its ``correlation_id``, ``trace_id`` (and order fields) to the log context once
(``structlog.contextvars``, through ``bridge.logs.bound_ids``), so every line logged inside it
carries them.

Runtime configuration (``runtime_config``, on by default): the client watches the config
bucket and applies its ``client`` (settings: timeouts, retries, in-flight and backpressure
limits), ``routing`` (what ``send`` does) and ``log_levels`` documents while running, between
operations, without dropping one in flight (``bridge.runtime_config.watch``).

Sessions (``session_id``, off by default): the client opens an orchestrator session at connect,
heartbeats it, stamps it on every order it sends that names none, renews it after a reconnect
and closes it on ``close()``; if the process dies or stays disconnected longer than the grace,
the engines cancel the session's resting orders (``bridge.session``).

Tracing: every operation is one W3C trace; its ``traceparent`` header rides on every message
it sends (each attempt, each order of a batch) and the engine logs its lines about the order
with the same ``correlation_id``, ``trace_id``, ``client_order_id`` and ``account``. Without a
``correlation_id`` the operation's correlation id is its trace id (``bridge.tracecontext``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from bridge import _mass_cancel as mass_cancel
from bridge._connection import (
    Connection,
    ConnectionEvent,
    ConnectionListener,
    ConnectionState,
)
from bridge._linger import Linger
from bridge._mass_cancel import MassCancelResult
from bridge._pipeline import Pipeline, batch_result
from bridge._readiness import Readiness, probe
from bridge._requests import Requests, new_correlation_id
from bridge.config import BridgeSettings
from bridge.errors import BridgeError, PartialBatchError, SecurityViolationError
from bridge.logs import bound_ids, get_logger
from bridge.marketdata.feed import MarketDataFeed
from bridge.marketdata.feed_inputs import MarketInputs
from bridge.metrics import METRICS, ClientMetrics
from bridge.models import Order, OrderAck, OrderState, QueuedOrder, Side
from bridge.outbox import OrderOutbox
from bridge.replace import Replace
from bridge.reports import ReportStream
from bridge.runtime_config.routing import DEFAULT_ROUTING, QUEUED, Routing
from bridge.runtime_config.watch import ConfigWatch
from bridge.session import Session, SessionOptions
from bridge.tracecontext import new_trace_id, trace_id_for, traceparent
from bridge.transport import NatsTransport, Transport, flush_ordered, tls_context

log = get_logger("bridge.client")

__all__ = [
    "BridgeClient",
    "ConnectionEvent",
    "ConnectionListener",
    "ConnectionState",
    "Readiness",
    "flush_ordered",
    "new_correlation_id",
    "tls_context",
]


class BridgeClient:
    """Submit orders, await acks and fills, subscribe to execution reports."""

    def __init__(
        self,
        settings: BridgeSettings | None = None,
        *,
        outbox: OrderOutbox | None = None,
        transport: Transport | None = None,
        journal: OrderOutbox | None = None,
        metrics: ClientMetrics | None = None,
    ) -> None:
        """``outbox``: optional local record of orders sent and their outcomes, so that after
        a restart of this process ``resubmit_pending()`` can re-send what has no outcome
        (``journal`` is its deprecated old name and warns). ``transport``: how to reach NATS;
        nats-py (``NatsTransport``) unless given, e.g. an in-memory fake in tests.
        ``metrics``: where this client records its Prometheus metrics (``bridge.metrics``);
        ``bridge.metrics.METRICS``, on ``prometheus_client.REGISTRY``, unless given.

        ``ConfigurationError`` at once when the settings cannot work: ``sign_orders`` on without
        an NKey seed (``nkey_seed_file`` or ``nkey_seed``). The seed itself is read at connect."""
        self._settings = settings or BridgeSettings()
        if journal is not None:
            warnings.warn(
                "BridgeClient(journal=...) was renamed BridgeClient(outbox=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            outbox = outbox or journal
        self._outbox = outbox
        self._metrics = metrics or METRICS
        self._conn = Connection(self._settings, transport or NatsTransport(), self._metrics)
        self._requests = Requests(self._conn, outbox)
        self._pipeline = Pipeline(self._conn, outbox)
        self._linger = Linger(self._pipeline)  # concurrent enqueue() calls share batches
        self._metrics.watch(self._conn, self._pipeline)
        self._config = (
            ConfigWatch(self._conn, self._settings, self._use_settings)
            if self._settings.runtime_config
            else None
        )
        options = SessionOptions.from_settings(self._settings)
        self._session = Session(self._conn, options) if options is not None else None

    @property
    def settings(self) -> BridgeSettings:
        """The settings in force: those given, overlaid by the runtime ``client`` document
        (``bridge.runtime_config``) while there is one."""
        return self._conn.settings

    @property
    def routing(self) -> Routing:
        """The rule ``send`` follows: the runtime ``routing`` document's, else every order
        ``sync`` (``bridge.runtime_config.routing.DEFAULT_ROUTING``)."""
        return self._config.routing if self._config is not None else DEFAULT_ROUTING

    @property
    def runtime_config(self) -> ConfigWatch | None:
        """The watch of the runtime configuration bucket (its ``documents`` in force and the
        ``revisions`` handled), None with ``runtime_config`` off."""
        return self._config

    def _use_settings(self, settings: BridgeSettings) -> None:
        """Swap the settings in force; the next operation reads them."""
        self._conn.settings = settings
        self._pipeline.resize(settings.max_inflight)

    @property
    def session(self) -> Session | None:
        """The orchestrator session (``session_id``): its ``info`` (grace and heartbeat in
        force), ``heartbeats_sent``, ``renewals``; ``close(cancel_orders=...)`` ends it early.
        None without ``session_id``."""
        return self._session

    def _stamped(self, order: Order, *, replace: bool = False) -> Order:
        """``order`` naming the session, if the client has one."""
        return self._session.stamp(order, replace=replace) if self._session else order

    @property
    def metrics(self) -> ClientMetrics:
        """The Prometheus metrics this client records into."""
        return self._metrics

    @property
    def connection_state(self) -> ConnectionState:
        return self._conn.state

    @property
    def connected_server(self) -> str | None:
        """``host:port`` of the NATS server in use, None while not connected."""
        return self._conn.transport.connected_server

    @property
    def security_violation(self) -> SecurityViolationError | None:
        """The violation that ended this client (then every operation raises it), or None."""
        return self._conn.violation

    @property
    def signer(self) -> str | None:
        """Public NKey of this client's identity (known once connected; None without a seed)."""
        identity = self._conn.identity
        return identity.public_key if identity else None

    @property
    def engine_available(self) -> bool | None:
        """False after a request found no engine, True once one answered, None before either."""
        return self._conn.engine_available

    def on_connection_event(self, listener: ConnectionListener) -> Callable[[], None]:
        """Call ``listener`` (plain or async) on every ``ConnectionEvent``; returns a function
        that removes it. A listener that raises is logged and kept."""
        return self._conn.add_listener(listener)

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
        With ``session_id``, the session is opened too (``SessionError`` if the engine refuses
        it; the client is then closed).
        """
        await self._conn.connect()
        if self._session is not None:
            try:
                await self._session.open()
            except BaseException:
                await self._session.abandon()
                await self._conn.close()
                raise

    async def close(self) -> None:
        """Send the ``enqueue()`` orders still lingering, close the session (if any), drain
        subscriptions and close. Idempotent."""
        await self._linger.drain()
        if self._session is not None:
            if self._conn.is_up and self._session.is_open:
                try:
                    await self._session.close()
                except BridgeError as exc:  # it will be declared lost one grace later
                    log.warning("bridge.session_close_failed", error=str(exc))
            await self._session.abandon()
        if self._config is not None and self._conn.is_up:
            await self._config.stop()
        self._pipeline.engines.close()
        await self._conn.close()

    async def readiness(self, timeout: float = 0.5) -> Readiness:
        """Whether this client can trade now: connected, and how many engines answer the NATS
        service API's ping (``$SRV.PING.bridge-engine``) within ``timeout`` seconds (it always
        waits that long, to count them all). ``ready`` = connected and at least one engine.

        Never raises for a down connection or a closed client (``connected=False``); what
        ``/readyz`` of ``bridge.observability.serve`` answers."""
        return await probe(self._conn, timeout)

    # -- synchronous request-reply -----------------------------------------------------------

    async def submit(
        self, order: Order, *, timeout: float | None = None, correlation_id: str | None = None
    ) -> OrderAck:
        """Send an urgent order and wait for the engine's ack (ACCEPTED or REJECTED).

        ACCEPTED means the engine recorded the order durably before answering. Transient
        failures are retried with the same client order id (a re-sent order is answered with
        its original ack, ``duplicate=True``). When retries run out: ``EngineUnavailableError``
        (no engine listens), ``ConnectionFailedError`` (NATS down; nothing sent) or
        ``OutcomeUnknownError`` (sent, unanswered: resolve it with ``status()``). A security
        refusal raises ``SecurityViolationError`` (its ``ack`` is the engine's answer) and ends
        the client.
        """
        correlation_id, trace = _trace(correlation_id)
        order = self._stamped(order)
        with bound_ids(
            correlation_id, order.client_order_id, order.account, order.symbol, trace_id=trace
        ):
            ack = await self._requests.submit(order, timeout, correlation_id, traceparent(trace))
        if self._session is not None and not ack.accepted:
            self._session.noticed(ack)
        return ack

    async def cancel(
        self, account: str, client_order_id: str, *, timeout: float | None = None
    ) -> OrderAck:
        """Ask the engine to cancel a resting order; the ack says whether it did.

        ``InvalidOrderError`` (field ``account``) before anything is sent when ``account`` is
        not a valid subject token."""
        correlation_id = trace = new_trace_id()
        with bound_ids(correlation_id, client_order_id, account, trace_id=trace):
            return await self._requests.cancel(
                account, client_order_id, timeout, correlation_id, traceparent(trace)
            )

    async def cancel_all(
        self,
        account: str,
        *,
        symbol: str | None = None,
        side: Side | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> MassCancelResult:
        """Cancel every open order of ``account`` (only ``symbol``'s and/or ``side``'s if
        given) in every engine; the result counts them (``canceled``) and names the engines.

        Idempotent: a re-send cancels nothing more (``canceled=0``). ``result.complete`` is
        False (REJECTED, e.g. ``ENGINE_UNAVAILABLE``) when an engine that could hold the
        account's orders did not take part: ``canceled`` is only what the others did;
        ``raise_for_status()`` raises ``MassCancelIncompleteError``. Raises like ``cancel``
        (``InvalidOrderError`` before sending, ``SecurityViolationError``, ...); see
        ``bridge._mass_cancel``."""
        correlation_id = trace = new_trace_id()
        request_id = request_id if request_id is not None else mass_cancel.new_request_id()
        with bound_ids(correlation_id, None, account, symbol, trace_id=trace):
            return await mass_cancel.cancel_all(
                self._conn,
                self._requests,
                account,
                symbol,
                side,
                request_id,
                timeout,
                correlation_id,
                traceparent(trace),
            )

    async def replace(
        self, request: Replace, *, timeout: float | None = None, correlation_id: str | None = None
    ) -> OrderAck:
        """Amend a resting order's price and/or quantity (``bridge.replace.Replace``); the ack
        says whether it was applied (ACCEPTED: ``order_status`` is the order's status after it,
        ``orig_client_order_id`` the id it named) or why not (REJECTED: UNKNOWN_ORDER,
        TOO_LATE, INVALID_FIELD with field errors, ...).

        Retried like ``submit`` with the same replace id: a replace that reached the engine is
        answered with its original ack (``duplicate=True``), never applied twice. Raises as
        ``submit`` does when retries run out; resolve an ``OutcomeUnknownError`` with
        ``status(account, request.client_order_id)`` (found once the replace was applied).
        """
        correlation_id, trace = _trace(correlation_id)
        with bound_ids(correlation_id, request.client_order_id, request.account, trace_id=trace):
            return await self._requests.replace(
                request, timeout, correlation_id, traceparent(trace)
            )

    async def status(
        self, account: str, client_order_id: str, *, timeout: float | None = None
    ) -> OrderState:
        """The engine's record of an order; ``found=False`` is definitive.

        This is how an ``OutcomeUnknownError`` is resolved: the answer comes from the engine's
        durable order store, which every engine sharing the deployment reads. ``found=True``:
        that is the order. ``found=False``: the engine has no order with this id and never will,
        because it retired the id (atomically, before answering); an order with this id that
        is still on its way is REJECTED (``UNKNOWN_ORDER``) and never executes, so re-sending
        under a new id is safe. Raises ``OutcomeUnknownError`` (retried like a timeout) when the
        engine could not retire the id and so cannot say "not found".
        """
        correlation_id = trace = new_trace_id()
        with bound_ids(correlation_id, client_order_id, account, trace_id=trace):
            return await self._requests.status(
                account, client_order_id, timeout, correlation_id, traceparent(trace)
            )

    async def send(
        self, order: Order, *, correlation_id: str | None = None
    ) -> OrderAck | QueuedOrder:
        """Send ``order`` by the pattern the routing rule gives it (``routing``, changeable at
        run time through the ``routing`` document): ``sync`` -> ``submit`` (an ``OrderAck``),
        ``queued`` -> ``enqueue`` (a ``QueuedOrder``). Raises as that method does. Without a
        routing document every order is ``sync``."""
        if self.routing.route(order) == QUEUED:
            return await self.enqueue(order, correlation_id=correlation_id)
        return await self.submit(order, correlation_id=correlation_id)

    # -- asynchronous JetStream queueing -----------------------------------------------------

    async def enqueue(self, order: Order, *, correlation_id: str | None = None) -> QueuedOrder:
        """Queue one order in the ORDERS stream; returns JetStream's acknowledgement.

        While orders travel in batches (every engine speaks contract 1.2+), concurrent calls
        share batch messages: the order waits at most ``enqueue_linger_ms`` for company
        (``bridge._linger``; 0 = off), and this call still gets its own order's outcome.
        Raises the order's own error when it was not stored (``StreamFullError``,
        ``PublishError``, ``OutcomeUnknownError``, ``ConnectionFailedError``,
        ``BackpressureError``), after the same retries as ``enqueue_batch``.
        """
        correlation_id, trace = _trace(correlation_id)
        order = self._stamped(order)
        with bound_ids(
            correlation_id, order.client_order_id, order.account, order.symbol, trace_id=trace
        ):
            outcome = await self._linger.enqueue(order, correlation_id, traceparent(trace))
        if isinstance(outcome, BridgeError):
            raise outcome
        assert outcome is not None  # one order is always sent or refused
        return outcome

    async def enqueue_batch(
        self, orders: Sequence[Order], *, correlation_id: str | None = None
    ) -> list[QueuedOrder]:
        """Queue orders, pipelined (at most ``max_inflight`` unconfirmed), in input order.

        When every engine speaks contract 1.2 or later (asked once through the service ping,
        cached), the orders travel in ``OrderBatch`` messages, one account each, of at most
        ``queued_batch_max_orders`` orders and ``queued_batch_max_bytes`` bytes
        (``bridge._batch_send``): ``Nats-Msg-Id`` derived from the account and the orders'
        ids, the signature over the whole batch, every publish ack awaited; an order is stored
        only if its batch's ack came back (``QueuedOrder.batch_index``: its position). Orders
        of one account keep their order; orders of different accounts are not ordered among
        themselves. Otherwise every order is published alone with ``Nats-Msg-Id`` = its client
        order id. Transient failures are retried per message with the same id. At most
        ``max_inflight`` publishes (of all callers) are unconfirmed at once: a caller waits for
        a slot up to ``backpressure_wait_ms``, then the message's orders get
        ``BackpressureError``. After the first failure no further message is sent.

        If any order was not stored, ``PartialBatchError`` is raised: its ``failure`` is the
        earliest order's error in input order (``StreamFullError``, ``PublishError``,
        ``OutcomeUnknownError``, ``ConnectionFailedError``, or ``BackpressureError`` when
        backpressure alone stopped the batch), its ``outcomes`` say per order what happened,
        ``queued`` lists those JetStream stored and ``unknown`` the client order ids sent
        without a confirmation either way (resolve them with ``status()`` or re-send them).
        ``stored`` and ``not_stored`` name the client order ids of each kind.
        Re-sending the whole batch is always safe: a client order id cannot create a second
        order (JetStream's duplicate window, then the engine's own record).
        """
        correlation_id, trace = _trace(correlation_id)
        orders = [self._stamped(o) for o in orders]
        with bound_ids(correlation_id, trace_id=trace):
            outcomes = await self._pipeline.run(orders, correlation_id, traceparent(trace))
        try:
            return batch_result(outcomes, orders)
        except PartialBatchError as partial:
            if isinstance(partial.failure, SecurityViolationError):
                # The client closed itself: the violation is the error; what happened to each
                # order of the batch stays available as its cause.
                raise partial.failure.for_operation(None, correlation_id) from partial
            raise

    async def resubmit_pending(self) -> tuple[list[OrderAck], list[QueuedOrder]]:
        """Re-send, by their original route and ids, the outbox's orders without an outcome.

        For after a restart of this process: orders that did reach the engine are answered as
        duplicates (``OrderAck.duplicate`` / ``QueuedOrder.duplicate`` or the engine's record)
        and are not executed twice. Raises like ``submit``/``enqueue_batch``.
        """
        if self._outbox is None:
            raise BridgeError("resubmit_pending() needs BridgeClient(..., outbox=...)")
        # A re-sent order names this client's session (if any), not the one it was first sent
        # under: that one ended with the process (orders that did reach an engine are
        # answered as duplicates whatever they name).
        pending = [(p.route, self._stamped(p.order, replace=True)) for p in self._outbox.pending()]
        acks = [await self.submit(o) for route, o in pending if route == "submit"]
        queued = await self.enqueue_batch([o for route, o in pending if route == "queue"])
        return acks, queued

    # -- publish-subscribe of execution reports ---------------------------------------------

    def reports(
        self, account: str, client_order_id: str | None = None, *, since_seq: int | None = None
    ) -> ReportStream:
        """Execution reports of ``account`` (or of one order), each exactly once, in order.

        Use as ``async with bridge.reports("ACC1") as stream: async for r in stream: ...``.
        Reports are read from the durable EXECUTIONS stream (see ``bridge.reports``): a report
        is yielded only once JetStream has stored it, a slow reader holds at most
        ``subscription_capacity`` of them while the server keeps the rest, and nothing is
        skipped or repeated across reconnects. By default the stream starts with the reports
        stored after it opens; ``since_seq`` starts at that EXECUTIONS sequence instead (resume
        with ``stream.last_seq + 1``). Any number of readers may watch the same flow.
        """
        subject = self._conn.subjects.reports(account, client_order_id or None)
        return ReportStream(self._conn, subject, since_seq)

    # -- market data ------------------------------------------------------------------------

    def market_data(
        self, symbols: Sequence[str], *, open_timeout: float | None = None
    ) -> MarketDataFeed:
        """The engine's L2 books of ``symbols``, as events (``bridge.marketdata.feed``).

        Use as ``async with bridge.market_data(["AAPL"]) as feed: async for event in feed``.
        Opening waits (up to ``open_timeout``, default ``order_retry_deadline_ms``) for every
        symbol's first snapshot: ``MarketDataError`` if the engine refuses one (an unknown
        symbol) or none comes. Each symbol's first event is ``Resynced``; then ``BookUpdate``,
        or ``Conflated`` when the reader fell behind (the latest book, the count merged);
        ``Gap`` then ``Resynced`` when an update was lost. ``feed.book(symbol)`` is the latest
        book at any time.
        """
        return MarketDataFeed(self._conn, symbols, open_timeout=open_timeout)

    def market_inputs(
        self, stream_id: str | None = None, *, credit_timeout: float | None = None
    ) -> MarketInputs:
        """A flow-controlled input stream into the engine (``bridge.marketdata.feed_inputs``).

        Use as ``async with bridge.market_inputs() as inputs: await inputs.send(prices)``.
        ``send`` waits up to ``credit_timeout`` (default ``request_timeout_ms``) for the
        engine's credit, ``try_send`` not at all; without credit both raise ``NoCreditError``
        and nothing is sent.
        """
        return MarketInputs(self._conn, stream_id, credit_timeout=credit_timeout)


def _trace(correlation_id: str | None) -> tuple[str, str]:
    """(correlation id, trace id) of one operation: without a correlation id, a fresh trace id
    is both; else the correlation id's trace id (``bridge.tracecontext.trace_id_for``)."""
    if not correlation_id:
        trace = new_trace_id()
        return trace, trace
    return correlation_id, trace_id_for(correlation_id)
