"""examples/orchestrator.py, the README's orchestrator example, runs against a real server and
engine with nothing but its settings file (tests/unit/test_readme_example.py keeps the README's
copy identical to the file; ./dev test also runs it from an installed wheel)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bridge_dev.engine import EngineProcess, client_settings, write_client_config
from bridge_dev.package_checks import example_problems, run_example
from bridge_dev.server import ServerHandle

pytestmark = pytest.mark.integration


def test_orchestrator_example_runs(
    nats_server: ServerHandle, engine: EngineProcess, tmp_path: Path
) -> None:
    """The example, run as a script from another directory, sends its orders and sees them
    final; its connection comes from the settings file the dev tooling writes."""
    config = write_client_config(client_settings(nats_server), tmp_path / "orchestrator.toml")
    assert example_problems(run_example(sys.executable, config, tmp_path)) == []
