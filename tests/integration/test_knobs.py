"""One registry of knobs with honest names (issue 11, item 2).

``schemas/knobs.toml`` lists every knob once with the side that reads it. The client's settings
fields and the engine's effective configuration (``bridge-engine --print-config``, the real
binary) must be exactly the registry's knobs for their side, a knob both sides read must have
the same kind of value on both, and a renamed knob must be refused with its new name on each
side rather than silently ignored.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.config import RENAMED_KNOBS, BridgeSettings
from bridge_dev.engine import engine_binary

REGISTRY = Path(__file__).resolve().parents[2] / "schemas" / "knobs.toml"
KNOBS: dict[str, dict[str, str]] = tomllib.loads(REGISTRY.read_text("utf-8"))["knobs"]
RENAMED: dict[str, dict[str, str]] = tomllib.loads(REGISTRY.read_text("utf-8"))["renamed"]


def _side(*sides: str) -> set[str]:
    return {name for name, knob in KNOBS.items() if knob["side"] in sides}


def _print_config(
    extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run the engine's --print-config with nothing but ``extra_env`` set (no BRIDGE_* leaks)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(extra_env or {})}
    return subprocess.run(
        [str(engine_binary()), *args, "--print-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _engine_config() -> dict[str, Any]:
    done = _print_config()
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def test_client_settings_are_the_registrys_client_knobs() -> None:
    """BridgeSettings has exactly the knobs the registry gives the client (and both sides)."""
    assert set(BridgeSettings.model_fields) == _side("client", "both")


def test_engine_config_is_the_registrys_engine_knobs() -> None:
    """The engine prints exactly the knobs the registry gives the engine (and both sides)."""
    assert set(_engine_config()) == _side("engine", "both")


def test_shared_knobs_have_the_same_kind_of_value() -> None:
    """A knob both sides read holds the same kind of value (a number of ms is a number on both)."""
    engine = _engine_config()
    client = BridgeSettings().model_dump(mode="json")
    for name in sorted(_side("both")):
        unit = KNOBS[name]["unit"]
        if unit in ("ms", "count"):
            assert isinstance(engine[name], int), (name, engine[name])
            assert isinstance(client[name], int), (name, client[name])
        else:
            for side, value in (("engine", engine[name]), ("client", client[name])):
                assert value is None or isinstance(value, str), (side, name, value)


def test_engine_prints_the_environment_it_runs_with() -> None:
    """--print-config shows the effective value: defaults overridden by BRIDGE_* variables."""
    done = _print_config({"BRIDGE_ENGINE_ID": "printed-7", "BRIDGE_PULL_BATCH": "7"})
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert (config["engine_id"], config["pull_batch"]) == ("printed-7", 7)


def test_client_renames_are_the_registrys() -> None:
    """The client refuses exactly the old names the registry lists for it."""
    assert RENAMED["client"] == RENAMED_KNOBS


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED["client"].items()))
def test_client_refuses_a_renamed_knob(old: str, new: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old client knob name, as a keyword or a variable, is an error naming the new one."""
    with pytest.raises((ValidationError, ValueError)) as by_keyword:
        BridgeSettings.model_validate({old: 5})
    assert new in str(by_keyword.value)
    monkeypatch.setenv(f"BRIDGE_{old.upper()}", "5")
    with pytest.raises((ValidationError, ValueError)) as by_env:
        BridgeSettings()
    assert new in str(by_env.value)


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED["engine"].items()))
def test_engine_refuses_a_renamed_knob(old: str, new: str, tmp_path: Path) -> None:
    """An old engine knob name in the configuration file stops start-up naming the new one."""
    file = tmp_path / "engine.toml"
    file.write_text(f"{old} = 5\n", "utf-8")
    done = _print_config(args=("--config", str(file)))
    assert done.returncode != 0
    assert new in done.stderr
    if old not in KNOBS:  # not also a live client knob: refused in the environment too
        done = _print_config({f"BRIDGE_{old.upper()}": "5"})
        assert done.returncode != 0
        assert new in done.stderr
