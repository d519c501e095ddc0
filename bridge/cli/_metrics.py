"""Reading Prometheus endpoints for ``bridge top``: scrape, rates between two scrapes, and
histogram quantiles (Prometheus' ``histogram_quantile``: linear within a bucket)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from bridge.cli._common import http_get

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


@dataclass(frozen=True)
class Scrape:
    """One endpoint's samples at one time (``error`` when it did not answer)."""

    url: str
    at: float
    samples: Samples = field(default_factory=dict)
    error: str = ""


def parse(text: str) -> Samples:
    """Sample name and sorted labels -> value, of a Prometheus text exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = float(s.value)
    return out


def metrics_url(url: str) -> str:
    """``url`` itself if it names ``/metrics``, else its ``/metrics``."""
    base = url.rstrip("/")
    return base if base.endswith("/metrics") else f"{base}/metrics"


def scrape(url: str, timeout: float) -> Scrape:
    status, body = http_get(metrics_url(url), timeout)
    now = time.monotonic()
    if status != 200:
        return Scrape(url, now, error=f"{status or 'no answer'}: {body.strip()[:80]}")
    return Scrape(url, now, parse(body))


def select(samples: Samples, name: str, **labels: str) -> dict[Labels, float]:
    """The series of ``name`` whose labels include ``labels``, keyed by their other labels."""
    out: dict[Labels, float] = {}
    for (sname, slabels), value in samples.items():
        if sname != name:
            continue
        if all((k, v) in slabels for k, v in labels.items()):
            out[tuple(kv for kv in slabels if kv[0] not in labels)] = value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(select(samples, name, **labels).values())


def rate(prev: Scrape | None, cur: Scrape, name: str, **labels: str) -> float | None:
    """Per-second increase of ``name`` between two scrapes (None without a previous one; a
    counter that went down, i.e. a restart, counts from zero)."""
    if prev is None or prev.error or cur.error or cur.at <= prev.at:
        return None
    now, before = total(cur.samples, name, **labels), total(prev.samples, name, **labels)
    increase = now - before if now >= before else now
    return increase / (cur.at - prev.at)


def buckets(samples: Samples, name: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts of histogram ``name`` (summed over other labels), by ``le``."""
    out: dict[float, float] = {}
    for rest, value in select(samples, f"{name}_bucket", **labels).items():
        le = dict(rest).get("le")
        if le is not None:
            out[float(le)] = out.get(float(le), 0.0) + value
    return out


def quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """``histogram_quantile(q, ...)`` of cumulative bucket counts; None without observations."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    count = cumulative[bounds[-1]]
    rank = q * count
    lower, below = 0.0, 0.0
    for le in bounds:
        cum = cumulative[le]
        if cum >= rank:
            if math.isinf(le):
                return lower
            if cum == below:
                return le
            return lower + (le - lower) * (rank - below) / (cum - below)
        lower, below = le, cum
    return lower


def window_quantile(
    q: float, prev: Scrape | None, cur: Scrape, name: str, **labels: str
) -> float | None:
    """The quantile of the observations between two scrapes, or of all of them since the
    process started when there is no previous scrape or nothing new was observed."""
    now = buckets(cur.samples, name, **labels)
    if prev is not None and not prev.error:
        before = buckets(prev.samples, name, **labels)
        delta = {le: now[le] - before.get(le, 0.0) for le in now}
        if delta and max(delta.values()) > 0 and min(delta.values()) >= 0:
            return quantile(q, delta)
    return quantile(q, now)
