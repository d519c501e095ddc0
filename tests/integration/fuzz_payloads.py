"""Hostile payloads for the intake fuzz test: deterministic (seeded), grouped by category.

Each generator yields ``(category, payload, headers)``; the test signs the payload (so that it
reaches the engine's decoder) unless the category is about signatures. Nothing here does I/O.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from google.protobuf.message import Message

from bridge import contract
from bridge.v1 import common_pb2, orders_pb2

Fuzz = tuple[str, bytes, dict[str, str]]

MAX_PAYLOAD = 1024 * 1024
"""The server's max_payload (nats/server.conf): the largest message the engine can be sent."""


def valid_order(rng: random.Random, account: str) -> orders_pb2.NewOrder:
    """A well-formed limit order (the seed every mutation starts from)."""
    return orders_pb2.NewOrder(
        client_order_id=f"fz-{rng.getrandbits(48):012x}",
        account=account,
        symbol="AAPL",
        side=orders_pb2.SIDE_BUY if rng.random() < 0.5 else orders_pb2.SIDE_SELL,
        order_type=orders_pb2.ORDER_TYPE_LIMIT,
        quantity=common_pb2.Decimal(units=rng.randint(1, 50), scale=0),
        # Far from the house's prices: a mutation that stays valid rests, it does not trade.
        limit_price=common_pb2.Decimal(units=1, scale=2),
        time_in_force=orders_pb2.TIME_IN_FORCE_DAY,
        tags={"strategy": "fuzz"},
    )


def _requests(rng: random.Random, account: str) -> list[Message]:
    coid = f"fz-{rng.getrandbits(48):012x}"
    return [
        valid_order(rng, account),
        orders_pb2.CancelRequest(account=account, client_order_id=coid),
        orders_pb2.OrderStatusRequest(account=account, client_order_id=coid),
    ]


def _bitflip(rng: random.Random, data: bytes, flips: int) -> bytes:
    buf = bytearray(data)
    for _ in range(flips):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def mutations(rng: random.Random, account: str, rounds: int) -> Iterator[Fuzz]:
    """Small hostile payloads: ``rounds`` of each category."""
    for _ in range(rounds):
        for message in _requests(rng, account):
            data = message.SerializeToString()
            yield "truncated", data[: rng.randrange(len(data))], {}
            yield "bit_flipped", _bitflip(rng, data, rng.randint(1, 8)), {}
            # Unknown fields (numbers no message of ours uses), valid wire format.
            unknown = bytes([0xF8, 0x7F, rng.randrange(128)]) + bytes([0x82, 0x40, 3]) + b"xyz"
            yield "unknown_fields", data + unknown, {}
        # Another message type's bytes where a NewOrder/CancelRequest/... is expected.
        report = orders_pb2.ExecutionReport(exec_id="x", account=account, seq=7)
        yield "wrong_type", report.SerializeToString(), {}
        yield (
            "wrong_type",
            orders_pb2.OrderAck(
                status=orders_pb2.ACK_STATUS_ACCEPTED, text="ack"
            ).SerializeToString(),
            {},
        )
        yield "random_bytes", rng.randbytes(rng.randint(0, 512)), {}
        yield "empty", b"", {}
        garbage = {f"X-Fuzz-{rng.randrange(1000)}": rng.randbytes(16).hex() for _ in range(8)}
        garbage[contract.HEADER_CORRELATION_ID] = rng.randbytes(24).hex()
        yield "garbage_headers", valid_order(rng, account).SerializeToString(), garbage


def huge(rng: random.Random, account: str, count: int) -> Iterator[Fuzz]:
    """Oversized payloads and headers, up to the server's max_payload."""
    for i in range(count):
        order = valid_order(rng, account)
        for k in range(30_000):
            order.tags[f"k{k}"] = "v" * 16
        yield "huge_repeated", order.SerializeToString(), {}
        size = MAX_PAYLOAD - 4096 - i * 1000  # room for headers and the signature
        yield "oversize", rng.randbytes(size), {}
        big_header = {contract.HEADER_CORRELATION_ID: "c" * 60_000, "X-Fuzz-Big": "b" * 60_000}
        yield "oversize_headers", valid_order(rng, account).SerializeToString(), big_header
