"""``bridge top``: a live terminal view for an operator without Grafana, read from the metrics
endpoints: per engine its health (``/readyz``), order and report rates, rejects, ORDERS consumer
lag and fullness, stage latency p50/p99; per orchestrator (its ``/metrics``, e.g. served by
``bridge.observability.serve``) order rates by path and outcome, order -> ack and order -> first
report p50/p99, queued publishes in flight. Rates and percentiles cover the last interval
(percentiles: since start until something new is observed). Needs the ``top`` extra (rich).
``--once`` prints one frame (two scrapes ``--interval`` apart) and exits."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import click

from bridge import contract
from bridge.cli._common import CommandFailed, engine_url_option, http_get
from bridge.cli._metrics import Scrape, rate, scrape, select, total, window_quantile

if TYPE_CHECKING:
    from rich.console import Group

ENGINE = "bridge_engine_"
CLIENT = "bridge_client_"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def _per_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.2f}"


def _readiness(url: str, timeout: float) -> str:
    status, body = http_get(f"{url.rstrip('/')}/readyz", timeout)
    if status is None:
        return f"DOWN ({body})"
    try:
        cond = json.loads(body)
        detail = " ".join(f"{k}={v}" for k, v in cond.items() if k != "ready")
    except (ValueError, AttributeError):
        detail = body.strip()[:60]
    return f"{'ready' if status == 200 else 'NOT READY'} {detail}".strip()


def engine_rows(prev: Scrape | None, cur: Scrape, health: str) -> list[tuple[str, str]]:
    """(what, value) lines of one engine."""
    rows = [("health", health)]
    if cur.error:
        return [*rows, ("metrics", cur.error)]
    s = cur.samples
    orders = f"{ENGINE}orders_total"
    for path in ("sync", "queued"):
        by = " ".join(
            f"{o}={_per_s(rate(prev, cur, orders, path=path, outcome=o))}"
            for o in ("accepted", "rejected", "duplicate")
        )
        rows.append((f"orders/s {path}", by))
    rows.append(("reports/s", _per_s(rate(prev, cur, f"{ENGINE}reports_total"))))
    rows.append(("rejects/s", _per_s(rate(prev, cur, f"{ENGINE}rejects_total"))))
    rows.append(
        (
            "ORDERS consumer lag",
            f"pending={_num(total(s, f'{ENGINE}consumer_pending_messages'))} "
            f"ack_pending={_num(total(s, f'{ENGINE}consumer_ack_pending_messages'))} "
            f"redelivered={_num(total(s, f'{ENGINE}redeliveries_total'))}",
        )
    )
    for stream in (contract.ORDERS_STREAM, contract.EXECUTIONS_STREAM):
        msgs = total(s, f"{ENGINE}stream_messages", stream=stream)
        cap = total(s, f"{ENGINE}stream_max_messages", stream=stream)
        fill = f" ({100 * msgs / cap:.1f}% of {_num(cap)})" if cap > 0 else ""
        rows.append((f"{stream} messages", f"{_num(msgs)}{fill}"))
    stages = sorted(
        {dict(k).get("stage", "") for k in select(s, f"{ENGINE}stage_seconds_count")} - {""}
    )
    for stage in stages:
        name = f"{ENGINE}stage_seconds"
        p50 = window_quantile(0.5, prev, cur, name, stage=stage)
        p99 = window_quantile(0.99, prev, cur, name, stage=stage)
        rows.append((f"stage {stage} ms", f"p50={_ms(p50)} p99={_ms(p99)}"))
    return rows


def client_rows(prev: Scrape | None, cur: Scrape) -> list[tuple[str, str]]:
    """(what, value) lines of one orchestrator process."""
    if cur.error:
        return [("metrics", cur.error)]
    s = cur.samples
    rows = [
        ("connected", _num(total(s, f"{CLIENT}connected"))),
        ("queued in flight", _num(total(s, f"{CLIENT}queued_in_flight"))),
    ]
    for path in ("sync", "queued"):
        outcomes = sorted(
            {dict(k).get("outcome", "") for k in select(s, f"{CLIENT}orders_total", path=path)}
        )
        by = " ".join(
            f"{o}={_per_s(rate(prev, cur, f'{CLIENT}orders_total', path=path, outcome=o))}"
            for o in outcomes
            if o
        )
        rows.append((f"orders/s {path}", by or "-"))
        for what, metric in (
            ("ack", "ack_latency_seconds"),
            ("first report", "first_report_latency_seconds"),
        ):
            name = f"{CLIENT}{metric}"
            p50 = window_quantile(0.5, prev, cur, name, path=path)
            p99 = window_quantile(0.99, prev, cur, name, path=path)
            rows.append((f"{path} order->{what} ms", f"p50={_ms(p50)} p99={_ms(p99)}"))
    rows.append(("reconnects", _num(total(s, f"{CLIENT}reconnects_total"))))
    return rows


def frame(
    engines: list[tuple[Scrape | None, Scrape, str]],
    clients: list[tuple[Scrape | None, Scrape]],
) -> Group:
    from rich.console import Group
    from rich.table import Table

    tables = []
    for prev, cur, health in engines:
        table = Table(title=f"engine {cur.url}", show_header=False, title_justify="left")
        for what, value in engine_rows(prev, cur, health):
            table.add_row(what, value)
        tables.append(table)
    for cprev, ccur in clients:
        table = Table(title=f"orchestrator {ccur.url}", show_header=False, title_justify="left")
        for what, value in client_rows(cprev, ccur):
            table.add_row(what, value)
        tables.append(table)
    return Group(*tables)


@click.command()
@engine_url_option
@click.option(
    "--client-url",
    "client_urls",
    multiple=True,
    metavar="URL",
    help="An orchestrator's metrics endpoint (e.g. http://127.0.0.1:9465/metrics); repeatable.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between two scrapes (the window of the rates).",
)
@click.option("--once", is_flag=True, help="Print one frame (two scrapes) and exit.")
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds per scrape.")
def top(
    engine_urls: tuple[str, ...],
    client_urls: tuple[str, ...],
    interval: float,
    once: bool,
    timeout: float,
) -> None:
    """Live view of order rates, latency percentiles, consumer lag and engine health, from
    the engines' and orchestrators' /metrics endpoints. Ctrl-C stops."""
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError as exc:
        raise CommandFailed(
            "bridge top needs rich: pip install 'nats-execution-bridge[top]'"
        ) from exc

    def take(
        prev_e: list[Scrape] | None, prev_c: list[Scrape] | None
    ) -> tuple[list[Scrape], list[Scrape], Group]:
        cur_e = [scrape(u, timeout) for u in engine_urls]
        cur_c = [scrape(u, timeout) for u in client_urls]
        health = [_readiness(u, timeout) for u in engine_urls]
        view = frame(
            [(prev_e[i] if prev_e else None, c, health[i]) for i, c in enumerate(cur_e)],
            [(prev_c[i] if prev_c else None, c) for i, c in enumerate(cur_c)],
        )
        return cur_e, cur_c, view

    console = Console()
    prev_e, prev_c, view = take(None, None)
    if once:
        time.sleep(interval)  # the rates' window
        _, _, view = take(prev_e, prev_c)
        console.print(view)
        return
    try:
        with Live(view, console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                prev_e, prev_c, view = take(prev_e, prev_c)
                live.update(view, refresh=True)
    except KeyboardInterrupt:
        pass
