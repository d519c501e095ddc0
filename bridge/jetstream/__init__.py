"""The JetStream definitions an operator provisions, shipped with the package.

Streams ORDERS, EXECUTIONS, JOURNAL and ALERTS, the engine's pull consumer on ORDERS, the
sentinel's on ALERTS and the KV buckets of the engine's order store, leases, runtime
configuration and orchestrator sessions, as JSON in the format
``nats stream add --config`` and ``nats consumer add --config`` accept. The files live next to
this module (package data, in the wheel too); ``python -m bridge.jetstream`` prints their
directory, e.g.::

    nats stream add --config "$(python -m bridge.jetstream)/orders.json"
"""

from __future__ import annotations

import json
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from bridge import contract

STREAM_FILES: tuple[str, ...] = (
    "orders.json",
    "executions.json",
    "journal.json",
    "alerts.json",
)
CONSUMER_STREAMS: dict[str, str] = {
    "orders-engine.consumer.json": contract.ORDERS_STREAM,
    "alerts-sentinel.consumer.json": contract.ALERTS_STREAM,
}
"""Each consumer's file and the stream it belongs to."""
CONSUMER_FILES: tuple[str, ...] = tuple(CONSUMER_STREAMS)
KV_FILES: tuple[str, ...] = (
    "kv-bridge_orders.json",
    "kv-bridge_leases.json",
    "kv-bridge_config.json",
    "kv-bridge_sessions.json",
)
ALL_FILES: tuple[str, ...] = (*STREAM_FILES, *CONSUMER_FILES, *KV_FILES)


def directory() -> Traversable:
    """Where the definition files are (a plain directory for an installed wheel)."""
    return files(__name__)


def load(name: str) -> dict[str, Any]:
    """The parsed definition in file ``name`` (one of :data:`ALL_FILES`)."""
    if name not in ALL_FILES:
        raise ValueError(f"unknown JetStream definition {name!r}; known: {', '.join(ALL_FILES)}")
    data = json.loads(directory().joinpath(name).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a JSON object")
    return data
