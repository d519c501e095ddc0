"""Smoke test of the benchmark suite: ``python -m bench --quick`` runs end to end (real
nats-server, engine and Rust baseline servers) and writes sane results.

Sanity only, never timing: every scenario is present with a positive count, percentiles are
ordered, the targets were computed, the JSON parses and the plot is a non-empty PNG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import BenchError, bench_binary
from bench.profile import QUICK, scenario_ids
from bench.scaling import QUICK as SCALING_QUICK
from bridge_dev.pki import DevCredentials
from bridge_dev.server import REPO_ROOT

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_quick_bench_writes_sane_results(tmp_path: Path, dev_creds: DevCredentials) -> None:
    try:
        bench_binary()
    except BenchError as exc:
        pytest.skip(f"bench Rust binaries not built ({exc})")
    out = tmp_path / "results"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--creds",
            str(dev_creds.root),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        # ~30 s alone, and ~30 s of the scaling phase (two server set-ups); the machine is often
        # shared (other test runs, builds): room for that.
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-5000:]}\nstderr:\n{proc.stderr[-5000:]}"

    doc = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    loops = doc["meta"]["event_loops"]
    assert "asyncio" in loops
    scenarios = {s["id"]: s for s in doc["scenarios"]}
    assert set(scenarios) == set(scenario_ids(QUICK, loops))
    for sid, s in scenarios.items():
        assert s["count"] > 0, sid
        if s["kind"] == "latency":
            lat = s["latency_us"]
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"], sid
        else:
            assert s["rate_per_s"] > 0, sid
        if s["python_cpu_us_per_op"] is not None:
            assert s["python_peak_rss_mb"] > 0, sid  # the orchestrator side's memory, per row
    assert doc["targets"], "no targets computed"
    for target in doc["targets"]:
        assert target["measured"] is not None, target
        assert target["passed"] in (True, False), target
    for key in ("nats_server", "rustc", "python", "date", "machine"):
        assert doc["meta"][key], key

    scaling = doc["scaling"]
    rows = scaling["rows"]
    want = {(s, n) for s in SCALING_QUICK.setups for n in SCALING_QUICK.engines}
    assert {(r["servers"], r["engines"]) for r in rows} == want
    for r in rows:
        assert r["drain_final"] == r["drain_orders"], r
        assert r["drain_rate_per_s"] > 0, r
        assert r["sync_count"] > 0, r
        assert 0 < r["sync_ack_us"]["p50"] <= r["sync_ack_us"]["p99"], r
        assert len(r["drain_cpu_us_per_order_engine"]) == r["engines"], r
        assert len(r["drain_cpu_us_per_order_nats"]) == r["nats_servers"], r
    assert rows[0]["ratio_vs_base"] == 1.0
    assert scaling["table_md"].count("\n") == len(rows) + 2

    png = out / "latency.png"
    assert png.stat().st_size > 0
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert not list(out.glob("*.tmp")), "temporary files left behind"
