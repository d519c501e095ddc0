"""``OrderOutbox``: the orchestrator's local record of orders sent and their outcomes.

Not to be confused with the engine's order store (the KV bucket ``bridge_orders``, the engine's
durable record of every order it accepted): the outbox is the client's own SQLite file of what
it is about to send. A process that dies mid-batch does not know which of its orders reached the
engine. With an outbox, ``BridgeClient`` records every order *before* sending it and its outcome
(an engine ack, a JetStream ack, or "refused: stream full") when it arrives. After a restart,
``BridgeClient.resubmit_pending()`` re-sends every order without an outcome, by the same route
and with the same client order id: the ones that did arrive are recognised (JetStream's
duplicate window, then the engine's own record) and are not executed twice.

Storage is SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives a crash of this
process (the case handled here); the last commits before a power loss of the machine may be
lost, and re-sending is safe anyway. One outbox file belongs to one orchestrator process.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bridge.models import Order
from bridge.v1 import orders_pb2

Route = Literal["submit", "queue"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    route TEXT NOT NULL CHECK (route IN ('submit', 'queue')),
    payload BLOB NOT NULL,
    recorded_ns INTEGER NOT NULL,
    outcome TEXT
)
"""


@dataclass(frozen=True, slots=True)
class PendingOrder:
    """An order recorded but without an outcome."""

    order: Order
    route: Route


class OrderOutbox:
    """SQLite-backed record of ``client_order_id -> (order, route, outcome)``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> OrderOutbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def record(self, orders: Sequence[Order], *, route: Route) -> None:
        """Record orders about to be sent (one transaction). Re-recording an id keeps the
        first entry and its outcome: a client order id is one order forever."""
        now = time.time_ns()
        rows = [(o.client_order_id, route, o.to_proto().SerializeToString(), now) for o in orders]
        with self._tx():
            self._db.executemany(
                "INSERT OR IGNORE INTO orders (client_order_id, route, payload, recorded_ns) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )

    def resolve(self, outcomes: Mapping[str, str]) -> None:
        """Store outcomes (e.g. ``ack:ACCEPTED``, ``queued``, ``refused:stream_full``)."""
        if not outcomes:
            return
        with self._tx():
            self._db.executemany(
                "UPDATE orders SET outcome = ? WHERE client_order_id = ?",
                [(outcome, order_id) for order_id, outcome in outcomes.items()],
            )

    def pending(self) -> list[PendingOrder]:
        """Orders recorded without an outcome, oldest first."""
        rows: Iterable[tuple[str, bytes]] = self._db.execute(
            "SELECT route, payload FROM orders WHERE outcome IS NULL ORDER BY recorded_ns, rowid"
        )
        return [PendingOrder(_decode(payload), _route(route)) for route, payload in rows]

    def entries(self) -> list[tuple[Order, Route, str | None]]:
        """Every recorded order with its route and outcome (None = pending), oldest first."""
        rows: Iterable[tuple[str, bytes, str | None]] = self._db.execute(
            "SELECT route, payload, outcome FROM orders ORDER BY recorded_ns, rowid"
        )
        return [(_decode(payload), _route(route), outcome) for route, payload, outcome in rows]

    def outcomes(self) -> dict[str, str | None]:
        """Every recorded client order id and its outcome (None = pending)."""
        return dict(self._db.execute("SELECT client_order_id, outcome FROM orders"))

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


def _decode(payload: bytes) -> Order:
    msg = orders_pb2.NewOrder()
    msg.ParseFromString(payload)
    return Order.from_proto(msg)


def _route(value: str) -> Route:
    if value == "submit":
        return "submit"
    if value == "queue":
        return "queue"
    raise ValueError(f"unknown route {value!r} in the outbox")


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
