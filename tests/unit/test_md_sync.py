"""Unit tests of the pure market-data core: the L2 book, the recovery protocol, conflation."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from bridge.marketdata.book import (
    L2Book,
    Level,
    Snapshot,
    Update,
    snapshot_from_proto,
    update_from_proto,
)
from bridge.marketdata.conflation import Delivery
from bridge.marketdata.events import MAX_CONFLATED_TRADES, BookUpdate, Conflated, Gap, Resynced
from bridge.marketdata.sync import GapFound, Outcome, SymbolSync
from bridge.models import Side
from tests.md_fake_venue import FakeVenue

D = Decimal


def _update(seq: int, *, session: str = "s1", bids: tuple[Level, ...] = ()) -> Update:
    return Update("AAPL", seq, session, bids, (), (), 0, 1)


def _snapshot(seq: int, *, session: str = "s1") -> Snapshot:
    return Snapshot("AAPL", seq, session, (Level(D(1), D(seq + 1), 1),), ())


def _view(book: L2Book) -> tuple[list[tuple[Decimal, Decimal, int]], ...]:
    v = book.view()
    return (
        [(lv.price, lv.quantity, lv.orders) for lv in v.bids],
        [(lv.price, lv.quantity, lv.orders) for lv in v.asks],
    )


def test_book_orders_levels_best_first_and_removes_zero_quantity() -> None:
    """Bids highest first, asks lowest first; a change with quantity 0 removes the level."""
    book = L2Book("AAPL")
    book.reset(
        Snapshot(
            "AAPL",
            3,
            "s",
            (Level(D(99), D(1), 1), Level(D(100), D(2), 1)),
            (Level(D(102), D(5), 2), Level(D(101), D(3), 1)),
        )
    )
    assert [lv.price for lv in book.view().bids] == [D(100), D(99)]
    assert [lv.price for lv in book.view().asks] == [D(101), D(102)]
    book.apply(
        Update("AAPL", 4, "s", (Level(D(100), D(0), 0),), (Level(D(100.5), D(7), 3),), (), 0, 2)
    )
    view = book.view()
    assert view.sequence == 4
    assert view.best_bid == Level(D(99), D(1), 1)
    assert view.best_ask == Level(D("100.5"), D(7), 3)
    assert len(book) == 4


def test_proto_round_trip_of_the_fake_venue_reproduces_its_book() -> None:
    """Snapshot + every update (decoded from bytes) give exactly the venue's book."""
    venue = FakeVenue(["AAPL"], seed=3)
    book = L2Book("AAPL")
    book.reset(snapshot_from_proto(venue.snapshot("AAPL")))
    trades = 0
    for _ in range(500):
        update = update_from_proto(venue.step("AAPL"))
        trades += len(update.trades)
        book.apply(update)
    assert _view(book) == venue.expected("AAPL")
    assert trades == venue.trades
    assert update.trades == () or update.trades[0].aggressor_side is Side.BUY


def test_updates_before_the_snapshot_are_buffered_then_the_rest_applied() -> None:
    """Subscribe first, snapshot second: updates <= snapshot.sequence are dropped, the rest
    applied in order, and the sync is live."""
    sync = SymbolSync("AAPL", max_buffer=16)
    for seq in (4, 5, 6, 7):
        assert sync.on_update(_update(seq)) is Outcome.BUFFERED
    recovered = sync.on_snapshot(_snapshot(5))
    assert recovered is not None
    assert (recovered.sequence, recovered.replayed) == (7, 2)
    assert sync.live
    assert sync.on_update(_update(7)) is Outcome.STALE
    assert sync.on_update(_update(8)) is Outcome.APPLIED


@pytest.mark.parametrize(
    ("buffered", "snapshot"),
    [((7, 8), 5), ((6, 8), 5)],
    ids=["snapshot-older-than-buffer", "hole-inside-buffer"],
)
def test_a_snapshot_the_buffer_does_not_continue_is_refused(
    buffered: tuple[int, ...], snapshot: int
) -> None:
    """A hole between the snapshot and the buffered updates (or inside them): take another."""
    sync = SymbolSync("AAPL", max_buffer=16)
    for seq in buffered:
        sync.on_update(_update(seq))
    assert sync.on_snapshot(_snapshot(snapshot)) is None
    assert not sync.live
    assert sync.on_snapshot(_snapshot(8)) is not None


def test_a_sequence_hole_is_a_gap_never_applied_across() -> None:
    sync = SymbolSync("AAPL", max_buffer=16)
    assert sync.on_snapshot(_snapshot(0)) is not None
    assert sync.on_update(_update(1)) is Outcome.APPLIED
    found = sync.on_update(_update(3))
    assert found == GapFound(expected=2, got=3, reason="sequence")
    assert not sync.live
    assert sync.book.sequence == 1  # 3 was not applied
    assert sync.on_update(_update(4)) is Outcome.BUFFERED
    recovered = sync.on_snapshot(_snapshot(3))
    assert recovered is not None
    assert recovered.sequence == 4


def test_a_new_session_is_a_gap() -> None:
    sync = SymbolSync("AAPL", max_buffer=16)
    assert sync.on_snapshot(_snapshot(10, session="s1")) is not None
    found = sync.on_update(_update(1, session="s2"))
    assert isinstance(found, GapFound)
    assert found.reason == "session"
    recovered = sync.on_snapshot(_snapshot(0, session="s2"))
    assert recovered is not None
    assert (sync.book.session, sync.book.sequence) == ("s2", 1)


def test_invalidate_while_resyncing_refuses_the_snapshot_asked_for_before() -> None:
    """A loss while a snapshot is on its way: that snapshot may predate the loss."""
    sync = SymbolSync("AAPL", max_buffer=16)
    sync.snapshot_requested()
    assert sync.invalidate("slow_consumer") is None
    assert sync.on_snapshot(_snapshot(3)) is None
    sync.snapshot_requested()
    assert sync.on_snapshot(_snapshot(3)) is not None
    found = sync.invalidate("reconnect")
    assert found == GapFound(expected=4, got=0, reason="reconnect")


def test_random_losses_always_recover_the_exact_book() -> None:
    """Random drops and snapshot timing: whenever the sync is live, its book is the venue's
    book at that sequence; no update is applied across a hole."""
    rng = random.Random(11)
    venue = FakeVenue(["AAPL"], seed=5)
    sync = SymbolSync("AAPL", max_buffer=8)
    gaps = recoveries = 0
    in_flight: list[Snapshot] = []
    for _ in range(3000):
        update = update_from_proto(venue.step("AAPL"))
        if rng.random() < 0.02:
            continue  # lost
        outcome = sync.on_update(update)
        if isinstance(outcome, GapFound):
            gaps += 1
        if not sync.live and not in_flight and rng.random() < 0.3:
            sync.snapshot_requested()
            in_flight.append(snapshot_from_proto(venue.snapshot("AAPL")))
        elif in_flight and rng.random() < 0.5 and sync.on_snapshot(in_flight.pop()):
            recoveries += 1
        if sync.live:
            assert sync.book.sequence == venue.books["AAPL"].sequence
            assert _view(sync.book) == venue.expected("AAPL")
    assert gaps > 10
    assert recoveries > 10


def _applied(book: L2Book, delivery: Delivery, update: Update) -> None:
    book.apply(update)
    delivery.update(book, update)


def test_consecutive_updates_conflate_into_the_latest_book() -> None:
    book = L2Book("AAPL")
    delivery = Delivery()
    _applied(book, delivery, _update(1, bids=(Level(D(1), D(1), 1),)))
    first = delivery.pop()
    assert isinstance(first, BookUpdate)
    assert first.sequence == 1
    for seq in range(2, 12):
        _applied(book, delivery, _update(seq, bids=(Level(D(seq), D(1), 1),)))
    assert len(delivery) == 1
    merged = delivery.pop()
    assert isinstance(merged, Conflated)
    assert (merged.sequence, merged.merged) == (11, 10)
    assert merged.book.best_bid == Level(D(11), D(1), 1)
    assert delivery.pop() is None
    assert delivery.merged == 10


def test_conflated_trades_are_bounded_and_counted() -> None:
    venue = FakeVenue(["AAPL"], seed=1)
    book = L2Book("AAPL")
    delivery = Delivery()
    total = 0
    while total <= MAX_CONFLATED_TRADES + 50:
        update = update_from_proto(venue.step("AAPL"))
        total += len(update.trades)
        _applied(book, delivery, update)
    event = delivery.pop()
    assert isinstance(event, Conflated)
    assert len(event.trades) == MAX_CONFLATED_TRADES
    assert event.trades_dropped == total - MAX_CONFLATED_TRADES
    assert event.trades[-1].trade_id == f"T{venue.trades}"


def test_pending_events_per_symbol_stay_bounded_across_many_gaps() -> None:
    """Updates, gaps and resyncs the reader never reads: at most five events per symbol,
    handed out in order; updates before a gap show the book before the gap."""
    book = L2Book("AAPL")
    delivery = Delivery()
    book.reset(_snapshot(0))
    delivery.resynced(Resynced("AAPL", 0, book.view(), 0, ()))
    seq = 0
    for round_ in range(50):
        for _ in range(5):
            seq += 1
            _applied(book, delivery, _update(seq))
        delivery.gap(Gap("AAPL", seq + 1, seq + 2, "sequence"))
        seq += 2
        book.reset(_snapshot(seq))
        delivery.resynced(Resynced("AAPL", seq, book.view(), 0, ()))
        assert len(delivery) <= 5, round_
    events = []
    while (event := delivery.pop()) is not None:
        events.append(event)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Resynced", "Conflated", "Gap", "Resynced"]
    first_gap = events[2]
    assert isinstance(first_gap, Gap)
    assert (first_gap.expected, first_gap.gaps) == (6, 50)
    conflated = events[1]
    assert isinstance(conflated, Conflated)
    assert conflated.book.sequence == 5  # frozen when the first gap was found


def test_symbols_are_handed_out_in_turn() -> None:
    books = {s: L2Book(s) for s in ("A", "B")}
    delivery = Delivery()
    for s in ("A", "B"):
        delivery.gap(Gap(s, 1, 2, "sequence"))
        delivery.resynced(Resynced(s, 2, books[s].view(), 0, ()))
    order = []
    while (event := delivery.pop()) is not None:
        order.append((event.symbol, type(event).__name__))
    assert order == [("A", "Gap"), ("B", "Gap"), ("A", "Resynced"), ("B", "Resynced")]
