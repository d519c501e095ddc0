"""The engine by itself, without NATS: the ``engine-core-bench`` binary's workloads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.measure import Result
from bench.procs import BenchError
from bridge_dev.engine import engine_binary


def engine_core(config: Path, orders: int) -> list[Result]:
    """The engine's own per-order work without NATS (``engine-core-bench``): decode, validate,
    risk-check, match in the price-time book, encode every report and order store record."""
    binary = engine_binary().with_name("engine-core-bench")
    if not binary.is_file():
        raise BenchError(f"{binary} not found: `cargo build --release` at the repo root")
    done = subprocess.run(
        [str(binary), "--config", str(config), "--orders", str(orders)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"engine-core-bench exited with {done.returncode}: {done.stderr}")
    notes = {
        "market": "1-lot market orders vs seeded liquidity (the drain's orders)",
        "cross": "resting limit + market taking it (maker updated too)",
    }
    out = []
    for line in done.stdout.splitlines():
        row = json.loads(line)
        workload = str(row["workload"])
        out.append(
            Result(
                id=f"bridge.engine.core.{workload}",
                label=f"engine by itself (no I/O): {workload}",
                group="bridge",
                kind="throughput",
                loop="-",
                count=int(row["orders"]),
                seconds=float(row["seconds"]),
                rate=float(row["orders_per_s"]),
                peer_cpu_us=float(row["seconds"]) * 1e6 / int(row["orders"]),
                notes=notes.get(workload, workload),
                extra={"reports": int(row["reports"]), "threads": 1},
            )
        )
    return out
