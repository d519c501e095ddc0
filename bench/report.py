"""Targets (ratios against the baselines), the terminal table, the JSON file and the plot."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to a file
import matplotlib.pyplot as plt
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import targets_durable, targets_md
from bench.measure import Result


@dataclass(frozen=True)
class Target:
    """One goal of the issue: ``measured`` (a ratio or an absolute value) against ``goal``."""

    name: str
    measured: float | None
    goal: str
    passed: bool | None
    detail: str


def _by_id(results: Sequence[Result]) -> dict[str, Result]:
    return {r.id: r for r in results}


def _pct(r: Result | None, key: str) -> float | None:
    if r is None:
        return None
    return r.summary().get(key)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _check(
    name: str,
    measured: float | None,
    goal: str,
    ok: Callable[[float], bool],
    detail: str,
) -> Target:
    return Target(name, measured, goal, None if measured is None else ok(measured), detail)


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda x: x <= limit


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f} ms"


def targets(results: Sequence[Result]) -> list[Target]:
    """The issue's targets, computed from the results (missing inputs give ``passed=None``)."""
    r = _by_id(results)
    out: list[Target] = []
    for loop in ("asyncio", "uvloop"):
        ack = r.get(f"bridge.sync.ack.{loop}")
        a1 = r.get(f"baseline.a1.nats_request.{loop}")
        if ack is None or a1 is None:
            continue
        sfx = f" ({loop})"
        for key, limit in (("p50", 1.25), ("p99", 1.5)):
            b, a = _pct(ack, key), _pct(a1, key)
            out.append(
                _check(
                    f"sync order->ack {key} vs (a1) core request{sfx}",
                    _ratio(b, a),
                    f"<= {limit}x",
                    _at_most(limit),
                    f"bridge {_ms(b)} / a1 {_ms(a)}",
                )
            )
        b2b = r.get(f"bridge.sync.ack_b2b.{loop}")
        if b2b is not None:
            out.append(
                _check(
                    f"Python CPU per sync order vs (a1){sfx}",
                    _ratio(b2b.python_cpu_us, a1.python_cpu_us),
                    "<= 1.2x",
                    lambda x: x <= 1.2,
                    f"bridge {b2b.python_cpu_us or 0:.0f} us / a1 {a1.python_cpu_us or 0:.0f} us",
                )
            )
    ack = r.get("bridge.sync.ack.asyncio")
    fill = r.get("bridge.sync.fill.asyncio")
    a2 = r.get("baseline.a2.js_answered.asyncio")
    if ack is not None and a2 is not None:
        for key, limit in (("p50", 1.25), ("p99", 1.5)):
            b, a = _pct(ack, key), _pct(a2, key)
            out.append(
                _check(
                    f"sync order->ack {key} vs (a2) durable floor (same durability)",
                    _ratio(b, a),
                    f"<= {limit}x",
                    _at_most(limit),
                    f"bridge {_ms(b)} / a2 {_ms(a)}",
                )
            )
        b2b = r.get("bridge.sync.ack_b2b.asyncio")
        if b2b is not None:
            out.append(
                _check(
                    "Python CPU per sync order vs (a2) (same durability)",
                    _ratio(b2b.python_cpu_us, a2.python_cpu_us),
                    "<= 1.2x",
                    _at_most(1.2),
                    f"bridge {b2b.python_cpu_us or 0:.0f} us / a2 {a2.python_cpu_us or 0:.0f} us",
                )
            )
    if ack is not None:
        p99 = _pct(ack, "p99")
        out.append(
            _check(
                "sync order->ack p99 absolute",
                p99,
                "< 1 ms",
                lambda x: x < 1000,
                _ms(p99),
            )
        )
    if fill is not None:
        p99 = _pct(fill, "p99")
        out.append(
            _check(
                "sync order->first fill p99 absolute",
                p99,
                "<= 2 ms",
                lambda x: x <= 2000,
                _ms(p99),
            )
        )
    grpcs = [g for g in (r.get("baseline.c.grpc_aio"), r.get("baseline.c.grpc_blocking")) if g]
    if ack is not None and grpcs:
        for key in ("p50", "p99"):
            best = min(grpcs, key=lambda g: _pct(g, key) or float("inf"))
            b, g = _pct(ack, key), _pct(best, key)
            out.append(
                _check(
                    f"bridge sync order->ack beats gRPC at {key}",
                    _ratio(b, g),
                    "< 1x (faster)",
                    lambda x: x < 1.0,
                    f"bridge {_ms(b)} / gRPC {_ms(g)} "
                    f"({'blocking stub' if 'blocking' in best.id else 'grpc.aio'}, the faster)",
                )
            )
    pub, raw = r.get("bridge.queued.publish"), r.get("baseline.b.js_publish")
    if pub is not None and raw is not None:
        out.append(
            _check(
                "queued publish throughput vs (b) raw publish_async",
                _ratio(pub.rate, raw.rate),
                ">= 0.9x",
                lambda x: x >= 0.9,
                f"bridge {pub.rate or 0:,.0f}/s / raw {raw.rate or 0:,.0f}/s",
            )
        )
    cores = [
        c for c in (r.get("bridge.engine.core.market"), r.get("bridge.engine.core.cross")) if c
    ]
    if cores:
        slowest = min(cores, key=lambda c: c.rate or 0.0)
        out.append(
            _check(
                "engine consume-execute-report by itself (no I/O, 1 thread)",
                slowest.rate,
                ">= 50,000 orders/s",
                lambda x: x >= 50_000,
                ", ".join(f"{c.id.rsplit('.', 1)[1]} {c.rate or 0:,.0f}/s" for c in cores),
            )
        )
    out += [Target(*row) for row in targets_md.rows(r)]
    out += [Target(*row) for row in targets_durable.rows(r)]
    drain = r.get("bridge.engine.drain")
    if drain is not None:
        detail = f"{drain.rate or 0:,.0f} orders/s ({drain.count} orders)"
        if drain.nats_cpu_us is not None and raw is not None and raw.nats_cpu_us:
            detail += (
                f"; nats-server {drain.nats_cpu_us:.0f} us CPU/order vs"
                f" {raw.nats_cpu_us:.0f} us per stored message in (b)"
            )
        out.append(
            _check(
                "engine drain through JetStream (every write fsynced)",
                drain.rate,
                ">= 50,000 orders/s",
                lambda x: x >= 50_000,
                detail,
            )
        )
    return out


@dataclass(frozen=True)
class Cost:
    """What a feature costs, on vs off in the same run: ``ratio`` = on / off."""

    name: str
    on: float | None
    off: float | None
    unit: str
    ratio: float | None


def signing_costs(results: Sequence[Result]) -> list[Cost]:
    """Signing on vs off (``bench.bridge_paths.signing``): ack p50 and p99 on an idle engine,
    Python CPU per order back to back (and the engine's, which verifies when on)."""
    r = _by_id(results)
    ack_on, ack_off = r.get("bridge.signing.on.ack"), r.get("bridge.signing.off.ack")
    b2b_on, b2b_off = r.get("bridge.signing.on.ack_b2b"), r.get("bridge.signing.off.ack_b2b")
    out: list[Cost] = []
    if ack_on is not None and ack_off is not None:
        for key in ("p50", "p99"):
            on, off = _pct(ack_on, key), _pct(ack_off, key)
            out.append(Cost(f"sync order->ack {key}", on, off, "us", _ratio(on, off)))
    if b2b_on is not None and b2b_off is not None:
        for who, on, off in (
            ("Python", b2b_on.python_cpu_us, b2b_off.python_cpu_us),
            ("engine", b2b_on.peer_cpu_us, b2b_off.peer_cpu_us),
        ):
            out.append(Cost(f"{who} CPU per sync order", on, off, "us", _ratio(on, off)))
    return out


# --------------------------------------------------------------------------- terminal


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _lat(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:.3f}"


def render(console: Console, results: Sequence[Result], goals: Sequence[Target]) -> None:
    lat = Table(
        title="Latency in ms (closed loop, one at a time, unless 'offered'); CPU in us per op",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    lat.add_column("scenario", no_wrap=True)
    for col in ("loop", "n", "p50", "p90", "p99", "p99.9", "max"):
        lat.add_column(col, justify="left" if col == "loop" else "right")
    for col in ("py CPU", "Rust CPU", "nats CPU", "py RSS MB", "Rust RSS MB", "notes"):
        lat.add_column(col, justify="left" if col == "notes" else "right")
    for r in results:
        if r.kind != "latency":
            continue
        s = r.summary()
        lat.add_row(
            escape(r.label),
            r.loop,
            str(r.count),
            *(_lat(s.get(k)) for k in ("p50", "p90", "p99", "p99.9", "max")),
            _num(r.python_cpu_us),
            _num(r.peer_cpu_us),
            _num(r.nats_cpu_us),
            _num(r.python_rss_mb, "{:.1f}"),
            _num(r.peer_rss_mb, "{:.1f}"),
            escape(r.notes),
        )
    console.print(lat)
    thr = Table(title="Throughput; CPU in us per order", title_justify="left", box=box.SIMPLE_HEAD)
    thr.add_column("scenario", no_wrap=True)
    for col in ("n", "seconds", "per second", "py CPU", "Rust CPU"):
        thr.add_column(col, justify="right")
    thr.add_column("nats CPU", justify="right")
    thr.add_column("py RSS MB", justify="right")
    thr.add_column("Rust RSS MB", justify="right")
    thr.add_column("notes")
    for r in results:
        if r.kind != "throughput":
            continue
        thr.add_row(
            escape(r.label),
            str(r.count),
            f"{r.seconds:.2f}",
            _num(r.rate, "{:,.0f}"),
            _num(r.python_cpu_us),
            _num(r.peer_cpu_us),
            _num(r.nats_cpu_us),
            _num(r.python_rss_mb, "{:.1f}"),
            _num(r.peer_rss_mb, "{:.1f}"),
            escape(r.notes),
        )
    console.print(thr)
    tgt = Table(title="Targets", title_justify="left", box=box.SIMPLE_HEAD)
    tgt.add_column("target", no_wrap=True)
    for col in ("measured", "goal", "result", "numbers"):
        tgt.add_column(col, justify="right" if col == "measured" else "left")
    for t in goals:
        if t.measured is None:
            shown = "-"
        elif t.goal.endswith(" ms"):
            shown = _ms(t.measured)
        elif t.goal.endswith("/s"):
            shown = f"{t.measured:,.0f}/s"
        else:
            shown = f"{t.measured:.3f}x"
        verdict = {True: "[green]PASS[/green]", False: "[red]MISS[/red]", None: "n/a"}[t.passed]
        tgt.add_row(escape(t.name), shown, escape(t.goal), verdict, escape(t.detail))
    console.print(tgt)
    targets_durable.render(console, results)
    costs = signing_costs(results)
    if costs:
        sig = Table(
            title="Signing cost: on / off, same run (ABBA legs)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        for col in ("measure", "on", "off", "on/off"):
            sig.add_column(col, justify="left" if col == "measure" else "right")
        for c in costs:
            as_ms = c.name.startswith("sync")
            fmt = _lat if as_ms else _num
            unit = " ms" if as_ms else " us"
            sig.add_row(
                escape(c.name),
                fmt(c.on) + ("" if c.on is None else unit),
                fmt(c.off) + ("" if c.off is None else unit),
                _num(c.ratio, "{:.3f}x"),
            )
        console.print(sig)


# --------------------------------------------------------------------------- files


def write_json(
    path: Path,
    meta: dict[str, Any],
    results: Sequence[Result],
    goals: Sequence[Target],
    scaling: dict[str, Any] | None = None,
) -> None:
    """Atomically (``<name>.tmp`` + rename) write the run's results (and, under ``scaling``,
    the partitioned engines' figures of :mod:`bench.scaling`)."""
    doc: dict[str, Any] = {
        "meta": meta,
        "scenarios": [r.to_json() for r in results],
        "targets": [asdict(t) for t in goals],
        "signing_costs": [asdict(c) for c in signing_costs(results)],
    }
    if scaling is not None:
        doc["scaling"] = scaling
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


PLOTTED: tuple[tuple[str, str], ...] = (
    ("bridge.sync.ack.asyncio", "bridge sync order->ack (asyncio)"),
    ("bridge.sync.ack.uvloop", "bridge sync order->ack (uvloop)"),
    ("bridge.sync.fill.asyncio", "bridge sync order->first fill (asyncio)"),
    ("bridge.sync.ack_b2b.asyncio", "bridge sync order->ack, back to back"),
    ("bridge.sync.ack_concurrent.asyncio", "bridge sync order->ack, concurrent submitters"),
    ("baseline.a1.nats_request.asyncio", "(a1) NATS core request/echo"),
    ("baseline.a2.js_answered.asyncio", "(a2) JetStream publish + consumer answer"),
    ("baseline.c.grpc_aio", "(c) gRPC grpc.aio unary/tonic"),
    ("baseline.c.grpc_blocking", "(c') gRPC blocking stub/tonic"),
    ("baseline.d.tcp_tls.asyncio", "(d) TCP+mTLS ping-pong/tokio"),
    ("bridge.queued.open_loop.250", "bridge queued order->final, open loop 250/s"),
    ("context.disk_fsync", "(context) disk: 512 B append + fsync"),
    ("context.disk_fdatasync", "(context) disk: 512 B append + fdatasync, store dir"),
)
_TICKS = ((1.0, "0%"), (10.0, "90%"), (100.0, "99%"), (1000.0, "99.9%"), (10000.0, "99.99%"))


def write_plot(path: Path, results: Sequence[Result], title: str) -> None:
    """HdrHistogram-style percentile plot: x = 1/(1-percentile) on a log axis, y = latency."""
    by_id = _by_id(results)
    fig, ax = plt.subplots(figsize=(13, 6.5), dpi=110)
    for rid, label in PLOTTED:
        r = by_id.get(rid)
        if r is None or r.histogram is None or r.histogram.get_total_count() == 0:
            continue
        xs: list[float] = []
        ys: list[float] = []
        for step in r.histogram.get_percentile_iterator(5):
            level = float(step.percentile_level_iterated_to)
            if level >= 100.0:
                break
            xs.append(1.0 / (1.0 - level / 100.0))
            ys.append(step.value_iterated_to / 1000.0)
        xs.append(xs[-1] * 1.5 if xs else 1.0)
        ys.append(r.histogram.get_max_value() / 1000.0)
        bridge = r.group == "bridge"
        ax.plot(
            xs,
            ys,
            label=f"{label} (n={r.count})",
            linewidth=2.2 if bridge else 1.4,
            linestyle="-" if bridge else (":" if rid.startswith("context") else "--"),
            color="black" if rid.startswith("context") else None,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([t for t, _ in _TICKS], [lbl for _, lbl in _TICKS])
    ax.set_xlim(1, None)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
