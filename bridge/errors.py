"""The bridge's exception tree. Every error the client raises is a ``BridgeError``.

::

    BridgeError
    ├── InvalidOrderError        (also ValueError) input failed validation before anything was sent;
    │                            .errors lists (field, rule, message)
    ├── ConfigurationError       (also ValueError) the settings cannot work (e.g. signing on and
    │                            no NKey seed); raised when the client is built, before connecting
    ├── ClientClosedError        the client was used before ``async with`` or after it closed
    ├── ConnectionFailedError    NATS unreachable: the connect failed (refused, TLS handshake,
    │                            authorization) or the connection is down and did not come back
    │                            within the retry deadline. Nothing was sent.
    ├── EngineUnavailableError   no engine is subscribed: NATS answered "no responders" at once.
    │                            Nothing was delivered, so re-sending later is safe.
    ├── UnsupportedOperationError  engines are up, but none serves this operation: it came with a
    │                            later contract version (``min_contract``) than the engines
    │                            speak. Nothing was delivered; not retried (upgrade the engines)
    ├── OutcomeUnknownError      a request timed out after it was sent: the order may or may not
    │                            exist. Resolve it with ``BridgeClient.status()``: found -> that
    │                            is the order; not found -> the id is retired and the order will
    │                            never execute, so re-sending under a new id is safe (see the
    │                            class). Never assume either outcome without asking.
    ├── BackpressureError        ``max_inflight`` queued publishes were unconfirmed and no slot
    │                            freed within ``backpressure_wait_ms``. The order was NOT sent.
    ├── PublishError             JetStream refused or did not confirm a queued order
    │   └── StreamFullError      ORDERS is at its limits (discard: new): the order was NOT stored
    ├── PartialBatchError        ``enqueue_batch`` did not store every order: ``failure`` is the
    │                            earliest order's error (one of the above), ``outcomes`` says
    │                            per order what happened (stored / its error / not sent)
    ├── OrderRejectedError       the engine rejected the order (``OrderAck.raise_for_status()``):
    │                            reason, field errors and the engine's text
    ├── MassCancelIncompleteError  a mass cancel was rejected or did not reach every engine that
    │                            could hold the account's orders (``MassCancelResult
    │                            .raise_for_status()``): ``result`` says what was canceled where
    ├── ProtocolError            the engine answered with something that is not a valid message,
    │                            or could not decode the request (service API error 400)
    ├── SecurityViolationError   the server reported a permissions violation, or the engine refused
    │                            an operation for a security reason (unsigned, bad signature,
    │                            expired, replayed, wrong account, not entitled): the client closed
    │                            its connection at once, and this fails every pending and later
    │                            operation. Never retried: fix the credentials or entitlements
    ├── ReportsLostError         a report stream's reader fell so far behind that EXECUTIONS aged
    │                            out reports it had not read: the range is named, never skipped
    ├── MarketDataError          the engine refused a market-data snapshot (unknown symbol), or
    │                            none came within the deadline: the feed did not open
    ├── SessionError             the engine refused to open or close the client's session
    │                            (``bridge.session``): reason, field errors and the engine's text
    └── NoCreditError            an input stream had no credit from the engine within its timeout
                                 (or at once, ``try_send``): the message was NOT sent

Transient errors (timeouts, no responders, a connection that is down) are retried by the client
with the same client order id before they reach the caller; see ``bridge.retry``. A rejection is
an answer, not a failure: ``submit`` returns the ``OrderAck`` (``status=REJECTED``, reason, field
errors) and ``ack.raise_for_status()`` turns it into ``OrderRejectedError`` for callers who
prefer exceptions. Every error that concerns one order carries its ``client_order_id`` and the
``correlation_id`` of the request, so a log line can be joined with the engine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge._mass_cancel import MassCancelResult
    from bridge.models import OrderAck, QueuedOrder


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """One field that failed validation: dotted path, machine-readable rule, explanation."""

    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} [{self.rule}]"


class BridgeError(Exception):
    """Base of every error raised by the bridge client."""

    def __init__(
        self,
        message: str,
        *,
        client_order_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.client_order_id = client_order_id
        self.correlation_id = correlation_id

    def __str__(self) -> str:
        base = super().__str__()
        ids = [
            f"{name}={value}"
            for name, value in (
                ("client_order_id", self.client_order_id),
                ("correlation_id", self.correlation_id),
            )
            if value
        ]
        return f"{base} ({', '.join(ids)})" if ids else base


class InvalidOrderError(BridgeError, ValueError):
    """The input failed validation; nothing was sent. ``errors`` names every bad field."""

    def __init__(self, errors: Sequence[FieldIssue], *, model: str = "order") -> None:
        self.errors = tuple(errors)
        detail = "; ".join(str(e) for e in self.errors)
        super().__init__(f"invalid {model}: {detail}")


class ConfigurationError(BridgeError, ValueError):
    """The settings cannot work as given (the message says which knob to set); nothing was sent."""


class ClientClosedError(BridgeError):
    """The client is not open: use it inside ``async with BridgeClient(...)``."""


class ConnectionFailedError(BridgeError):
    """NATS could not be reached, or refused us (TLS handshake, authorization)."""


class EngineUnavailableError(BridgeError):
    """No engine is listening: the request was not delivered, so it is safe to retry later."""


class UnsupportedOperationError(BridgeError):
    """The engines that are up do not serve this operation: it came with contract
    ``min_contract`` (e.g. a replace, 1.1) and they speak an older one (``engine_contract``,
    "1.0" for an engine that does not say). Nothing was delivered. Not retried: it keeps
    failing until the engines are upgraded (``engine_ids`` answered the service ping).
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        min_contract: str,
        engine_contract: str,
        engine_ids: Sequence[str] = (),
        client_order_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message, client_order_id=client_order_id, correlation_id=correlation_id)
        self.operation = operation
        self.min_contract = min_contract
        self.engine_contract = engine_contract
        self.engine_ids = tuple(engine_ids)


class OutcomeUnknownError(BridgeError):
    """The request was sent but no answer arrived in time; query the order's status.

    The rule that resolves it, for a submit (or any order whose fate is unclear):

    1. Call ``BridgeClient.status(account, client_order_id)`` (retry it if it also times out).
    2. ``found=True``: that is the order; follow it with its reports.
    3. ``found=False``: definitive. Before answering, the engine retired the id atomically (a
       tombstone in its order store), so the order will never execute: a copy still in flight
       (a late submit, a queued message) is REJECTED with reason ``UNKNOWN_ORDER``. Re-sending
       the order under a **new** client order id is safe.

    Re-sending under the **same** id is always safe too: it is answered with the original ack
    (``duplicate=True``), which is REJECTED if a status query retired the id. The order's
    ``deadline_unix_ns`` also bounds how long a copy in flight can matter: one that reaches the
    engine after the deadline is EXPIRED, never executed.
    """


class BackpressureError(BridgeError):
    """Too many queued publishes are unconfirmed; this order was not sent. Slow down or retry."""


class PublishError(BridgeError):
    """JetStream did not store the queued order (see the message for the server's reason).

    ``transient`` is true when a re-send may succeed (e.g. the stream had no responder while
    its leader was being elected); the client retries those itself.
    """

    def __init__(
        self,
        message: str,
        *,
        client_order_id: str | None = None,
        correlation_id: str | None = None,
        err_code: int | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message, client_order_id=client_order_id, correlation_id=correlation_id)
        self.err_code = err_code
        self.transient = transient


class StreamFullError(PublishError):
    """The ORDERS stream is full (discard: new): this order was refused, older ones are kept."""


class PartialBatchError(BridgeError):
    """``enqueue_batch`` did not store every order of the batch; this says what happened to each.

    ``failure`` is the error of the earliest order (in input order) that failed: a
    ``StreamFullError``, ``PublishError``, ``OutcomeUnknownError`` or ``ConnectionFailedError``,
    or the ``BackpressureError`` that stopped the batch when no sent order failed. It is also
    the ``__cause__``, and its ``client_order_id`` and ``correlation_id`` are this error's.

    ``outcomes`` has one entry per order of the batch, in input order: its ``QueuedOrder``
    (JetStream stored it), its ``BridgeError`` (refused, unconfirmed, or stopped by
    backpressure), or ``None`` (never sent: the batch stopped at an earlier failure).
    ``queued`` lists the stored orders and ``unknown`` the client order ids sent without a
    confirmation either way (resolve them with ``status()`` or re-send them). ``stored``,
    ``unknown`` and ``not_stored`` name every order's client order id exactly once: stored
    means its message's publish ack came back, nothing less (orders that travelled in one
    ``OrderBatch`` share its fate). Re-sending the whole batch is always safe: a client order
    id cannot create a second order.
    """

    def __init__(
        self,
        failure: BridgeError,
        outcomes: Sequence[QueuedOrder | BridgeError | None],
        client_order_ids: Sequence[str] | None = None,
    ) -> None:
        self.failure = failure
        self.outcomes = tuple(outcomes)
        self.queued: tuple[QueuedOrder, ...] = tuple(
            o for o in self.outcomes if o is not None and not isinstance(o, BridgeError)
        )
        self.unknown: tuple[str, ...] = tuple(
            o.client_order_id
            for o in self.outcomes
            if isinstance(o, OutcomeUnknownError) and o.client_order_id
        )
        self.stored: tuple[str, ...] = tuple(q.client_order_id for q in self.queued)
        """Client order ids JetStream stored: their message's publish ack came back."""
        ids = tuple(client_order_ids) if client_order_ids is not None else None
        uncertain = set(self.stored) | set(self.unknown)
        self.not_stored: tuple[str, ...] = tuple(
            cid
            for i, o in enumerate(self.outcomes)
            if (cid := _id_of(o, ids[i] if ids is not None else None)) and cid not in uncertain
        )
        """Client order ids not stored: refused, stopped by backpressure, not sent. With
        ``stored`` and ``unknown``, every order of the call is named exactly once (the ids of
        orders never sent are known when the client passed them, as ``enqueue_batch`` does)."""
        unsent = sum(1 for o in self.outcomes if o is None)
        failed = len(self.outcomes) - len(self.queued) - unsent
        super().__init__(
            f"batch of {len(self.outcomes)}: {len(self.queued)} stored, {failed} failed "
            f"({len(self.unknown)} of them with an unknown outcome), {unsent} not sent; "
            f"earliest failure: {type(failure).__name__}: {Exception.__str__(failure)}",
            client_order_id=failure.client_order_id,
            correlation_id=failure.correlation_id,
        )


def _id_of(outcome: QueuedOrder | BridgeError | None, given: str | None) -> str | None:
    if given is not None:
        return given
    return outcome.client_order_id if outcome is not None else None


class OrderRejectedError(BridgeError):
    """The engine rejected the order; ``reason`` and ``errors`` say why (nothing executed)."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        errors: Sequence[FieldIssue] = (),
        client_order_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message, client_order_id=client_order_id, correlation_id=correlation_id)
        self.reason = reason
        self.errors = tuple(errors)


class MassCancelIncompleteError(BridgeError):
    """A mass cancel (``BridgeClient.cancel_all``) did not cancel everywhere it had to: rejected
    (``reason``: INVALID_FIELD with ``errors``, TRADING_HALTED...), or an engine that could hold
    the account's orders did not take part (``ENGINE_UNAVAILABLE``: not running, or no answer
    in time). ``result`` is the answer: ``canceled`` counts only what the engines that answered
    canceled, ``engine_ids`` names them, ``text`` names the others. Re-sending is safe
    (idempotent): it cancels what is left once they are back."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        result: MassCancelResult,
        errors: Sequence[FieldIssue] = (),
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message, correlation_id=correlation_id)
        self.reason = reason
        self.result = result
        self.errors = tuple(errors)


class ProtocolError(BridgeError):
    """A peer sent bytes that do not decode as the expected bridge.v1 message, or the engine
    could not decode the request (its service API error 400: nothing happened)."""


class SecurityViolationError(BridgeError):
    """A security violation ended this client: it closed its connection at once.

    Raised by the operation that caused it and by every operation pending or started after it.
    Two sources: the server reported a permissions violation (publish or subscribe to a subject
    this identity may not use; ``reason`` is ``PERMISSIONS_VIOLATION``), or the engine refused an
    order operation for a security reason (``reason`` is the ``RejectReason``, e.g.
    ``BAD_SIGNATURE`` or ``NOT_ENTITLED``; ``ack`` is the engine's answer, ``text`` its detail).
    ``subject`` is what the violation concerned (the server reports it in lower case) and
    ``account`` the trading account, when known. A new ``BridgeClient`` is needed afterwards;
    the cause (credentials, entitlements, clock) must be fixed first.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        subject: str | None = None,
        account: str | None = None,
        text: str = "",
        ack: OrderAck | None = None,
        client_order_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message, client_order_id=client_order_id, correlation_id=correlation_id)
        self.reason = reason
        self.subject = subject
        self.account = account
        self.text = text
        self.ack = ack

    def for_operation(
        self, client_order_id: str | None, correlation_id: str | None
    ) -> SecurityViolationError:
        """The same violation, raised by another operation (its ids, this cause)."""
        if (client_order_id, correlation_id) == (self.client_order_id, self.correlation_id):
            return self
        err = SecurityViolationError(
            Exception.__str__(self),
            reason=self.reason,
            subject=self.subject,
            account=self.account,
            text=self.text,
            ack=self.ack,
            client_order_id=client_order_id,
            correlation_id=correlation_id,
        )
        err.__cause__ = self
        return err


class ReportsLostError(BridgeError):
    """EXECUTIONS no longer holds reports a ``ReportStream`` had not read yet.

    Raised instead of skipping them: a report stream otherwise delivers every stored report
    exactly once. ``first_missing_seq`` .. ``first_available_seq - 1`` is the stream range that
    aged out (it may also hold other accounts' reports); reconcile those orders with
    ``BridgeClient.status()``.
    """

    def __init__(self, message: str, *, first_missing_seq: int, first_available_seq: int) -> None:
        super().__init__(message)
        self.first_missing_seq = first_missing_seq
        self.first_available_seq = first_available_seq


class MarketDataError(BridgeError):
    """A market-data feed could not open: the engine refused a symbol's snapshot (``errors``
    names why, e.g. an unknown symbol) or no snapshot came within the deadline. Nothing is
    subscribed afterwards."""

    def __init__(self, message: str, *, symbol: str, errors: Sequence[FieldIssue] = ()) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.errors = tuple(errors)


class NoCreditError(BridgeError):
    """An input stream has no credit: the engine has not granted the next sequence (within the
    timeout of ``send``, or at once for ``try_send``). The message was NOT sent; the engine is
    slow or gone. ``granted_through`` and ``applied_through`` are the stream's last grant."""

    def __init__(self, message: str, *, stream_id: str, granted_through: int, applied_through: int):
        super().__init__(message)
        self.stream_id = stream_id
        self.granted_through = granted_through
        self.applied_through = applied_through


class SessionError(BridgeError):
    """The engine refused to open or close a session (``bridge.session``): ``reason`` (a
    ``RejectReason`` name), ``errors`` (e.g. ``session_id``: ``session_owner`` when another
    identity opened it) and the engine's text in the message."""

    def __init__(
        self, message: str, *, reason: str, errors: Sequence[FieldIssue], session_id: str
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.errors = tuple(errors)
        self.session_id = session_id
