"""Two engine binaries measured in the same run, in ABBA order: the synchronous order -> ack
and -> first fill latency (one order at a time, idle engine) and the drain of a backlog of
queued orders. Each turn gets a fresh nats-server, so neither engine inherits the other's
order store.

    python -m bench.compare_engines --old PATH --new PATH [--orders 2000] [--sync 400]
        [--old-projections async|fsync] [--new-projections async|fsync]

``--*-projections``: how that turn's server provisions EXECUTIONS and the order store
(``bridge provision --projections``): an engine before contract 1.2 needs ``fsync`` (its
atomic report batches), which is what a deployment of it has.

Prints one line per turn and the new/old ratios of the medians over both turns of each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path

from bench import bridge_paths
from bench.profile import Budget
from bench.run import ENGINE_CONFIG
from bridge.jetstream.provision import Projections, provision
from bridge.logs import configure_logging
from bridge_dev.pki import default_root, ensure_dev_credentials
from bridge_dev.server import LocalNatsServer, ServerHandle, connect_as


async def _provision(handle: ServerHandle, projections: Projections) -> None:
    nc = await connect_as(handle.url, handle.creds, "operator")
    try:
        await provision(nc, projections=projections)
    finally:
        await nc.close()


def turn(
    binary: str, work: Path, orders: int, sync: int, tag: str, projections: Projections
) -> dict[str, float]:
    """One fresh server, one engine binary: drain ``orders`` queued orders, then ``sync``
    synchronous orders one at a time."""
    os.environ["BRIDGE_ENGINE_BIN"] = binary
    creds = ensure_dev_credentials(default_root())
    with LocalNatsServer(
        creds, name=f"cmp-{tag}", store_dir=work / f"{tag}-store", log_file=work / f"{tag}.log"
    ) as server:
        handle = server.handle
        asyncio.run(_provision(handle, projections))
        backlog = asyncio.run(bridge_paths.prequeue(handle, orders, tag))
        engine = bridge_paths.Engine(handle, ENGINE_CONFIG, work / f"{tag}-engine.log")
        try:
            drained = asyncio.run(bridge_paths.drain(handle, engine, backlog, timeout=300))
            budget = Budget(warmup=50, count=sync, seconds=120)
            ack, fill = asyncio.run(
                bridge_paths.sync_isolated(handle, engine, budget, tag, "asyncio")
            )
        finally:
            engine.stop()
    assert ack.histogram is not None
    assert fill.histogram is not None
    return {
        "drain_per_s": drained.rate or 0.0,
        "ack_p50_ms": ack.histogram.get_value_at_percentile(50) / 1000,
        "ack_p99_ms": ack.histogram.get_value_at_percentile(99) / 1000,
        "fill_p50_ms": fill.histogram.get_value_at_percentile(50) / 1000,
        "fill_p99_ms": fill.histogram.get_value_at_percentile(99) / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old", required=True, help="baseline engine binary")
    parser.add_argument("--new", required=True, help="engine binary under test")
    parser.add_argument("--orders", type=int, default=2000, help="queued orders to drain")
    parser.add_argument("--sync", type=int, default=400, help="measured synchronous orders")
    for side in ("old", "new"):
        parser.add_argument(
            f"--{side}-projections",
            choices=["async", "fsync"],
            default="async",
            help=f"how the {side} engine's server persists EXECUTIONS and the order store",
        )
    ns = parser.parse_args()
    configure_logging("WARNING")
    work = Path(tempfile.mkdtemp(prefix="bench-cmp-"))
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for i, which in enumerate(("old", "new", "new", "old")):
        binary = ns.old if which == "old" else ns.new
        projections = ns.old_projections if which == "old" else ns.new_projections
        result = turn(binary, work, ns.orders, ns.sync, f"{which}{i}", projections)
        runs[which].append(result)
        print(which, {k: round(v, 3) for k, v in result.items()}, flush=True)
    print("new/old (median of each side's two turns):")
    for key in runs["old"][0]:
        old = statistics.median(r[key] for r in runs["old"])
        new = statistics.median(r[key] for r in runs["new"])
        print(f"  {key:12s} old {old:10.3f}  new {new:10.3f}  ratio {new / old:6.3f}")


if __name__ == "__main__":
    main()
