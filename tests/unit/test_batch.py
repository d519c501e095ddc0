"""Packing queued orders into OrderBatch messages (``bridge._batch``), pure: the frames are an
``OrderBatch`` protobuf reads back, the bounds hold, and a batch's message id is a function of
its account and its orders' ids alone."""

from __future__ import annotations

import random
import re
from decimal import Decimal

import pytest

from bridge import contract
from bridge._batch import MSG_ID_PREFIX, Batch, batch_msg_id, frame, pack
from bridge.models import Order, OrderType, Side, TimeInForce
from bridge.v1 import orders_pb2


def order(i: int, account: str = "ACC1", tags: int = 0) -> Order:
    return Order(
        client_order_id=f"o-{i}",
        account=account,
        symbol="AAPL",
        side=Side.BUY if i % 2 else Side.SELL,
        order_type=OrderType.LIMIT,
        limit_price=Decimal("190.01"),
        quantity=Decimal(1 + i % 50),
        time_in_force=TimeInForce.IOC,
        tags={f"k{n}": "v" * 60 for n in range(tags)},
    )


def test_joined_frames_are_an_order_batch() -> None:
    """Each order encoded once and framed, the frames joined: protobuf reads an OrderBatch with
    the same orders, in order, whatever their size (one- and two-byte length varints)."""
    orders = [order(i, tags=i % 3 * 8) for i in range(20)]
    encoded = [o.to_proto().SerializeToString() for o in orders]
    assert max(len(e) for e in encoded) > 127  # two-byte lengths are covered
    batch = orders_pb2.OrderBatch.FromString(b"".join(frame(e) for e in encoded))
    assert list(batch.orders) == [o.to_proto() for o in orders]
    plain = [o.to_proto() for o in (order(i) for i in range(20))]  # no map: one encoding
    built = orders_pb2.OrderBatch(orders=plain).SerializeToString()
    assert b"".join(frame(o.SerializeToString()) for o in plain) == built  # what protobuf writes


def test_frame_lengths_up_to_the_order_limit() -> None:
    """Lengths of one, two and three varint bytes read back as protobuf writes them."""
    for n in (0, 1, 127, 128, 300, contract.MAX_NEW_ORDER_BYTES, 16384):
        inner = orders_pb2.NewOrder(symbol="x" * n)
        built = orders_pb2.OrderBatch(orders=[inner]).SerializeToString()
        assert frame(inner.SerializeToString()) == built


def test_pack_keeps_each_accounts_order_and_bounds_count_and_bytes() -> None:
    rng = random.Random(7)
    accounts = [rng.choice(["A", "B", "C"]) for _ in range(2000)]
    sizes = [rng.randint(40, 4100) for _ in accounts]
    for max_orders, max_bytes in [(1, 61440), (7, 61440), (256, 61440), (256, 5000), (1024, 4200)]:
        batches = pack(accounts, sizes, max_orders, max_bytes)
        seen = sorted(i for b in batches for i in b.indexes)
        assert seen == list(range(len(accounts)))  # every order once
        for b in batches:
            assert {accounts[i] for i in b.indexes} == {b.account}
            assert list(b.indexes) == sorted(b.indexes)
            assert len(b.indexes) <= max_orders
            assert len(b.indexes) == 1 or sum(sizes[i] for i in b.indexes) <= max_bytes
        assert [b.indexes[0] for b in batches] == sorted(b.indexes[0] for b in batches)
        for account in "ABC":
            mine = [i for b in batches if b.account == account for i in b.indexes]
            assert mine == [i for i, a in enumerate(accounts) if a == account]


def test_pack_fills_batches_up_to_the_bounds() -> None:
    assert pack(["A"] * 5, [10] * 5, 2, 1000) == [
        Batch("A", (0, 1)),
        Batch("A", (2, 3)),
        Batch("A", (4,)),
    ]
    assert pack(["A"] * 4, [10] * 4, 100, 25) == [Batch("A", (0, 1)), Batch("A", (2, 3))]
    assert pack(["A", "B", "A"], [1, 1, 1], 100, 100) == [Batch("A", (0, 2)), Batch("B", (1,))]
    assert pack([], [], 10, 10) == []


def test_pack_never_exceeds_the_contracts_bounds() -> None:
    batches = pack(["A"] * 3000, [10] * 3000, 10_000, 10**9)
    assert max(len(b.indexes) for b in batches) == contract.MAX_BATCH_ORDERS
    batches = pack(["A"] * 3000, [100] * 3000, 10_000, 10**9)
    assert max(len(b.indexes) * 100 for b in batches) <= contract.MAX_BATCH_BYTES
    with pytest.raises(ValueError, match="positive"):
        pack(["A"], [1], 0, 10)


def test_msg_id_is_a_function_of_account_and_ids_in_order() -> None:
    ids = [f"o-{i}" for i in range(100)]
    first = batch_msg_id("ACC1", ids)
    assert first == batch_msg_id("ACC1", list(ids))  # deterministic, across calls
    assert re.fullmatch(re.escape(MSG_ID_PREFIX) + "[0-9a-f]{32}", first)
    assert first != batch_msg_id("ACC2", ids)  # another account
    assert first != batch_msg_id("ACC1", ids[:-1])  # another grouping
    assert first != batch_msg_id("ACC1", list(reversed(ids)))  # another order
    assert batch_msg_id("A", ["b-c"]) != batch_msg_id("A-b", ["c"])  # no ambiguous joins
    assert batch_msg_id("A", ["b", "c"]) != batch_msg_id("A", ["bc"])
    # Never a client order id (a single queued order's msg id): ':' is in none.
    assert not re.fullmatch(contract.CLIENT_ORDER_ID_PATTERN, first)


def test_to_proto_encodes_decimals_exactly_as_decimal_to_proto() -> None:
    """The fixed-point cache of ``Order.to_proto`` (the queued hot path) changes no byte."""
    from bridge.models import decimal_to_proto

    rng = random.Random(3)
    for _ in range(2000):
        qty = Decimal(rng.randint(1, 10**9)).scaleb(-rng.randint(0, 8))
        price = Decimal(rng.randint(1, 10**9)).scaleb(-rng.randint(0, 8))
        o = order(0).model_copy(update={"quantity": qty, "limit_price": price})
        msg = o.to_proto()
        assert msg.quantity == decimal_to_proto(qty)
        assert msg.limit_price == decimal_to_proto(price)
    for equal in ("7", "7.0", "7.000"):  # equal values share one cached, normalized form
        assert order(0).model_copy(update={"quantity": Decimal(equal)}).to_proto().quantity == (
            decimal_to_proto(Decimal("7"))
        )
