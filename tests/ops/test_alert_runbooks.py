"""Every alert names a runbook section that exists, and every runbook link of alerts.md resolves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "ops" / "prometheus" / "alerts.yml"
RUNBOOKS = REPO / "runbooks"


def _alerts() -> list[dict[str, Any]]:
    rules: dict[str, Any] = yaml.safe_load(ALERTS.read_text("utf-8"))
    return [rule for group in rules["groups"] for rule in group["rules"]]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors (lowercase, punctuation dropped, spaces to dashes)."""
    return {
        re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-")
        for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)
    }


def test_every_alert_points_at_its_section_of_alerts_md() -> None:
    anchors = _anchors((RUNBOOKS / "alerts.md").read_text("utf-8"))
    for rule in _alerts():
        runbook = rule["annotations"]["runbook"]
        path, _, anchor = runbook.partition("#")
        assert (REPO / path).is_file(), runbook
        assert anchor == rule["alert"].lower(), runbook
        assert anchor in anchors, f"{rule['alert']}: no section {anchor!r} in runbooks/alerts.md"


def test_every_alert_has_severity_summary_and_description() -> None:
    for rule in _alerts():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_runbook_links_resolve() -> None:
    """Links between runbooks (alerts.md and the 'Metrics first' lines) name existing files."""
    for page in sorted(RUNBOOKS.glob("*.md")):
        for target in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", page.read_text("utf-8")):
            assert (page.parent / target).resolve().is_file(), f"{page.name} -> {target}"
