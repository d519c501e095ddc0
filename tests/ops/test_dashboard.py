"""The committed Grafana dashboard is what scripts/gen_dashboard.py generates, and well-formed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops" / "grafana" / "bridge.json"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "_gen_dashboard", REPO / "scripts" / "gen_dashboard.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_committed_dashboard_is_current() -> None:
    fresh: str = _generator().render()
    assert DASHBOARD.read_text("utf-8") == fresh, (
        "stale: run `python scripts/gen_dashboard.py` and commit ops/grafana/bridge.json"
    )


def test_panels_fit_the_grid_and_have_unique_ids() -> None:
    model = json.loads(DASHBOARD.read_text("utf-8"))
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in model["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_latency_panels_mark_the_5_and_10_ms_budgets() -> None:
    model = json.loads(DASHBOARD.read_text("utf-8"))
    by_title = {panel["title"]: panel for panel in model["panels"]}
    for title in ("Order -> ack (client)", "Order -> first execution report (client)"):
        defaults = by_title[title]["fieldConfig"]["defaults"]
        assert defaults["unit"] == "s"
        steps = [step["value"] for step in defaults["thresholds"]["steps"]]
        assert steps == [None, 0.005, 0.01]
        assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"
