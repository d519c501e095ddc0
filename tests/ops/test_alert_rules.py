"""The alert rules and the scrape config are valid, and the rules fire when they should.

``promtool`` (from Debian's prometheus package; ``./dev setup`` unpacks it into .dev/tools/):
``check rules`` validates ops/prometheus/alerts.yml, ``check config`` the example
prometheus.yml (and the rule file it loads), and ``test rules`` runs alerts_test.yml: input
series for every alert, where it must fire (with its labels and annotations) and where a
look-alike situation must not fire it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "ops" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> Path:
    local = REPO / ".dev" / "tools" / "bin" / "promtool"
    if local.is_file():
        return local
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("no promtool: ./dev setup unpacks one into .dev/tools/bin (needs apt-get)")
    return Path(found)


def _promtool(promtool: Path, *args: str) -> str:
    done = subprocess.run(
        [str(promtool), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_rules_are_valid(promtool: Path) -> None:
    assert "SUCCESS: 9 rules found" in _promtool(promtool, "check", "rules", "alerts.yml")


def test_scrape_config_is_valid(promtool: Path) -> None:
    _promtool(promtool, "check", "config", "prometheus.yml")


def test_rules_fire_as_their_unit_tests_expect(promtool: Path) -> None:
    assert "SUCCESS" in _promtool(promtool, "test", "rules", "alerts_test.yml")


def test_a_wrong_expectation_fails(promtool: Path, tmp_path: Path) -> None:
    """The unit tests can fail: expecting BridgeEngineDown while the engine is up does."""
    (tmp_path / "alerts.yml").write_bytes((PROMETHEUS / "alerts.yml").read_bytes())
    (tmp_path / "wrong_test.yml").write_text(
        """rule_files: [alerts.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="bridge-engine", instance="e1"}'
        values: "1x10"
    alert_rule_test:
      - eval_time: 5m
        alertname: BridgeEngineDown
        exp_alerts:
          - exp_labels: {severity: critical, job: bridge-engine, instance: e1}
""",
        "utf-8",
    )
    done = subprocess.run(
        [str(promtool), "test", "rules", "wrong_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "BridgeEngineDown" in done.stdout + done.stderr
