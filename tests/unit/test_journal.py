"""The orchestrator's order journal: what is pending survives a reopen; outcomes stick."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from bridge import Order, OrderJournal, OrderType, Side


def order(i: int) -> Order:
    return Order(
        client_order_id=f"j{i}",
        account="ACC",
        symbol="AAPL",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal("1.5"),
        limit_price=Decimal("190.01"),
    )


def test_pending_survives_reopen_in_order_and_resolves(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = order(1)
    with OrderJournal(path) as journal:
        journal.record([first, order(2)], route="queue")
        journal.record([order(3)], route="submit")
        journal.resolve({"j2": "queued"})
    with OrderJournal(path) as journal:  # a restarted process
        pending = journal.pending()
        assert [(p.order.client_order_id, p.route) for p in pending] == [
            ("j1", "queue"),
            ("j3", "submit"),
        ]
        assert pending[0].order.to_proto() == first.to_proto()  # the exact order comes back
        journal.resolve({"j1": "queued", "j3": "ack:ACCEPTED"})
        assert journal.pending() == []
        assert journal.outcomes() == {"j1": "queued", "j2": "queued", "j3": "ack:ACCEPTED"}


def test_recording_an_id_again_keeps_the_first_entry(tmp_path: Path) -> None:
    first = order(1)
    with OrderJournal(tmp_path / "j.db") as journal:
        journal.record([first], route="queue")
        journal.resolve({"j1": "queued"})
        journal.record([order(1)], route="submit")
        [(stored, route, outcome)] = journal.entries()
    assert (stored.to_proto(), route, outcome) == (first.to_proto(), "queue", "queued")
