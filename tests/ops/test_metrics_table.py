"""The README's metrics table is the registry's (``schemas/metrics.toml``), regenerated."""

from __future__ import annotations

import pytest

from bridge_dev.metrics_registry import README, TABLE_BEGIN, load, readme_table, with_table


def test_readme_metrics_table_is_current() -> None:
    readme = README.read_text("utf-8")
    assert with_table(readme, readme_table(load())) == readme, (
        "stale: run `python -m bridge_dev.metrics_registry --write-readme` and commit README.md"
    )


def test_every_registry_metric_has_a_row() -> None:
    table = readme_table(load())
    for name in load().metrics:
        assert f"| `{name}` |" in table


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="metrics-table"):
        with_table("# README\n", readme_table(load()))
    with pytest.raises(ValueError, match="metrics-table"):
        with_table(f"{TABLE_BEGIN}\n{TABLE_BEGIN}\n<!-- metrics-table:end -->", "x")
