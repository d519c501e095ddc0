"""Security alerts (pure): building a ``SecurityAlert``, its subject, and what its log line says.

One ``SecurityAlert`` (``bridge/v1/security.proto``) per violation, published to
``alert(source, kind)`` on the ALERTS stream; the subject's ``kind`` token is the enum name
without ``SECURITY_VIOLATION_KIND_``, in lower case (``forbidden_publish``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bridge import contract
from bridge.v1 import security_pb2 as pb

_KIND_PREFIX = "SECURITY_VIOLATION_KIND_"

SENTINEL = "sentinel"
"""The sentinel's source name (``alert("sentinel", kind)``)."""
ENGINE = "engine"


def kind_token(kind: pb.SecurityViolationKind.ValueType) -> str:
    """``SECURITY_VIOLATION_KIND_BAD_SIGNATURE`` -> ``bad_signature``."""
    return pb.SecurityViolationKind.Name(kind).removeprefix(_KIND_PREFIX).lower()


def kind_from_token(token: str) -> pb.SecurityViolationKind.ValueType:
    """``bad_signature`` -> ``SECURITY_VIOLATION_KIND_BAD_SIGNATURE`` (ValueError if unknown)."""
    return pb.SecurityViolationKind.Value(_KIND_PREFIX + token.upper())


def subject_of(alert: pb.SecurityAlert) -> str:
    """The subject an alert is published to."""
    return contract.alert(alert.source, kind_token(alert.kind))


def order_account(subject: str) -> str:
    """The trading account an order-operation subject names (``""`` for any other subject)."""
    for prefix in (
        contract.SUBMIT_PREFIX,
        contract.CANCEL_PREFIX,
        contract.STATUS_PREFIX,
        contract.QUEUE_PREFIX,
        contract.EXECUTIONS_FOR_ACCOUNT_PREFIX,
    ):
        if subject.startswith(prefix):
            return subject[len(prefix) :].split(".", 1)[0]
    return ""


def new_alert(
    kind: pb.SecurityViolationKind.ValueType,
    *,
    source: str = SENTINEL,
    now_ns: int | None = None,
    alert_id: str | None = None,
    **fields: Any,
) -> pb.SecurityAlert:
    """A new alert with a fresh id and the current time; ``fields`` are SecurityAlert fields."""
    return pb.SecurityAlert(
        alert_id=alert_id or uuid.uuid4().hex,
        kind=kind,
        source=source,
        time_unix_ns=time.time_ns() if now_ns is None else now_ns,
        **fields,
    )


def describe(alert: pb.SecurityAlert) -> str:
    """One sentence: what happened, who, where and what was done (the webhook's summary)."""
    who = alert.identity or "unknown identity"
    if alert.nkey:
        who = f"{who} ({alert.nkey})"
    what = kind_token(alert.kind).replace("_", " ")
    parts = [f"{what} by {who}"]
    if alert.subject:
        parts.append(f"on {alert.subject}")
    if alert.account:
        parts.append(f"account {alert.account}")
    if alert.connection_id:
        parts.append(f"cid {alert.connection_id}")
    if alert.remote_address:
        parts.append(f"from {alert.remote_address}")
    text = " ".join(parts)
    return f"{text}: {alert.action}" if alert.action else text


def log_fields(alert: pb.SecurityAlert) -> dict[str, object]:
    """The fields of the alert's ERROR log line. Public data only (an alert never holds a
    secret); the public NKey goes as ``public_key`` (the log redaction masks ``*nkey*`` keys)."""
    fields: dict[str, object] = {
        "alert_id": alert.alert_id,
        "kind": kind_token(alert.kind),
        "source": alert.source,
        "identity": alert.identity,
        "public_key": alert.nkey,
        "subject": alert.subject,
        "account": alert.account,
        "reason": alert.reason,
        "cid": alert.connection_id,
        "server_id": alert.server_id,
        "remote_address": alert.remote_address,
        "action": alert.action,
        "engine_id": alert.engine_id,
        "client_order_id": alert.client_order_id,
        "correlation_id": alert.correlation_id,
        "caused_by": alert.caused_by,
    }
    return {k: v for k, v in fields.items() if v not in ("", 0)}
