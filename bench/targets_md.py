"""The issue-15 rows' targets: market data into one consumer and config change -> applied,
each a ratio against its baseline measured in the same run."""

from __future__ import annotations

from collections.abc import Mapping

from bench.measure import Result


def _pct(r: Result, key: str) -> float | None:
    return r.summary().get(key)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f} ms"


def _rate(r: Result | None) -> str:
    return "-" if r is None or r.rate is None else f"{r.rate:,.0f}/s"


def _cpu(r: Result | None) -> str:
    return "-" if r is None or r.python_cpu_us is None else f"{r.python_cpu_us:.1f} us"


def rows(r: Mapping[str, Result]) -> list[tuple[str, float | None, str, bool | None, str]]:
    """(name, measured, goal, passed, detail) per target whose inputs were measured."""
    out: list[tuple[str, float | None, str, bool | None, str]] = []
    bridge, raw = r.get("bridge.md.latency.bridge"), r.get("baseline.md.latency.raw")
    if bridge is not None and raw is not None:
        for key, limit in (("p50", 1.25), ("p99", 2.0)):
            b, a = _pct(bridge, key), _pct(raw, key)
            ratio = _ratio(b, a)
            out.append(
                (
                    f"market data venue event -> iterator {key} vs raw subscription",
                    ratio,
                    f"<= {limit}x",
                    None if ratio is None else ratio <= limit,
                    f"bridge {_ms(b)} / raw {_ms(a)} (same bytes)",
                )
            )
    raw = r.get("baseline.md.throughput.raw")
    same, merged = r.get("bridge.md.throughput.bridge"), r.get("bridge.md.throughput.coalesced")
    if raw is not None and merged is not None:
        ratio = _ratio(merged.rate, raw.rate)
        out.append(
            (
                "market data updates/s: coalesced iterator vs raw per-message ceiling",
                ratio,
                ">= 1x",
                None if ratio is None else ratio >= 1.0,
                f"bridge {merged.rate or 0:,.0f}/s "
                f"({merged.extra.get('updates_per_message')} updates a message) / raw "
                f"{raw.rate or 0:,.0f}/s (one a message); same bytes, one a message: bridge "
                f"{_rate(same)} ({_cpu(same)} CPU per update), raw {_rate(raw)} ({_cpu(raw)})",
            )
        )
    floor = r.get("baseline.config.apply.raw")
    for side in ("engine", "client"):
        row = r.get(f"bridge.config.apply.{side}")
        if row is None or floor is None:
            continue
        p50, mx = _pct(row, "p50"), _pct(row, "max")
        out.append(
            (
                f"config change -> applied ({side}) p50 vs raw KV watch",
                _ratio(p50, _pct(floor, "p50")),
                "max < 1 s",
                None if mx is None else mx < 1_000_000,
                f"p50 {_ms(p50)}, max {_ms(mx)} / raw watch p50 {_ms(_pct(floor, 'p50'))}",
            )
        )
    return out
