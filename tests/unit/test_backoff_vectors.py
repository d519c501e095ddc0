"""The backoff formula against the vectors the engine's tests check too
(``schemas/testdata/backoff.json``), so the two languages cannot drift apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.config import BridgeSettings
from bridge.retry import backoff_base_ms, backoff_delay

VECTORS = json.loads(
    (Path(__file__).parents[2] / "schemas" / "testdata" / "backoff.json").read_text("utf-8")
)
CASES: list[dict[str, Any]] = VECTORS["cases"]


def _id(case: dict[str, Any]) -> str:
    return f"{case['initial_delay_ms']}-{case['max_delay_ms']}-{case['failures']}"


def test_the_vectors_are_there() -> None:
    """A vector file that lost its cases must not pass as 'every case matched'."""
    assert len(CASES) >= 10
    assert VECTORS["jitter_ms"] > 0


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_base_delay_matches_exactly(case: dict[str, Any]) -> None:
    """base_delay_ms = min(max_delay_ms, initial_delay_ms * 2^failures), to the millisecond."""
    base = backoff_base_ms(case["initial_delay_ms"], case["max_delay_ms"], case["failures"])
    assert base == case["base_delay_ms"]


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_jittered_delay_stays_within_base_and_base_plus_jitter(case: dict[str, Any]) -> None:
    """The delay the client waits is the base plus a jitter in [0, jitter_ms]."""
    jitter = VECTORS["jitter_ms"]
    settings = BridgeSettings(
        reconnect_initial_delay_ms=case["initial_delay_ms"],
        reconnect_max_delay_ms=case["max_delay_ms"],
        reconnect_jitter_ms=jitter,
    )
    base_s = case["base_delay_ms"] / 1000
    for _ in range(20):
        delay = backoff_delay(settings, case["failures"])
        assert base_s <= delay <= base_s + jitter / 1000
