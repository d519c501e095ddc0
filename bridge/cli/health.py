"""``bridge health``: is the bridge serving? One line per check, exit 1 if any fails.

Checks: each engine's ``/healthz`` and ``/readyz`` (its ``http_listen``; ``/readyz`` gives each
condition as JSON), the server's ``/healthz?js-enabled-only=true`` (monitoring port), and the
NATS service ping of ``bridge-engine`` through the client (``BridgeClient.readiness``: connected,
how many engines answer; what ``nats micro ping bridge-engine`` shows)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

from bridge.cli._common import (
    DEFAULT_MONITOR_URL,
    Negative,
    client,
    connection_options,
    engine_url_option,
    http_get,
    monitor_url,
    run,
    settings,
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def render(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def _engine_checks(url: str, timeout: float) -> list[Check]:
    base = url.rstrip("/")
    status, body = http_get(f"{base}/healthz", timeout)
    checks = [Check(f"engine {base}/healthz", status == 200, str(status or body))]
    status, body = http_get(f"{base}/readyz", timeout)
    detail = str(status or body)
    try:
        conditions = json.loads(body)
        if isinstance(conditions, dict):
            detail += " " + " ".join(f"{k}={v}" for k, v in conditions.items() if k != "ready")
    except ValueError:
        pass
    checks.append(Check(f"engine {base}/readyz", status == 200, detail))
    return checks


def _server_check(url: str, timeout: float) -> Check:
    base = url.rstrip("/")
    status, body = http_get(f"{base}/healthz?js-enabled-only=true", timeout)
    return Check(f"server {base}/healthz", status == 200, f"{status or ''} {body.strip()}".strip())


async def _service_check(config: Path | None, nats_url: str | None, timeout: float) -> Check:
    s = settings(config, nats_url, max_reconnect_attempts=1, connect_deadline_ms=2000)
    try:
        async with client(s) as bridge:
            readiness = await bridge.readiness(timeout=timeout)
    except Exception as exc:  # any failure to connect is the check's answer, not a crash
        return Check(f"nats {s.nats_url}", False, f"{type(exc).__name__}: {exc}")
    ids = ",".join(readiness.engine_ids)
    return Check(
        "service bridge-engine ping",
        readiness.ready,
        f"connected={readiness.connected} engines={readiness.engines} {ids}".rstrip(),
    )


@click.command()
@engine_url_option
@click.option(
    "--monitor-url",
    default=monitor_url,
    show_default=f"$BRIDGE_NATS_HTTP_PORT, else {DEFAULT_MONITOR_URL}",
    metavar="URL",
    help="nats-server's monitoring base URL.",
)
@click.option(
    "--timeout", type=float, default=1.0, show_default=True, help="Seconds per probe and ping."
)
@connection_options
def health(
    engine_urls: tuple[str, ...],
    monitor_url: str,
    timeout: float,
    config: Path | None,
    nats_url: str | None,
) -> None:
    """Probe the engines' /healthz and /readyz, the server's /healthz and the engines' NATS
    service ping; exit 0 when all pass, 1 when any fails."""
    checks: list[Check] = []
    for url in engine_urls:
        checks += _engine_checks(url, timeout)
    checks.append(_server_check(monitor_url, timeout))
    checks.append(run(_service_check(config, nats_url, timeout), "service ping"))
    for check in checks:
        click.echo(check.render())
    healthy = all(c.ok for c in checks)
    click.echo("healthy" if healthy else "UNHEALTHY")
    if not healthy:
        raise Negative()
