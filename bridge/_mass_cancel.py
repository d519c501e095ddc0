"""Mass cancel (``BridgeClient.cancel_all``): cancel every open order of an account, optionally
only one symbol's and/or one side's (FIX OrderMassCancelRequest, 35=q), and the answer,
``MassCancelResult`` (FIX OrderMassCancelReport, 35=r). Contract 1.1.

One ``MassCancelRequest`` on ``contract.mass_cancel(account)``, served by the engines' queue
group like a cancel. The engine that takes it cancels the matching orders resting in its books
(each gets a CANCELED report with reason ``MASS_CANCELED``), relays it to every other live
engine (each cancels in its own books) and answers once for all:

* ``status`` ACCEPTED: every engine that could hold the account's orders took part;
  ``canceled`` is the sum, ``engine_ids`` the engines.
* ``status`` REJECTED: nothing happened (``INVALID_FIELD``, a security refusal raises instead,
  see below), or an engine could not take part (``ENGINE_UNAVAILABLE``: ``canceled`` and
  ``engine_ids`` are what the others did, never more; ``text`` names the rest).
  ``raise_for_status()`` turns it into ``MassCancelIncompleteError``.

Idempotent: a re-sent request cancels nothing more and answers ``canceled=0``, so transient
failures are retried like a cancel (``bridge.retry``; counted as ``operation="cancel"``) and
``OutcomeUnknownError`` is resolved by sending it again. Input is checked before anything is
sent (``InvalidOrderError``); a security refusal (ACCOUNT_MISMATCH, NOT_ENTITLED, ...) raises
``SecurityViolationError`` and ends the client, as for every order operation.
"""

from __future__ import annotations

import re
import uuid
from typing import Self

from bridge import contract
from bridge._connection import Connection
from bridge._requests import Requests, _answer, _RefusedError
from bridge._subjects import check_token
from bridge.errors import FieldIssue, InvalidOrderError, MassCancelIncompleteError
from bridge.logs import get_logger
from bridge.models import (
    SECURITY_REASONS,
    AckStatus,
    FieldError,
    RejectReason,
    Side,
    _enum_from_proto,
    _Model,
    _reason_from_proto,
)
from bridge.retry import with_retries
from bridge.v1 import lifecycle_pb2, orders_pb2

log = get_logger("bridge.client")

MODEL = "MassCancelRequest"
_ACCOUNT = re.compile(contract.ACCOUNT_PATTERN)
_SYMBOL = re.compile(contract.SYMBOL_PATTERN)
_REQUEST_ID = re.compile(contract.REQUEST_ID_PATTERN)
_SIDE_PB: dict[Side | None, orders_pb2.Side.ValueType] = {
    None: orders_pb2.SIDE_UNSPECIFIED,
    Side.BUY: orders_pb2.SIDE_BUY,
    Side.SELL: orders_pb2.SIDE_SELL,
}


class MassCancelResult(_Model):
    """The engines' answer to a mass cancel."""

    account: str
    request_id: str
    status: AckStatus
    reason: RejectReason
    canceled: int
    """Orders this request canceled, over every engine that answered (a re-send: 0)."""
    engine_ids: tuple[str, ...]
    """The engines that took part, each canceling in its own books."""
    field_errors: tuple[FieldError, ...]
    text: str

    @property
    def complete(self) -> bool:
        """Every engine that could hold the account's orders took part (ACCEPTED)."""
        return self.status is AckStatus.ACCEPTED

    def raise_for_status(self, correlation_id: str | None = None) -> Self:
        """Returns the result if complete, else raises ``MassCancelIncompleteError``."""
        if self.complete:
            return self
        raise MassCancelIncompleteError(
            f"mass cancel of {self.account} incomplete: {self.reason.value}: "
            f"{self.text or 'no detail'}",
            reason=self.reason.value,
            result=self,
            errors=[FieldIssue(e.field, e.rule, e.message) for e in self.field_errors],
            correlation_id=correlation_id,
        )

    @classmethod
    def from_proto(cls, msg: lifecycle_pb2.MassCancelReply) -> MassCancelResult:
        if msg.status == orders_pb2.ACK_STATUS_UNSPECIFIED:
            raise ValueError("MassCancelReply.status is unspecified")
        return cls.model_construct(
            account=msg.account,
            request_id=msg.request_id,
            status=_enum_from_proto(AckStatus, "ACK_STATUS", msg.status, orders_pb2.AckStatus),
            reason=_reason_from_proto(msg.reason),
            canceled=msg.canceled,
            engine_ids=tuple(msg.engine_ids),
            field_errors=tuple(
                FieldError.model_construct(field=e.field, rule=e.rule, message=e.message)
                for e in msg.field_errors
            ),
            text=msg.text,
        )


def _checked(msg: lifecycle_pb2.MassCancelReply) -> MassCancelResult:
    result = MassCancelResult.from_proto(msg)
    if result.reason in SECURITY_REASONS:
        raise _RefusedError(result.reason, result.text, None)
    return result


def new_request_id() -> str:
    """A fresh mass cancel id (echoed in the reply and in each report's text)."""
    return f"mc-{uuid.uuid4().hex[:16]}"


def check_account(account: str) -> None:
    """``InvalidOrderError`` (field ``account``) unless ``account`` is a valid account (a
    subject token not starting with ``_``)."""
    check_token(account, "account", _ACCOUNT, MODEL)


def request(
    account: str, symbol: str | None, side: Side | None, request_id: str
) -> lifecycle_pb2.MassCancelRequest:
    """The request, once its fields passed the contract's rules (``InvalidOrderError``
    naming the field otherwise; the account is checked when its subject is built)."""
    if symbol is not None:
        check_token(symbol, "symbol", _SYMBOL, MODEL)
    check_token(request_id, "request_id", _REQUEST_ID, MODEL)
    try:
        wire = _SIDE_PB[Side(side) if side is not None else None]
    except ValueError:
        raise InvalidOrderError(
            [FieldIssue("side", "enum", f"{side!r} is not a Side (BUY, SELL) or None (both)")],
            model=MODEL,
        ) from None
    return lifecycle_pb2.MassCancelRequest(
        account=account, symbol=symbol or "", side=wire, request_id=request_id
    )


async def cancel_all(
    conn: Connection,
    requests: Requests,
    account: str,
    symbol: str | None,
    side: Side | None,
    request_id: str,
    timeout: float | None,
    correlation_id: str,
    traceparent: str,
) -> MassCancelResult:
    """``BridgeClient.cancel_all`` (the caller binds the log context)."""
    subject = conn.subjects.of(account, MODEL).mass_cancel
    msg = request(account, symbol, side, request_id)
    result = await with_retries(
        conn.settings,
        "cancel",
        lambda: requests._request(
            "mass cancel",
            subject,
            account,
            msg,
            _answer(lifecycle_pb2.MassCancelReply, _checked, request_id, correlation_id),
            client_order_id=request_id,
            correlation_id=correlation_id,
            traceparent=traceparent,
            timeout=timeout,
        ),
        conn.metrics.retries["cancel"].inc,
    )
    if result.complete:
        log.info(
            "bridge.mass_cancel",
            request_id=request_id,
            canceled=result.canceled,
            engine_ids=list(result.engine_ids),
        )
    else:
        log.warning(
            "bridge.mass_cancel_incomplete",
            request_id=request_id,
            reason=result.reason.value,
            canceled=result.canceled,
            engine_ids=list(result.engine_ids),
            text=result.text,
        )
    return result
