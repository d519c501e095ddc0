"""The committed Grafana dashboard is what scripts/gen_dashboard.py generates, and well-formed."""

from __future__ import annotations

import json
from pathlib import Path

from bridge_dev.dashboard import render

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops" / "grafana" / "bridge.json"


def test_committed_dashboard_is_current() -> None:
    fresh = render()
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
