"""The scaling phase's pure helpers (``bench.scaling``): one symbol per partition, the fair
shares the leases settle on, CPU per order, the ratio against the first row and the table."""

from __future__ import annotations

import pytest

# bench/ needs the dev extra (psutil, hdrhistogram); the minimum-versions check runs the unit
# tests with the package's own dependencies only.
pytest.importorskip("psutil")

from pathlib import Path

from bench.scaling import (
    COLUMNS,
    Row,
    count_lines,
    fair_shares,
    make_orders,
    markdown_table,
    per_order_us,
    row_from_json,
    spread_symbols,
    with_ratios,
)
from bridge import Side, contract
from bridge.partition import partition_of


def row(servers: str, engines: int, seconds: float, final: int = 1000) -> Row:
    return Row(
        servers=servers,
        engines=engines,
        nats_servers=1 if servers == "single" else 3,
        drain_orders=1000,
        drain_final=final,
        drain_seconds=seconds,
        acked_seconds=seconds,
        sync_count=100,
        sync_ack_us={"p50": 1500.0, "p99": 3250.0},
        drain_cpu_s={"engine": [0.05] * engines, "nats": [0.4], "python": [0.1]},
        sync_cpu_s={"engine": [0.01] * engines, "nats": [0.1], "python": [0.05]},
    )


def test_spread_symbols_gives_each_partition_its_own_symbol() -> None:
    symbols = spread_symbols()
    assert len(symbols) == contract.PARTITIONS
    assert [partition_of(s) for s in symbols] == list(range(contract.PARTITIONS))
    assert spread_symbols() == symbols  # deterministic


def test_spread_symbols_with_a_toy_partition_function() -> None:
    assert spread_symbols(3, "X", lambda s: int(s[1:]) % 3) == ["X0", "X1", "X2"]
    with pytest.raises(ValueError, match="no symbol"):
        spread_symbols(2, "X", lambda s: 0)


@pytest.mark.parametrize(
    ("engines", "shares"),
    [(1, [8]), (2, [4, 4]), (3, [3, 3, 2]), (5, [2, 2, 2, 1, 1]), (8, [1] * 8), (9, [1] * 8 + [0])],
)
def test_fair_shares(engines: int, shares: list[int]) -> None:
    assert fair_shares(engines) == shares
    assert sum(shares) == contract.PARTITIONS


def test_fair_shares_needs_an_engine() -> None:
    with pytest.raises(ValueError, match="at least one engine"):
        fair_shares(0)


def test_per_order_us() -> None:
    assert per_order_us([0.5, 0.25], 1000) == [500.0, 250.0]
    assert per_order_us([0.5], 0) == [None]


def test_orders_cover_every_symbol_on_both_sides() -> None:
    symbols = ["A", "B"]
    orders = make_orders("t", 4, symbols)
    assert [(o.symbol, o.side) for o in orders] == [
        ("A", Side.BUY),
        ("B", Side.BUY),
        ("A", Side.SELL),
        ("B", Side.SELL),
    ]
    assert len({o.client_order_id for o in orders}) == 4


def test_ratios_are_against_the_first_row() -> None:
    rows = with_ratios([row("single", 1, 2.0), row("single", 2, 1.0), row("cluster R3", 1, 4.0)])
    assert [r.ratio_vs_base for r in rows] == [1.0, 2.0, 0.5]
    assert rows[0].drain_rate == 500.0


def test_markdown_table() -> None:
    rows = with_ratios([row("single", 1, 2.0), row("cluster R3", 2, 4.0, final=900)])
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 4
    assert all(line.count("|") == len(COLUMNS) + 1 for line in lines)
    assert lines[2] == (
        "| single | 1 | 500 | 1.00x | 1.50 / 3.25 (n=100) | 0 / 0 | 50 | 400 | 100 | 1000 |"
    )
    # Several processes: the total, then each; a partial drain says so.
    assert "| 111 (56 + 56) |" in lines[3]
    assert "(900/1000 final)" in lines[3]


def test_row_json_has_per_order_costs() -> None:
    doc = row("single", 2, 2.0).to_json()
    assert doc["drain_rate_per_s"] == 500.0
    assert doc["drain_cpu_us_per_order_engine"] == [50.0, 50.0]
    assert doc["sync_cpu_us_per_order_nats"] == [1000.0]


def test_count_lines(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("x queued order not relayed\ny\nqueued order not relayed z\n", encoding="utf-8")
    b.write_text("queued order not relayed\n", encoding="utf-8")
    assert count_lines([a, b, tmp_path / "missing.log"], "queued order not relayed") == 3


def test_row_json_round_trip() -> None:
    r = with_ratios([row("cluster R3", 3, 2.0)])[0]
    assert row_from_json(r.to_json()) == r
