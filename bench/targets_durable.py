"""The issue-17 rows (durable at the disk's limit): their targets, and two summary tables that
put each row beside what bounds it, from the same run.

* "Synchronous ack and its floors": the sync ack (idle engine, back to back, concurrent
  submitters) beside the (d) TCP ping-pong and (a1) core-request floors, (a2) the durable floor,
  and the disk's own fsync / fdatasync histograms, so a missed goal can be attributed.
* "Queued path": orders/s achieved and latency of each queued row, with Python and engine CPU
  per order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.measure import Result

E2E_GOAL = 50_000
"""Orders/s drained end to end by one Python publisher (issue 17)."""
BURST_GOAL_MS = 10.0
"""The demo's 1,000-order burst, first publish -> last final, p50: "a few ms" (from ~400 ms)."""
ACK_P99_GOAL_MS = 1.0
"""Synchronous ack p99 with mutual TLS."""
PUBLISH_RATIO_GOAL = 0.9
"""enqueue_batch orders/s against raw nats-py publishing the same messages."""

Row = tuple[str, float | None, str, bool | None, str]


def _pct(r: Result | None, key: str) -> float | None:
    return None if r is None else r.summary().get(key)


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f} ms"


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} us"


def rows(r: Mapping[str, Result]) -> list[Row]:
    """(name, measured, goal, passed, detail) per target whose inputs were measured."""
    out: list[Row] = []
    e2e = r.get("bridge.queued.e2e_drain")
    if e2e is not None:
        out.append(
            (
                "queued end to end, one Python publisher: first publish -> last final",
                e2e.rate,
                f">= {E2E_GOAL:,} orders/s",
                None if e2e.rate is None else e2e.rate >= E2E_GOAL,
                f"{e2e.count:,}/{e2e.extra.get('orders', 0):,} final in {e2e.seconds:.2f} s; "
                f"published {e2e.extra.get('published_per_s', 0):,.0f}/s; CPU per order: "
                f"Python {_us(e2e.python_cpu_us)}, engine {_us(e2e.peer_cpu_us)}, "
                f"nats-server {_us(e2e.nats_cpu_us)}",
            )
        )
    burst = r.get("bridge.queued.burst")
    p50 = _pct(burst, "p50")
    if burst is not None and p50 is not None:
        out.append(
            (
                "demo burst (1,000 queued orders): first publish -> last final, p50",
                p50,
                f"<= {BURST_GOAL_MS:g} ms",
                p50 <= BURST_GOAL_MS * 1000,
                f"p50 {_ms(p50)}, max {_ms(_pct(burst, 'max'))} over {burst.count} bursts; "
                f"enqueue_batch returned after "
                f"{burst.extra.get('enqueue_batch_returned_ms_p50', 0):.1f} ms (p50)",
            )
        )
    pub, replay = r.get("bridge.queued.publish"), r.get("baseline.b.replay")
    if pub is not None and replay is not None and pub.rate and replay.rate:
        ratio = pub.rate / replay.rate
        out.append(
            (
                "queued publish vs (b') raw publish of the same messages",
                ratio,
                f">= {PUBLISH_RATIO_GOAL}x",
                ratio >= PUBLISH_RATIO_GOAL,
                f"bridge {pub.rate:,.0f} / raw {replay.rate:,.0f} orders/s; Python CPU per "
                f"order {_us(pub.python_cpu_us)} / {_us(replay.python_cpu_us)}; "
                f"{replay.extra.get('messages', 0):,} messages for {replay.count:,} orders",
            )
        )
    conc = r.get("bridge.sync.ack_concurrent.asyncio")
    p99 = _pct(conc, "p99")
    if conc is not None and p99 is not None:
        out.append(
            (
                f"sync order->ack p99, {conc.extra.get('concurrency')} concurrent submitters",
                p99,
                f"< {ACK_P99_GOAL_MS:g} ms",
                p99 < ACK_P99_GOAL_MS * 1000,
                f"p50 {_ms(_pct(conc, 'p50'))}, p99.9 {_ms(_pct(conc, 'p99.9'))}; "
                f"{conc.rate or 0:,.0f} orders/s; Python CPU {_us(conc.python_cpu_us)}/order",
            )
        )
    return out


FLOORS: tuple[tuple[str, str], ...] = (
    ("baseline.d.tcp_tls.asyncio", "(d) TCP+mTLS ping-pong, asyncio"),
    ("baseline.d.tcp_tls.uvloop", "(d) TCP+mTLS ping-pong, uvloop"),
    ("baseline.a1.nats_request.asyncio", "(a1) NATS core request, asyncio"),
    ("baseline.a1.nats_request.uvloop", "(a1) NATS core request, uvloop"),
    ("context.disk_fsync", "(ctx) 512 B append + fsync"),
    ("context.disk_fdatasync", "(ctx) 512 B append + fdatasync, store dir"),
    ("baseline.a2.js_answered.asyncio", "(a2) JetStream publish -> answer"),
    ("bridge.sync.ack.asyncio", "sync ack, idle engine, asyncio"),
    ("bridge.sync.ack.uvloop", "sync ack, idle engine, uvloop"),
    ("bridge.sync.ack_b2b.asyncio", "sync ack, back to back, asyncio"),
    ("bridge.sync.ack_concurrent.asyncio", "sync ack, concurrent submitters"),
)

QUEUED: tuple[str, ...] = (
    "baseline.b.js_publish",
    "baseline.b.replay",
    "bridge.queued.publish",
    "bridge.engine.drain",
    "bridge.queued.e2e_drain",
    "bridge.queued.burst",
)


def _lat(r: Result, key: str) -> str:
    v = r.summary().get(key)
    return "-" if v is None else f"{v / 1000:.3f}"


def _num(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def render(console: Console, results: Sequence[Result]) -> None:
    """The two summary tables (rows that were not measured are left out)."""
    r = {x.id: x for x in results}
    floors = Table(
        title="Synchronous ack and its floors, same run (ms; CPU in us per order)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("row", "n", "p50", "p90", "p99", "p99.9", "max", "orders/s", "py CPU"):
        floors.add_column(col, justify="left" if col == "row" else "right")
    for rid, label in FLOORS:
        row = r.get(rid)
        if row is None or not row.summary():
            continue
        rate = row.rate if rid.startswith("bridge.") else None
        floors.add_row(
            escape(label),
            str(row.count),
            *(_lat(row, k) for k in ("p50", "p90", "p99", "p99.9", "max")),
            _num(rate),
            _num(row.python_cpu_us),
        )
    console.print(floors)
    queued = Table(
        title="Queued path: orders/s achieved; latency in ms; CPU in us per order",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("row", "n", "orders/s", "final/s", "p50", "p99", "p99.9", "max"):
        queued.add_column(col, justify="left" if col == "row" else "right")
    for col in ("py CPU", "engine CPU", "notes"):
        queued.add_column(col, justify="left" if col == "notes" else "right")
    ids = list(QUEUED) + sorted(
        (x for x in r if x.startswith("bridge.queued.open_loop.")),
        key=lambda x: int(x.rsplit(".", 1)[1]),
    )
    for rid in ids:
        row = r.get(rid)
        if row is None:
            continue
        lat = bool(row.summary())
        final_rate = row.extra.get("completed_per_s") if "open_loop" in rid else None
        queued.add_row(
            escape(row.label),
            str(row.count),
            _num(row.rate) if rid != "bridge.queued.burst" else "-",
            _num(final_rate),
            *((_lat(row, k) for k in ("p50", "p99", "p99.9", "max")) if lat else ["-"] * 4),
            _num(row.python_cpu_us),
            _num(row.peer_cpu_us),
            escape(row.notes),
        )
    console.print(queued)
