"""The metrics registry ``schemas/metrics.toml`` as data, and what the ops checks derive from it.

- :func:`load`: every metric (name, side, type, label names, help).
- :func:`promql_metric_names`: the metric names a PromQL expression reads (parsed by
  ``promql-parser``; Grafana's ``$__rate_interval`` and friends are substituted first), and
  :func:`registry_name`, which maps a series name back to its registry metric (``_bucket``,
  ``_sum`` and ``_count`` of a histogram) or says it is Prometheus-made (``up``, ``scrape_*``).
- :func:`readme_table`: the README's metrics table (between the markers
  ``<!-- metrics-table:begin -->`` and ``<!-- metrics-table:end -->``).
  ``python -m bridge_dev.metrics_registry --write-readme`` rewrites it;
  ``tests/ops/test_metrics_table.py`` fails when it is stale.

Pure functions apart from reading the files named by their arguments.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser

REPO = Path(__file__).resolve().parents[1]
REGISTRY = REPO / "schemas" / "metrics.toml"
README = REPO / "README.md"
TABLE_BEGIN = "<!-- metrics-table:begin (python -m bridge_dev.metrics_registry --write-readme) -->"
TABLE_END = "<!-- metrics-table:end -->"

# Series Prometheus makes itself for every target; never in the registry.
PROMETHEUS_MADE = re.compile(r"^(up|scrape_[a-z_]+)$")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# Grafana's built-in variables that stand where PromQL wants a duration.
_GRAFANA_DURATIONS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__\w+\}")


@dataclass(frozen=True)
class Metric:
    """One metric of the registry."""

    name: str
    side: str
    type: str
    labels: tuple[str, ...]
    help: str
    buckets: str | None = None


@dataclass(frozen=True)
class Registry:
    """The metrics and the declared values of their labels."""

    metrics: dict[str, Metric]
    label_values: dict[str, list[str] | str]
    buckets: dict[str, list[float]]

    def side(self, side: str) -> dict[str, Metric]:
        """The metrics one side (``client`` or ``engine``) exports."""
        return {name: m for name, m in self.metrics.items() if m.side == side}


def load(path: Path = REGISTRY) -> Registry:
    """Parse the registry file."""
    data: dict[str, Any] = tomllib.loads(path.read_text("utf-8"))
    metrics = {
        name: Metric(name, m["side"], m["type"], tuple(m["labels"]), m["help"], m.get("buckets"))
        for name, m in data["metrics"].items()
    }
    return Registry(metrics, dict(data["labels"]), dict(data["buckets"]))


def promql_metric_names(expr: str) -> set[str]:
    """Every metric name the expression selects (raises ValueError if it does not parse)."""
    parsed = promql_parser.parse(_GRAFANA_DURATIONS.sub("5m", expr))
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(parsed, visit)
    return names


def registry_name(series: str, registry: Registry) -> str | None:
    """The registry metric a series name belongs to; None for Prometheus-made series.

    Raises KeyError when the series is neither (a metric nobody exports).
    """
    if PROMETHEUS_MADE.match(series):
        return None
    if series in registry.metrics:
        return series
    for suffix in HISTOGRAM_SERIES:
        base = series.removesuffix(suffix)
        metric = registry.metrics.get(base)
        if base != series and metric is not None and metric.type == "histogram":
            return base
    raise KeyError(series)


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target of a Grafana dashboard JSON model (rows included)."""
    exprs: list[str] = []
    for panel in dashboard.get("panels", []):
        for inner in (panel, *panel.get("panels", [])):
            exprs.extend(t["expr"] for t in inner.get("targets", []) if t.get("expr"))
    return exprs


def rule_exprs(rules: dict[str, Any]) -> list[str]:
    """The expression of every rule of a Prometheus rule file (parsed YAML)."""
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _labels_cell(metric: Metric, registry: Registry) -> str:
    cells = []
    for label in metric.labels:
        # a label whose values differ by side is declared as `<side>_<label>` (outcome)
        values = registry.label_values.get(
            f"{metric.side}_{label}", registry.label_values.get(label)
        )
        if isinstance(values, list):
            cells.append(f"`{label}` ({', '.join(values)})")
        elif isinstance(values, str) and re.fullmatch(r"[A-Z][A-Za-z]+", values):
            cells.append(f"`{label}` (bridge.v1.{values} names, lowercase, no prefix)")
        elif isinstance(values, str):
            cells.append(f"`{label}` ({values})")
        else:
            cells.append(f"`{label}`")
    return "; ".join(cells) or "\N{EN DASH}"


def readme_table(registry: Registry) -> str:
    """The README's metrics table, markers included."""
    lines = [
        TABLE_BEGIN,
        "| metric | side | type | labels | meaning |",
        "|---|---|---|---|---|",
    ]
    for m in registry.metrics.values():
        meaning = m.help.replace("|", "\\|")
        if m.buckets:
            meaning += f" Buckets: `{m.buckets}`."
        lines.append(
            f"| `{m.name}` | {m.side} | {m.type} | {_labels_cell(m, registry)} | {meaning} |"
        )
    lines.append("")
    for name, bounds in registry.buckets.items():
        lines.append(f"- buckets `{name}` (seconds): {', '.join(f'{b:g}' for b in bounds)}")
    lines.append(TABLE_END)
    return "\n".join(lines)


def with_table(readme: str, table: str) -> str:
    """The README text with its metrics table replaced (the markers must be there once)."""
    begin, end = readme.find(TABLE_BEGIN), readme.find(TABLE_END)
    if begin < 0 or end < begin or readme.count(TABLE_BEGIN) != 1:
        raise ValueError(f"README needs exactly one {TABLE_BEGIN!r} ... {TABLE_END!r} block")
    return readme[:begin] + table + readme[end + len(TABLE_END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print or write the README's metrics table.")
    parser.add_argument("--write-readme", action="store_true", help="rewrite it in README.md")
    args = parser.parse_args(argv)
    table = readme_table(load())
    if not args.write_readme:
        print(table)
        return 0
    README.write_text(with_table(README.read_text("utf-8"), table), "utf-8")
    print(f"updated the metrics table in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
