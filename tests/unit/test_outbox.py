"""The orchestrator's outbox: what is pending survives a reopen; outcomes stick."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bridge import Order, OrderOutbox, OrderType, Side


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
    with OrderOutbox(path) as outbox:
        outbox.record([first, order(2)], route="queue")
        outbox.record([order(3)], route="submit")
        outbox.resolve({"j2": "queued"})
    with OrderOutbox(path) as outbox:  # a restarted process
        pending = outbox.pending()
        assert [(p.order.client_order_id, p.route) for p in pending] == [
            ("j1", "queue"),
            ("j3", "submit"),
        ]
        assert pending[0].order.to_proto() == first.to_proto()  # the exact order comes back
        outbox.resolve({"j1": "queued", "j3": "ack:ACCEPTED"})
        assert outbox.pending() == []
        assert outbox.outcomes() == {"j1": "queued", "j2": "queued", "j3": "ack:ACCEPTED"}


def test_recording_an_id_again_keeps_the_first_entry(tmp_path: Path) -> None:
    first = order(1)
    with OrderOutbox(tmp_path / "j.db") as outbox:
        outbox.record([first], route="queue")
        outbox.resolve({"j1": "queued"})
        outbox.record([order(1)], route="submit")
        [(stored, route, outcome)] = outbox.entries()
    assert (stored.to_proto(), route, outcome) == (first.to_proto(), "queue", "queued")


def test_order_journal_is_a_deprecated_alias_of_the_outbox() -> None:
    """The old name still works for one version, with a DeprecationWarning naming the new one."""
    import bridge.journal

    with pytest.warns(DeprecationWarning, match="renamed bridge.OrderOutbox"):
        old = bridge.journal.OrderJournal
    assert old is OrderOutbox
    with pytest.warns(DeprecationWarning, match="renamed bridge.OrderOutbox"):
        from bridge import OrderJournal
    assert OrderJournal is OrderOutbox
