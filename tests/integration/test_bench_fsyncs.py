"""``python -m bench.fsyncs`` end to end on a small run (real nats-server, engine, report sink
and strace): every path completes and nats-server's fsyncs are counted (it runs with
``sync_interval: always``: a durable order costs at least one fsync somewhere, however many
orders share it). Counts only, never timing, and no assumption on how many per order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import BenchError, bench_binary
from bridge_dev.pki import DevCredentials
from bridge_dev.server import REPO_ROOT

pytestmark = pytest.mark.integration


def test_fsyncs_per_order_are_counted(tmp_path: Path, dev_creds: DevCredentials) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace not installed (./dev bench-fsyncs installs it)")
    try:
        bench_binary()
    except BenchError as exc:
        pytest.skip(f"bench Rust binaries not built ({exc})")
    out = tmp_path / "fsyncs.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    args = ["--orders", "300", "--sync", "40", "--concurrency", "4", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fsyncs", *args, "--creds", str(dev_creds.root)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-5000:]}\nstderr:\n{proc.stderr[-5000:]}"
    rows = {r["path"]: r for r in json.loads(out.read_text(encoding="utf-8"))}
    assert set(rows) == {"queued", "sync", "sync x4"}
    for path, row in rows.items():
        assert row["orders"] == (300 if path == "queued" else 40)
        assert sum(row["nats_server"].values()) >= 1, path
        assert set(row["engine"]) == {"fsync", "fdatasync"}, path
