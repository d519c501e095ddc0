"""Every NATS subject, stream, consumer and bucket name of the bridge, built by functions.

Mirrors ``engine-rs/src/subjects.rs``; nothing else builds subject strings. Account and
client order ids are restricted to ``[A-Za-z0-9_-]`` by validation, so they are always a single
subject token.
"""

from __future__ import annotations

PREFIX = "bridge.v1"

SUBMIT = f"{PREFIX}.orders.submit"
"""Synchronous request-reply submit (NewOrder -> OrderAck), served by the engines' queue group."""
CANCEL = f"{PREFIX}.orders.cancel"
"""CancelRequest -> OrderAck."""
STATUS = f"{PREFIX}.orders.status"
"""OrderStatusRequest -> OrderStatusReply."""

ORDERS_STREAM = "ORDERS"
EXECUTIONS_STREAM = "EXECUTIONS"
ENGINE_CONSUMER = "engine"
ORDERS_KV_BUCKET = "bridge_orders"
LEASES_KV_BUCKET = "bridge_leases"
"""Engine leases (one live engine per symbol and per intake); TTL = the bucket's max_age."""
LEASE_INTAKE_KEY = "intake"
"""Lease key of the intake every engine shares: the submit queue group and the ORDERS consumer."""

HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_CORRELATION_ID = "Bridge-Correlation-Id"
HEADER_SCHEMA = "Bridge-Schema"
# Atomic batch publish (ADR-50): the engine commits each execution's reports together.
HEADER_BATCH_ID = "Nats-Batch-Id"
HEADER_BATCH_SEQUENCE = "Nats-Batch-Sequence"
HEADER_BATCH_COMMIT = "Nats-Batch-Commit"


def queue(account: str) -> str:
    """Subject of a queued order for ``account`` (captured by the ORDERS stream)."""
    return f"{PREFIX}.orders.queue.{account}"


def executions(account: str, client_order_id: str) -> str:
    """Subject of execution reports for one order (captured by the EXECUTIONS stream)."""
    return f"{PREFIX}.exec.{account}.{client_order_id}"


def executions_for_account(account: str) -> str:
    """Wildcard subject of every execution report of ``account``."""
    return f"{PREFIX}.exec.{account}.>"


def lease_symbol_key(symbol: str) -> str:
    """Lease key of one symbol in the ``bridge_leases`` bucket."""
    return f"symbol.{symbol}"


def inbox_prefix(role: str) -> str:
    """Per-role inbox prefix; the server only lets a role subscribe to its own inboxes."""
    return f"_INBOX.{role}"
