"""examples/orchestrator.py, the README's orchestrator example, runs against a real server and
engine with nothing but its settings file (tests/unit/test_readme_example.py keeps the README's
copy identical to the file)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge_dev.engine import EngineProcess, client_settings, write_client_config
from bridge_dev.server import REPO_ROOT, ServerHandle

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "orchestrator.py"
FINAL_LINE = re.compile(r"^ord-\w+-(\d): (\w+), filled ([\d.]+) at ([\d.]+)$")


def run_example(python: str, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the example with ``python``, configured by ``config`` alone (no other BRIDGE_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_CONFIG_FILE"] = str(config)
    return subprocess.run(
        [python, str(EXAMPLE)], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def check_output(proc: subprocess.CompletedProcess[str]) -> None:
    """The urgent order is accepted, three are queued, and all four end FILLED (the engine's
    seeded liquidity crosses them)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert any(re.fullmatch(r"ord-\w+-0: ACCEPTED NONE", line) for line in lines), proc.stdout
    assert any(line.startswith("queued 3 orders") for line in lines), proc.stdout
    finals = {m[1]: m[2] for m in map(FINAL_LINE.match, lines) if m}
    assert finals == {"0": "FILLED", "1": "FILLED", "2": "FILLED", "3": "FILLED"}, proc.stdout


def test_orchestrator_example_runs(
    nats_server: ServerHandle, engine: EngineProcess, tmp_path: Path
) -> None:
    """The example, run as a script from another directory, sends its orders and sees them
    final; its connection comes from the settings file the dev tooling writes."""
    config = write_client_config(client_settings(nats_server), tmp_path / "orchestrator.toml")
    check_output(run_example(sys.executable, config, tmp_path))
