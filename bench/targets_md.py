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


def rows(r: Mapping[str, Result]) -> list[tuple[str, float | None, str, bool | None, str]]:
    """(name, measured, goal, passed, detail) per target whose inputs were measured."""
    out: list[tuple[str, float | None, str, bool | None, str]] = []
    bridge, raw = r.get("bridge.md.latency.bridge"), r.get("baseline.md.latency.raw")
    if bridge is not None and raw is not None:
        for key in ("p50", "p99"):
            b, a = _pct(bridge, key), _pct(raw, key)
            ratio = _ratio(b, a)
            out.append(
                (
                    f"market data venue event -> iterator {key} vs raw subscription",
                    ratio,
                    "report (same bytes)",
                    None,
                    f"bridge {_ms(b)} / raw {_ms(a)}",
                )
            )
    raw = r.get("baseline.md.throughput.raw")
    same, merged = r.get("bridge.md.throughput.bridge"), r.get("bridge.md.throughput.coalesced")
    if raw is not None and same is not None:
        ratio = _ratio(same.rate, raw.rate)
        out.append(
            (
                "market data updates/s, same bytes: iterator vs raw subscription",
                ratio,
                "report",
                None,
                f"bridge {same.rate or 0:,.0f}/s / raw {raw.rate or 0:,.0f}/s; consumer CPU "
                f"per update bridge {same.python_cpu_us or 0:.1f} us, "
                f"raw {raw.python_cpu_us or 0:.1f} us",
            )
        )
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
                f"{raw.rate or 0:,.0f}/s (one a message)",
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
