"""Deprecated: the client's order journal is now the outbox (``bridge.outbox``).

``bridge.journal.OrderJournal`` still works for one version and warns (``DeprecationWarning``);
import ``OrderOutbox`` from ``bridge`` or ``bridge.outbox`` instead. The new name keeps it apart
from the engine's order store (the KV bucket ``bridge_orders``).
"""

from __future__ import annotations

import warnings
from typing import Any

from bridge.outbox import PendingOrder, Route

__all__ = ["PendingOrder", "Route"]

RENAMED = (
    "OrderJournal was renamed bridge.OrderOutbox (bridge.outbox); "
    "the old name goes away in the next version"
)


def __getattr__(name: str) -> Any:
    if name == "OrderJournal":
        warnings.warn(RENAMED, DeprecationWarning, stacklevel=2)
        from bridge.outbox import OrderOutbox

        return OrderOutbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
