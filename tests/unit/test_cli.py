"""The ``bridge`` command line without a server: --help on every command, argument errors,
the metrics arithmetic of ``bridge top`` and its error without rich."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from bridge.cli import cli
from bridge.cli._metrics import Scrape, parse, quantile, rate, window_quantile

COMMANDS = [
    ["provision"],
    ["health"],
    ["streams"],
    ["tail"],
    ["submit"],
    ["status"],
    ["cancel"],
    ["top"],
    ["alerts"],
    ["audit"],
    ["audit", "verify"],
    ["config"],
    ["config", "get"],
    ["config", "set"],
    ["config", "diff"],
    ["config", "history"],
    ["orders"],
    ["orders", "cancel-all"],
    ["orders", "resume"],
    ["sessions"],
    ["sessions", "ls"],
    ["sessions", "orders"],
    ["partitions"],
]


def test_every_command_is_listed() -> None:
    listed = {c[0] for c in COMMANDS}
    assert set(cli.commands) == listed
    audit = cli.commands["audit"]
    assert isinstance(audit, click.Group)
    assert set(audit.commands) == {"verify"}
    group = cli.commands["config"]
    assert isinstance(group, click.Group)
    assert set(group.commands) == {"get", "set", "diff", "history"}
    orders = cli.commands["orders"]
    assert isinstance(orders, click.Group)
    assert set(orders.commands) == {"cancel-all", "resume"}
    sessions = cli.commands["sessions"]
    assert isinstance(sessions, click.Group)
    assert set(sessions.commands) == {"ls", "orders"}


@pytest.mark.parametrize("command", [["cancel-all", "--halt"], ["resume"]], ids=" ".join)
def test_orders_refuse_an_account_that_is_not_one_before_connecting(command: list[str]) -> None:
    """Checked locally first (exit 2 naming the field): nothing is written or sent."""
    verb, *flags = command
    result = CliRunner().invoke(cli, ["orders", verb, "no.dots", *flags])
    assert result.exit_code == 2, result.output
    assert "InvalidOrderError" in result.output
    assert "account" in result.output


def test_config_set_refuses_an_invalid_document_before_connecting() -> None:
    """Validated locally first: field and rule on stderr, exit 1, nothing written (no server
    is needed to refuse it)."""
    bad = '{"version": 1, "state": "PAUSED"}'
    result = CliRunner().invoke(cli, ["config", "set", "trading_state", bad])
    assert result.exit_code == 1, result.output
    assert "refused: state: enum:" in result.output
    result = CliRunner().invoke(cli, ["config", "diff", "routing", "-"], input="{")
    assert result.exit_code == 1
    assert "refused: <document>: json:" in result.output
    result = CliRunner().invoke(cli, ["config", "get", "colours"])
    assert result.exit_code == 2


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: bridge {' '.join(command)}" in result.output


@pytest.mark.parametrize(
    "command",
    [
        c
        for c in COMMANDS
        if c[0] not in ("top", "audit") and c not in (["config"], ["orders"], ["sessions"])
    ],
    ids=" ".join,
)
def test_connection_options_are_the_same_everywhere(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert "--config FILE" in result.output
    assert "--nats-url URL[,URL...]" in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("bridge, version ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "ACC1", "AAPL", "BUY", "ten"], "is not a decimal number"),
        (["submit", "ACC1", "AAPL", "HOLD", "10"], "HOLD"),
        (["tail", "ACC1", "--since", "3", "--last", "2"], "exclude each other"),
        (["provision", "--config", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output


def test_top_without_rich_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails
    result = CliRunner().invoke(cli, ["top", "--once", "--engine-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "nats-execution-bridge[top]" in result.output


BUCKETS = """# TYPE lat histogram
lat_bucket{path="sync",le="0.001"} 50
lat_bucket{path="sync",le="0.005"} 90
lat_bucket{path="sync",le="0.01"} 100
lat_bucket{path="sync",le="+Inf"} 100
lat_count{path="sync"} 100
lat_sum{path="sync"} 0.2
# TYPE orders counter
orders_total{outcome="accepted"} 30
orders_total{outcome="rejected"} 10
"""


def test_quantile_interpolates_like_prometheus() -> None:
    cumulative = {0.001: 50.0, 0.005: 90.0, 0.01: 100.0, float("inf"): 100.0}
    assert quantile(0.5, cumulative) == pytest.approx(0.001)
    assert quantile(0.25, cumulative) == pytest.approx(0.0005)
    assert quantile(0.99, cumulative) == pytest.approx(0.0095)
    assert quantile(0.5, {float("inf"): 0.0}) is None
    assert quantile(0.99, {0.001: 1.0, float("inf"): 2.0}) == pytest.approx(0.001)


def test_rates_and_window_quantile_between_two_scrapes() -> None:
    before = Scrape("u", 10.0, parse(BUCKETS))
    after_text = BUCKETS.replace('le="+Inf"} 100', 'le="+Inf"} 110').replace(
        'le="0.01"} 100', 'le="0.01"} 110'
    )
    after_text = after_text.replace("} 30\n", "} 50\n")
    after = Scrape("u", 12.0, parse(after_text))
    assert rate(before, after, "orders_total") == pytest.approx(10.0)
    assert rate(before, after, "orders_total", outcome="rejected") == 0.0
    assert rate(None, after, "orders_total") is None
    # the 10 new observations all fell in (0.005, 0.01]
    assert window_quantile(0.5, before, after, "lat", path="sync") == pytest.approx(0.0075)
    # nothing new: the quantile of everything so far
    assert window_quantile(0.5, after, after, "lat", path="sync") == pytest.approx(0.0015)


@pytest.mark.parametrize(("args", "code"), [(["--version"], 0), (["no-such-command"], 2)])
def test_console_script_exit_codes(args: list[str], code: int) -> None:
    """``python -m bridge.cli`` (what the ``bridge`` script runs) returns click's exit code."""
    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == code, done.stderr
