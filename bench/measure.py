"""Histograms and result records.

Latencies are recorded in microseconds in an HdrHistogram (1 us .. 10 min, 3 significant
digits); percentiles come from the histogram, never from hand-rolled code.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hdrh.histogram import HdrHistogram

from bench.procs import CpuMeter
from bench.profile import Budget

LOWEST_US = 1
HIGHEST_US = 600_000_000
SIGNIFICANT_DIGITS = 3

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_ns(hist: HdrHistogram, elapsed_ns: int) -> None:
    """Record an interval measured with ``time.perf_counter_ns()`` (as whole microseconds)."""
    hist.record_value(min(HIGHEST_US, max(LOWEST_US, elapsed_ns // 1000)))


@dataclass
class Timed:
    """A closed loop's measurements: latencies, operations done, CPU over the loop."""

    histogram: HdrHistogram
    count: int
    meter: CpuMeter


async def closed_loop(
    op: Callable[[int], Awaitable[object]], budget: Budget, pids: dict[str, int]
) -> Timed:
    """``op(i)`` for i < ``budget.warmup`` unmeasured, then one at a time, timed, until
    ``budget.count`` operations or ``budget.seconds`` have passed; CPU of ``pids`` metered."""
    for i in range(budget.warmup):
        await op(i)
    hist = new_histogram()
    count = 0
    with CpuMeter(pids) as meter:
        deadline = time.perf_counter() + budget.seconds
        for i in range(budget.warmup, budget.warmup + budget.count):
            t0 = time.perf_counter_ns()
            await op(i)
            record_ns(hist, time.perf_counter_ns() - t0)
            count += 1
            if time.perf_counter() > deadline:
                break
    return Timed(hist, count, meter)


def closed_loop_blocking(
    op: Callable[[int], object], budget: Budget, pids: dict[str, int]
) -> Timed:
    """:func:`closed_loop` for a blocking ``op`` (no event loop)."""
    for i in range(budget.warmup):
        op(i)
    hist = new_histogram()
    count = 0
    with CpuMeter(pids) as meter:
        deadline = time.perf_counter() + budget.seconds
        for i in range(budget.warmup, budget.warmup + budget.count):
            t0 = time.perf_counter_ns()
            op(i)
            record_ns(hist, time.perf_counter_ns() - t0)
            count += 1
            if time.perf_counter() > deadline:
                break
    return Timed(hist, count, meter)


def summary_us(hist: HdrHistogram) -> dict[str, float]:
    """count, percentiles, max and mean (microseconds) of a histogram."""
    out: dict[str, float] = {"count": float(hist.get_total_count())}
    for name, pct in PERCENTILES:
        out[name] = float(hist.get_value_at_percentile(pct))
    out["max"] = float(hist.get_max_value())
    out["mean"] = float(hist.get_mean_value())
    return out


Kind = Literal["latency", "throughput"]


@dataclass
class Result:
    """One row of the benchmark: a latency distribution or a throughput, and its costs."""

    id: str
    label: str
    group: Literal["bridge", "baseline"]
    kind: Kind
    loop: str = "asyncio"
    histogram: HdrHistogram | None = None
    count: int = 0
    seconds: float = 0.0
    rate: float | None = None
    """Operations per second (throughput rows; achieved rate of open-loop rows)."""
    python_cpu_us: float | None = None
    peer_cpu_us: float | None = None
    """CPU per operation of the Rust side: the engine or the baseline server."""
    nats_cpu_us: float | None = None
    peer_rss_mb: float | None = None
    python_rss_mb: float | None = None
    """Peak RSS of the Python process while the row was measured."""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def add_costs(self, meter: CpuMeter, count: int) -> None:
        self.python_cpu_us = meter.per_op_us(count)
        self.peer_cpu_us = meter.per_op_us(count, "peer")
        self.nats_cpu_us = meter.per_op_us(count, "nats")
        if meter.python_peak_rss:
            self.python_rss_mb = meter.python_peak_rss / (1024 * 1024)

    @classmethod
    def throughput(
        cls,
        meter: CpuMeter,
        count: int,
        *,
        id: str,
        label: str,
        group: Literal["bridge", "baseline"],
        notes: str = "",
        extra: dict[str, Any] | None = None,
    ) -> Result:
        """The row of ``count`` operations over the metered wall time, with their CPU costs."""
        wall = meter.wall_s
        res = cls(
            id=id,
            label=label,
            group=group,
            kind="throughput",
            count=count,
            seconds=wall,
            rate=count / wall if wall > 0 else None,
            notes=notes,
            extra=extra or {},
        )
        res.add_costs(meter, count)
        return res

    @classmethod
    def latency(
        cls,
        timed: Timed,
        *,
        id: str,
        label: str,
        group: Literal["bridge", "baseline"],
        loop: str = "asyncio",
        notes: str = "",
        extra: dict[str, Any] | None = None,
        costs: bool = True,
    ) -> Result:
        """The row of a closed loop (with its CPU costs unless ``costs`` is False)."""
        wall = timed.meter.wall_s
        res = cls(
            id=id,
            label=label,
            group=group,
            kind="latency",
            loop=loop,
            histogram=timed.histogram,
            count=timed.count,
            seconds=wall,
            rate=timed.count / wall if wall > 0 else None,
            notes=notes,
            extra=extra or {},
        )
        if costs:
            res.add_costs(timed.meter, timed.count)
        return res

    def summary(self) -> dict[str, float]:
        if self.histogram is None or self.histogram.get_total_count() == 0:
            return {}
        return summary_us(self.histogram)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "group": self.group,
            "kind": self.kind,
            "loop": self.loop,
            "count": self.count,
            "seconds": round(self.seconds, 6),
            "rate_per_s": _round(self.rate),
            "python_cpu_us_per_op": _round(self.python_cpu_us),
            "peer_cpu_us_per_op": _round(self.peer_cpu_us),
            "nats_server_cpu_us_per_op": _round(self.nats_cpu_us),
            "peer_peak_rss_mb": _round(self.peer_rss_mb),
            "python_peak_rss_mb": _round(self.python_rss_mb),
            "notes": self.notes,
            "extra": self.extra,
        }
        if self.histogram is not None:
            out["latency_us"] = self.summary()
            out["hdr_histogram"] = self.histogram.encode().decode("ascii")
        return out


def result_from_json(doc: dict[str, Any]) -> Result:
    """The inverse of :meth:`Result.to_json` (histogram decoded; CPU figures as rounded)."""
    encoded = doc.get("hdr_histogram")
    return Result(
        id=doc["id"],
        label=doc["label"],
        group=doc["group"],
        kind=doc["kind"],
        loop=doc["loop"],
        histogram=HdrHistogram.decode(encoded) if encoded else None,
        count=doc["count"],
        seconds=doc["seconds"],
        rate=doc["rate_per_s"],
        python_cpu_us=doc["python_cpu_us_per_op"],
        peer_cpu_us=doc["peer_cpu_us_per_op"],
        nats_cpu_us=doc["nats_server_cpu_us_per_op"],
        peer_rss_mb=doc["peer_peak_rss_mb"],
        python_rss_mb=doc.get("python_peak_rss_mb"),
        notes=doc["notes"],
        extra=doc["extra"],
    )


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def merge_throughput(parts: list[Result]) -> Result:
    """One throughput row from repeated runs of the same scenario: total operations over total
    time; CPU per operation weighted by each run's count; ``extra`` counters (all numeric)
    summed, and the runs' own rates."""
    first = parts[0]
    count = sum(p.count for p in parts)
    seconds = sum(p.seconds for p in parts)

    def weighted(values: list[float | None]) -> float | None:
        known = [(v, p.count) for v, p in zip(values, parts, strict=True) if v is not None]
        if count == 0 or len(known) < len(parts):
            return None
        return sum(v * n for v, n in known) / count

    return Result(
        id=first.id,
        label=first.label,
        group=first.group,
        kind="throughput",
        loop=first.loop,
        count=count,
        seconds=seconds,
        rate=count / seconds if seconds > 0 else None,
        python_cpu_us=weighted([p.python_cpu_us for p in parts]),
        peer_cpu_us=weighted([p.peer_cpu_us for p in parts]),
        nats_cpu_us=weighted([p.nats_cpu_us for p in parts]),
        python_rss_mb=max((p.python_rss_mb for p in parts if p.python_rss_mb), default=None),
        notes=first.notes,
        extra={
            **{k: sum(p.extra.get(k, 0) for p in parts) for k in first.extra},  # counters
            "runs_per_s": [round(p.rate or 0.0, 1) for p in parts],
        },
    )


def merge_latency(parts: list[Result], *, id: str, label: str, notes: str = "") -> Result:
    """One latency row from repeated runs of the same scenario (e.g. the legs of an ABBA
    comparison): the histograms added, CPU per operation weighted by each run's count."""
    first = parts[0]
    hist = new_histogram()
    for p in parts:
        if p.histogram is not None:
            hist.add(p.histogram)
    count = sum(p.count for p in parts)
    seconds = sum(p.seconds for p in parts)

    def weighted(values: list[float | None]) -> float | None:
        known = [(v, p.count) for v, p in zip(values, parts, strict=True) if v is not None]
        if count == 0 or len(known) < len(parts):
            return None
        return sum(v * n for v, n in known) / count

    return Result(
        id=id,
        label=label,
        group=first.group,
        kind="latency",
        loop=first.loop,
        histogram=hist,
        count=count,
        seconds=seconds,
        rate=count / seconds if seconds > 0 else None,
        python_cpu_us=weighted([p.python_cpu_us for p in parts]),
        peer_cpu_us=weighted([p.peer_cpu_us for p in parts]),
        nats_cpu_us=weighted([p.nats_cpu_us for p in parts]),
        python_rss_mb=max((p.python_rss_mb for p in parts if p.python_rss_mb), default=None),
        notes=notes or first.notes,
        extra={"runs": len(parts), **first.extra},
    )
