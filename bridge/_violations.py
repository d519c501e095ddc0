"""What counts as a security violation for the client, as ``SecurityViolationError``s (pure).

Two sources:

* the server's ``-ERR 'Permissions Violation for Publish to "<subject>"'`` (or ``for
  Subscription to``): nats-py hands it to the error callback as ``nats.errors.Error`` with the
  text in lower case, ``nats: permissions violation for publish to "<subject>"``, and keeps the
  connection open (nats-py 2.16 ``Client._process_err``);
* an engine answer whose reason is a security refusal (``RejectReason.is_security``: UNSIGNED,
  BAD_SIGNATURE, SIGNATURE_EXPIRED, REPLAYED, ACCOUNT_MISMATCH, NOT_ENTITLED).
"""

from __future__ import annotations

import re

from bridge._subjects import Subjects
from bridge.errors import SecurityViolationError
from bridge.models import OrderAck, RejectReason

PERMISSIONS_VIOLATION = "PERMISSIONS_VIOLATION"
"""``SecurityViolationError.reason`` of a violation the server reported."""

_PERMISSIONS = re.compile(r"permissions violation", re.IGNORECASE)
_DETAIL = re.compile(
    r'permissions violation for (publish|subscription) to "([^"]*)"', re.IGNORECASE
)


def from_server_error(exc: BaseException, subjects: Subjects) -> SecurityViolationError | None:
    """The violation a server error reports, or None when it is not a permissions violation."""
    text = str(exc)
    if _PERMISSIONS.search(text) is None:
        return None
    detail = _DETAIL.search(text)
    if detail is None:
        return SecurityViolationError(
            f"the server reported a permissions violation: {text}",
            reason=PERMISSIONS_VIOLATION,
            text=text,
        )
    operation, named = detail.group(1).lower(), detail.group(2)
    subject, account = subjects.attribute(named)
    on = f" (account {account})" if account else ""
    return SecurityViolationError(
        f"the server refused this identity's {operation} to {subject!r}{on}: permissions "
        "violation; the client closed its connection",
        reason=PERMISSIONS_VIOLATION,
        subject=subject,
        account=account,
        text=text,
    )


def from_refusal(
    what: str,
    reason: RejectReason,
    text: str,
    *,
    subject: str,
    account: str,
    ack: OrderAck | None,
    client_order_id: str | None,
    correlation_id: str | None,
) -> SecurityViolationError:
    """The violation an engine's security refusal of ``what`` (submit, cancel, status) means."""
    return SecurityViolationError(
        f"the engine refused the {what} on {subject} for a security reason: {reason.value}: "
        f"{text or 'no detail'}; the client closed its connection",
        reason=reason.value,
        subject=subject,
        account=account,
        text=text,
        ack=ack,
        client_order_id=client_order_id,
        correlation_id=correlation_id,
    )
