"""The partition function against the vectors the engine's tests check too
(``schemas/testdata/partitions.json``, computed with Go's hash/fnv, not by this code), so the two
languages, and nats-server's ``partition()`` mapping, cannot drift apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge import contract
from bridge.partition import fnv1a_32, partition_id, partition_of

VECTORS = json.loads(
    (Path(__file__).parents[2] / "schemas" / "testdata" / "partitions.json").read_text("utf-8")
)
CASES: list[dict[str, Any]] = VECTORS["cases"]
PUBLISHED: list[dict[str, str]] = VECTORS["published_fnv1a_32"]


def test_the_vectors_are_there_and_cover_every_partition() -> None:
    """A vector file that lost its cases must not pass as 'every case matched'."""
    assert VECTORS["partitions"] == contract.PARTITIONS == 8
    assert len(CASES) >= 20
    assert {c["partition"] for c in CASES} == set(range(contract.PARTITIONS))
    # ... and the one-token symbols alone too, so the real-server test reaches every partition
    one_token = {c["partition"] for c in CASES if c["single_token"]}
    assert one_token == set(range(contract.PARTITIONS))
    lengths = {len(c["symbol"]) for c in CASES}
    assert min(lengths) == 1
    assert max(lengths) == contract.MAX_SYMBOL_BYTES
    for char in "./-_":
        assert any(char in c["symbol"] for c in CASES), char


@pytest.mark.parametrize("case", PUBLISHED, ids=lambda c: repr(c["input"]))
def test_fnv1a_32_matches_the_published_values(case: dict[str, str]) -> None:
    assert fnv1a_32(case["input"].encode("utf-8")) == int(case["fnv1a_32"], 16)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["symbol"])
def test_every_vector(case: dict[str, Any]) -> None:
    """The hash, the partition and the partition's engine id, exactly."""
    symbol = case["symbol"]
    assert fnv1a_32(symbol.encode("utf-8")) == int(case["fnv1a_32"], 16)
    assert partition_of(symbol) == case["partition"]
    assert partition_id(case["partition"]) == case["partition_id"]
    assert case["single_token"] == ("." not in symbol)


def test_partition_ids_and_lease_keys() -> None:
    assert [partition_id(p) for p in range(contract.PARTITIONS)] == [f"p{p}" for p in range(8)]
    assert contract.lease_partition_key(str(partition_of("AAPL"))) == "partition.3"


@pytest.mark.parametrize("partition", [-1, contract.PARTITIONS])
def test_a_partition_out_of_range_has_no_id(partition: int) -> None:
    with pytest.raises(ValueError, match=r"not in 0\.\.7"):
        partition_id(partition)
